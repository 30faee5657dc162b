"""Reading a site's genotypes at the panel variants: harmonized, through pysam, vectorised.

Speed: pysam's per-sample accessor (`rec.samples[s]["GT"]`) manages about 1.4 M calls/s here;
parsing the record's text once with numpy about 30 M/s. We fetch each panel variant through the
tabix/CSI index (region fetch), split the record's sample columns, and map each distinct GT
string to a genotype code once, so the cost is per record, not per person.

Harmonization: a hospital's VCF describes the coordinator's panel variant in its own way. We match
on normalized alleles (common suffix and prefix trimmed, indels left-aligned against the
reference when one is given); an exact match wins over every fallback, and a fallback is taken
only where it is plausible (`_plausible`: never for a record whose REF is the reference's own
sequence, so a neighbouring insertion is never read as a swapped deletion). We accept
  - contig names with or without the `chr` prefix (`chr22` = `22`, `chrM` = `MT`);
  - REF/ALT swapped relative to the panel: the alt dosage is flipped (0 <-> 2);
  - the opposite strand (alleles complemented), unless the SNV is strand-ambiguous;
  - multi-allelic records, taken as if split (`bcftools norm -m-`): the dosage counts the
    matching ALT allele; other ALT alleles count as not-that-allele.
Rule for A/T and C/G SNVs: a VCF's alleles are on the reference forward strand (its REF is
checked against the FASTA), so these are matched as given or swapped, never strand-flipped; a
flip cannot be told from a swap there.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

from shared.errors import InputError
from shared.panel import Panel
from shared.plink import harmonize_plink, is_plink
from shared.progress import Progress
from shared.tokenizer import GT_HET, GT_HOM_ALT, GT_HOM_REF, GT_MISSING

_COMPLEMENT = str.maketrans("ACGT", "TGCA")
_FLIP = np.array([GT_HOM_ALT, GT_HET, GT_HOM_REF, GT_MISSING], dtype=np.int8)
_INDEL_WINDOW = 50  # bp searched around a panel indel for other representations
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
    """Genotype codes [n_samples] int8 of one record, parsed from its text in one pass.

    Fast path: a GT-only record whose calls are all diploid single digits ("0|1") is a fixed
    width byte array, decoded with numpy arithmetic. Anything else (other FORMAT fields,
    haploid or multi-digit alleles) takes the general path: each distinct GT string once.
    """
    text = str(rec).encode()
    fields = text.rstrip(b"\n").split(b"\t", 9)
    if len(fields) <= 9:
        return np.empty(0, dtype=np.int8)
    n = len(rec.samples)
    body = fields[9]
    if fields[8] == b"GT" and len(body) == 4 * n - 1 and alt_index < 10:
        codes = _fast_diploid(np.frombuffer(body + b"\t", dtype=np.uint8).reshape(n, 4),
                              len(rec.alleles), alt_index)
        if codes is not None:
            return codes
    return _general_codes(fields, len(rec.alleles), alt_index)


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


def _general_codes(fields: list[bytes], n_alleles: int, alt_index: int) -> np.ndarray:
    cells = np.array(fields[9].split(b"\t"))
    keys = fields[8].split(b":")
    if keys[0] == b"GT":
        gts = np.char.partition(cells, b":")[:, 0]
        uniq, inverse = np.unique(gts, return_inverse=True)
        lut = np.array([gt_code(u.decode(), n_alleles, alt_index) for u in uniq], dtype=np.int8)
        return lut[inverse]
    # No GT: an imputation server's dosages (minimac `--format DS`, or GP), as hard calls.
    for key, code in ((b"DS", ds_code), (b"GP", gp_code)):
        if key in keys:
            k = keys.index(key)
            values = np.array([c.split(b":")[k] if c.count(b":") >= k else b"."
                               for c in cells.tolist()])
            uniq, inverse = np.unique(values, return_inverse=True)
            lut = np.array([code(u.decode(), n_alleles, alt_index) for u in uniq], dtype=np.int8)
            return lut[inverse]
    return np.full(len(cells), GT_MISSING, dtype=np.int8)


def _hard_call(dosage: float) -> int:
    """The genotype nearest an expected ALT dosage in [0, 2] (0.5 and 1.5 round up)."""
    if not 0.0 <= dosage <= 2.0:
        raise ValueError(f"dosage {dosage:g} outside [0, 2]")
    return (GT_HOM_REF, GT_HET, GT_HOM_ALT)[min(2, int(dosage + 0.5))]


def ds_code(ds: str, n_alleles: int, alt_index: int) -> int:
    """Genotype code from a DS field (Number=A: one expected dosage per ALT allele)."""
    values = ds.split(",")
    if len(values) != n_alleles - 1:
        raise ValueError(f"DS {ds!r} does not hold one dosage per ALT allele")
    value = values[alt_index - 1]
    if value in (".", ""):
        return GT_MISSING
    try:
        return _hard_call(float(value))
    except ValueError as err:
        raise ValueError(f"malformed dosage DS={ds!r} ({err})") from None


def gp_code(gp: str, n_alleles: int, alt_index: int) -> int:
    """Genotype code from a biallelic GP field (P(0/0), P(0/1), P(1/1)): the expected dosage
    P(0/1) + 2 P(1/1), as a hard call. Multi-allelic GP is read as missing."""
    if gp in (".", "") or n_alleles != 2:
        return GT_MISSING
    try:
        p = [float(v) for v in gp.split(",")]
    except ValueError:
        raise ValueError(f"malformed genotype probabilities GP={gp!r}") from None
    if len(p) != 3 or any(not 0 <= v <= 1.0001 for v in p):
        raise ValueError(f"GP={gp!r} is not three probabilities (diploid, biallelic)")
    return _hard_call(min(2.0, p[1] + 2 * p[2]))


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

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.how))



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


def _match(
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


def _plausible(kind: str, rec_norm: Target, fasta: pysam.FastaFile | None,
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


def _better(hit: Hit | None, rec: pysam.VariantRecord, index: int, kind: str) -> Hit:
    """The better of the best match so far and a new one (the first among equals)."""
    if hit is None or _RANK[kind] < _RANK[hit[2]]:
        return rec, index, kind
    return hit


def is_gvcf(vf: pysam.VariantFile) -> bool:
    """A genomic VCF (reference blocks): not genotypes at the panel's variants."""
    header = str(vf.header)
    return "##GVCFBlock" in header or "ID=NON_REF" in header or "ID=<NON_REF>" in header


def harmonize_panel_genotypes(
    vcf_path: str | Path,
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
    INFO) below it is left missing ("low-quality"); PLINK files state none. Each record is
    decoded as the reader passes it, so reading holds the result and one record at a time; a
    large read logs its progress (`shared.progress`).
    """
    vcf_path = Path(vcf_path)
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

    def take(self, j: int, rec: pysam.VariantRecord, alt_index: int, kind: str) -> None:
        """Record `rec`'s allele `alt_index` as panel variant j if it matches better (`kind`)
        than what j holds; the first among equals stays, as in `_better`."""
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
                return
        try:
            codes = record_codes(rec, alt_index=alt_index)[self.cols]
        except ValueError as err:
            raise InputError(self.path, str(err), f"{rec.chrom}:{rec.pos}") from err
        result.codes[:, j] = _FLIP[codes] if kind.endswith("swapped") else codes
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
    lo = min(t[0] for t in targets.values()) - 1 - _INDEL_WINDOW
    hi = max(t[0] + len(t[1]) for t in targets.values()) + _INDEL_WINDOW
    marks = sorted(t[0] for t in targets.values())
    for rec in records_in(vf, contig, max(0, lo), hi):
        sink.passed(bisect_right(marks, rec.pos))
        simple = len(rec.ref) == 1 and all(len(a) == 1 for a in rec.alts or ())
        if simple and rec.pos not in by_pos:
            continue  # a plain SNV normalizes to itself: nothing at this position
        for i, ralt in _alleles(rec):
            norm = normalize(rec.pos, rec.ref, ralt, fasta, fa_contig)
            for j in by_pos.get(norm[0], ()):
                kind = _match(targets[j], norm)
                if kind is not None and _plausible(kind, norm, fasta, fa_contig):
                    sink.take(j, rec, i, kind)


def _fetch_each(
    vf: pysam.VariantFile, contig: str, targets: dict[int, Target],
    fasta: pysam.FastaFile | None, fa_contig: str | None, sink: _Columns,
) -> None:
    for n, (j, target) in enumerate(targets.items()):
        sink.passed(n)
        snv = len(target[1]) == len(target[2]) == 1
        pad = 0 if snv else _INDEL_WINDOW
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
            kind = _match(target, norm)
            if kind is not None and _plausible(kind, norm, fasta, contig):
                best = _better(best, rec, i, kind)
    return best


def read_panel_genotypes(
    vcf_path: str | Path, panel: Panel, samples: list[str], fasta_path: str | Path | None = None,
    min_quality: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Genotype codes [len(samples), len(panel)] int8 and a [len(panel)] bool 'found' mask."""
    result = harmonize_panel_genotypes(vcf_path, panel, samples, fasta_path, min_quality)
    return result.codes, result.found
