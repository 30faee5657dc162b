"""A site-local cache of harmonized genotypes, keyed by the content of everything they came from.

Decoding a hospital's VCF is the slow part of starting a round. The cache key hashes the bytes of
the VCF, its index, the panel, the cohort table and the reference index, plus the people read,
the encoder settings and the cache format,
so a second run starts at once and any change to any input makes a new key (the old entry is
simply never read again). Entries are `.npz` files read with `allow_pickle=False` and written
atomically. The cache lives in the site's state folder and never leaves the site.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from shared.encoding import EncoderSettings
from shared.fsio import atomic_write, sha256_file
from shared.genotypes import PanelGenotypes

# Bumped whenever the same files would be read into different codes (harmonization rules,
# dosage reading, PLINK): an entry of another format is never reused. 3: genotype
# probabilities from DS/GP stored beside the codes.
CACHE_FORMAT = 3


class GenotypeCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def key(
        self, inputs: Sequence[Path | None], encoder: EncoderSettings, samples: Sequence[str],
        reading: Mapping[str, object] | None = None,
    ) -> str:
        doc = {
            "reading": dict(reading or {}),  # the site's reading options (quality filter)
            "format": CACHE_FORMAT,
            "inputs": [sha256_file(p) if p is not None else None for p in inputs],
            "encoder": asdict(encoder),
            # Which people, in which order: the cohort spec can change that for the same files.
            "samples": hashlib.sha256("\n".join(samples).encode()).hexdigest(),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"genotypes-{key[:32]}.npz"

    def load(self, key: str) -> PanelGenotypes | None:
        path = self.path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                probs = z["probs"] if "probs" in z.files else None
                return PanelGenotypes(z["codes"], z["found"], [str(h) for h in z["how"]], probs)
        except (OSError, ValueError, KeyError):
            return None  # unreadable entry: rebuild it

    def store(self, key: str, value: PanelGenotypes) -> None:
        with atomic_write(self.path(key), "wb") as fh:
            soft = {} if value.probs is None else {"probs": value.probs}
            np.savez(fh, codes=value.codes, found=value.found, how=np.array(value.how, dtype=str),
                     **soft)

    def get_or_build(
        self, inputs: Sequence[Path | None], encoder: EncoderSettings, samples: Sequence[str],
        build: Callable[[], PanelGenotypes], reading: Mapping[str, object] | None = None,
    ) -> PanelGenotypes:
        key = self.key(inputs, encoder, samples, reading)
        cached = self.load(key)
        if cached is not None:
            return cached
        value = build()
        self.store(key, value)
        return value
