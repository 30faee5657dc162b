"""Genetic ancestry similarity: a public PCA reference shipped with the panel, and the label it
gives a person.

Declared ancestry (a cohort table's column) is what a hospital wrote down; genetic similarity
is measured, as pgsc_calc does: the consortium fits a PCA on public reference genotypes (1000
Genomes in real use, the simulation's public reference sample in the demo) at the panel's
variants and ships, beside the panel, the loadings and one centroid per reference population.
A site projects its own people onto those components and gives each the most similar reference
population (the nearest centroid, distances in units of each population's spread), or
`UNASSIGNED` when even that one lies farther than `max_spreads` spreads away. Nothing about
the site's people goes into the file, and the labels never leave the site (they only choose
the groups its DP releases are broken into).
The coordinator fits the file with `fit_reference_files` (`genofed coordinator
ancestry-reference`); the simulation with `fit_reference` on its public sample.

The file (`panel.ancestry.json`, next to `panel.tsv`; see `ancestry_path`) is JSON:

    format        "genofed-ancestry-reference", version 1
    panel_sha256  the panel it was fitted on: read against any other panel it is refused
    genome_build  the panel's declared build (or null)
    center[T]     mean alt-allele count per panel variant in the reference sample
    scale[T]      sqrt(2p(1-p)) of that frequency (1 for a monomorphic variant)
    loadings[T][K] the first K principal axes of the standardized reference genotypes
    populations   {name: {"centroid": [K], "spread": s, "n": people}} (spread: the RMS
                  distance of the population's reference people to its centroid)
    max_spreads   a person farther than max_spreads x spread from the nearest centroid is
                  unassigned
    max_residual  so is a person whose genotypes lie farther than this off the K axes (RMS
                  per variant of the standardized genotypes minus their projection)

Why the residual: distances between centroids are measured within the reference's principal
axes, and a person of a population the reference does not span differs from it mostly off
those axes, so their projection can land near some centroid. Their residual gives them away
(see the lab notebook, "genetic ancestry labels"); a diverse reference (1000
Genomes) still matters.

Projection: missing calls (and panel variants a site lacks) are mean-imputed, i.e. contribute
0 after standardization, so a partly missing person is pulled toward the centre rather than
toward any one population.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from shared.errors import InputError
from shared.fsio import atomic_write
from shared.panel import Panel, read_panel
from shared.tokenizer import GT_MISSING as _MISSING  # codes 0/1/2 count panel ALT alleles

FORMAT = "genofed-ancestry-reference"
VERSION = 1
UNASSIGNED = "unassigned"
SUFFIX = ".ancestry.json"
DEFAULT_COMPONENTS = 4
DEFAULT_MAX_SPREADS = 3.0
# max_residual = this x the 99th percentile of the reference people's own residuals: a site's
# people are out of sample, so theirs run a little higher than the fitted people's.
RESIDUAL_MARGIN = 1.25


def ancestry_path(panel_path: str | Path) -> Path:
    """Where a panel's ancestry reference lives: `panel.tsv` -> `panel.ancestry.json`."""
    panel_path = Path(panel_path)
    return panel_path.with_name(panel_path.name.split(".")[0] + SUFFIX)


@dataclass(frozen=True)
class AncestryReference:
    panel_sha256: str
    genome_build: str | None
    center: np.ndarray  # [T] mean alt-allele count
    scale: np.ndarray  # [T] > 0
    loadings: np.ndarray  # [T, K]
    populations: tuple[str, ...]  # [P]
    centroids: np.ndarray  # [P, K]
    spread: np.ndarray  # [P] > 0
    counts: tuple[int, ...]  # [P] reference people behind each centroid
    max_spreads: float = DEFAULT_MAX_SPREADS
    max_residual: float = math.inf

    def _standardized(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != len(self.center):
            raise ValueError(f"genotypes of shape {codes.shape} do not have the reference's "
                             f"{len(self.center)} variants")
        z = (codes.astype(np.float64) - self.center) / self.scale
        z[codes == _MISSING] = 0.0  # mean imputation
        return z

    def project(self, codes: np.ndarray) -> np.ndarray:
        """Principal-component scores [N, K] of genotype codes [N, T] (3 = missing)."""
        return self._standardized(codes) @ self.loadings

    def residuals(self, codes: np.ndarray) -> np.ndarray:
        """How far each person lies off the K axes [N]: RMS per variant of the standardized
        genotypes minus their projection."""
        z = self._standardized(codes)
        off = z - (z @ self.loadings) @ self.loadings.T
        return np.sqrt((off**2).mean(axis=1))

    def distances(self, codes: np.ndarray) -> np.ndarray:
        """Distance [N, P] of each person to each population centroid, in spread units."""
        scores = self.project(codes)
        d = np.linalg.norm(scores[:, None, :] - self.centroids[None, :, :], axis=2)
        return d / self.spread

    def assign(self, codes: np.ndarray) -> np.ndarray:
        """The most similar reference population per person, or UNASSIGNED beyond the
        threshold: [N] str."""
        d = self.distances(codes)
        if not len(d):
            return np.empty(0, dtype=str)
        nearest = d.argmin(axis=1)
        labels = np.asarray(self.populations, dtype=object)[nearest]
        labels[d[np.arange(len(d)), nearest] > self.max_spreads] = UNASSIGNED
        labels[self.residuals(codes) > self.max_residual] = UNASSIGNED
        return labels.astype(str)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "panel_sha256": self.panel_sha256,
            "genome_build": self.genome_build, "center": _floats(self.center),
            "scale": _floats(self.scale), "loadings": [_floats(r) for r in self.loadings],
            "populations": {
                p: {"centroid": _floats(c), "spread": float(s), "n": int(n)}
                for p, c, s, n in zip(self.populations, self.centroids, self.spread,
                                      self.counts, strict=True)
            },
            "max_spreads": float(self.max_spreads),
            "max_residual": float(self.max_residual),
        }

    def write(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            json.dump(self.to_json(), fh, indent=1)
            fh.write("\n")


def _floats(values: np.ndarray) -> list[float]:
    return [round(float(v), 8) for v in values]


def fit_reference(
    codes: np.ndarray, labels: np.ndarray, panel: Panel, components: int = DEFAULT_COMPONENTS,
    max_spreads: float = DEFAULT_MAX_SPREADS,
) -> AncestryReference:
    """Fit the PCA on public reference genotypes [n, T] (codes, 3 = missing) with their
    population labels [n]. `components` is capped by what the data can hold."""
    codes = np.asarray(codes)
    labels = np.asarray(labels, dtype=str)
    if codes.ndim != 2 or codes.shape[1] != len(panel) or len(labels) != len(codes):
        raise ValueError("reference genotypes must be [people, panel variants] with one label "
                         "per person")
    called = codes != _MISSING
    alt = np.where(called, codes, 0).sum(axis=0, dtype=np.float64)
    n_called = called.sum(axis=0)
    center = np.divide(alt, n_called, out=np.zeros(codes.shape[1]), where=n_called > 0)
    p = center / 2
    scale = np.sqrt(2 * p * (1 - p))
    scale[scale < 1e-6] = 1.0  # monomorphic: standardizes to 0, carries no axis
    z = np.where(called, (codes - center) / scale, 0.0)
    k = max(1, min(components, *z.shape))
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    loadings = vt[:k].T  # [T, K]
    scores = z @ loadings
    populations = tuple(sorted(set(labels.tolist())))
    if UNASSIGNED in populations:
        raise ValueError(f"{UNASSIGNED!r} cannot name a reference population")
    centroids = np.stack([scores[labels == q].mean(axis=0) for q in populations])
    spread = np.array([
        math.sqrt(float(((scores[labels == q] - c) ** 2).sum(axis=1).mean()))
        for q, c in zip(populations, centroids, strict=True)
    ])
    spread[spread < 1e-9] = 1e-9  # a single-person population: only its exact genotype matches
    counts = tuple(int((labels == q).sum()) for q in populations)
    off = z - scores @ loadings.T
    max_residual = RESIDUAL_MARGIN * float(np.quantile(np.sqrt((off**2).mean(axis=1)), 0.99))
    return AncestryReference(panel.sha256, panel.build, center, scale, loadings, populations,
                             centroids, spread, counts, float(max_spreads),
                             max(max_residual, 1e-9))


def fit_reference_files(
    panel_path: str | Path, genotypes: str | Path, populations: str | Path,
    fasta: str | Path | None = None, sample_col: str = "sample", population_col: str = "pop",
    components: int = DEFAULT_COMPONENTS, max_spreads: float = DEFAULT_MAX_SPREADS,
) -> AncestryReference:
    """Fit the reference from public files: genotypes (VCF/BCF or PLINK, e.g. 1000 Genomes)
    read at the panel's variants exactly as a site reads its own, and a table of each
    person's population (1000 Genomes' `integrated_call_samples...panel`: sample, pop, ...).
    People of the table missing from the genotypes are left out."""
    import pandas as pd

    from shared.genotypes import harmonize_panel_genotypes
    from shared.plink import PlinkFiles, is_plink, read_samples

    if components < 1 or not max_spreads > 0:
        raise InputError(None, "components must be at least 1 and max-spreads positive")
    panel = read_panel(panel_path)
    populations = Path(populations)
    try:
        table = pd.read_csv(populations, sep=None, engine="python", dtype=str)
    except FileNotFoundError:
        raise InputError(populations, "population table not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(populations, f"not a readable population table ({err})") from None
    missing = [c for c in (sample_col, population_col) if c not in table.columns]
    if missing:
        raise InputError(populations, f"population table lacks column(s) {', '.join(missing)}; "
                                      f"found: {', '.join(map(str, table.columns))}", "line 1")
    table = table.dropna(subset=[sample_col, population_col])
    genotypes = Path(genotypes)
    if is_plink(genotypes):
        present = set(read_samples(PlinkFiles.of(genotypes)))
    else:
        try:
            with pysam.VariantFile(str(genotypes)) as vf:
                present = set(vf.header.samples)
        except (OSError, ValueError) as err:
            raise InputError(genotypes, f"cannot read the reference genotypes ({err})") from None
    table = table[table[sample_col].isin(present)].drop_duplicates(sample_col)
    if len(table) < 2:
        raise InputError(populations, f"fewer than two of its people are in {genotypes.name}")
    read = harmonize_panel_genotypes(genotypes, panel, table[sample_col].tolist(), fasta)
    return fit_reference(read.codes, table[population_col].to_numpy(dtype=str), panel,
                         components, max_spreads)


def read_reference(path: str | Path, panel: Panel) -> AncestryReference:
    """Read and validate an ancestry reference for `panel`; one InputError naming the file and
    the field for anything wrong (including a reference fitted on another panel)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "ancestry reference not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a JSON ancestry reference ({err})") from None
    except OSError as err:
        raise InputError(path, f"cannot read the ancestry reference ({err.strerror})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(path, f"not an ancestry reference (format is not {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise InputError(path, f"ancestry reference version {doc.get('version')!r}; this "
                               f"genofed reads version {VERSION}")
    if doc.get("panel_sha256") != panel.sha256:
        raise InputError(path, "ancestry reference was fitted on another panel (its "
                               f"panel_sha256 {str(doc.get('panel_sha256'))[:12]}... is not the "
                               f"panel's {panel.sha256[:12]}...)", "panel_sha256")
    build = doc.get("genome_build")
    if build is not None and panel.build is not None and build != panel.build:
        raise InputError(path, f"ancestry reference is on {build}, the panel on {panel.build}",
                         "genome_build")
    t = len(panel)
    center = _array(path, doc, "center", (t,))
    scale = _array(path, doc, "scale", (t,))
    loadings = _array(path, doc, "loadings", (t, None))
    if (scale <= 0).any():
        raise InputError(path, "every scale must be positive", "scale")
    pops = doc.get("populations")
    if not isinstance(pops, dict) or not pops:
        raise InputError(path, "no reference populations", "populations")
    names = tuple(str(n) for n in pops)
    if any(not n.strip() or n.strip().lower() == UNASSIGNED for n in names):
        raise InputError(path, f"a population name is empty or {UNASSIGNED!r}", "populations")
    k = loadings.shape[1]
    centroids, spread, counts = [], [], []
    for name in names:
        entry = pops[name]
        field = f"populations.{name}"
        if not isinstance(entry, dict):
            raise InputError(path, "must be an object with centroid, spread and n", field)
        centroids.append(_array(path, entry, "centroid", (k,), field))
        s = entry.get("spread")
        if isinstance(s, bool) or not isinstance(s, int | float) or not s > 0:
            raise InputError(path, f"spread {s!r} is not a positive number", field)
        spread.append(float(s))
        n = entry.get("n", 0)
        counts.append(int(n) if isinstance(n, int) and not isinstance(n, bool) else 0)
    limit = doc.get("max_spreads")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
        raise InputError(path, f"max_spreads {limit!r} is not a positive number", "max_spreads")
    residual = doc.get("max_residual")
    if isinstance(residual, bool) or not isinstance(residual, int | float) or not residual > 0:
        raise InputError(path, f"max_residual {residual!r} is not a positive number",
                         "max_residual")
    return AncestryReference(panel.sha256, build, center, scale, loadings, names,
                             np.stack(centroids), np.array(spread), tuple(counts), float(limit),
                             float(residual))


def _array(path: Path, doc: dict, key: str, shape: tuple[int | None, ...],
           where: str | None = None) -> np.ndarray:
    field = f"{where}.{key}" if where else key
    try:
        values = np.asarray(doc[key], dtype=np.float64)
    except KeyError:
        raise InputError(path, "missing", field) from None
    except (TypeError, ValueError):
        raise InputError(path, "is not an array of numbers", field) from None
    wanted = tuple(values.shape[i] if s is None and values.ndim == len(shape) else s
                   for i, s in enumerate(shape))
    if values.shape != wanted or 0 in values.shape:
        size = "x".join("K" if s is None else str(s) for s in shape)
        raise InputError(path, f"has shape {'x'.join(map(str, values.shape))}, expected {size} "
                               "(one entry per panel variant)", field)
    if not np.isfinite(values).all():
        raise InputError(path, "holds a value that is not a finite number", field)
    return values


def agreement(declared: np.ndarray, genetic: np.ndarray, floor: int) -> dict[str, Any]:
    """People per (declared, genetic) label pair; a non-empty cell under `floor` is withheld
    (None). For the site's own eyes (`site check`): it is never sent anywhere."""
    declared = np.asarray(declared, dtype=str)
    genetic = np.asarray(genetic, dtype=str)
    rows = sorted(set(declared.tolist()))
    cols = sorted(set(genetic.tolist()) - {UNASSIGNED}) + (
        [UNASSIGNED] if UNASSIGNED in set(genetic.tolist()) else [])
    cells: dict[str, dict[str, int | None]] = {}
    withheld = 0
    for r in rows:
        cells[r] = {}
        for c in cols:
            n = int(((declared == r) & (genetic == c)).sum())
            hide = 0 < n < floor
            withheld += hide
            cells[r][c] = None if hide else n
    same = int((declared == genetic).sum())
    total = len(declared)

    def shown(n: int) -> bool:
        return n == 0 or n >= floor

    return {
        "declared": rows, "genetic": cols, "cells": cells, "floor": int(floor),
        "withheld_cells": withheld, "people": total,
        # withheld too when the few who disagree (or agree) could be read off it
        "agreeing": same if shown(same) and shown(total - same) else None,
    }
