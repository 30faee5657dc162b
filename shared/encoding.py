"""From panel, reference and genotypes to model input.

Per panel variant the model sees the person's genotype token and, shared by everyone, the
reference context around the variant (k-mers), its REF and ALT bases and its coordinate. The
shared part is computed once per site as `PanelFeatures`; the per-person part is an int8 matrix.
The panel's public allele frequencies, when it has them, travel along to standardize the
additive read-out (`shared.model.additive_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.builds import detect_build, require_build
from shared.errors import InputError
from shared.genotypes import contig_alias, open_reference
from shared.model import ModelConfig, PanelFeatures
from shared.panel import Panel
from shared.tokenizer import DNATokenizer, allele_id


@dataclass(frozen=True)
class EncoderSettings:
    context_bases: int = 8  # reference bases on each side of the variant
    kmer_size: int = 3
    kmer_stride: int = 1

    def tokenizer(self) -> DNATokenizer:
        return DNATokenizer(k=self.kmer_size, stride=self.kmer_stride)

    def context_len(self) -> int:
        return len(self.tokenizer().encode("A" * (2 * self.context_bases + 1)))


def encode_panel(panel: Panel, fasta_path: str | Path, settings: EncoderSettings) -> PanelFeatures:
    """Context k-mers, allele ids and coordinates for every panel variant.

    REF is checked against the FASTA: a panel built on another reference build would silently
    misalign every variant otherwise. A panel with positions for the FASTA's build is read at
    those (`Panel.on_build`); coordinates, alleles and the variant's own bases in its context
    stay the panel's, so every site's model input is the same whatever its build.
    """
    fasta_path = Path(fasta_path)
    tok = settings.tokenizer()
    w = settings.context_bases
    fasta = open_reference(fasta_path)
    contexts = []
    with fasta:
        lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        lookup, swapped = panel.on_build(detect_build(lengths)[0])
        require_build(lookup.build, lengths, fasta_path)
        for j, (chrom, pos, ref) in enumerate(zip(lookup.chrom, lookup.pos, lookup.ref,
                                                  strict=True)):
            record = f"{chrom}:{pos}"
            contig = contig_alias(str(chrom), lengths)  # chr1 and 1 alike (also MT/chrM)
            if contig is None:
                raise InputError(fasta_path, "panel variant's contig is not in the FASTA", record)
            start, end = int(pos) - 1 - w, int(pos) + w  # 0-based, half open
            if start < 0 or end > lengths[contig] or int(pos) - 1 + len(ref) > lengths[contig]:
                raise InputError(fasta_path, "panel variant too close to the contig's end", record)
            genome = fasta.fetch(contig, int(pos) - 1, int(pos) - 1 + len(ref)).upper()
            if genome != ref and "N" not in genome:  # the whole REF, however long
                raise InputError(fasta_path, f"REF {ref} disagrees with the FASTA's {genome}",
                                 record)
            window = fasta.fetch(contig, start, end).upper()
            if swapped[j]:  # this build's REF is the panel's ALT: the panel's bases instead
                window = (window[:w] + panel.ref[j] + window[w + len(ref):])[:2 * w + 1]
                window += fasta.fetch(contig, end, end + 2 * w + 1 - len(window)).upper()
            contexts.append(tok.encode(window))
    return PanelFeatures(
        context=torch.tensor(np.array(contexts), dtype=torch.long),
        ref=torch.tensor([allele_id(a) for a in panel.ref], dtype=torch.long),
        alt=torch.tensor([allele_id(a) for a in panel.alt], dtype=torch.long),
        coord=torch.tensor(panel.pos, dtype=torch.float64),
        alt_freq=None if panel.af is None else torch.tensor(panel.af, dtype=torch.float32),
    )


def model_config(n_variants: int, settings: EncoderSettings, **arch: object) -> ModelConfig:
    """The model config for a panel of `n_variants` under these encoder settings."""
    return ModelConfig(
        n_variants=n_variants,
        context_len=settings.context_len(),
        kmer_vocab=settings.tokenizer().vocab_size,
        **arch,  # type: ignore[arg-type]
    )
