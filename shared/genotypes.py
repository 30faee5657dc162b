"""Reading a site's genotypes at the panel variants: harmonized, through pysam, vectorised.

Speed: pysam's per-sample accessor (`rec.samples[s]["GT"]`) manages about 1.4 M calls/s here;
parsing the record's text once with numpy about 30 M/s. We fetch each panel variant through the
tabix/CSI index (region fetch), split the record's sample columns, and map each distinct GT
string to a genotype code once, so the cost is per record, not per person.

Harmonization: a hospital's VCF describes the coordinator's panel variant in its own way. We match
on normalized alleles (common suffix and prefix trimmed, indels left-aligned against the
reference when one is given); an exact match wins over every fallback, and a fallback is taken
only where it is plausible (`plausible_match`: never for a record whose REF is the reference's own
sequence, so a neighbouring insertion is never read as a swapped deletion). We accept
  - contig names with or without the `chr` prefix (`chr22` = `22`, `chrM` = `MT`);
  - REF/ALT swapped relative to the panel: the alt dosage is flipped (0 <-> 2);
  - the opposite strand (alleles complemented), unless the SNV is strand-ambiguous;
  - multi-allelic records, taken as if split (`bcftools norm -m-`): the dosage counts the
    matching ALT allele; other ALT alleles count as not-that-allele.
Imputed dosages: a record with DS or GP (an imputation server's minimac `--format DS`, Beagle's
GT:DS:GP) also yields genotype probabilities P(0, 1, 2 ALT copies) per person: GP where given
(normalized to sum 1), else DS interpolated between its two nearest genotypes (d = 0.6 is
0.4 hom-ref + 0.6 het), else the GT call. The model reads those (`PanelGenotypes.probs`, see
`shared.model`); the codes stay the GT calls, or the nearest genotype where there is no GT, for
every count the site check and the releases make. A swap reverses the probabilities (d -> 2 - d).
Rule for A/T and C/G SNVs: a VCF's alleles are on the reference forward strand (its REF is
checked against the FASTA), so these are matched as given or swapped, never strand-flipped; a
flip cannot be told from a swap there.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pysam

from shared.errors import InputError
from shared.panel import Panel
from shared.progress import Progress
from shared.tokenizer import GT_HET, GT_HOM_ALT, GT_HOM_REF, GT_MISSING

_COMPLEMENT = str.maketrans("ACGT", "TGCA")
FLIP = np.array([GT_HOM_ALT, GT_HET, GT_HOM_REF, GT_MISSING], dtype=np.int8)
INDEL_WINDOW = 50  # bp searched around a panel indel for other representations
log = logging.getLogger(__name__)


def parse_gt(gt: str) -> list[int | None]:
    """The allele indices of one GT string ("0|1", "1/1", "./.", "1", VCF 4.4's "|0|1"); None
    for a missing allele. ValueError for anything else."""
    alleles = gt.lstrip("|/").replace("|", "/").split("/")
    try:
        return [None if a == "." else int(a) for a in alleles]
    except ValueError:
        raise ValueError(f"malformed genotype {gt!r}") from None


def gt_code(gt: str, n_alleles: int, alt_index: int) -> int:
    """Genotype code of one GT string (e.g. '0|1', './.', '1') counting allele `alt_index`.

    Haploid calls count as homozygous. Other ALT alleles of a multi-allelic record count as
    not-this-allele, as after `bcftools norm -m-`.
    """
    alleles = parse_gt(gt)
    if None in alleles:
        return GT_MISSING
    idx = [int(a) for a in alleles if a is not None]
    if any(i < 0 or i >= n_alleles for i in idx):
        raise ValueError(f"genotype {gt!r} has an allele index out of range")
    n_alt = sum(i == alt_index for i in idx)
    if len(idx) == 1:
        return GT_HOM_ALT if n_alt else GT_HOM_REF
    if len(idx) != 2:
        return GT_MISSING
    return (GT_HOM_REF, GT_HET, GT_HOM_ALT)[n_alt]


_ZERO, _DOT = ord("0"), ord(".")


def record_codes(rec: pysam.VariantRecord, alt_index: int) -> np.ndarray:
    """Genotype codes [n_samples] int8 of one record, parsed from its text in one pass."""
    return record_calls(rec, alt_index)[0]


def record_calls(
    rec: pysam.VariantRecord, alt_index: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Genotype codes [n_samples] int8 of one record and, when it carries DS or GP, genotype
    probabilities [n_samples, 3] float32 (zeros where missing; None without DS and GP).

    Fast path: a GT-only record whose calls are all diploid single digits ("0|1") is a fixed
    width byte array, decoded with numpy arithmetic. Anything else (other FORMAT fields,
    haploid or multi-digit alleles) takes the general path: each distinct string once.
    """
    text = str(rec).encode()
    fields = text.rstrip(b"\n").split(b"\t", 9)
    if len(fields) <= 9:
        return np.empty(0, dtype=np.int8), None
    n = len(rec.samples)
    body = fields[9]
    if fields[8] == b"GT" and len(body) == 4 * n - 1 and alt_index < 10:
        codes = _fast_diploid(np.frombuffer(body + b"\t", dtype=np.uint8).reshape(n, 4),
                              len(rec.alleles), alt_index)
        if codes is not None:
            return codes, None
    return _general_calls(fields, len(rec.alleles), alt_index)


def _fast_diploid(b: np.ndarray, n_alleles: int, alt_index: int) -> np.ndarray | None:
    a1, sep, a2 = b[:, 0], b[:, 1], b[:, 2]
    phased_or_not = ((sep == ord("|")) | (sep == ord("/"))) & (b[:, 3] == ord("\t"))
    miss = (a1 == _DOT) | (a2 == _DOT)
    d1, d2 = a1.astype(np.int16) - _ZERO, a2.astype(np.int16) - _ZERO
    digits = ((d1 >= 0) & (d1 <= 9) | (a1 == _DOT)) & ((d2 >= 0) & (d2 <= 9) | (a2 == _DOT))
    if not (phased_or_not.all() and digits.all()):
        return None
    if ((~miss) & ((d1 >= n_alleles) | (d2 >= n_alleles))).any():
        return None  # let the general path name the bad genotype
    n_alt = (d1 == alt_index).astype(np.int8) + (d2 == alt_index).astype(np.int8)
    return np.where(miss, np.int8(GT_MISSING), n_alt).astype(np.int8)


# Genotype probabilities of each code: one-hot, and no weight at all for a missing call.
_ONE_HOT = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)


def _general_calls(
    fields: list[bytes], n_alleles: int, alt_index: int
) -> tuple[np.ndarray, np.ndarray | None]:
    cells = fields[9].split(b"\t")
    keys = fields[8].split(b":")
    soft = _dosage_fields(fields[9], cells, keys, n_alleles, alt_index)  # [n, 4] or None
    codes = np.full(len(cells), GT_MISSING, dtype=np.int8)
    if keys[0] == b"GT":
        gts = np.char.partition(np.array(cells), b":")[:, 0]
        uniq, inverse = np.unique(gts, return_inverse=True)
        lut = np.array([gt_code(u.decode(), n_alleles, alt_index) for u in uniq], dtype=np.int8)
        codes = lut[inverse]
    if soft is None:
        return codes, None
    # Without a GT call, the dosage's nearest genotype: a call is missing only where both are.
    d = soft[:, 3]
    nearest = np.minimum(2, np.floor(np.nan_to_num(d) + 0.5)).astype(np.int8)
    codes = np.where((codes == GT_MISSING) & ~np.isnan(d), nearest, codes).astype(np.int8)
    absent = np.isnan(soft[:, 3])[:, None]
    return codes, np.where(absent, _ONE_HOT[codes], soft[:, :3]).astype(np.float32)


def _dosage_fields(
    body: bytes, cells: list[bytes], keys: list[bytes], n_alleles: int, alt_index: int
) -> np.ndarray | None:
    """Per sample (P(0), P(1), P(2), expected dosage) float64 from GP where given, else DS;
    NaN rows where neither is; None when the record has neither field.

    Imputed values are nearly all distinct, so they are parsed as arrays (numpy's own float
    parser), not per distinct string as GT is; a value that fails there is parsed again one
    at a time, which names it."""
    if b"DS" not in keys and b"GP" not in keys:
        return None
    out = np.full((len(cells), 4), np.nan)
    if b"DS" in keys:
        d = _ds_dosages(_format_field(body, cells, keys, b"DS"), n_alleles, alt_index)
        out[:, :3] = dosage_probs(d)
        out[:, 3] = d
    if b"GP" in keys:  # GP last: it overrides DS where a sample has both
        p = _gp_matrix(_format_field(body, cells, keys, b"GP"), n_alleles)
        have = ~np.isnan(p[:, 0])
        out[have, :3] = p[have]
        out[have, 3] = p[have, 1] + 2 * p[have, 2]
    return out


def _format_field(body: bytes, cells: list[bytes], keys: list[bytes], key: bytes) -> np.ndarray:
    """Field `key` of every sample's cell, bytes ("." where a cell stops short of it)."""
    k, width = keys.index(key), len(keys)
    flat = body.replace(b"\t", b":").split(b":")
    if len(flat) == len(cells) * width and (
            np.char.count(np.array(cells), b":") == width - 1).all():
        return np.array(flat[k::width])
    return np.array([c.split(b":")[k] if c.count(b":") >= k else b"." for c in cells])


def _nan_if_none(value: float | None) -> float:
    return np.nan if value is None else value


def _absent(values: np.ndarray) -> np.ndarray:
    return (values == b".") | (values == b"")


def _ds_dosages(values: np.ndarray, n_alleles: int, alt_index: int) -> np.ndarray:
    """Expected dosages float64 [n] of DS values (NaN where missing)."""
    if n_alleles == 2:
        try:
            d = np.where(_absent(values), b"nan", values).astype(np.float64)
        except ValueError:
            d = None
        if d is not None and not ((d < 0) | (d > 2)).any():  # NaN compares False
            return d
    uniq, inverse = np.unique(values, return_inverse=True)  # names a bad value, or Number=A
    lut = np.array([_nan_if_none(_ds_value(u.decode(), n_alleles, alt_index)) for u in uniq])
    return lut[inverse]


def _gp_matrix(values: np.ndarray, n_alleles: int) -> np.ndarray:
    """Genotype probabilities float64 [n, 3] of GP values, normalized (NaN where missing)."""
    out = np.full((len(values), 3), np.nan)
    if n_alleles != 2:
        return out  # multi-allelic GP: missing
    present = ~_absent(values)
    flat = b",".join(values[present].tolist()).split(b",")
    p = None
    if len(flat) == 3 * int(present.sum()):
        try:
            p = np.array(flat).astype(np.float64).reshape(-1, 3)
        except ValueError:
            p = None
        if p is not None and not ((p >= 0) & (p <= 1.0001)).all():
            p = None
    if p is None:  # one at a time, to name the malformed value
        p = np.array([_gp_probs(v.decode(), n_alleles) or (np.nan,) * 3
                      for v in values[present]], dtype=float).reshape(-1, 3)
    else:
        total = p[:, 0] + p[:, 1] + p[:, 2]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(total[:, None] > 0, p / total[:, None], np.nan)
    out[present] = p
    return out


def _hard_call(dosage: float) -> int:
    """The genotype nearest an expected ALT dosage in [0, 2] (0.5 and 1.5 round up)."""
    if not 0.0 <= dosage <= 2.0:
        raise ValueError(f"dosage {dosage:g} outside [0, 2]")
    return (GT_HOM_REF, GT_HET, GT_HOM_ALT)[min(2, int(dosage + 0.5))]


def dosage_probs(dosage: np.ndarray) -> np.ndarray:
    """Genotype weights [n, 3] of expected ALT dosages [n] without GP: linear interpolation
    between the two nearest genotypes (0.6 -> 0.4 hom-ref + 0.6 het), whose own expected
    dosage is the dosage again, and which is one-hot at 0, 1 and 2."""
    low = dosage <= 1.0
    return np.stack([np.where(low, 1.0 - dosage, 0.0), np.where(low, dosage, 2.0 - dosage),
                     np.where(low, 0.0, dosage - 1.0)], axis=-1)


def _ds_value(ds: str, n_alleles: int, alt_index: int) -> float | None:
    values = ds.split(",")
    if len(values) != n_alleles - 1:
        raise ValueError(f"DS {ds!r} does not hold one dosage per ALT allele")
    value = values[alt_index - 1]
    if value in (".", ""):
        return None
    try:
        dosage = float(value)
        _hard_call(dosage)  # the range check
    except ValueError as err:
        raise ValueError(f"malformed dosage DS={ds!r} ({err})") from None
    return dosage


def ds_code(ds: str, n_alleles: int, alt_index: int) -> int:
    """Genotype code from a DS field (Number=A: one expected dosage per ALT allele)."""
    d = _ds_value(ds, n_alleles, alt_index)
    return GT_MISSING if d is None else _hard_call(d)


def _gp_probs(gp: str, n_alleles: int) -> tuple[float, float, float] | None:
    """Biallelic GP normalized to sum 1 (they are written rounded); None when missing,
    multi-allelic or all zero."""
    if gp in (".", "") or n_alleles != 2:
        return None
    try:
        p = [float(v) for v in gp.split(",")]
    except ValueError:
        raise ValueError(f"malformed genotype probabilities GP={gp!r}") from None
    if len(p) != 3 or any(not 0 <= v <= 1.0001 for v in p):
        raise ValueError(f"GP={gp!r} is not three probabilities (diploid, biallelic)")
    total = sum(p)
    if total == 0:
        return None
    return (p[0] / total, p[1] / total, p[2] / total)


def gp_code(gp: str, n_alleles: int, alt_index: int) -> int:
    """Genotype code from a biallelic GP field (P(0/0), P(0/1), P(1/1)): the expected dosage
    P(0/1) + 2 P(1/1), as a hard call. Multi-allelic GP is read as missing."""
    p = _gp_probs(gp, n_alleles)
    return GT_MISSING if p is None else _hard_call(min(2.0, p[1] + 2 * p[2]))


def expected_dosage(genotypes: np.ndarray) -> np.ndarray:
    """Expected ALT dosage float32 [N, T], NaN where missing, of codes [N, T] or genotype
    probabilities [N, T, 3] (a model input, `PanelGenotypes.model_input`)."""
    probs = _ONE_HOT[genotypes] if genotypes.ndim == 2 else genotypes
    d = probs[..., 1] + 2 * probs[..., 2]
    return np.where(probs.sum(axis=-1) > 0, d, np.nan).astype(np.float32)


def open_reference(path: str | Path) -> pysam.FastaFile:
    """The reference FASTA, read through its existing index: pysam would otherwise write a .fai
    into the site's data folder, which genofed never writes into."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "reference FASTA not found")
    if not Path(f"{path}.fai").is_file():
        raise InputError(path, "no .fai index next to the reference FASTA (create it with "
                               "`samtools faidx`; genofed writes nothing into the data folder)")
    try:
        return pysam.FastaFile(str(path))
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot open reference FASTA ({err})") from err


def canonical_contig(name: str) -> str:
    """One spelling per contig: no `chr` prefix, the mitochondrion as `MT`."""
    bare = name[3:] if name.lower().startswith("chr") else name
    return "MT" if bare.upper() in ("M", "MT") else bare


def contig_alias(name: str, available: Iterable[str]) -> str | None:
    """The VCF's name for a panel contig: the same, or with/without the `chr` prefix."""
    available = set(available)
    if name in available:
        return name
    bare = name[3:] if name.lower().startswith("chr") else name
    candidates = [bare, "chr" + bare]
    if bare.upper() in ("M", "MT"):
        candidates += ["MT", "M", "chrM", "chrMT"]
    return next((c for c in candidates if c in available), None)


def normalize(
    pos: int, ref: str, alt: str, fasta: pysam.FastaFile | None = None, chrom: str | None = None
) -> tuple[int, str, str]:
    """Parsimonious, left-aligned (when a reference is given) representation of one allele pair.

    Same idea as `bcftools norm`: trim the shared suffix, then the shared prefix (keeping one
    anchor base for indels), then shift an indel left while its last bases agree.
    """
    ref, alt = ref.upper(), alt.upper()
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    if fasta is not None and chrom is not None and len(ref) != len(alt):
        while pos > 1 and ref[-1] == alt[-1]:
            base = fasta.fetch(chrom, pos - 2, pos - 1).upper()
            if not base:
                break
            ref, alt, pos = base + ref[:-1], base + alt[:-1], pos - 1
    return pos, ref, alt


def _palindromic(ref: str, alt: str) -> bool:
    return len(ref) == len(alt) == 1 and ref.translate(_COMPLEMENT) == alt


@dataclass
class PanelGenotypes:
    """Harmonized genotype codes at the panel variants, and how each variant was matched."""

    codes: np.ndarray  # [N, T] int8
    found: np.ndarray  # [T] bool
    how: list[str] = field(default_factory=list)  # per variant: see MATCH_KINDS
    # [N, T, 3] float32 P(0, 1, 2 ALT copies), zeros where missing: only when some call is
    # fractional (DS or GP), else None and the codes say it all.
    probs: np.ndarray | None = None

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.how))

    @property
    def model_input(self) -> np.ndarray:
        """What the model reads (`shared.model`): the probabilities where there are any, else
        the codes, so hard-call data reaches the model exactly as codes."""
        return self.codes if self.probs is None else self.probs

    @property
    def dosage(self) -> np.ndarray:
        """Expected ALT dosage [N, T] float32, NaN where missing."""
        return expected_dosage(self.model_input)


def soft_columns(codes: np.ndarray, soft: dict[int, np.ndarray]) -> np.ndarray | None:
    """Genotype probabilities [N, T, 3] of codes [N, T], with the columns read from DS/GP
    (`soft`: panel index -> [N, 3]) in place; None when those are just their codes."""
    if all(np.array_equal(p, _ONE_HOT[codes[:, j]]) for j, p in soft.items()):
        return None
    probs = _ONE_HOT[codes]
    for j, p in soft.items():
        probs[:, j] = p
    return probs



_CHECK_CELLS = 1 << 22  # codes checked at once: a biobank's codes are never copied whole


def require_calls(codes: np.ndarray, found: np.ndarray, vcf_path: Path) -> None:
    """Refuse genotypes a model cannot learn from: no panel variant in the VCF, or every call
    at the ones found missing (no GT, DS or GP a reader understands)."""
    if not found.any():
        raise InputError(vcf_path, "no panel variant is present in this VCF")
    rows = max(1, _CHECK_CELLS // max(1, codes.shape[1]))
    if all((codes[lo:lo + rows, found] == GT_MISSING).all() for lo in range(0, len(codes), rows)):
        raise InputError(vcf_path, f"every call at the {int(found.sum())} panel variant(s) "
                                   "found is missing (FORMAT without GT, DS or GP?)")


MATCH_KINDS = ("same", "swapped", "strand-flipped", "strand-flipped+swapped", "low-quality",
               "missing")
# When several records or alleles could describe a panel variant, the exact match wins, then the
# fallbacks in this order.
_RANK = {kind: rank for rank, kind in enumerate(MATCH_KINDS[:4])}
# INFO keys of imputation quality: minimac's R2, Beagle's DR2, IMPUTE's INFO.
QUALITY_KEYS = ("R2", "DR2", "INFO")


def imputation_quality(rec: pysam.VariantRecord, alt_index: int) -> float | None:
    """The record's imputation quality for this ALT allele; None when it states none."""
    for key in QUALITY_KEYS:
        if key in rec.header.info and key in rec.info:
            value = rec.info[key]
            if isinstance(value, tuple):
                value = value[alt_index - 1] if len(value) >= alt_index else None
            try:
                return None if value is None else float(value)
            except (TypeError, ValueError):
                return None
    return None


def match_alleles(
    target: tuple[int, str, str], rec_norm: tuple[int, str, str]
) -> str | None:
    """How a normalized record allele pair relates to the normalized panel variant."""
    pos, ref, alt = target
    rpos, rref, ralt = rec_norm
    if rpos != pos:
        return None
    if (rref, ralt) == (ref, alt):
        return "same"
    if (rref, ralt) == (alt, ref):
        return "swapped"
    if _palindromic(ref, alt):
        return None  # strand cannot be told from a swap: never flip A/T or C/G
    cref, calt = rref.translate(_COMPLEMENT), ralt.translate(_COMPLEMENT)
    if (cref, calt) == (ref, alt):
        return "strand-flipped"
    if (cref, calt) == (alt, ref):
        return "strand-flipped+swapped"
    return None


Target = tuple[int, str, str]
Hit = tuple[pysam.VariantRecord, int, str]


def plausible_match(kind: str, rec_norm: Target, fasta: pysam.FastaFile | None,
               contig: str | None) -> bool:
    """Whether a non-exact match can be the panel variant at all.

    A record whose REF is the reference genome's sequence describes its own variant: a VCF
    that swapped REF and ALT (PLINK's major-allele exports) has a REF that disagrees with the
    reference. So an insertion C>CA is never a panel deletion CA>C "swapped". Without the
    reference, an indel is never taken as swapped or flipped (it cannot be told apart); an SNV
    may be (its REF would have to differ from the panel's REF, which matches the reference).
    """
    if kind == "same":
        return True
    pos, ref, alt = rec_norm
    if fasta is None or contig is None:
        return len(ref) == len(alt) == 1
    return fasta.fetch(contig, pos - 1, pos - 1 + len(ref)).upper() != ref


def better_hit(hit: Hit | None, rec: pysam.VariantRecord, index: int, kind: str) -> Hit:
    """The better of the best match so far and a new one (the first among equals)."""
    if hit is None or _RANK[kind] < _RANK[hit[2]]:
        return rec, index, kind
    return hit


def is_gvcf(vf: pysam.VariantFile) -> bool:
    """A genomic VCF (reference blocks): not genotypes at the panel's variants."""
    header = str(vf.header)
    return "##GVCFBlock" in header or "ID=NON_REF" in header or "ID=<NON_REF>" in header


def harmonize_panel_genotypes(
    vcf_path: str | Path | Sequence[Path],
    panel: Panel,
    samples: list[str],
    fasta_path: str | Path | None = None,
    min_quality: float = 0.0,
) -> PanelGenotypes:
    """Genotype codes of `samples` at every panel variant, harmonized to the panel's alleles.

    Panel variants absent from the VCF are all-missing (code 3). Sample order follows
    `samples`, which must all be in the VCF header. A contig with many panel variants is read
    in one pass over the panel's span; a sparse one with a region fetch per variant. A PLINK
    fileset (`vcf_path` ending .bed or .pgen) is read by `shared.plink`, harmonized alike.
    With `min_quality`, a variant whose record states an imputation quality (INFO R2, DR2 or
    INFO) below it is left missing ("low-quality"); PLINK files state none. Several files
    (per-chromosome VCF/BCFs) are read as one by `shared.per_chromosome`. A panel with
    positions for several builds is looked up at the reference's build's (`Panel.on_build`).
    Each record is decoded as the reader passes it, so reading holds the result and one record
    at a time; a large read logs its progress (`shared.progress`).
    """
    if panel.build_pos and fasta_path is not None:
        from shared.builds import reference_build

        lookup, swapped = panel.on_build(reference_build(fasta_path))
        result = harmonize_panel_genotypes(vcf_path, replace(lookup, build_pos=None), samples,
                                           fasta_path, min_quality)
        result.codes[:, swapped] = FLIP[result.codes[:, swapped]]  # counts of the panel's ALT
        return result
    if not isinstance(vcf_path, str | Path):
        from shared.per_chromosome import harmonize_files

        return harmonize_files([Path(p) for p in vcf_path], panel, samples, fasta_path,
                               min_quality)
    vcf_path = Path(vcf_path)
    from shared.plink import harmonize_plink, is_plink  # plink reads through this module

    if is_plink(vcf_path):
        fasta = open_reference(fasta_path) if fasta_path else None
        try:
            return harmonize_plink(vcf_path, panel, samples, fasta)
        finally:
            if fasta is not None:
                fasta.close()
    previous = pysam.set_verbosity(0)  # htslib's warnings would leak past our one-line errors
    try:
        vf = pysam.VariantFile(str(vcf_path))
    except (OSError, ValueError) as err:
        raise InputError(vcf_path, f"cannot open VCF/BCF ({err})") from err
    finally:
        pysam.set_verbosity(previous)
    fasta = open_reference(fasta_path) if fasta_path else None
    try:
        if is_gvcf(vf):
            raise InputError(vcf_path, "a gVCF (reference blocks, <NON_REF>): genotype it first, "
                                       "e.g. `gatk GenotypeGVCFs` or `bcftools convert "
                                       "--gvcf2vcf --fasta-ref reference.fa`")
        where = {s: i for i, s in enumerate(vf.header.samples)}
        absent = [s for s in samples if s not in where]
        if absent:
            raise InputError(vcf_path, "sample in the cohort table but not the VCF", absent[0])
        result = PanelGenotypes(
            np.full((len(samples), len(panel)), GT_MISSING, dtype=np.int8),
            np.zeros(len(panel), dtype=bool), ["missing"] * len(panel),
        )
        cols = np.array([where[s] for s in samples], dtype=np.int64)
        sink = _Columns(result, cols, min_quality, vcf_path,
                        Progress(log, f"reading {vcf_path.name}", len(panel),
                                 len(panel) * len(samples)))
        for contig, fa_contig, targets in _targets_by_contig(vf, panel, fasta):
            ref_fa = fasta if fa_contig else None
            if len(targets) >= _SCAN_MIN_VARIANTS:
                _scan(vf, contig, targets, ref_fa, fa_contig, sink)
            else:
                _fetch_each(vf, contig, targets, ref_fa, fa_contig, sink)
            sink.next_contig(len(targets))
        sink.progress.update(len(panel))
    finally:
        vf.close()
        if fasta is not None:
            fasta.close()
    result.probs = soft_columns(result.codes, sink.soft)
    return result


_SCAN_MIN_VARIANTS = 64  # panel variants on a contig above which one pass beats many fetches


class _Columns:
    """Writes a panel variant's codes as soon as a record matches it better than any before.

    Decoding as the records stream past, rather than once the scan ends, keeps no record
    alive: a biobank's matched records would otherwise be a second copy of its genotypes.
    A record superseded by a better match later (rare: the exact match wins) is simply
    overwritten. Also counts panel variants passed, for the progress lines.
    """

    def __init__(self, result: PanelGenotypes, cols: np.ndarray, min_quality: float,
                 path: Path, progress: Progress) -> None:
        self.result, self.cols, self.min_quality, self.path = result, cols, min_quality, path
        self.rank = np.full(len(result.found), len(_RANK), dtype=np.int8)
        self.progress, self.base = progress, 0
        self.soft: dict[int, np.ndarray] = {}  # panel index -> [N, 3] read from DS/GP

    def take(self, j: int, rec: pysam.VariantRecord, alt_index: int, kind: str) -> None:
        """Record `rec`'s allele `alt_index` as panel variant j if it matches better (`kind`)
        than what j holds; the first among equals stays, as in `better_hit`."""
        if _RANK[kind] >= self.rank[j]:
            return
        self.rank[j] = _RANK[kind]
        result = self.result
        if self.min_quality > 0:  # the site's filter on imputation quality
            quality = imputation_quality(rec, alt_index)
            if quality is not None and quality < self.min_quality:
                result.codes[:, j] = GT_MISSING
                result.found[j] = False
                result.how[j] = "low-quality"
                self.soft.pop(j, None)
                return
        try:
            codes, probs = record_calls(rec, alt_index=alt_index)
        except ValueError as err:
            raise InputError(self.path, str(err), f"{rec.chrom}:{rec.pos}") from err
        codes = codes[self.cols]
        swapped = kind.endswith("swapped")
        result.codes[:, j] = FLIP[codes] if swapped else codes
        if probs is None:
            self.soft.pop(j, None)
        else:  # a swap reverses them: P(0 ALT) is P(2 REF)
            self.soft[j] = probs[self.cols, ::-1] if swapped else probs[self.cols]
        result.found[j] = True
        result.how[j] = kind

    def passed(self, n: int) -> None:
        """n panel variants of the current contig are behind the reader."""
        self.progress.update(self.base + n)

    def next_contig(self, n: int) -> None:
        self.base += n
        self.progress.update(self.base)


def _targets_by_contig(
    vf: pysam.VariantFile, panel: Panel, fasta: pysam.FastaFile | None
) -> list[tuple[str, str | None, dict[int, Target]]]:
    """Normalized panel variants, grouped under the VCF's (and the FASTA's) contig names."""
    contigs = set(vf.header.contigs)
    fa_names = set(fasta.references) if fasta else set()
    groups: dict[str, tuple[str | None, dict[int, Target]]] = {}
    for j, (chrom, pos, ref, alt) in enumerate(
        zip(panel.chrom, panel.pos, panel.ref, panel.alt, strict=True)
    ):
        contig = contig_alias(str(chrom), contigs)
        if contig is None:
            continue
        fa_contig = contig_alias(str(chrom), fa_names) if fasta else None
        target = normalize(int(pos), ref, alt, fasta if fa_contig else None, fa_contig)
        groups.setdefault(contig, (fa_contig, {}))[1][j] = target
    return [(c, fa, t) for c, (fa, t) in groups.items()]


def _alleles(rec: pysam.VariantRecord) -> list[tuple[int, str]]:
    """(allele index, ALT) pairs of a record that can match a sequence variant."""
    return [(i, a) for i, a in enumerate(rec.alts or (), start=1)
            if not a.startswith("<") and a not in ("*", ".")]


def _scan(
    vf: pysam.VariantFile, contig: str, targets: dict[int, Target],
    fasta: pysam.FastaFile | None, fa_contig: str | None, sink: _Columns,
) -> None:
    by_pos: dict[int, list[int]] = {}
    for j, t in targets.items():
        by_pos.setdefault(t[0], []).append(j)
    lo = min(t[0] for t in targets.values()) - 1 - INDEL_WINDOW
    hi = max(t[0] + len(t[1]) for t in targets.values()) + INDEL_WINDOW
    marks = sorted(t[0] for t in targets.values())
    for rec in records_in(vf, contig, max(0, lo), hi):
        sink.passed(bisect_right(marks, rec.pos))
        simple = len(rec.ref) == 1 and all(len(a) == 1 for a in rec.alts or ())
        if simple and rec.pos not in by_pos:
            continue  # a plain SNV normalizes to itself: nothing at this position
        for i, ralt in _alleles(rec):
            norm = normalize(rec.pos, rec.ref, ralt, fasta, fa_contig)
            for j in by_pos.get(norm[0], ()):
                kind = match_alleles(targets[j], norm)
                if kind is not None and plausible_match(kind, norm, fasta, fa_contig):
                    sink.take(j, rec, i, kind)


def _fetch_each(
    vf: pysam.VariantFile, contig: str, targets: dict[int, Target],
    fasta: pysam.FastaFile | None, fa_contig: str | None, sink: _Columns,
) -> None:
    for n, (j, target) in enumerate(targets.items()):
        sink.passed(n)
        snv = len(target[1]) == len(target[2]) == 1
        pad = 0 if snv else INDEL_WINDOW
        records = records_in(vf, contig, max(0, target[0] - 1 - pad),
                             target[0] + len(target[1]) + pad)
        hit = _best_match(records, target, fasta, fa_contig)
        if hit is not None:
            sink.take(j, *hit)


def records_in(vf: pysam.VariantFile, contig: str, start: int, end: int):  # noqa: ANN201
    """The records of a 0-based half-open region; a record htslib cannot parse is one
    `InputError` naming the file and where it is (htslib's own message is silenced)."""
    path = Path(str(vf.filename, "utf-8") if isinstance(vf.filename, bytes) else vf.filename)
    last = None
    try:
        records = vf.fetch(contig, start, end)
    except ValueError as err:
        raise InputError(path, f"cannot fetch region ({err})", f"{contig}:{start + 1}-{end}") \
            from None
    previous = pysam.set_verbosity(0)
    try:
        for rec in records:
            last = rec.pos
            yield rec
    except (ValueError, OSError) as err:
        where = f"{contig}:{start + 1}-{end}" if last is None else f"{contig}:{last} and on"
        raise InputError(path, f"a record htslib cannot parse ({err}: e.g. fewer sample "
                               "columns than the header names, or a missing column)",
                         where) from None
    finally:
        pysam.set_verbosity(previous)


def _best_match(
    records, target: Target, fasta: pysam.FastaFile | None, contig: str | None
) -> Hit | None:
    best: Hit | None = None
    for rec in records:
        for i, ralt in _alleles(rec):
            norm = normalize(rec.pos, rec.ref, ralt, fasta, contig)
            kind = match_alleles(target, norm)
            if kind is not None and plausible_match(kind, norm, fasta, contig):
                best = better_hit(best, rec, i, kind)
    return best


def read_panel_genotypes(
    vcf_path: str | Path, panel: Panel, samples: list[str], fasta_path: str | Path | None = None,
    min_quality: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Genotype codes [len(samples), len(panel)] int8 and a [len(panel)] bool 'found' mask."""
    result = harmonize_panel_genotypes(vcf_path, panel, samples, fasta_path, min_quality)
    return result.codes, result.found
