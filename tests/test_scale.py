"""Reading a large site stays bounded: records are decoded as they stream past (none kept until
the end), the result is checked without whole-array copies, and long reads log progress."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np
import pysam
import pytest

import shared.genotypes as genotypes
import shared.progress as progress
from deploy.bench.synthetic_site import write_site
from shared.genotypes import harmonize_panel_genotypes, require_calls
from shared.panel import read_panel
from shared.tokenizer import GT_MISSING


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    return write_site(tmp_path_factory.mktemp("scale") / "site", people=40, variants=300, seed=5)


def _live_records() -> int:
    return sum(type(o) is pysam.VariantRecord for o in gc.get_objects())


def test_records_are_decoded_as_they_stream_not_kept(site, monkeypatch) -> None:  # noqa: ANN001
    """At every decode, only the record being decoded (and the scan's current one) is alive:
    holding every matched record until the scan ends costs a whole copy of the genotypes."""
    seen: list[int] = []
    decode = genotypes.record_calls

    def counting(rec: pysam.VariantRecord, alt_index: int,
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        if len(seen) % 25 == 0:
            seen.append(_live_records())
        else:
            seen.append(-1)
        return decode(rec, alt_index)

    monkeypatch.setattr(genotypes, "record_calls", counting)
    panel = read_panel(site.panel)
    got = harmonize_panel_genotypes(site.vcf, panel, site.samples, site.reference)
    assert got.found.all() and len(seen) == site.variants
    assert max(seen) <= 3, max(seen)


def test_vcf_and_plink_agree_on_the_synthetic_site(site) -> None:  # noqa: ANN001
    panel = read_panel(site.panel)
    vcf = harmonize_panel_genotypes(site.vcf, panel, site.samples, site.reference)
    bed = harmonize_panel_genotypes(site.bed, panel, site.samples, site.reference)
    assert vcf.counts() == bed.counts() == {"same": site.variants}
    assert np.array_equal(vcf.codes, bed.codes)
    assert set(np.unique(vcf.codes).tolist()) == {0, 1, 2, GT_MISSING}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize("fmt", ["vcf", "bed"])
def test_a_large_read_logs_progress_every_tenth(site, monkeypatch, fmt: str) -> None:  # noqa: ANN001
    monkeypatch.setattr(progress, "PROGRESS_MIN_CALLS", 0)  # this small site counts as large
    logger = logging.getLogger("shared")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        harmonize_panel_genotypes(getattr(site, fmt), read_panel(site.panel), site.samples,
                                  site.reference)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    shares = [int(line.split(": ")[1].split("%")[0]) for line in handler.lines]
    assert shares == list(range(10, 101, 10)), handler.lines
    assert "of 300" in handler.lines[-1]


def test_a_small_read_logs_nothing(site) -> None:  # noqa: ANN001
    logger = logging.getLogger("shared")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        harmonize_panel_genotypes(site.vcf, read_panel(site.panel), site.samples, site.reference)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.lines == []


def test_require_calls_checks_in_slices(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The all-missing check reads the codes a slice of people at a time, with the same
    verdicts as a whole-array check."""
    monkeypatch.setattr(genotypes, "_CHECK_CELLS", 12)  # 3 people a slice
    codes = np.full((10, 4), GT_MISSING, dtype=np.int8)
    found = np.array([True, False, True, False])
    with pytest.raises(genotypes.InputError, match="every call"):
        require_calls(codes, found, tmp_path / "g.vcf.gz")
    codes[9, 1] = 0  # a call at a variant not found does not count
    with pytest.raises(genotypes.InputError, match="every call"):
        require_calls(codes, found, tmp_path / "g.vcf.gz")
    codes[9, 2] = 1
    require_calls(codes, found, tmp_path / "g.vcf.gz")
    with pytest.raises(genotypes.InputError, match="no panel variant"):
        require_calls(codes, np.zeros(4, dtype=bool), tmp_path / "g.vcf.gz")


@pytest.mark.parametrize("scan", [True, False])
@pytest.mark.parametrize("exact_first", [True, False])
def test_the_exact_record_wins_whichever_comes_first(tmp_path: Path, monkeypatch, scan: bool,
                                                     exact_first: bool) -> None:  # noqa: ANN001
    """Decoding as records stream past must still end on the best match: a swapped record
    read before the exact one is overwritten, one read after it is ignored."""
    from tests.test_harmonize import write_panel, write_reference, write_vcf

    monkeypatch.setattr(genotypes, "_SCAN_MIN_VARIANTS", 1 if scan else 10**9)
    ref = write_reference(tmp_path / "ref.fa")  # position 2 is A
    swapped = (2, "C", ("A",), [((0, 0), True), ((0, 1), True), ((1, 1), True)])  # C/A flipped
    exact = (2, "A", ("C",), [((1, 1), True), ((1, 1), True), ((0, 0), True)])
    records = [exact, swapped] if exact_first else [swapped, exact]
    vcf = write_vcf(tmp_path / "g.vcf.gz", "chr1", records)
    panel = read_panel(write_panel(tmp_path / "panel.tsv", [("chr1", 2, "A", "C")]))
    got = harmonize_panel_genotypes(vcf, panel, ["p1", "p2", "p3"], ref)
    assert got.how == ["same"]
    assert got.codes[:, 0].tolist() == [2, 2, 0]
