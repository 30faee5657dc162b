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

from shared.builds import require_build
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
    misalign every variant otherwise.
    """
    fasta_path = Path(fasta_path)
    tok = settings.tokenizer()
    w = settings.context_bases
    fasta = open_reference(fasta_path)
    contexts = []
    with fasta:
        lengths = dict(zip(fasta.references, fasta.lengths, strict=True))
        require_build(panel.build, lengths, fasta_path)
        for chrom, pos, ref in zip(panel.chrom, panel.pos, panel.ref, strict=True):
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
            contexts.append(tok.encode(fasta.fetch(contig, start, end).upper()))
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
