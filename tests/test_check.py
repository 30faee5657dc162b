"""`genofed site check`: every bad input is one clear line, never a traceback, never a write.

Each bad case starts from a real simulated site folder, breaks one thing with pysam/bgzip tools,
then checks both the API (`check_site`) and the CLI (`genofed site check --data DIR`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pysam
import pytest

import shared.cohort
from client.check import CheckReport, Finding, check_site
from client.settings import SiteSettings
from shared.cli import main
from shared.cohort import read_cohort
from shared.errors import InputError
from tests.helpers import header_end, site_files, vcf_lines, write_vcf

Breaker = Callable[[Path, Path], tuple[Path, str | None, str]]


# --------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def panel_positions(site: Path) -> set[int]:
    return {int(line.split("\t")[1]) for line in (site / "panel.tsv").read_text().splitlines()[1:]}


def off_panel_record(lines: list[str], site: Path) -> int:
    """Index of a data line whose position is not a panel variant."""
    panel = panel_positions(site)
    return next(i for i in range(header_end(lines) + 20, len(lines))
                if int(lines[i].split("\t")[1]) not in panel)


def run_cli(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    out, err = capfd.readouterr()
    text = out + err
    assert "Traceback" not in text and "Exception ignored" not in text
    return rc, text


def first_error(report: CheckReport) -> Finding:
    assert not report.ok, [f.line() for f in report.findings]
    return report.errors[0]


# --------------------------------------------------------------------------- bad inputs


def truncated_mid_block(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    vcf = site / "genotypes.vcf.gz"
    data = vcf.read_bytes()
    vcf.write_bytes(data[: len(data) // 2])
    return vcf, "after chr22:*", r"truncated or corrupt"


def truncated_at_block(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    vcf = site / "genotypes.vcf.gz"
    vcf.write_bytes(vcf.read_bytes()[:-28])  # the BGZF EOF block gone, every record intact
    return vcf, None, r"end-of-file marker"


def missing_index(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    (site / "genotypes.vcf.gz.tbi").unlink()
    return site / "genotypes.vcf.gz", None, r"no index"


def stale_index_by_time(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    vcf = site / "genotypes.vcf.gz"
    later = (site / "genotypes.vcf.gz.tbi").stat().st_mtime + 60
    os.utime(vcf, (later, later))  # touched after indexing
    return site / "genotypes.vcf.gz.tbi", None, r"older than genotypes\.vcf\.gz"


def stale_index_by_content(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    tbi = site / "genotypes.vcf.gz.tbi"
    old_index = tbi.read_bytes()
    lines = vcf_lines(site / "genotypes.vcf.gz")
    h = header_end(lines)
    write_vcf(site, lines[: h + 1] + lines[h + 300:], tmp, index=False)
    tbi.write_bytes(old_index)  # newer mtime than the VCF, but indexes the old file
    return tbi, "chr22:*", r"does not match"


def unsorted(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    i = header_end(lines) + 10
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    pos = lines[i + 1].split("\t")[1]
    write_vcf(site, lines, tmp, index=False)  # tabix refuses to index an unsorted file
    return site / "genotypes.vcf.gz", f"chr22:{pos}", r"not sorted"


def no_contig_lines(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = [x for x in vcf_lines(site / "genotypes.vcf.gz") if not x.startswith("##contig")]
    write_vcf(site, lines, tmp)
    return site / "genotypes.vcf.gz", None, r"no ##contig lines"


def table_sample_not_in_vcf(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    with open(site / "cohort.tsv", "a") as fh:
        fh.write("S9999999\tCEU\t1\ttrain\n")
    return site / "genotypes.vcf.gz", "S9999999", r"in the cohort table .* but not in the VCF"


def no_sample_matches(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = (site / "cohort.tsv").read_text().splitlines()
    lines[1:] = ["X" + line for line in lines[1:]]
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    return site / "genotypes.vcf.gz", None, r"no sample matches the cohort table"


def duplicate_in_table(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = (site / "cohort.tsv").read_text().splitlines()
    lines.insert(6, lines[3])  # file line 7 repeats file line 4
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    return site / "cohort.tsv", "line 7", r"listed twice"


def duplicate_in_vcf_header(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    h = header_end(lines)
    names = lines[h].split("\t")
    names[11] = names[10]
    lines[h] = "\t".join(names)
    write_vcf(site, lines, tmp)
    return site / "genotypes.vcf.gz", names[10], r"listed twice in the VCF header"


def phenotype_maybe(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = (site / "cohort.tsv").read_text().splitlines()
    f = lines[4].split("\t")
    f[2] = "maybe"
    lines[4] = "\t".join(f)
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    return site / "cohort.tsv", "line 5", r"'maybe' is neither"


def unknown_ancestry(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    if not hasattr(shared.cohort, "DEFAULT_ANCESTRIES"):
        pytest.skip("this read_cohort accepts any ancestry label")
    lines = (site / "cohort.tsv").read_text().splitlines()
    f = lines[8].split("\t")
    f[1] = "XYZ"
    lines[8] = "\t".join(f)
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    return site / "cohort.tsv", "line 9", r"'XYZ'"


def ref_mismatch(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    i = off_panel_record(lines, site)
    f = lines[i].split("\t")
    f[3] = next(b for b in "ACGT" if b not in (f[3], f[4]))
    lines[i] = "\t".join(f)
    write_vcf(site, lines, tmp)
    return site / "genotypes.vcf.gz", f"chr22:{f[1]}", r"REF \w disagrees.*1 of \d+ checked"


def empty_vcf(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    write_vcf(site, lines[: header_end(lines) + 1], tmp)
    return site / "genotypes.vcf.gz", None, r"no variant records"


def panel_on_other_contig(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    text = (site / "panel.tsv").read_text()
    (site / "panel.tsv").write_text(text.replace("chr22\t", "chr1\t"))
    first = text.splitlines()[1].split("\t")[1]
    return site / "panel.tsv", f"chr1:{first}", r"contig chr1 is not in the reference FASTA"


def panel_off_the_vcf(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    """Valid variants (REF from the FASTA) at positions where the VCF has no record."""
    with pysam.VariantFile(str(site / "genotypes.vcf.gz")) as vf:
        taken = {rec.pos for rec in vf}
    rows = ["chrom\tpos\tref\talt"]
    with pysam.FastaFile(str(site / "reference.fa")) as fa:
        for pos in sorted(panel_positions(site)):
            new = next(p for p in range(pos + 1, pos + 1000) if p not in taken
                       and fa.fetch("chr22", p - 1, p).upper() in "ACGT")
            ref = fa.fetch("chr22", new - 1, new).upper()
            rows.append(f"chr22\t{new}\t{ref}\t{'A' if ref != 'A' else 'C'}")
    (site / "panel.tsv").write_text("\n".join(rows) + "\n")
    return site / "genotypes.vcf.gz", None, r"none of the 48 panel variants"


def malformed_panel_row(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    with open(site / "panel.tsv", "a") as fh:
        fh.write("chr22\tabc\tA\tG\n")
    return site / "panel.tsv", "line 50", r"position 'abc' is not a positive integer"


def panel_af_not_a_frequency(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = (site / "panel.tsv").read_text().splitlines()
    f = lines[9].split("\t")
    assert lines[0].split("\t")[-1] == "af"
    f[-1] = "1.7"
    lines[9] = "\t".join(f)
    (site / "panel.tsv").write_text("\n".join(lines) + "\n")
    return site / "panel.tsv", "line 10", r"af '1.7' is not a frequency in \[0, 1\]"


def allele_out_of_range(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    sample = lines[header_end(lines)].split("\t")[12]
    i = off_panel_record(lines, site)
    f = lines[i].split("\t")
    f[12] = "0|3"
    lines[i] = "\t".join(f)
    write_vcf(site, lines, tmp)
    return (site / "genotypes.vcf.gz", f"chr22:{f[1]}",
            rf"sample {sample}: genotype '0\|3' has an allele index out of range")


def plain_gzip(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    vcf = site / "genotypes.vcf.gz"
    text = "\n".join(vcf_lines(vcf)) + "\n"
    with gzip.open(vcf, "wt") as fh:
        fh.write(text)
    return vcf, None, r"plain gzip, not bgzip"


def uncompressed(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    vcf = site / "genotypes.vcf.gz"
    vcf.write_text("\n".join(vcf_lines(vcf)) + "\n")
    return vcf, None, r"not bgzip-compressed"


def contig_not_in_reference(site: Path, tmp: Path) -> tuple[Path, str | None, str]:
    lines = [x.replace("chr22", "chr7") if x.startswith(("chr22\t", "##contig")) else x
             for x in vcf_lines(site / "genotypes.vcf.gz")]
    first = lines[header_end(lines) + 1].split("\t")[1]
    write_vcf(site, lines, tmp)
    return site / "genotypes.vcf.gz", f"chr7:{first}", r"contig chr7 \(\d+ record\(s\)\) is not in"


BAD: dict[str, Breaker] = {f.__name__: f for f in (
    truncated_mid_block, truncated_at_block, missing_index, stale_index_by_time,
    stale_index_by_content, unsorted, no_contig_lines, table_sample_not_in_vcf, no_sample_matches,
    duplicate_in_table, duplicate_in_vcf_header, phenotype_maybe, unknown_ancestry, ref_mismatch,
    empty_vcf, panel_on_other_contig, panel_off_the_vcf, malformed_panel_row,
    panel_af_not_a_frequency, allele_out_of_range,
    plain_gzip, uncompressed, contig_not_in_reference,
)}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_clear_error(
    case: str, site: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    file, record, pattern = BAD[case](site, tmp_path)
    before = snapshot(site)

    report = check_site(**site_files(site), cohort_spec=SiteSettings.load(site).cohort)
    err = first_error(report)
    assert err.file == str(file), err.line()
    if record is not None and record.endswith("*"):
        assert err.record is not None and err.record.startswith(record[:-1]), err.line()
    else:
        assert err.record == record, err.line()
    assert re.search(pattern, err.problem), err.line()
    assert "\n" not in err.line() and err.line().startswith(f"{file}: ")
    json.dumps(report.to_dict())  # JSON-ready even for broken input

    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)
    assert rc == 1
    assert f"error: {err.line()}" in text
    assert snapshot(site) == before  # nothing written: no index, no .fai, no cache


# --------------------------------------------------------------------------- good inputs


def test_clean_site_passes_with_a_sensible_summary(
    site: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(site)
    report = check_site(**site_files(site))
    assert report.ok and not report.findings, [f.line() for f in report.findings]
    s = report.summary
    n_table = len((site / "cohort.tsv").read_text().splitlines()) - 1
    assert s["samples"]["matched"] == s["samples"]["table"] == s["samples"]["vcf"] == n_table
    assert s["samples"]["table_not_vcf"] == s["samples"]["vcf_not_table"] == 0
    assert s["panel"]["coverage"]["found"] == s["panel"]["variants"] == 48
    ph = s["cohort"]["phenotype"]
    assert ph["cases"] + ph["controls"] == n_table and ph["cases"] > 0 and ph["missing"] == 0
    assert sum(s["cohort"]["ancestry"].values()) == n_table
    assert set(s["cohort"]["ancestry"]) == {"CEU", "YRI", "CHB"}
    assert s["vcf"]["format"] == "VCF" and s["vcf"]["index"]["type"] == "tbi"
    assert s["vcf"]["ref_check"]["checked"] == s["vcf"]["records"] > 1000
    assert s["vcf"]["ref_check"]["mismatches"] == 0
    assert s["contigs"] == [{"vcf": "chr22", "vcf_length": 20_300_000, "reference": "chr22",
                             "reference_length": 20_300_000}]
    miss = s["missingness"]
    assert 0 <= miss["per_sample"]["median"] < 0.05 and miss["per_sample"]["over_10pct"] == 0
    assert miss["per_panel_site"]["n"] == 48 and miss["per_panel_site"]["over_10pct"] == 0
    af = s["allele_frequencies"]
    assert set(af["by_ancestry"]) == {"CEU", "YRI", "CHB"}
    assert all(len(v) == 48 for v in af["by_ancestry"].values())
    assert all(0 <= x <= 1 for v in af["by_ancestry"].values() for x in v if x is not None)
    assert 0 < af["between_ancestries"]["CEU-YRI"]["mean_abs_difference"] < 1

    out_json = tmp_path / "report.json"
    rc, text = run_cli(["site", "check", "--data", str(site), "--json", str(out_json)], capfd)
    assert rc == 0 and "OK" in text and "48/48 variants found" in text
    doc = json.loads(out_json.read_text())
    assert doc["ok"] is True and doc["findings"] == []
    assert doc["summary"]["samples"]["matched"] == n_table
    assert snapshot(site) == before


def test_vcf_sample_missing_from_table_is_only_a_warning(
    site: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    lines = (site / "cohort.tsv").read_text().splitlines()
    dropped = lines.pop(3).split("\t")[0]
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    report = check_site(**site_files(site))
    assert report.ok
    (warning,) = report.warnings
    assert warning.record == dropped and "not among the cohort table's people" in warning.problem
    assert report.summary["samples"]["vcf_not_table"] == 1
    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)
    assert rc == 0 and f"warning: {warning.line()}" in text


def test_chr_prefix_mismatch_is_a_warning(site: Path, tmp_path: Path) -> None:
    lines = [x.replace("chr22", "22") if x.startswith(("chr22\t", "##contig")) else x
             for x in vcf_lines(site / "genotypes.vcf.gz")]
    write_vcf(site, lines, tmp_path)
    report = check_site(**site_files(site))
    assert report.ok, [f.line() for f in report.errors]
    assert any(w.record == "22" and "chr22" in w.problem for w in report.warnings)
    assert report.summary["vcf"]["ref_check"]["mismatches"] == 0


def test_bcf_with_csi_index_passes(site: Path, capfd: pytest.CaptureFixture[str]) -> None:
    vcf = site / "genotypes.vcf.gz"
    bcf = site / "genotypes.bcf"
    with pysam.VariantFile(str(vcf)) as src, \
            pysam.VariantFile(str(bcf), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    pysam.tabix_index(str(bcf), preset="bcf", csi=True, force=True)
    for p in (vcf, Path(f"{vcf}.tbi")):
        p.unlink()
    report = check_site(**site_files(site, "genotypes.bcf"))
    assert report.ok, [f.line() for f in report.findings]
    v = report.summary["vcf"]
    assert v["format"] == "BCF" and v["index"]["type"] == "csi" and v["records"] > 1000
    assert report.summary["panel"]["coverage"]["found"] == 48
    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)  # the folder finds the BCF
    assert rc == 0 and "BCF (BGZF, csi index)" in text


def test_vcf_with_csi_index_passes(site: Path) -> None:
    vcf = site / "genotypes.vcf.gz"
    Path(f"{vcf}.tbi").unlink()
    pysam.tabix_index(str(vcf), preset="vcf", csi=True, force=True)
    report = check_site(**site_files(site))
    assert report.ok and report.summary["vcf"]["index"]["type"] == "csi"


def test_missing_fai_is_reported_not_created(site: Path) -> None:
    fai = site / "reference.fa.fai"
    fai.unlink()
    report = check_site(**site_files(site))
    err = first_error(report)
    assert (err.file, err.record) == (str(site / "reference.fa"), None)
    assert ".fai" in err.problem and not fai.exists()


def test_many_missing_calls_are_warned(site: Path, tmp_path: Path) -> None:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    h = header_end(lines)
    sample = lines[h].split("\t")[9]
    for i in range(h + 1, len(lines), 3):  # a third of this person's calls missing
        f = lines[i].split("\t")
        f[9] = ".|."
        lines[i] = "\t".join(f)
    write_vcf(site, lines, tmp_path)
    report = check_site(**site_files(site))
    assert report.ok
    assert any(w.record == sample and "more than 10%" in w.problem for w in report.warnings)
    per_sample = report.summary["missingness"]["per_sample"]
    assert per_sample["over_10pct"] == 1 and per_sample["max"] == pytest.approx(1 / 3, abs=0.01)


def test_explicit_flags_override_the_folder(
    site: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "other.tsv"
    bad.write_text("sample_id\tancestry\tphenotype\tsplit\nS1\tCEU\tmaybe\ttrain\n")
    rc, text = run_cli(["site", "check", "--data", str(site), "--cohort", str(bad)], capfd)
    assert rc == 1 and f"error: {bad}: line 2: phenotype 'maybe'" in text
    files = site_files(site)
    rc, _ = run_cli(["site", "check", *(f"--{k}={v}" for k, v in files.items())], capfd)
    assert rc == 0


def test_unusable_invocation_exits_2(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rc, text = run_cli(["site", "check", "--data", str(tmp_path / "nowhere")], capfd)
    assert rc == 2 and "site data folder not found" in text
    rc, text = run_cli(["site", "check", "--vcf", str(tmp_path / "x.vcf.gz")], capfd)
    assert rc == 2 and "--cohort, --panel, --reference" in text


def test_finding_line_is_one_line() -> None:
    f = Finding("error", "a.vcf.gz", "chr22:5", "REF A\ndisagrees")
    assert f.line() == "a.vcf.gz: chr22:5: REF A disagrees"
    assert Finding("warning", "b.tsv", None, "x").line() == "b.tsv: x"
    assert CheckReport([f]).ok is False and CheckReport([]).ok is True


def test_check_reads_the_cohort_table_as_site_toml_says(
    site: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Columns named the hospital's way and mapped in site.toml: the check reads the table as
    training does (and both refuse the same unmapped table)."""
    lines = (site / "cohort.tsv").read_text().splitlines()
    lines[0] = lines[0].replace("sample_id", "IID").replace("phenotype", "T2D")
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)
    assert rc == 1 and "sample_id" in text
    toml = (site / "site.toml").read_text()
    (site / "site.toml").write_text(
        toml.replace("[cohort]\n", '[cohort]\nsample-col = "IID"\nphenotype-col = "T2D"\n'))
    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)
    assert rc == 0, text
    spec = SiteSettings.load(site).cohort
    assert (spec.sample_col, spec.phenotype_col) == ("IID", "T2D")
    assert len(read_cohort(site / "cohort.tsv", spec)) == len(lines) - 1


def test_a_cohort_without_cases_or_with_few_is_named(site: Path) -> None:
    """No cases is an error (nothing to learn); few training cases a warning."""
    lines = (site / "cohort.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    col = header.index("phenotype")

    def with_cases(keep: int) -> CheckReport:
        rows, kept = [lines[0]], 0
        for line in lines[1:]:
            f = line.split("\t")
            if f[col] == "1":
                kept += 1
                f[col] = "1" if kept <= keep else "0"
            rows.append("\t".join(f))
        (site / "cohort.tsv").write_text("\n".join(rows) + "\n")
        return check_site(**site_files(site), cohort_spec=SiteSettings.load(site).cohort)

    none = with_cases(0)
    assert any("no cases among" in f.problem for f in none.errors), [f.line() for f in none.errors]
    few = with_cases(5)
    assert few.ok and any("cases in the training split" in w.problem for w in few.warnings)


@pytest.mark.parametrize(("files", "command"), [
    (["genotypes.vcf"], "bgzip genotypes.vcf && tabix"),
    (["biobank.bed", "biobank.bim", "biobank.fam"], "plink2 --bfile biobank"),
    (["biobank.pgen", "biobank.pvar", "biobank.psam"], "plink2 --pfile biobank"),
    (["ukb.bgen", "ukb.sample"], "plink2 --bgen ukb.bgen ref-first --sample ukb.sample"),
    (["biobank_part1.vcf.gz", "biobank_part2.vcf.gz"], '[genotypes] files = ["biobank_part*'
                                                       '.vcf.gz"]'),
])
def test_other_genotype_formats_are_named_with_their_conversion(
    site: Path, files: list[str], command: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Check, training and scoring all name what the folder holds and the command to run."""
    from client.data import load_site
    from shared.encoding import EncoderSettings

    for name in ("genotypes.vcf.gz", "genotypes.vcf.gz.tbi"):
        (site / name).unlink()
    for name in files:
        (site / name).write_bytes(b"")
    rc, text = run_cli(["site", "check", "--data", str(site)], capfd)
    assert rc == 1 and command in text
    with pytest.raises(InputError, match="no genotypes.vcf.gz or genotypes.bcf, but") as caught:
        load_site(site, EncoderSettings())
    assert command in caught.value.problem


def test_vcf_4_4_prefix_phasing_is_read_by_check_and_training(site: Path, tmp_path: Path) -> None:
    """VCF 4.4 may state the first allele's phasing ("|0|1"): the same genotypes as "0|1"."""
    from client.data import load_site
    from shared.encoding import EncoderSettings

    plain = load_site(site, EncoderSettings())
    lines = vcf_lines(site / "genotypes.vcf.gz")
    lines[0] = "##fileformat=VCFv4.4"
    for i in range(header_end(lines) + 1, len(lines)):
        f = lines[i].split("\t")
        lines[i] = "\t".join(f[:9] + [("|" if c[1] == "|" else "/") + c for c in f[9:]])
    write_vcf(site, lines, tmp_path)
    assert "\t|0|" in "".join(vcf_lines(site / "genotypes.vcf.gz")) or "\t/0/" in "".join(
        vcf_lines(site / "genotypes.vcf.gz"))
    report = check_site(**site_files(site), cohort_spec=SiteSettings.load(site).cohort)
    assert report.ok, [f.line() for f in report.findings]
    again = load_site(site, EncoderSettings())
    np.testing.assert_array_equal(again.genotypes, plain.genotypes)


def test_a_plink_style_export_passes_the_check_and_trains_the_same(site: Path,
                                                                   tmp_path: Path) -> None:
    """REF = the major allele (PLINK's VCF export): REF and ALT swapped at some SNVs, calls
    recoded. The check says so in a warning (not "another build?"), training reads the same
    genotypes as from the original file."""
    from client.data import load_site
    from shared.encoding import EncoderSettings

    before = load_site(site, EncoderSettings())
    lines = vcf_lines(site / "genotypes.vcf.gz")
    flip = str.maketrans("01", "10")
    swapped = 0
    for i in range(header_end(lines) + 1, len(lines), 3):
        f = lines[i].split("\t")
        if len(f[3]) == len(f[4]) == 1:
            f[3], f[4] = f[4], f[3]
            f[9:] = [c.translate(flip) for c in f[9:]]
            lines[i] = "\t".join(f)
            swapped += 1
    write_vcf(site, lines, tmp_path)
    report = check_site(**site_files(site), cohort_spec=SiteSettings.load(site).cohort)
    assert report.ok, [f.line() for f in report.errors]
    assert report.summary["vcf"]["ref_check"]["swapped"] == swapped > 10
    assert any("REF and ALT swapped" in w.problem for w in report.warnings)
    after = load_site(site, EncoderSettings())
    np.testing.assert_array_equal(after.genotypes, before.genotypes)
    assert after.how.count("swapped") > 0
