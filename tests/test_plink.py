"""PLINK 1 and PLINK 2 genotypes, read where they are and harmonized like a VCF."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pgenlib
import pysam
import pytest

from client.check import check_site
from client.data import load_site
from client.settings import SiteSettings
from shared.encoding import EncoderSettings
from shared.errors import InputError
from shared.genotypes import harmonize_panel_genotypes
from shared.panel import read_panel
from shared.tokenizer import GT_MISSING
from tests.helpers import site_files

BED_READER = Path(__file__).parent / "data" / "bed-reader"  # third-party: see SOURCE.md there
SIM = "plink_sim_10s_100v_10pmiss"


def _bed_by_hand(bed: Path, n_samples: int, n_variants: int) -> np.ndarray:
    """A1 (the .bim's fifth column) counts [variant, sample] from the .bed bytes themselves:
    2 bits a person, low bits first; 00 = two A1, 10 = one, 11 = none, 01 = missing."""
    data = bed.read_bytes()
    assert data[:3] == bytes([0x6C, 0x1B, 0x01])  # magic, variant-major
    per = (n_samples + 3) // 4
    out = np.full((n_variants, n_samples), -1, dtype=np.int64)
    for v in range(n_variants):
        block = data[3 + v * per: 3 + (v + 1) * per]
        for s in range(n_samples):
            bits = (block[s // 4] >> (2 * (s % 4))) & 0b11
            out[v, s] = {0b00: 2, 0b10: 1, 0b11: 0, 0b01: -1}[bits]
    return out


def test_a_plink_simulated_fileset_reads_as_its_bytes_say(tmp_path: Path) -> None:
    """bed-reader's PLINK-simulated test fileset, read through pgenlib and harmonized to a
    panel stating the .bim's alleles as REF/ALT (and as ALT/REF: flipped), equals a reading
    of the .bed's bits by hand; people come back in the order asked for."""
    for ext in ("bed", "bim", "fam"):
        shutil.copy(BED_READER / f"{SIM}.{ext}", tmp_path / f"genotypes.{ext}")
    bim = [line.split() for line in (tmp_path / "genotypes.bim").read_text().splitlines()]
    fam = [line.split()[1] for line in (tmp_path / "genotypes.fam").read_text().splitlines()]
    truth = _bed_by_hand(tmp_path / "genotypes.bed", len(fam), len(bim))
    assert (truth < 0).mean() > 0.05  # the fixture's missing calls are exercised
    rows = "".join(f"{b[0]}\t{b[3]}\t{b[5]}\t{b[4]}\n" for b in bim)  # REF = A2, ALT = A1
    panel = read_panel(_write(tmp_path / "panel.tsv", rows))
    people = fam[::-1][:7]
    got = harmonize_panel_genotypes(tmp_path / "genotypes.bed", panel, people)
    cols = [fam.index(p) for p in people]
    expected = np.where(truth[:, cols] < 0, GT_MISSING, truth[:, cols]).T
    assert got.how == ["same"] * len(bim)
    np.testing.assert_array_equal(got.codes, expected)
    swapped = read_panel(_write(tmp_path / "swapped.tsv", "".join(
        f"{b[0]}\t{b[3]}\t{b[4]}\t{b[5]}\n" for b in bim)))
    flipped = harmonize_panel_genotypes(tmp_path / "genotypes.bed", swapped, people)
    # Without a reference the swap is plausible for an SNV only if nothing matches exactly.
    assert flipped.how == ["swapped"] * len(bim)
    np.testing.assert_array_equal(flipped.codes, np.where(expected == GT_MISSING, GT_MISSING,
                                                          2 - expected))
    (tmp_path / "genotypes.fam").write_text("\n".join(f"0 {p} 0 0 0 -9" for p in fam[:-1]))
    with pytest.raises(InputError, match="not the PLINK fileset"):
        harmonize_panel_genotypes(tmp_path / "genotypes.bed", panel, fam)


def _write(path: Path, rows: str) -> Path:
    path.write_text("chrom\tpos\tref\talt\n" + rows)
    return path


def _site_as_plink(site: Path, version: int) -> dict[str, list]:
    """The site's VCF as a PLINK fileset (REF and ALT from the VCF; calls from pysam's GT),
    the VCF removed; returns what was written, for the test's own reading."""
    vcf = site / "genotypes.vcf.gz"
    with pysam.VariantFile(str(vcf)) as vf:
        samples = list(vf.header.samples)
        records = [(r.chrom, r.pos, r.ref, r.alts[0], [
            -9 if None in r.samples[s]["GT"] else sum(a == 1 for a in r.samples[s]["GT"])
            for s in samples]) for r in vf if r.alts and len(r.alts) == 1]
    counts = np.array([rec[4] for rec in records], dtype=np.int8)
    if version == 1:
        (site / "genotypes.fam").write_text("".join(f"F {s} 0 0 0 -9\n" for s in samples))
        # A1 (ALT) then A2 (REF); the .bed's 2-bit codes written by hand
        (site / "genotypes.bim").write_text("".join(
            f"{c}\t{c}:{p}\t0\t{p}\t{a}\t{r}\n" for c, p, r, a, _ in records))
        code = {2: 0b00, 1: 0b10, 0: 0b11, -9: 0b01}
        out = bytearray([0x6C, 0x1B, 0x01])
        for row in counts:
            for i in range(0, len(row), 4):
                byte = 0
                for k, x in enumerate(row[i:i + 4]):
                    byte |= code[int(x)] << (2 * k)
                out.append(byte)
        (site / "genotypes.bed").write_bytes(bytes(out))
    else:
        (site / "genotypes.psam").write_text("#IID\n" + "".join(f"{s}\n" for s in samples))
        (site / "genotypes.pvar").write_text("#CHROM\tPOS\tID\tREF\tALT\n" + "".join(
            f"{c}\t{p}\t.\t{r}\t{a}\n" for c, p, r, a, _ in records))
        writer = pgenlib.PgenWriter(bytes(str(site / "genotypes.pgen"), "utf-8"), len(samples),
                                    variant_ct=len(records), nonref_flags=False)
        for row in counts:
            writer.append_biallelic(np.ascontiguousarray(row))
        writer.close()
    vcf.unlink()
    Path(f"{vcf}.tbi").unlink()
    return {"samples": samples, "records": records}


@pytest.mark.parametrize("version", [1, 2])
def test_a_site_holding_plink_files_checks_trains_and_reads_as_from_its_vcf(
    site: Path, version: int
) -> None:
    before = load_site(site, EncoderSettings())
    _site_as_plink(site, version)
    genotypes = site / ("genotypes.bed" if version == 1 else "genotypes.pgen")
    report = check_site(**{**site_files(site), "vcf": genotypes},
                        cohort_spec=SiteSettings.load(site).cohort)
    assert report.ok, [f.line() for f in report.errors]
    assert report.summary["panel"]["coverage"]["found"] == int(before.found.sum())
    after = load_site(site, EncoderSettings())
    np.testing.assert_array_equal(after.found, before.found)
    np.testing.assert_array_equal(after.genotypes, before.genotypes)
    companion = genotypes.with_suffix(".bim" if version == 1 else ".pvar")
    companion.unlink()
    with pytest.raises(InputError, match="a PLINK fileset needs all three"):
        load_site(site, EncoderSettings())


def test_pgen_dosages_reach_the_model_as_fractions(tmp_path: Path) -> None:
    """A .pgen holding dosages (imputed data): a fractional dosage becomes genotype weights
    interpolated between its two nearest genotypes, as a VCF's DS does; a person whose hard
    call PLINK left missing gets the nearest genotype; missing both ways stays missing; a
    swapped panel reverses the weights; and a .pgen of whole dosages reads as codes alone."""
    people = [f"P{i}" for i in range(5)]
    (tmp_path / "genotypes.psam").write_text("#IID\n" + "".join(f"{p}\n" for p in people))
    (tmp_path / "genotypes.pvar").write_text(
        "#CHROM\tPOS\tID\tREF\tALT\n22\t100\t.\tA\tG\n22\t200\t.\tC\tT\n")
    imputed = np.array([[0.0, 0.6, 1.5, 2.0, -9], [1.0, 0.0, 2.0, 1.0, 0.0]])

    def write(rows: np.ndarray) -> None:
        writer = pgenlib.PgenWriter(bytes(str(tmp_path / "genotypes.pgen"), "utf-8"),
                                    len(people), variant_ct=len(rows), nonref_flags=False,
                                    dosage_present=True)
        for row in rows:
            writer.append_dosages(np.ascontiguousarray(row, dtype=np.float32))
        writer.close()

    write(imputed)
    panel = read_panel(_write(tmp_path / "panel.tsv", "22\t100\tA\tG\n22\t200\tC\tT\n"))
    got = harmonize_panel_genotypes(tmp_path / "genotypes.pgen", panel, people)
    assert got.how == ["same", "same"] and got.probs is not None
    np.testing.assert_array_equal(got.codes[:, 0], [0, 1, 2, 2, GT_MISSING])  # 0.6 -> 1
    weights = got.probs[:, 0]
    np.testing.assert_allclose(weights[1], [0.4, 0.6, 0.0], atol=1e-3)  # 0.6 (PLINK: 1/16384)
    np.testing.assert_allclose(weights[2], [0.0, 0.5, 0.5], atol=1e-3)
    np.testing.assert_array_equal(weights[4], [0, 0, 0])
    np.testing.assert_allclose(got.dosage[:4, 0], [0.0, 0.6, 1.5, 2.0], atol=1e-3)
    np.testing.assert_array_equal(got.probs[:, 1], np.eye(3)[[1, 0, 2, 1, 0]])  # whole: one-hot
    swapped = read_panel(_write(tmp_path / "swapped.tsv", "22\t100\tG\tA\n22\t200\tT\tC\n"))
    flipped = harmonize_panel_genotypes(tmp_path / "genotypes.pgen", swapped, people)
    np.testing.assert_allclose(flipped.probs[:4, 0], weights[:4, ::-1])
    write(np.clip(np.round(imputed), -9, 2))  # whole dosages: nothing soft to carry
    assert harmonize_panel_genotypes(tmp_path / "genotypes.pgen", panel, people).probs is None
