"""`genofed site check`: validate a hospital's data before it joins a federation.

A data steward runs this beside the site's files. It reads everything, writes nothing (no index,
no .fai, no cache), and returns a `CheckReport`: a JSON-ready summary and one `Finding` per
problem, each a single line naming the file, the record (line, sample id or chrom:pos) and what
is wrong. It never raises for bad input: every read failure becomes a Finding.

Levels (`ok` means no error):
- **error** blocks joining.
  VCF/BCF: not found; unreadable; plain gzip or uncompressed (cannot be indexed); truncated
  (htslib read error while iterating the whole file, or no BGZF end-of-file marker); no index
  (.tbi/.csi; a BCF needs .csi); stale index (older than the file, whole seconds as htslib
  compares, or records fetched back through it do not come back); unsorted records (position
  decreasing within a contig, or a contig resumed later); no `##contig` lines, or records on an
  undeclared contig; records on a contig the FASTA lacks; REF disagreeing with the FASTA (first
  chrom:pos and the count); a genotype with an allele index out of range, or malformed (chrom:pos
  and sample); no records; a sample twice in the header.
  Cohort table: whatever `read_cohort` rejects (duplicated sample, phenotype neither case nor
  control, unknown ancestry label, ...), named by line.
  Panel: whatever `read_panel` rejects (malformed row, ...), a contig the FASTA lacks, a panel
  REF disagreeing with the FASTA.
  Reference: FASTA or its .fai (or a compressed FASTA's .gzi) missing (we never build them).
  Across files: a cohort-table sample missing from the VCF header (that person could not be
  encoded); no VCF sample in the table; none of the panel variants in the VCF.
- **warning** does not block: a VCF sample not among the cohort table's people (simply unused;
  the error above instead when *no* sample matches); contig names differing only by the `chr`
  prefix between VCF, panel and FASTA (harmonized when genotypes are read); some panel variants
  absent from the VCF; header contig lengths differing from the FASTA's (the REF check decides);
  a .fai older than its FASTA; samples or panel sites missing over 10% of their calls.
- **info**: what could not be computed because of an earlier error.

Speed: the VCF is read once, front to back, without the index (so truncation anywhere is
found). In that pass each record's REF is compared with the FASTA (a chunk of records against
one fetched reference window, vectorised) and its genotypes are parsed from the record text with
numpy (one-character alleles as a byte matrix, anything else by one lookup per distinct GT
string per chunk): per-sample missingness and out-of-range allele indices at about 30 M calls/s.
Panel genotypes (coverage, per-site missingness, per-ancestry allele frequencies) then come from
`harmonize_panel_genotypes`, exactly as training will read them: the frequencies from the expected
dosages the model reads (fractional where the VCF holds DS or GP).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pysam

from client.ancestry import (
    format_agreement,
    genetic_vocabulary,
    load_reference,
    reads_without_ancestry,
    uses_genetic,
)
from client.data import other_format
from shared.ancestry import UNASSIGNED, agreement, ancestry_path
from shared.builds import detect_build, require_build
from shared.cohort import DEFAULT_SPEC, read_cohort, relabel
from shared.errors import InputError
from shared.genotypes import (
    canonical_contig,
    contig_alias,
    is_gvcf,
    parse_gt,
    require_calls,
)
from shared.panel import Panel, read_panel
from shared.plink import PlinkFiles, is_plink
from shared.plink import read_samples as read_plink_samples
from shared.plink import read_variants as read_plink_variants

LEVELS = ("error", "warning", "info")
MISSING_THRESHOLD = 0.10  # share of missing calls above which a sample or site is flagged
MAX_LISTED = 10  # individual findings of one kind before "... and N more"
_CELLS_PER_CHUNK = 2_000_000  # genotype strings parsed at once (records x samples)
_MAX_CHUNK_RECORDS = 4096
_MAX_CHUNK_SPAN = 1_000_000  # bp of reference fetched at once for the REF check
_MAX_INDEX_PROBES = 64
_PROBE_EVERY = 5000  # records between index probes within a contig
_N = ord("N")
_BGZF_COMPRESSION = "BGZF"
# Fewer training cases (or controls) than this is worth a warning: the DP noise then drowns
# what one class can teach.
MIN_TRAINING_CLASS = 20


@dataclass
class Finding:
    """One problem: `level` is "error", "warning" or "info"."""

    level: str
    file: str
    record: str | None
    problem: str

    def line(self) -> str:
        """`<file>: <record>: <problem>` on one line (the record left out when there is none)."""
        where = ": ".join(p for p in (self.file, self.record) if p)
        text = " ".join(self.problem.split())
        return f"{where}: {text}" if where else text

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "file": self.file, "record": self.record,
                "problem": self.problem}


@dataclass
class CheckReport:
    findings: list[Finding]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors (warnings and infos do not fail a site)."""
        return not any(f.level == "error" for f in self.findings)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary,
                "findings": [f.to_dict() for f in self.findings]}


def check_site(
    vcf: str | Path | Sequence[Path],
    cohort: str | Path,
    panel: str | Path,
    reference: str | Path,
    *,
    cohort_spec: Any = None,
    min_quality: float = 0.0,
    min_group_size: float = 10.0,
    ancestry_groups: str = "auto",
) -> CheckReport:
    """Check a site's VCF/BCF, cohort table, panel and reference FASTA; never raises for bad data.

    `cohort_spec` is passed to `read_cohort` when given (default: its default column names and
    phenotype coding). Several `vcf` files are per-chromosome files, checked as one source.
    With the panel's ancestry reference beside it, the people's genetic
    ancestry labels are measured (`client.ancestry`, as `ancestry_groups` chooses them) and
    compared with the declared ones, cells under `min_group_size` withheld.
    """
    files = [Path(vcf)] if isinstance(vcf, str | Path) else [Path(p) for p in vcf]
    check = _SiteCheck(files[0], Path(cohort), Path(panel), Path(reference), cohort_spec)
    check.vcf_files = files
    check.min_quality = min_quality
    check.floor, check.groups = min_group_size, ancestry_groups
    previous = pysam.set_verbosity(0)  # htslib's own messages become Findings instead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check.run()
    finally:
        pysam.set_verbosity(previous)
    return check.report()


# --------------------------------------------------------------------------- helpers


def _stats(values: np.ndarray) -> dict[str, Any]:
    """min/median/max and how many exceed the missingness threshold (JSON-ready)."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {"n": 0, "min": None, "median": None, "max": None, "over_10pct": 0}
    return {
        "n": int(len(values)),
        "min": round(float(values.min()), 6),
        "median": round(float(np.median(values)), 6),
        "max": round(float(values.max()), 6),
        "over_10pct": int((values > MISSING_THRESHOLD).sum()),
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _gt_table(uniq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct GT string: (highest allele index or -1, is missing, is malformed)."""
    top = np.full(len(uniq), -1, dtype=np.int64)
    missing = np.zeros(len(uniq), dtype=bool)
    bad = np.zeros(len(uniq), dtype=bool)
    for k, gt in enumerate(uniq.tolist()):
        try:
            alleles = parse_gt(gt)  # as training reads it (shared.genotypes)
        except ValueError:
            bad[k] = True
            continue
        missing[k] = None in alleles
        called = [a for a in alleles if a is not None]
        if any(a < 0 for a in called):
            bad[k] = True
        elif called:
            top[k] = max(called)
    return top, missing, bad


def _mtime_s(path: Path) -> int:
    return int(path.stat().st_mtime)


def _raw_header(path: Path, limit: int = 256 << 20) -> list[str] | None:
    """The VCF/BCF header's text lines, read through htslib's BGZF reader (plain text too).

    Used only where htslib's parsed header cannot answer: which `##contig` lines the file itself
    declares (htslib adds contigs from a tabix index) and which sample a header that htslib
    refuses holds twice. None when the header cannot be read to its #CHROM line.
    """
    lines: list[str] = []
    size = 0
    try:
        with pysam.BGZFile(str(path), "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8", "replace").rstrip("\r\n\0")
                if not lines:
                    start = line.find("##")  # BCF: skip the binary magic and header length
                    line = line[start:] if start > 0 else line
                lines.append(line)
                size += len(raw)
                if line.startswith("#CHROM"):
                    return lines
                if size > limit or not line.startswith("#"):
                    return None
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------- the check


class _SiteCheck:
    def __init__(self, vcf: Path, cohort: Path, panel: Path, reference: Path, spec: Any) -> None:
        self.vcf_path, self.cohort_path = vcf, cohort
        self.panel_path, self.reference_path = panel, reference
        self.spec = spec
        self.findings: list[Finding] = []
        self.summary: dict[str, Any] = {
            "files": {"vcf": str(vcf), "cohort": str(cohort), "panel": str(panel),
                      "reference": str(reference)},
        }
        self.panel: Panel | None = None
        self.cohort: Any = None
        self.fasta: pysam.FastaFile | None = None
        self.fa_lengths: dict[str, int] = {}
        self.vcf_samples: list[str] | None = None
        self.plink = False  # the genotypes are a PLINK fileset (no VCF scan)
        self.min_quality = 0.0  # the site's imputation-quality filter (as training applies)
        self.floor = 10.0  # the site's small-group floor (min-group-size)
        self.groups = "auto"  # where ancestry groups come from ([ancestry] groups)
        self.vcf_readable = False  # opened and read to the end without an htslib error
        self.index_usable = False
        self.scan: _Scan | None = None
        self.vcf_files = [vcf]  # several: per-chromosome files (check_vcf_files)

    # ---- findings

    def add(self, level: str, path: Path | str | None, record: str | None, problem: str) -> None:
        self.findings.append(Finding(level, str(path) if path is not None else "", record,
                                     problem))

    def error(self, path: Path | str | None, record: str | None, problem: str) -> None:
        self.add("error", path, record, problem)

    def warning(self, path: Path | str | None, record: str | None, problem: str) -> None:
        self.add("warning", path, record, problem)

    def from_input_error(self, err: InputError, default: Path) -> None:
        record = err.record
        if any(f.level == "error" and f.file == (err.path or str(default)) and f.record == record
               and record is not None for f in self.findings):
            return  # the scan already reported this record
        self.error(err.path or default, record, err.problem)

    def listed(self, level: str, path: Path, items: list[str], problem: str, more: str) -> None:
        """One finding per item (record = the item), capped at MAX_LISTED, then a count."""
        for item in items[:MAX_LISTED]:
            self.add(level, path, item, problem)
        if len(items) > MAX_LISTED:
            self.add(level, path, None, f"... and {len(items) - MAX_LISTED} more {more}")

    def report(self) -> CheckReport:
        order = {level: i for i, level in enumerate(LEVELS)}
        findings = sorted(self.findings, key=lambda f: order.get(f.level, len(LEVELS)))
        counts = {level: sum(f.level == level for f in findings) for level in LEVELS}
        self.summary["findings"] = counts
        return CheckReport(findings, self.summary)

    # ---- the steps

    def run(self) -> None:
        try:
            self.check_panel()
            self.check_cohort()
            self.check_reference()
            self.check_panel_against_reference()
            self.check_vcf_files()
            self.check_samples()
            self.check_panel_genotypes()
        finally:
            if self.fasta is not None:
                self.fasta.close()

    def check_panel(self) -> None:
        try:
            self.panel = read_panel(self.panel_path)
        except InputError as err:
            self.from_input_error(err, self.panel_path)
            return
        except (OSError, ValueError) as err:
            self.error(self.panel_path, None, f"cannot read the panel ({err})")
            return
        chroms, counts = np.unique(self.panel.chrom, return_counts=True)
        self.summary["panel"] = {
            "variants": len(self.panel),
            "contigs": {str(c): int(n) for c, n in zip(chroms, counts, strict=True)},
            "sha256": self.panel.sha256,
        }

    def check_cohort(self) -> None:
        try:
            optional = reads_without_ancestry(self.groups, self.panel_path)
            self.cohort = read_cohort(self.cohort_path, self.spec, ancestry_optional=optional)
        except InputError as err:
            self.from_input_error(err, self.cohort_path)
            return
        except (OSError, ValueError) as err:
            self.error(self.cohort_path, None, f"cannot read the cohort table ({err})")
            return
        c = self.cohort
        pheno = np.asarray(c.phenotype)
        labels, counts = np.unique(np.asarray(c.ancestry, dtype=str), return_counts=True)
        splits, split_counts = np.unique(np.asarray(c.split, dtype=str), return_counts=True)
        self.summary["cohort"] = {
            "people": len(c),
            "phenotype": {
                "cases": int((pheno == 1).sum()),
                "controls": int((pheno == 0).sum()),
                "missing": int(getattr(c, "n_missing_phenotype", 0)) + int((pheno < 0).sum()),
            },
            "ancestry": ({str(a): int(n) for a, n in zip(labels, counts, strict=True)}
                         if c.ancestry_declared else {}),  # else: genetic, see check_ancestry
            "split": {str(s): int(n) for s, n in zip(splits, split_counts, strict=True)},
        }
        for label, value in (("cases", 1), ("controls", 0)):
            n_all = int((pheno == value).sum())
            n_train = int(((pheno == value) & (np.asarray(c.split) == "train")).sum())
            if n_all == 0:
                self.error(self.cohort_path, None,
                           f"no {label} among the {len(c)} people with a phenotype: a model "
                           "cannot learn from one class (is the phenotype coding right?)")
            elif n_train < MIN_TRAINING_CLASS:
                self.warning(self.cohort_path, None,
                             f"only {n_train} {label} in the training split: DP-SGD learns "
                             f"little from fewer than {MIN_TRAINING_CLASS}, and groups with "
                             "few held-out cases or controls are withheld from evaluations")

    def check_reference(self) -> None:
        path = self.reference_path
        fai = Path(f"{path}.fai")
        if not path.is_file():
            self.error(path, None, "reference FASTA not found")
            return
        if not fai.is_file():
            self.error(path, None, "no .fai index next to the reference FASTA "
                       "(create it with `samtools faidx`; the check writes nothing)")
            return
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        if compressed and not Path(f"{path}.gzi").is_file():
            self.error(path, None, "compressed reference FASTA without its .gzi index "
                       "(recompress with bgzip and run `samtools faidx`)")
            return
        if _mtime_s(fai) < _mtime_s(path):
            self.warning(fai, None, f"index is older than {path.name}: rebuild it with "
                         "`samtools faidx` if the FASTA changed")
        try:
            self.fasta = pysam.FastaFile(str(path))
        except (OSError, ValueError) as err:
            self.error(path, None, f"cannot open the reference FASTA ({err})")
            return
        self.fa_lengths = dict(zip(self.fasta.references, self.fasta.lengths, strict=True))
        self.summary["reference"] = {"contigs": dict(self.fa_lengths),
                                     "build": detect_build(self.fa_lengths)[0]}

    def check_panel_against_reference(self) -> None:
        """The panel's contigs and REF alleles must match the site's FASTA (as training needs)."""
        if self.panel is None or self.fasta is None:
            return
        # A panel with positions for the reference's build is looked up at those.
        p, _ = self.panel.on_build(detect_build(self.fa_lengths)[0])
        if p is not self.panel:
            self.summary.setdefault("panel", {})["positions"] = p.build
        try:  # a panel on another build than the reference: one line naming both
            require_build(p.build, self.fa_lengths, self.reference_path)
        except InputError as err:
            self.from_input_error(err, self.reference_path)
            return
        mismatches: list[tuple[str, str, str]] = []
        absent: dict[str, list[str]] = {}
        renamed: dict[str, str] = {}
        for chrom, pos, ref in zip(p.chrom, p.pos, p.ref, strict=True):
            chrom, pos = str(chrom), int(pos)
            contig = contig_alias(chrom, self.fa_lengths)
            if contig is None:
                absent.setdefault(chrom, []).append(f"{chrom}:{pos}")
                continue
            if contig != chrom:
                renamed[chrom] = contig
            end = pos - 1 + len(ref)
            if end > self.fa_lengths[contig]:
                mismatches.append((f"{chrom}:{pos}", ref, "no base (beyond the contig's end)"))
                continue
            base = self.fasta.fetch(contig, pos - 1, end).upper()
            if base != ref and "N" not in base:
                mismatches.append((f"{chrom}:{pos}", ref, base))
        for chrom, records in absent.items():
            self.error(self.panel_path, records[0],
                       f"contig {chrom} is not in the reference FASTA {self.reference_path.name} "
                       f"({len(records)} panel variant(s) on it)")
        for chrom, contig in renamed.items():
            self.warning(self.panel_path, None,
                         f"panel contig {chrom} is named {contig} in the reference FASTA "
                         "(harmonized when reading; consider renaming)")
        if mismatches:
            record, ref, base = mismatches[0]
            self.error(self.panel_path, record,
                       f"panel REF {ref} disagrees with the reference FASTA "
                       f"{self.reference_path.name}, which has {base} here; {len(mismatches)} "
                       "panel variant(s) disagree (another reference build?)")

    # ---- the VCF

    def _index_candidates(self, fmt: str) -> list[Path]:
        suffixes = (".csi",) if fmt == "BCF" else (".tbi", ".csi")
        return [Path(f"{self.vcf_path}{s}") for s in suffixes]

    def check_vcf(self) -> None:
        path = self.vcf_path
        info: dict[str, Any] = {}
        self.summary["vcf"] = info
        if is_plink(path):
            self._check_plink(info)
            return
        if not path.is_file():
            self.error(path, None, other_format(path.parent) or "VCF/BCF file not found")
            return
        try:
            vf = pysam.VariantFile(str(path), ignore_truncation=True)
        except NotImplementedError:
            self.error(path, None, "compressed with plain gzip, not bgzip: it cannot be indexed "
                       "(recompress with `bgzip` and index with `tabix -p vcf`)")
            return
        except (OSError, ValueError) as err:
            self._unreadable_header(err)
            return
        try:
            self._check_open_vcf(vf, info)
        finally:
            with contextlib.suppress(OSError, ValueError):
                vf.close()
        self._check_index(info)

    def check_vcf_files(self) -> None:
        """One VCF/BCF, or per-chromosome files: each checked as a VCF is, then as one source
        (the same samples in the same order; what each pass learnt summed up)."""
        if len(self.vcf_files) == 1:
            self.check_vcf()
            return
        from shared.per_chromosome import samples_differ

        first: tuple[Path, list[str]] | None = None
        merged: _Scan | None = None
        per_file: dict[str, Any] = {}
        readable = usable = True
        for path in self.vcf_files:
            self.vcf_path, self.scan, self.vcf_samples = path, None, None
            self.vcf_readable = self.index_usable = False
            self.check_vcf()
            per_file[str(path)] = self.summary["vcf"]
            readable, usable = readable and self.vcf_readable, usable and self.index_usable
            if self.vcf_samples is not None and first is None:
                first = (path, self.vcf_samples)
            elif self.vcf_samples is not None and first is not None:
                why = samples_differ(first[0], first[1], path, self.vcf_samples)
                if why is not None:
                    self.error(path, None, why)
                    usable = False
            merged = _merge_scans(merged, self.scan)
        self.vcf_path = self.vcf_files[0]
        self.vcf_samples = first[1] if first is not None else None
        self.scan, self.vcf_readable, self.index_usable = merged, readable, usable
        head = per_file[str(self.vcf_path)]
        self.summary["files"]["vcf"] = [str(p) for p in self.vcf_files]
        self.summary["vcf"] = {
            "format": head.get("format"), "compression": head.get("compression"),
            "index": head.get("index"), "files": per_file,
            "samples": len(self.vcf_samples or []),
            "records": sum(f.get("records", 0) for f in per_file.values()),
            "records_per_contig": {c: n for f in per_file.values()
                                   for c, n in (f.get("records_per_contig") or {}).items()},
            "ref_check": {k: sum((f.get("ref_check") or {}).get(k, 0) for f in per_file.values())
                          for k in ("checked", "mismatches", "swapped")},
        }

    def _check_plink(self, info: dict[str, Any]) -> None:
        """A PLINK fileset: its three files and its people; the panel's genotypes are then read
        by the same reader as training's (`check_panel_genotypes`)."""
        try:
            files = PlinkFiles.of(self.vcf_path)
            self.vcf_samples = read_plink_samples(files)
            variants = read_plink_variants(files)
        except InputError as err:
            self.from_input_error(err, self.vcf_path)
            return
        except (OSError, UnicodeDecodeError) as err:
            self.error(self.vcf_path, None, f"cannot read the PLINK fileset ({err})")
            return
        info.update(format="PLINK 1" if self.vcf_path.suffix == ".bed" else "PLINK 2",
                    samples=len(self.vcf_samples), records=len(variants.pos))
        self.plink = True

    def _unreadable_header(self, err: Exception) -> None:
        lines = _raw_header(self.vcf_path)
        if lines is not None:
            names = lines[-1].split("\t")[9:]
            seen: dict[str, int] = {}
            dups = []
            for col, name in enumerate(names, start=10):
                if name in seen:
                    dups.append((name, seen[name], col))
                seen.setdefault(name, col)
            for name, first, col in dups[:MAX_LISTED]:
                self.error(self.vcf_path, name,
                           f"sample listed twice in the VCF header (columns {first} and {col})")
            if len(dups) > MAX_LISTED:
                self.error(self.vcf_path, None,
                           f"... and {len(dups) - MAX_LISTED} more duplicated samples")
            if dups:
                self.summary["vcf"]["duplicated_samples"] = len(dups)
                return
        self.error(self.vcf_path, None, f"cannot be read as VCF/BCF ({err})")

    def _check_open_vcf(self, vf: pysam.VariantFile, info: dict[str, Any]) -> None:
        path = self.vcf_path
        fmt, compression = str(vf.format), str(vf.compression)
        info.update(format=fmt, compression=compression)
        if fmt not in ("VCF", "BCF"):
            self.error(path, None, f"not a VCF/BCF file (htslib sees {fmt})")
            return
        if compression != _BGZF_COMPRESSION:
            self.error(path, None, f"{fmt} is not bgzip-compressed ({compression}), so it cannot "
                       "be indexed: compress it with `bgzip` and index it with `tabix -p vcf`")
        eof_missing = False
        if compression == _BGZF_COMPRESSION:
            try:
                vf.check_truncation()
            except OSError:
                eof_missing = True
        if is_gvcf(vf):
            self.error(path, None, "a gVCF (reference blocks, <NON_REF>): genotype it first, "
                       "e.g. `gatk GenotypeGVCFs` or `bcftools convert --gvcf2vcf --fasta-ref "
                       "reference.fa`")
            return
        self.vcf_samples = [str(s) for s in vf.header.samples]
        info["samples"] = len(self.vcf_samples)
        header_contigs = {str(k): v.length for k, v in vf.header.contigs.items()}
        declared = self._declared_contigs(fmt, header_contigs)
        info["contigs_declared"] = {c: header_contigs.get(c) for c in declared}
        if not declared:
            self.error(path, None, "the header has no ##contig lines (add them, e.g. with "
                       "`bcftools reheader --fai reference.fa.fai`)")
        self._check_contigs_vs_reference(declared, header_contigs)

        scan = _Scan(self, declared)
        self.scan = scan
        failure: Exception | None = None
        try:
            for rec in vf:
                scan.add(rec)
        except (OSError, ValueError) as err:
            failure = err
        scan.flush()
        info["records"] = scan.n_records
        info["records_per_contig"] = dict(scan.per_contig)
        if failure is not None:
            after = f"after {scan.last_where}" if scan.last_where else "in the first record"
            more = "; the BGZF end-of-file marker is missing too" if eof_missing else ""
            self.error(path, after, f"read failed: the file is truncated or corrupt "
                       f"({failure}){more}")
        elif eof_missing:
            self.error(path, None, "no BGZF end-of-file marker: the file is truncated "
                       "(an incomplete copy or download?)")
        else:
            self.vcf_readable = True
        scan.report()
        if failure is None and scan.n_records == 0:
            self.error(path, None, "the VCF has no variant records (header only)")

    def _declared_contigs(self, fmt: str, header_contigs: dict[str, int | None]) -> list[str]:
        """Contigs the file's own header declares (htslib adds a tabix index's to its view)."""
        if fmt == "BCF":
            return list(header_contigs)
        lines = _raw_header(self.vcf_path)
        if lines is None:
            return list(header_contigs)  # unreadable here: htslib's view is the best we have
        header = pysam.VariantHeader()
        for line in lines:
            if line.startswith("##contig="):
                with contextlib.suppress(ValueError):
                    header.add_line(line)
        return [str(c) for c in header.contigs]

    def _check_contigs_vs_reference(
        self, declared: list[str], header_contigs: dict[str, int | None]
    ) -> None:
        table = []
        for name in declared:
            length = header_contigs.get(name)
            contig = contig_alias(name, self.fa_lengths) if self.fasta is not None else None
            ref_len = self.fa_lengths.get(contig) if contig else None
            table.append({"vcf": name, "vcf_length": length, "reference": contig,
                          "reference_length": ref_len})
            if contig is not None and contig != name:
                self.warning(self.vcf_path, name,
                             f"contig is named {contig} in the reference FASTA "
                             "(chr prefix; harmonized when reading)")
            if contig is not None and length is not None and length != ref_len:
                self.warning(self.vcf_path, name,
                             f"header length {length} differs from the reference FASTA's "
                             f"{ref_len}: another reference build?")
        self.summary["contigs"] = table

    def _check_index(self, info: dict[str, Any]) -> None:
        path = self.vcf_path
        fmt = info.get("format")
        if fmt not in ("VCF", "BCF") or info.get("compression") != _BGZF_COMPRESSION:
            info["index"] = None
            return
        index = next((p for p in self._index_candidates(fmt) if p.is_file()), None)
        info["index"] = {"type": index.suffix[1:], "path": str(index)} if index else None
        if index is None:
            tbi = Path(f"{path}.tbi")
            if fmt == "BCF" and tbi.is_file():
                self.error(tbi, None, "a BCF needs a CSI index (.csi), not .tbi: "
                           "run `bcftools index` on it")
            else:
                how = "bcftools index" if fmt == "BCF" else "tabix -p vcf"
                first = " (sort it first)" if self.scan is not None and self.scan.unsorted else ""
                self.error(path, None,
                           f"no index (.tbi or .csi) next to it: run `{how}` on it{first}")
            return
        if _mtime_s(index) < _mtime_s(path):
            info["index"]["stale"] = True
            self.error(index, None, f"index is older than {path.name} (stale): re-index it")
            return
        if self.scan is None or not self.vcf_readable or self.scan.unsorted:
            return  # nothing trustworthy to compare the index with
        problem = self._probe_index()
        if problem is not None:
            record, what = problem
            info["index"]["stale"] = True
            self.error(index, record, f"index does not match {path.name} (stale or from "
                       f"another file): {what}; re-index it")
            return
        info["index"]["stale"] = False
        self.index_usable = True

    def _probe_index(self) -> tuple[str | None, str] | None:
        """Fetch records seen in the scan back through the index; None when all come back."""
        assert self.scan is not None
        try:
            vf = pysam.VariantFile(str(self.vcf_path))
        except (OSError, ValueError) as err:
            return None, f"cannot reopen the file ({err})"
        try:
            if vf.index is None:
                return None, "htslib cannot load the index"
            indexed = {str(c) for c in vf.index}
            for chrom in self.scan.per_contig:
                if chrom not in indexed:
                    return chrom, "contig has records but is not in the index"
            probes = self.scan.probes
            step = max(1, -(-len(probes) // _MAX_INDEX_PROBES))
            for chrom, pos, ref in [*probes[::step], probes[-1]] if probes else []:
                where = f"{chrom}:{pos}"
                try:
                    hit = any(r.pos == pos and r.ref == ref for r in vf.fetch(chrom, pos - 1, pos))
                except (OSError, ValueError) as err:
                    return where, f"fetching the record fails ({err})"
                if not hit:
                    return where, "fetching the record through the index does not return it"
        finally:
            with contextlib.suppress(OSError, ValueError):
                vf.close()
        return None

    # ---- across files

    def check_samples(self) -> None:
        if self.vcf_samples is None:
            dups = (self.summary.get("vcf") or {}).get("duplicated_samples", 0)
            table = len(self.cohort) if self.cohort is not None else None
            self.summary["samples"] = {"vcf": None, "table": table, "duplicated_in_vcf": dups}
            return
        vcf_ids = self.vcf_samples
        in_vcf = set(vcf_ids)
        if self.cohort is None:
            self.summary["samples"] = {"vcf": len(vcf_ids), "table": None}
            self.add("info", self.cohort_path, None,
                     "samples not matched against the VCF: the cohort table is unusable")
            return
        table_ids = [str(s) for s in self.cohort.sample_id]
        in_table = set(table_ids)
        matched = [s for s in table_ids if s in in_vcf]
        table_only = [s for s in table_ids if s not in in_vcf]
        vcf_only = [s for s in vcf_ids if s not in in_table]
        self.summary["samples"] = {
            "vcf": len(vcf_ids), "table": len(table_ids), "matched": len(matched),
            "table_not_vcf": len(table_only), "vcf_not_table": len(vcf_only),
            "duplicated_in_vcf": 0,  # else htslib rejects the header: see check_vcf
            "examples": {"table_not_vcf": table_only[:20], "vcf_not_table": vcf_only[:20]},
        }
        if not matched:
            examples = "; ".join(
                f"{what} e.g. {ids[0]!r}" for what, ids in
                (("table", table_ids), ("VCF", vcf_ids)) if ids
            )
            self.error(self.vcf_path, None,
                       f"no sample matches the cohort table {self.cohort_path.name}: "
                       f"{len(vcf_ids)} VCF sample(s), {len(table_ids)} people in the table "
                       f"({examples}; a different ID scheme?)")
        else:
            self.listed("error", self.vcf_path, table_only,
                        f"sample in the cohort table {self.cohort_path.name} but not in the "
                        "VCF header", "samples in the cohort table but not in the VCF")
            self.listed("warning", self.vcf_path, vcf_only,
                        f"sample in the VCF header but not among the cohort table's people "
                        f"({self.cohort_path.name}; absent or phenotype missing): not used",
                        "VCF samples not in the cohort table")
        self._sample_missingness(matched)

    def _sample_missingness(self, matched: list[str]) -> None:
        scan = self.scan
        if scan is None or scan.n_records == 0 or scan.sample_missing is None:
            return
        assert self.vcf_samples is not None
        where = {s: i for i, s in enumerate(self.vcf_samples)}
        ids = matched or self.vcf_samples
        cols = np.array([where[s] for s in ids], dtype=np.int64)
        rates = scan.sample_missing[cols] / max(scan.n_gt_records, 1)
        miss = self.summary.setdefault("missingness", {})
        miss["per_sample"] = {**_stats(rates), "over": "all VCF records",
                              "samples": "matched" if matched else "all in the VCF"}
        high = np.flatnonzero(rates > MISSING_THRESHOLD)
        if len(high):
            worst = int(high[np.argmax(rates[high])])
            self.warning(self.vcf_path, ids[worst],
                         f"{len(high)} sample(s) miss more than {MISSING_THRESHOLD:.0%} of their "
                         f"genotype calls (this one {_pct(float(rates[worst]))})")

    def check_panel_genotypes(self) -> None:
        """Coverage, per-site missingness and per-ancestry allele frequencies at the panel."""
        if self.panel is None or self.vcf_samples is None or (self.scan is None
                                                              and not self.plink):
            return
        if not self.plink and (not self.vcf_readable or self.scan.n_records == 0):
            if self.vcf_readable is False and self.scan.n_records:
                self.add("info", self.vcf_path, None, "panel coverage not computed: the VCF "
                         "could not be read to its end")
            return
        p = self.panel
        cov: dict[str, Any] = {"variants": len(p)}
        self.summary.setdefault("panel", {})["coverage"] = cov
        codes = found = dosage = None
        matched: list[str] = []
        low_at: set[str] = set()  # panel variants left out for their imputation quality
        if self.index_usable or self.plink:
            from shared.genotypes import harmonize_panel_genotypes
            in_vcf = set(self.vcf_samples)
            if self.cohort is not None:
                matched = [str(s) for s in self.cohort.sample_id if str(s) in in_vcf]
            try:
                # With the reference, as training reads it (indels left-aligned against it).
                fasta = self.reference_path if self.fasta is not None else None
                files = self.vcf_files if len(self.vcf_files) > 1 else self.vcf_path
                read = harmonize_panel_genotypes(files, p, matched, fasta, self.min_quality)
                codes, found = read.codes, read.found
                dosage = read.dosage  # expected, fractional from DS/GP: what the model reads
                low_at = {f"{c}:{q}" for c, q, h in zip(p.chrom, p.pos, read.how, strict=True)
                          if h == "low-quality"}
                low = len(low_at)
                if low:
                    cov["low_quality"] = low
                    self.warning(self.vcf_path, None, f"{low} panel variant(s) imputed with a "
                                 f"quality below the site's {self.min_quality:g} are read as "
                                 "missing")
                cov["source"] = "read through the index, harmonized as for training"
            except InputError as err:
                self.from_input_error(err, self.vcf_path)
            except (OSError, ValueError) as err:
                self.error(self.vcf_path, None, f"reading the panel genotypes through the index "
                           f"failed ({err})")
        if found is None:
            if self.scan is None:  # a PLINK fileset pgenlib could not read: named above
                return
            found = self.scan.panel_found
            codes = None
            cov["source"] = "full scan, exact or swapped alleles (index unusable)"
        found = np.asarray(found, dtype=bool)
        n_found = int(found.sum())
        missing_ids = [f"{c}:{q}:{r}>{a}" for c, q, r, a, f in
                       zip(p.chrom, p.pos, p.ref, p.alt, found, strict=True)
                       if not f and f"{c}:{q}" not in low_at]
        cov.update(found=n_found, missing=len(p) - n_found, missing_variants=missing_ids[:50])
        if n_found == 0:
            self.error(self.vcf_path, None,
                       f"none of the {len(p)} panel variants ({self.panel_path.name}) is in this "
                       "VCF: wrong VCF or panel (another chromosome or build)?")
        elif missing_ids:
            self.warning(self.vcf_path, missing_ids[0].rsplit(":", 1)[0],
                         f"{len(missing_ids)} of {len(p)} panel variants are not in this VCF "
                         "(they are encoded as missing); this is the first")
        if codes is None or not matched or n_found == 0:
            if codes is None:
                self.add("info", self.vcf_path, None, "panel missingness and allele "
                         "frequencies not computed: the VCF's index is unusable")
            return
        try:
            require_calls(codes, found, self.vcf_path)  # as training and scoring refuse it
        except InputError as err:
            self.from_input_error(err, self.vcf_path)
            return
        self._panel_missingness(codes, found)
        self.check_ancestry(codes, matched)
        self._allele_frequencies(dosage, found, matched)

    def check_ancestry(self, codes: np.ndarray, matched: list[str]) -> None:
        """Genetic ancestry labels of the matched people, and how they agree with the declared
        ones (a table of counts, small cells withheld); without declared labels they stand in
        for the per-ancestry allele frequencies, as for training."""
        c = self.cohort
        needed = uses_genetic(self.groups, c)
        if not needed and not ancestry_path(self.panel_path).exists():
            return
        try:
            reference = load_reference(self.panel, self.panel_path)
        except InputError as err:
            self.add("error" if needed else "warning", err.path, err.record, err.problem)
            return
        genetic = reference.assign(codes)
        with contextlib.suppress(InputError):  # the spelling the site's ancestries give them
            names = genetic_vocabulary(reference.populations, self.spec or DEFAULT_SPEC, None)
            genetic = np.array([names.get(g, g) for g in genetic.tolist()], dtype=str)
        labels, counts = np.unique(genetic, return_counts=True)
        summary: dict[str, Any] = {
            "groups": "genetic" if needed else "declared", "floor": self.floor,
            "genetic": {str(a): (int(n) if n >= self.floor else None)
                        for a, n in zip(labels, counts, strict=True)},
        }
        where = {str(s): i for i, s in enumerate(c.sample_id)}
        rows = np.array([where[s] for s in matched], dtype=np.int64)
        if c.ancestry_declared:
            summary["agreement"] = agreement(np.asarray(c.ancestry)[rows], genetic, self.floor)
        else:
            full = np.full(len(c), UNASSIGNED, dtype=object)
            full[rows] = genetic
            self.cohort = relabel(c, full.astype(str), self.spec)
        self.summary["ancestry"] = summary

    def _panel_missingness(self, codes: np.ndarray, found: np.ndarray) -> None:
        from shared.tokenizer import GT_MISSING

        p = self.panel
        assert p is not None
        rates = (codes[:, found] == GT_MISSING).mean(axis=0)
        miss = self.summary.setdefault("missingness", {})
        miss["per_panel_site"] = {**_stats(rates), "over": "matched samples",
                                  "sites": "panel variants found in the VCF"}
        high = np.flatnonzero(rates > MISSING_THRESHOLD)
        if len(high):
            cols = np.flatnonzero(found)
            worst = int(high[np.argmax(rates[high])])
            j = int(cols[worst])
            self.warning(self.vcf_path, f"{p.chrom[j]}:{p.pos[j]}",
                         f"{len(high)} panel site(s) miss more than {MISSING_THRESHOLD:.0%} of "
                         f"their calls (this one {_pct(float(rates[worst]))})")

    def _allele_frequencies(self, dosage: np.ndarray, found: np.ndarray,
                            matched: list[str]) -> None:
        """From the expected dosages [N, T] (NaN missing) the model reads, fractional where the
        VCF has DS or GP."""
        p = self.panel
        assert p is not None and self.cohort is not None
        where = {str(s): i for i, s in enumerate(self.cohort.sample_id)}
        ancestry = np.array([str(self.cohort.ancestry[where[s]]) for s in matched])
        af: dict[str, list[float | None]] = {}
        n_by: dict[str, int] = {}
        for label in sorted(set(ancestry.tolist())):
            g = dosage[ancestry == label]
            called = ~np.isnan(g)
            n_called = called.sum(axis=0)
            alt = np.where(called, g, 0).sum(axis=0, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                freq = alt / (2.0 * n_called)
            af[label] = [round(float(f), 6) if (ok and n) else None
                         for f, ok, n in zip(freq, found, n_called, strict=True)]
            n_by[label] = int(len(g))
        diffs: dict[str, dict[str, float | None]] = {}
        for a, b in combinations(sorted(af), 2):
            pairs = [(x, y) for x, y in zip(af[a], af[b], strict=True)
                     if x is not None and y is not None]
            d = np.abs(np.array([x - y for x, y in pairs])) if pairs else np.empty(0)
            diffs[f"{a}-{b}"] = {
                "mean_abs_difference": round(float(d.mean()), 6) if len(d) else None,
                "max_abs_difference": round(float(d.max()), 6) if len(d) else None,
                "variants": len(d),
            }
        self.summary["allele_frequencies"] = {
            "allele": "panel ALT",
            "variants": [f"{c}:{q}:{r}>{a}" for c, q, r, a in
                         zip(p.chrom, p.pos, p.ref, p.alt, strict=True)],
            "people": n_by,
            "by_ancestry": af,
            "between_ancestries": diffs,
        }


# --------------------------------------------------------------------------- the one pass


class _Scan:
    """Everything learnt from one front-to-back pass over the VCF's records."""

    def __init__(self, check: _SiteCheck, declared: list[str]) -> None:
        self.check = check
        self.declared = set(declared)
        self.n_samples = len(check.vcf_samples or [])
        self.chunk_records = max(1, min(_MAX_CHUNK_RECORDS,
                                        _CELLS_PER_CHUNK // max(self.n_samples, 1)))
        self.n_records = 0
        self.n_gt_records = 0
        self.per_contig: dict[str, int] = {}
        self.probes: list[tuple[str, int, str]] = []  # records to fetch back via the index
        self.last: tuple[str, int, str] | None = None
        self.last_where: str | None = None
        # sorting
        self.chrom: str | None = None
        self.last_pos = 0
        self.unsorted: list[tuple[str, str]] = []  # (chrom:pos, why)
        # contigs
        self.undeclared: dict[str, str] = {}  # contig -> first chrom:pos
        self.not_in_reference: dict[str, list] = {}  # contig -> [first chrom:pos, count]
        self.fa_contig: str | None = None
        # REF against FASTA
        self.ref_checked = 0
        self.ref_mismatch = 0
        self.ref_swapped = 0
        self.ref_first: tuple[str, str, str] | None = None
        # genotypes
        self.sample_missing = np.zeros(self.n_samples, dtype=np.int64) if self.n_samples else None
        # (chrom:pos, sample, GT, number of alleles, malformed)
        self.gt_bad: list[tuple[str, str, str, int, bool]] = []
        self.gt_bad_count = 0
        self.no_gt = 0
        self.dosage_only = 0
        # panel (fallback coverage when the index is unusable)
        panel = check.panel
        self.panel_found = np.zeros(len(panel) if panel is not None else 0, dtype=bool)
        self.panel_at: dict[tuple[str, int], list[int]] = {}
        if panel is not None:
            for j, (c, q) in enumerate(zip(panel.chrom, panel.pos, strict=True)):
                self.panel_at.setdefault((canonical_contig(str(c)), int(q)), []).append(j)
        self._reset()

    def _reset(self) -> None:
        self.buf_pos: list[int] = []
        self.buf_ref: list[str] = []
        self.buf_alt: list[str] = []  # the first ALT: a swapped SNV's ALT is the reference base
        self.buf_nall: list[int] = []
        # GT columns: one-character alleles ("0|1\t1/1\t./." exactly 4 bytes a sample) are
        # parsed as a byte matrix; anything else (more FORMAT fields, haploid, allele 10+) per
        # distinct GT string.
        self.buf_fixed: list[str] = []
        self.buf_fixed_rows: list[int] = []
        self.buf_gt: list[list[str]] = []
        self.buf_gt_rows: list[int] = []
        self.buf_partition = False
        self.buf_min = self.buf_max = 0

    def add(self, rec: pysam.VariantRecord) -> None:
        chrom, pos = str(rec.chrom), int(rec.pos)
        where = f"{chrom}:{pos}"
        if chrom != self.chrom:
            self.flush()
            if self.last is not None:
                self.probes.append(self.last)  # the last record of the contig before
            if chrom in self.per_contig:
                self.unsorted.append((where, f"contig {chrom} continues after {self.chrom}: "
                                             "records of one contig must be together"))
            self._enter_contig(chrom, where)
        elif pos < self.last_pos:
            self.unsorted.append((where, f"position decreases (previous record at "
                                         f"{chrom}:{self.last_pos})"))
        self.last_pos = pos
        count = self.per_contig.get(chrom, 0)
        if count % _PROBE_EVERY == 0:
            self.probes.append((chrom, pos, rec.ref or ""))
        self.per_contig[chrom] = count + 1
        self.n_records += 1
        self.last_where = where
        ref = rec.ref or ""
        self.last = (chrom, pos, ref)

        if self.buf_pos and (pos - self.buf_min > _MAX_CHUNK_SPAN
                             or self.buf_max - pos > _MAX_CHUNK_SPAN):
            self.flush()
        if not self.buf_pos:
            self.buf_min = self.buf_max = pos
        self.buf_min, self.buf_max = min(self.buf_min, pos), max(self.buf_max, pos)
        self.buf_pos.append(pos)
        self.buf_ref.append(ref)
        self.buf_alt.append(str((rec.alts or ("",))[0]).upper())
        n_alleles = len(rec.alleles or ())
        self.buf_nall.append(n_alleles)

        if self.n_samples:
            parts = str(rec).split("\t", 9)
            fmt = parts[8] if len(parts) == 10 else ""
            body = parts[9].rstrip("\n") if fmt else ""
            row = len(self.buf_pos) - 1
            if fmt == "GT" and len(body) == 4 * self.n_samples - 1:
                self.buf_fixed.append(body)
                self.buf_fixed_rows.append(row)
            elif fmt.startswith("GT"):
                self._add_generic(row, body.split("\t"), ":" in fmt)
            elif {"DS", "GP"} & set(fmt.split(":")):
                self.dosage_only += 1  # dosages, no GT (shared.genotypes)
            else:
                self.no_gt += 1
        self._panel_match(chrom, pos, ref, rec.alts)
        if len(self.buf_pos) >= self.chunk_records:
            self.flush()

    def _enter_contig(self, chrom: str, where: str) -> None:
        self.chrom = chrom
        if self.declared and chrom not in self.declared and chrom not in self.undeclared:
            self.undeclared[chrom] = where
        lengths = self.check.fa_lengths
        self.fa_contig = contig_alias(chrom, lengths) if self.check.fasta is not None else None
        if self.check.fasta is not None and self.fa_contig is None:
            self.not_in_reference.setdefault(chrom, [where, 0])

    def _panel_match(self, chrom: str, pos: int, ref: str, alts: tuple | None) -> None:
        hits = self.panel_at.get((canonical_contig(chrom), pos))
        if not hits or not alts:
            return
        panel = self.check.panel
        assert panel is not None
        ref_u, alts_u = ref.upper(), {a.upper() for a in alts}
        for j in hits:
            pref, palt = str(panel.ref[j]), str(panel.alt[j])
            if (ref_u == pref and palt in alts_u) or (ref_u == palt and pref in alts_u):
                self.panel_found[j] = True

    # ---- per chunk, vectorised

    def flush(self) -> None:
        if not self.buf_pos:
            return
        pos = np.array(self.buf_pos, dtype=np.int64)
        if self.chrom in self.not_in_reference:
            self.not_in_reference[self.chrom][1] += len(pos)
        elif self.fa_contig is not None:
            self._check_ref(pos)
        if self.buf_fixed or self.buf_gt:
            self._check_gt(pos)
        self._reset()

    def _check_ref(self, pos: np.ndarray) -> None:
        fasta, contig = self.check.fasta, self.fa_contig
        assert fasta is not None and contig is not None
        refs = self.buf_ref
        length = self.check.fa_lengths[contig]
        ref_len = np.array([len(r) for r in refs], dtype=np.int64)
        lo = max(int(pos.min()) - 1, 0)
        hi = min(int((pos - 1 + ref_len).max()), length)
        seq = fasta.fetch(contig, lo, hi).upper().encode("ascii", "replace") if hi > lo else b""
        window = np.frombuffer(seq, dtype=np.uint8)
        offset = pos - 1 - lo
        inside = (pos >= 1) & (offset + ref_len <= len(window))
        first = np.frombuffer("".join(r[:1] or "N" for r in refs).upper().encode("ascii",
                                                                                "replace"),
                               dtype=np.uint8)
        fa_base = window[np.clip(offset, 0, max(len(window) - 1, 0))] if len(window) else (
            np.full(len(pos), _N, dtype=np.uint8))
        snv = ref_len == 1
        bad = ~inside | (snv & (first != fa_base) & (first != _N) & (fa_base != _N))
        for i in np.flatnonzero(inside & ~snv):
            a = refs[i].upper()
            b = seq[offset[i]:offset[i] + ref_len[i]].decode("ascii", "replace")
            if any(x != y and "N" not in (x, y) for x, y in zip(a, b, strict=True)):
                bad[i] = True
        self.ref_checked += len(pos)
        # REF and ALT swapped (REF the major allele, as PLINK's exports write): the ALT is the
        # reference base. Read with the dosage flipped, like training does (shared.genotypes).
        alt = np.frombuffer("".join((a if len(a) == 1 else "N") for a in self.buf_alt)
                            .encode("ascii", "replace"), dtype=np.uint8)
        swapped = bad & inside & snv & (alt == fa_base) & (fa_base != _N)
        self.ref_swapped += int(swapped.sum())
        bad &= ~swapped
        n_bad = int(bad.sum())
        if n_bad and self.ref_first is None:
            i = int(np.flatnonzero(bad)[0])
            found = (seq[offset[i]:offset[i] + ref_len[i]].decode("ascii", "replace")
                     if inside[i] else "no base (beyond the contig's end)")
            self.ref_first = (f"{self.chrom}:{int(pos[i])}", refs[i], found)
        self.ref_mismatch += n_bad

    def _add_generic(self, row: int, gts: list[str], partition: bool) -> None:
        if len(gts) != self.n_samples:
            self.no_gt += 1
            return
        self.buf_gt.append(gts)
        self.buf_gt_rows.append(row)
        self.buf_partition |= partition

    def _fixed_width(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(rows, highest allele index, missing, malformed) of the one-character-allele rows."""
        n, rows = self.n_samples, np.array(self.buf_fixed_rows, dtype=np.int64)
        text = "\t".join(self.buf_fixed) + "\t"
        raw = np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)
        raw = raw.reshape(len(rows), n, 4)
        sep = raw[:, :, 1]
        aligned = (((sep == ord("|")) | (sep == ord("/"))) & (raw[:, :, 3] == ord("\t"))).all(1)
        for r in np.flatnonzero(~aligned):  # equal length by coincidence: parse generically
            self._add_generic(int(rows[r]), self.buf_fixed[r].split("\t"), False)
        raw, rows = raw[aligned], rows[aligned]
        texts = [t for t, ok in zip(self.buf_fixed, aligned, strict=True) if ok]
        a = raw[:, :, (0, 2)].astype(np.int16)
        dot = a == ord(".")
        digit = (a >= ord("0")) & (a <= ord("9"))
        top = np.where(digit, a - ord("0"), -1).max(axis=2)
        return rows, top, dot.any(axis=2), ~(dot | digit).all(axis=2), texts

    def _generic(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, highest allele index, missing, malformed, GT strings) of the other rows."""
        gts = np.array(self.buf_gt, dtype=str)
        if self.buf_partition:
            gts = np.char.partition(gts, ":")[..., 0]
        uniq, inverse = np.unique(gts, return_inverse=True)
        inverse = inverse.reshape(gts.shape)
        top, missing, malformed = _gt_table(uniq)
        rows = np.array(self.buf_gt_rows, dtype=np.int64)
        return rows, top[inverse], missing[inverse], malformed[inverse], gts

    def _check_gt(self, pos: np.ndarray) -> None:
        assert self.sample_missing is not None
        n_alleles = np.array(self.buf_nall, dtype=np.int64)
        hits: list[tuple[int, int, str, bool]] = []  # (row, sample, GT, malformed)
        parts = []
        if self.buf_fixed:
            rows, top, missing, malformed, texts = self._fixed_width()
            parts.append((rows, top, missing, malformed,
                          lambda r, c, t=texts: t[r][4 * c:4 * c + 3]))
        if self.buf_gt:
            rows, top, missing, malformed, gts = self._generic()
            parts.append((rows, top, missing, malformed, lambda r, c, g=gts: str(g[r, c])))
        for rows, top, missing, malformed, gt_of in parts:
            self.sample_missing += missing.sum(axis=0)
            self.n_gt_records += len(rows)
            bad = (top >= n_alleles[rows][:, None]) | malformed
            n_bad = int(bad.sum())
            if not n_bad:
                continue
            self.gt_bad_count += n_bad
            for r, c in list(zip(*np.nonzero(bad), strict=True))[:MAX_LISTED]:
                hits.append((int(rows[r]), int(c), gt_of(int(r), int(c)), bool(malformed[r, c])))
        samples = self.check.vcf_samples or []
        for row, c, gt, bad_text in sorted(hits)[: MAX_LISTED - len(self.gt_bad)]:
            self.gt_bad.append((f"{self.chrom}:{int(pos[row])}", samples[c], gt,
                                int(n_alleles[row]), bad_text))

    # ---- findings after the pass

    def report(self) -> None:
        check, path = self.check, self.check.vcf_path
        if self.last is not None:
            self.probes.append(self.last)
        if self.unsorted:
            where, why = self.unsorted[0]
            check.error(path, where, f"the VCF is not sorted: {why} ({len(self.unsorted)} "
                        "place(s); sort it with `bcftools sort`)")
        for chrom, where in self.undeclared.items():
            check.error(path, where, f"records on contig {chrom}, which the header's ##contig "
                        "lines do not declare")
        for chrom, (where, count) in self.not_in_reference.items():
            check.error(path, where, f"contig {chrom} ({count} record(s)) is not in the "
                        f"reference FASTA {check.reference_path.name}")
        if self.ref_first is not None:
            where, ref, found = self.ref_first
            swaps = (f", besides {self.ref_swapped} with REF and ALT swapped"
                     if self.ref_swapped else "")
            check.error(path, where, f"REF {ref} disagrees with the reference FASTA "
                        f"{check.reference_path.name}, which has {found} here; "
                        f"{self.ref_mismatch} of {self.ref_checked} checked record(s) disagree"
                        f"{swaps} (another reference build?)")
        elif self.ref_swapped:
            check.warning(path, None, f"{self.ref_swapped} of {self.ref_checked} SNV record(s) "
                          "have REF and ALT swapped relative to the reference (REF = the major "
                          "allele, as PLINK exports write): read with the dosage flipped")
        for where, sample, gt, n_alleles, malformed in self.gt_bad:
            if malformed:
                check.error(path, where, f"sample {sample}: malformed genotype {gt!r}")
            else:
                check.error(path, where, f"sample {sample}: genotype {gt!r} has an allele "
                            f"index out of range (the record has {n_alleles} alleles: REF + "
                            f"{n_alleles - 1} ALT)")
        if self.gt_bad_count > len(self.gt_bad):
            check.error(path, None, f"... {self.gt_bad_count} genotype(s) with an allele index "
                        "out of range or malformed in all")
        if self.no_gt and self.n_samples:
            check.warning(path, None, f"{self.no_gt} record(s) carry no GT, DS or GP field "
                          "(read as missing)")
        if self.dosage_only and self.n_samples:
            check.warning(path, None, f"{self.dosage_only} record(s) carry imputed dosages (DS "
                          "or GP) and no GT: the model reads the dosages, the call counts "
                          "the nearest genotype")
        check.summary["vcf"]["ref_check"] = {
            "checked": self.ref_checked, "mismatches": self.ref_mismatch,
            "swapped": self.ref_swapped,
            "first_mismatch": self.ref_first[0] if self.ref_first else None,
        }
        check.summary["vcf"]["sorted"] = not self.unsorted
        check.summary["vcf"]["genotype_errors"] = self.gt_bad_count


def _merge_scans(into: _Scan | None, scan: _Scan | None) -> _Scan | None:
    """What the checks after the pass need from several files' passes, summed into one."""
    if into is None or scan is None:
        return into or scan
    into.n_records += scan.n_records
    into.n_gt_records += scan.n_gt_records
    into.panel_found |= scan.panel_found
    if into.sample_missing is not None and scan.sample_missing is not None and \
            into.sample_missing.shape == scan.sample_missing.shape:
        into.sample_missing += scan.sample_missing
    else:
        into.sample_missing = None
    return into


# --------------------------------------------------------------------------- printing


def format_report(report: CheckReport) -> list[str]:
    """Human summary lines, then one line per finding."""
    s = report.summary
    out = []
    files = s.get("files", {})
    vcf = s.get("vcf") or {}
    if vcf.get("format"):
        if isinstance(files.get("vcf"), list):  # per-chromosome files
            files = {**files, "vcf": f"{files['vcf'][0]} and {len(files['vcf']) - 1} more"}
        index = vcf.get("index") or {}
        idx = f"{index['type']} index" if index.get("type") else "no index"
        contigs = vcf.get("records_per_contig") or {}
        out.append(f"VCF        {files.get('vcf')}: {vcf['format']} ({vcf.get('compression')}, "
                   f"{idx}), {vcf.get('records', 0)} records on {len(contigs)} contig(s), "
                   f"{vcf.get('samples', 0)} samples")
        rc = vcf.get("ref_check")
        if rc:
            out.append(f"REF check  {rc['checked']} records against {files.get('reference')}: "
                       f"{rc['mismatches']} disagree")
    cohort = s.get("cohort")
    if cohort:
        ph = cohort["phenotype"]
        anc = ", ".join(f"{k} {v}" for k, v in cohort["ancestry"].items()) or "no ancestry column"
        out.append(f"cohort     {cohort['people']} people: {ph['cases']} cases, "
                   f"{ph['controls']} controls, {ph['missing']} phenotype missing; {anc}")
    samples = s.get("samples")
    if samples and "matched" in samples:
        out.append(f"samples    {samples['matched']} matched, {samples['table_not_vcf']} in the "
                   f"table only, {samples['vcf_not_table']} in the VCF only")
    cov = (s.get("panel") or {}).get("coverage")
    if cov:
        out.append(f"panel      {cov['found']}/{cov['variants']} variants found in the VCF")
    miss = s.get("missingness") or {}
    for key, name in (("per_sample", "per sample"), ("per_panel_site", "per panel site")):
        m = miss.get(key)
        if m and m["n"]:
            out.append(f"missing    {name}: median {_pct(m['median'])}, max {_pct(m['max'])}, "
                       f"{m['over_10pct']} over 10%")
    if s.get("ancestry"):
        out.extend(format_agreement(s["ancestry"]))
    af = s.get("allele_frequencies")
    if af and af["between_ancestries"]:
        pairs = ", ".join(f"{k} {v['mean_abs_difference']:.3f}"
                          for k, v in af["between_ancestries"].items()
                          if v["mean_abs_difference"] is not None)
        out.append(f"ALT freq.  mean |difference| between ancestries: {pairs}")
    counts = s.get("findings", {})
    verdict = "OK" if report.ok else "NOT READY"
    out.append(f"result     {verdict}: {counts.get('error', 0)} error(s), "
               f"{counts.get('warning', 0)} warning(s)")
    out.extend(f"{f.level}: {f.line()}" for f in report.findings)
    return out
