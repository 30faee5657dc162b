"""Cohort tables as hospitals hold them: other column names, codings, separators and gaps.

Every problem must be one InputError naming the file, the line (header = line 1) and the value.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.cohort import (
    DEFAULT_ANCESTRIES,
    Cohort,
    CohortSpec,
    assign_split,
    read_cohort,
)
from shared.errors import InputError

HEADER = ["sample_id", "ancestry", "phenotype"]


def write(path: Path, rows: list[list[str]], sep: str = "\t", bom: bool = False) -> Path:
    text = "\n".join(sep.join(r) for r in rows) + "\n"
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def table(tmp_path: Path, phenotypes: list[str], name: str = "cohort.tsv", **extra) -> Path:
    """sample_id/ancestry/phenotype (+ extra columns), one row per phenotype value."""
    ancestries = ["CEU", "YRI", "CHB"]
    rows = [HEADER + list(extra)]
    for i, p in enumerate(phenotypes):
        rows.append([f"S{i:03d}", ancestries[i % 3], p, *(v[i] for v in extra.values())])
    return write(tmp_path / name, rows, sep="," if name.endswith(".csv") else "\t")


def raises(path: Path, spec: CohortSpec | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        read_cohort(path, spec or CohortSpec())
    assert info.value.path == str(path)
    return info.value


# --------------------------------------------------------------------------- codings


@pytest.mark.parametrize(
    ("coding", "values", "expected"),
    [
        ("01", ["0", "1", "1", "0"], [0, 1, 1, 0]),
        ("case-control", ["control", "Case", "CASES", "Controls"], [0, 1, 1, 0]),
        ("plink", ["1", "2", "2", "1"], [0, 1, 1, 0]),
    ],
)
def test_each_coding(tmp_path: Path, coding: str, values: list[str], expected: list[int]) -> None:
    for spec_coding in (coding, "auto"):
        cohort = read_cohort(table(tmp_path, values), CohortSpec(phenotype_coding=spec_coding))
        assert cohort.phenotype.tolist() == expected
        assert cohort.phenotype.dtype == np.int8
        assert cohort.phenotype_coding == coding
        assert cohort.n_missing_phenotype == 0


def test_auto_detection(tmp_path: Path) -> None:
    def coding(values: list[str]) -> str:
        return read_cohort(table(tmp_path, values)).phenotype_coding

    assert coding(["0", "1", "-9", "NA"]) == "01"
    assert coding(["0", "0"]) == "01"  # all controls; in PLINK coding it would be all missing
    assert coding(["1", "2"]) == "plink"
    assert coding(["1.0", "2.0"]) == "plink"
    assert coding(["case", "Control", ""]) == "case-control"

    # 0, 1 and 2: PLINK's 0 would drop everyone coded 0; declared, it is read as PLINK.
    err = raises(table(tmp_path, ["0", "1", "2", "-9"]))
    assert "0 and 2" in err.problem and "set the phenotype coding" in err.problem
    plink = read_cohort(table(tmp_path, ["0", "1", "2", "-9"]),
                        CohortSpec(phenotype_coding="plink"))
    assert plink.phenotype.tolist() == [0, 1] and plink.n_missing_phenotype == 2
    err = raises(table(tmp_path, ["1", "1"]))  # all cases (01) or all controls (PLINK)?
    assert "only the value 1" in err.problem and "coding" in err.problem
    err = raises(table(tmp_path, ["case", "control", "1", "0"]))
    assert err.record == "line 4"
    assert "mixes" in err.problem and "'case' on line 2" in err.problem
    assert "'1' on line 4" in err.problem


def test_missing_phenotypes_are_excluded_and_counted(tmp_path: Path) -> None:
    values = ["2", "0", "1", "-9", "NA", "", "2", "-9.0", "1"]
    cohort = read_cohort(table(tmp_path, values), CohortSpec(phenotype_coding="plink"))
    assert cohort.n_missing_phenotype == 5
    assert cohort.sample_id.tolist() == ["S000", "S002", "S006", "S008"]
    assert cohort.phenotype.tolist() == [1, 0, 1, 0]
    assert cohort.ancestry.tolist() == ["CEU", "CHB", "CEU", "CHB"]
    assert len(cohort) == len(cohort.split) == len(cohort.covariates) == 4

    # 0 is a control in 01 coding, not missing; -9 and NA are missing in every coding.
    cohort = read_cohort(table(tmp_path, ["0", "1", "-9", "na"]), CohortSpec(phenotype_coding="01"))
    assert cohort.phenotype.tolist() == [0, 1] and cohort.n_missing_phenotype == 2

    err = raises(table(tmp_path, ["-9", "NA", "0"]), CohortSpec(phenotype_coding="plink"))
    assert "every phenotype is missing" in err.problem


def test_bad_phenotype_names_file_line_and_value(tmp_path: Path) -> None:
    path = table(tmp_path, ["0", "1", "0", "1", "0", "maybe", "1"])
    err = raises(path)
    assert err.record == "line 7"
    assert "phenotype 'maybe' is neither case nor control" in err.problem
    assert str(err).startswith(f"{path}: line 7: phenotype 'maybe'")

    err = raises(table(tmp_path, ["1", "2", "3"]), CohortSpec(phenotype_coding="plink"))
    assert err.record == "line 4" and "'3'" in err.problem and "plink" in err.problem
    err = raises(table(tmp_path, ["0", "1", "2"]), CohortSpec(phenotype_coding="01"))
    assert err.record == "line 4" and "'2'" in err.problem
    err = raises(table(tmp_path, ["case", "0"]), CohortSpec(phenotype_coding="case-control"))
    assert err.record == "line 3" and "'0'" in err.problem


# --------------------------------------------------------------------------- file formats


def test_csv_tsv_txt_and_bom_read_the_same(tmp_path: Path) -> None:
    rows = [[*HEADER, "split"], ["A", "CEU", "1", "train"], ["B", "YRI", "0", "test"]]
    paths = [
        write(tmp_path / "c.tsv", rows),
        write(tmp_path / "c.csv", rows, sep=","),
        write(tmp_path / "c_tab.txt", rows),
        write(tmp_path / "c_comma.txt", rows, sep=","),
        write(tmp_path / "bom.csv", rows, sep=",", bom=True),
        write(tmp_path / "bom.tsv", rows, bom=True),
    ]
    crlf = tmp_path / "crlf.csv"
    crlf.write_bytes(b"\xef\xbb\xbf" + b"\r\n".join(",".join(r).encode() for r in rows) + b"\r\n")
    paths.append(crlf)
    gz = tmp_path / "c.tsv.gz"
    gz.write_bytes(gzip.compress((tmp_path / "c.tsv").read_bytes()))
    paths.append(gz)
    for path in paths:
        cohort = read_cohort(path)
        assert cohort.sample_id.tolist() == ["A", "B"], path
        assert cohort.ancestry.tolist() == ["CEU", "YRI"], path
        assert cohort.phenotype.tolist() == [1, 0], path
        assert cohort.split.tolist() == ["train", "test"], path


def test_comma_table_named_tsv_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", [HEADER, ["A", "CEU", "1"]], sep=",")
    err = raises(path)
    assert err.record == "line 1" and "commas" in err.problem


def test_column_named_twice(tmp_path: Path) -> None:
    rows = [[*HEADER, "phenotype"], ["A", "CEU", "1", "0"]]
    err = raises(write(tmp_path / "c.tsv", rows))
    assert err.record == "line 1" and "phenotype" in err.problem and "twice" in err.problem
    rows = [[*HEADER, "note", "note"], ["A", "CEU", "1", "x", "y"], ["B", "CEU", "0", "", ""]]
    assert len(read_cohort(write(tmp_path / "c.tsv", rows))) == 2  # unused columns: no matter


def test_utf16_and_ragged_rows(tmp_path: Path) -> None:
    path = tmp_path / "excel.tsv"
    path.write_bytes("sample_id\tancestry\tphenotype\nA\tCEU\t1\n".encode("utf-16"))
    assert "UTF-8" in raises(path).problem
    path = write(tmp_path / "long.tsv", [HEADER, ["A", "CEU", "1"], ["B", "CEU", "0", "x"]])
    err = raises(path)
    assert err.record == "line 3" and "4 fields" in err.problem
    path = write(tmp_path / "long1.tsv", [HEADER, ["A", "CEU", "1", "x"], ["B", "CEU", "0"]])
    assert raises(path).record == "line 2"


def test_blank_lines_are_skipped_and_lines_still_counted(tmp_path: Path) -> None:
    path = tmp_path / "blank.tsv"
    path.write_text("sample_id\tancestry\tphenotype\nA\tCEU\t1\n\nB\tYRI\t0\n\nC\tCHB\tmaybe\n\n")
    err = raises(path)
    assert err.record == "line 6"


# --------------------------------------------------------------------------- columns


RENAMED = dict(
    sample_col="IID", ancestry_col="pop", phenotype_col="T2D", split_col="fold",
    covariate_cols=("age", "PC1"), phenotype_coding="plink",  # 0, 1 and 2: declared
)  # fmt: skip


def renamed_table(tmp_path: Path) -> Path:
    return write(
        tmp_path / "hospital.csv",
        [
            ["extra", "IID", "T2D", "fold", "pop", "age", "PC1"],
            ["x", "p1", "2", "Train", "EUR", "61", "0.013"],
            ["y", "p2", "1", "TEST", "afr", "", "-0.2"],
            ["z", "p3", "0", "train", "EUR", "70", "NA"],
            ["w", "p4", "1", "train", "SAS", "44.5", "1e-3"],
        ],
        sep=",",
    )


def check_renamed(cohort: Cohort) -> None:
    assert cohort.sample_id.tolist() == ["p1", "p2", "p4"]
    assert cohort.ancestry.tolist() == ["EUR", "AFR", "SAS"]  # case folded to the listed label
    assert cohort.phenotype.tolist() == [1, 0, 0]
    assert cohort.split.tolist() == ["train", "test", "train"]
    assert cohort.n_missing_phenotype == 1 and cohort.phenotype_coding == "plink"
    assert cohort.covariate_names == ("age", "PC1")
    assert cohort.covariates.dtype == np.float32 and cohort.covariates.shape == (3, 2)
    np.testing.assert_allclose(
        cohort.covariates, np.array([[61, 0.013], [np.nan, -0.2], [44.5, 1e-3]], np.float32)
    )


def test_renamed_columns_via_spec(tmp_path: Path) -> None:
    check_renamed(read_cohort(renamed_table(tmp_path), CohortSpec(**RENAMED)))


def test_renamed_columns_via_mapping(tmp_path: Path) -> None:
    spec = CohortSpec.from_mapping(
        {
            "sample-col": "IID", "ancestry_col": "pop", "phenotype-col": "T2D",
            "split-col": "fold", "covariates": ["age", "PC1"], "phenotype-coding": "plink",
            "test-fraction": 0.2, "seed": 3,
        }
    )  # fmt: skip
    assert spec == CohortSpec(**RENAMED, test_fraction=0.2, seed=3)
    check_renamed(read_cohort(renamed_table(tmp_path), spec))
    # Flower run configs hold scalars only: comma-separated strings work too.
    spec = CohortSpec.from_mapping({"covariates": "age, PC1", "ancestries": "any", "seed": "5"})
    assert spec.covariate_cols == ("age", "PC1") and spec.ancestries is None and spec.seed == 5
    assert CohortSpec.from_mapping({"split-col": ""}).split_col is None
    assert CohortSpec.from_mapping({"ancestries": ["A", "B"]}).ancestries == ("A", "B")


def test_mapping_errors_name_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "site.toml"
    for bad, words in [
        ({"sample-column": "IID"}, "unknown cohort setting 'sample-column'"),
        ({"phenotype-coding": "binary"}, "phenotype coding 'binary'"),
        ({"test-fraction": 1.5}, "test fraction"),
        ({"test-fraction": "lots"}, "must be a number"),
        ({"seed": 1.5}, "integer"),
        ({"covariates": [1, 2]}, "list of names"),
        ({"sample-col": "x", "sample_col": "y"}, "given twice"),
        ({"sample-col": "phenotype"}, "two roles"),
    ]:
        with pytest.raises(InputError) as info:
            CohortSpec.from_mapping(bad, source=conf)
        assert info.value.path == str(conf)
        assert words in info.value.problem, (bad, info.value.problem)


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path / "c.tsv", [["sample_id", "Ancestry", "pheno"], ["A", "CEU", "1"]])
    err = raises(path)
    assert err.record == "line 1"
    assert "ancestry, phenotype" in err.problem
    assert "found: sample_id, Ancestry, pheno" in err.problem
    assert "'Ancestry' for 'ancestry'" in err.problem
    err = raises(table(tmp_path, ["0", "1"]), CohortSpec(covariate_cols=("age",)))
    assert "lacks column(s) age" in err.problem


def test_empty_tables(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert "empty" in raises(empty).problem
    header_only = write(tmp_path / "header.tsv", [HEADER])
    assert "no people" in raises(header_only).problem
    assert "not found" in raises(tmp_path / "absent.tsv").problem


def test_duplicated_and_empty_sample_ids(tmp_path: Path) -> None:
    rows = [HEADER, ["A", "CEU", "1"], ["B", "CEU", "0"], ["C", "YRI", "1"], ["B", "YRI", "1"]]
    err = raises(write(tmp_path / "dup.tsv", rows))
    assert err.record == "line 5"
    assert "sample 'B' is listed twice (lines 3 and 5)" in err.problem
    rows = [HEADER, ["A", "CEU", "1"], ["  ", "CEU", "0"]]
    err = raises(write(tmp_path / "empty_id.tsv", rows))
    assert err.record == "line 3" and "empty sample id" in err.problem


# --------------------------------------------------------------------------- ancestry


def test_unknown_ancestry(tmp_path: Path) -> None:
    rows = [HEADER, ["A", "CEU", "1"], ["B", "Klingon", "0"]]
    err = raises(write(tmp_path / "c.tsv", rows))
    assert err.record == "line 3"
    assert "ancestry 'Klingon'" in err.problem and "CEU" in err.problem
    assert len(err.problem) < 250  # brief, not all 32 labels

    spec = CohortSpec(ancestries=("North", "South"))
    err = raises(write(tmp_path / "c.tsv", [HEADER, ["A", "CEU", "1"]]), spec)
    assert "North, South" in err.problem
    err = raises(write(tmp_path / "c.tsv", [HEADER, ["A", "", "1"]]))
    assert err.record == "line 2" and "empty ancestry" in err.problem


def test_any_ancestry_when_not_restricted(tmp_path: Path) -> None:
    rows = [HEADER, ["A", "Klingon", "1"], ["B", "mixed/other", "0"]]
    cohort = read_cohort(write(tmp_path / "c.tsv", rows), CohortSpec(ancestries=None))
    assert cohort.ancestry.tolist() == ["Klingon", "mixed/other"]
    err = raises(write(tmp_path / "c.tsv", [HEADER, ["A", " ", "1"]]), CohortSpec(ancestries=None))
    assert "empty ancestry" in err.problem


def test_default_ancestries() -> None:
    assert len(DEFAULT_ANCESTRIES) == 32 == len(set(DEFAULT_ANCESTRIES))
    assert {"YRI", "CEU", "CHB", "AFR", "AMR", "EAS", "EUR", "SAS", "OTHER"} <= set(
        DEFAULT_ANCESTRIES
    )


# --------------------------------------------------------------------------- covariates


def test_non_numeric_covariate(tmp_path: Path) -> None:
    path = table(tmp_path, ["0", "1", "1"], age=["50", "sixty", "70"])
    err = raises(path, CohortSpec(covariate_cols=("age",)))
    assert err.record == "line 3" and "'age'" in err.problem and "'sixty'" in err.problem
    path = table(tmp_path, ["0", "1"], age=["50", "inf"])
    assert raises(path, CohortSpec(covariate_cols=("age",))).record == "line 3"
    cohort = read_cohort(table(tmp_path, ["0", "1"]))
    assert cohort.covariates.shape == (2, 0) and cohort.covariates.dtype == np.float32


# --------------------------------------------------------------------------- split


def test_split_values(tmp_path: Path) -> None:
    path = table(tmp_path, ["0", "1", "0"], split=["TRAIN", " test ", "Train"])
    assert read_cohort(path).split.tolist() == ["train", "test", "train"]
    err = raises(table(tmp_path, ["0", "1", "0"], split=["train", "valid", "test"]))
    assert err.record == "line 3" and "split 'valid'" in err.problem
    # split_col=None ignores the column and generates the split
    cohort = read_cohort(
        table(tmp_path, ["0", "1", "0"], split=["x", "y", "z"]), CohortSpec(split_col=None)
    )
    assert set(cohort.split) <= {"train", "test"}


def big_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "sample_id": [f"P{i:06d}" for i in rng.permutation(10 * n)[:n]],
            "ancestry": rng.choice(["CEU", "YRI", "CHB"], n, p=[0.6, 0.3, 0.1]),
            "phenotype": rng.choice(["0", "1"], n, p=[0.8, 0.2]),
        }
    )


def test_generated_split_is_deterministic_stratified_and_order_free(tmp_path: Path) -> None:
    frame = big_table(4000)
    a = tmp_path / "a.tsv"
    frame.to_csv(a, sep="\t", index=False)
    b = tmp_path / "b.tsv"
    frame.sample(frac=1.0, random_state=1).to_csv(b, sep="\t", index=False)

    first = read_cohort(a)
    again = read_cohort(a)
    shuffled = read_cohort(b)
    np.testing.assert_array_equal(first.split, again.split)
    by_id = dict(zip(first.sample_id, first.split, strict=True))
    assert dict(zip(shuffled.sample_id, shuffled.split, strict=True)) == by_id

    # Stratified: every (ancestry, phenotype) stratum is within one person of 25% test.
    for anc in ("CEU", "YRI", "CHB"):
        for y in (0, 1):
            stratum = (first.ancestry == anc) & (first.phenotype == y)
            n_test = int((first.split[stratum] == "test").sum())
            assert abs(n_test - 0.25 * stratum.sum()) <= 1, (anc, y)

    other_seed = read_cohort(a, CohortSpec(seed=1))
    assert (other_seed.split != first.split).sum() > 100
    tenth = read_cohort(a, CohortSpec(test_fraction=0.1))
    assert abs((tenth.split == "test").mean() - 0.1) < 0.01
    # the same function, applied directly, gives the same answer
    np.testing.assert_array_equal(
        assign_split(first.sample_id, first.ancestry, first.phenotype, 0.25, 0), first.split
    )


# --------------------------------------------------------------------------- compatibility


def test_simulator_tables_read_as_before(tmp_path: Path) -> None:
    """The simulator's table (written the way `deploy.simulate` writes it) reads as it always
    did: same rows, same order, phenotype int8 0/1, the split as given."""
    frame = big_table(600, seed=2)
    frame["phenotype"] = frame["phenotype"].astype(np.int8)
    frame["split"] = np.where(np.arange(600) % 4 == 0, "test", "train")
    path = tmp_path / "cohort.tsv"
    frame.to_csv(path, sep="\t", index=False, float_format="%.6f", lineterminator="\n")

    cohort = read_cohort(path)
    np.testing.assert_array_equal(cohort.sample_id, frame["sample_id"].to_numpy(dtype=str))
    np.testing.assert_array_equal(cohort.ancestry, frame["ancestry"].to_numpy(dtype=str))
    np.testing.assert_array_equal(cohort.phenotype, frame["phenotype"].to_numpy())
    np.testing.assert_array_equal(cohort.split, frame["split"].to_numpy(dtype=str))
    assert cohort.phenotype.dtype == np.int8 and cohort.sample_id.dtype.kind == "U"
    assert cohort.n_missing_phenotype == 0 and cohort.covariates.shape == (600, 0)

    sub = cohort.subset(cohort.split == "test")
    assert len(sub) == 150 and set(sub.split) == {"test"}
    assert sub.covariates.shape == (150, 0)
    # the four-field constructor still works
    old = Cohort(cohort.sample_id, cohort.ancestry, cohort.phenotype, cohort.split)
    assert len(old) == 600 and old.covariates.shape == (600, 0)
