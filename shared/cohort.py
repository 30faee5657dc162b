"""A site's cohort table: who is in the study, their ancestry label, phenotype and split.

This table never leaves the site. Only aggregate, suppressed statistics derived from it do.

Hospitals do not hold our simulator's table, so the reader is configurable through `CohortSpec`:

- **Format**: TSV or CSV, UTF-8 with or without a byte-order mark, optionally gzip/bz2/xz
  compressed. `.csv` means commas and `.tsv` tabs; any other name (`.txt`, ...) is sniffed from
  the header line (tab if it holds one, else comma).
- **Columns**: sample id, ancestry, phenotype, optional split and optional numeric covariates,
  each under a configurable name. Other columns are ignored.
- **Phenotype codings**: `"01"` (0 control, 1 case), `"case-control"` (case/control words),
  `"plink"` (1 control, 2 case, 0 missing) or `"auto"` (decided from the values present).
  `-9`, `NA`, `N/A`, `NaN`, `.` and empty cells are missing in every coding. People whose
  phenotype is missing are left out of the cohort and counted in `Cohort.n_missing_phenotype`.
- **Split**: `train`/`test` (any case) when the table has the split column; otherwise a
  deterministic split, stratified by ancestry and phenotype, from a seeded hash of the sample id
  (so it does not depend on row order).
- **Covariates**: numeric columns returned as float32 `[N, k]`; empty/NA/NaN cells are NaN
  (`-9` is kept as the number -9 here); text or infinities are an error.

Every problem is one `InputError` naming the file, the line (1-based, the header is line 1) and
what is wrong. Validation is vectorised: the first bad row is found with masks, never a Python
loop over rows.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import lzma
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shared.errors import InputError

COHORT_COLUMNS = ("sample_id", "ancestry", "phenotype", "split")
SPLITS = ("train", "test")

# The 26 populations of the 1000 Genomes Project, its 5 superpopulations, and a catch-all.
KGP_POPULATIONS = (
    "ACB", "ASW", "BEB", "CDX", "CEU", "CHB", "CHS", "CLM", "ESN", "FIN", "GBR", "GIH", "GWD",
    "IBS", "ITU", "JPT", "KHV", "LWK", "MSL", "MXL", "PEL", "PJL", "PUR", "STU", "TSI", "YRI",
)  # fmt: skip
KGP_SUPERPOPULATIONS = ("AFR", "AMR", "EAS", "EUR", "SAS")
DEFAULT_ANCESTRIES: tuple[str, ...] = (*KGP_POPULATIONS, *KGP_SUPERPOPULATIONS, "OTHER")

PHENOTYPE_CODINGS = ("auto", "01", "case-control", "plink")

# Tokens are compared after stripping and lower-casing.
MISSING_TOKENS = frozenset({"", "na", "n/a", "nan", ".", "-9"})
_NUMERIC_ALIASES = {"0.0": "0", "1.0": "1", "2.0": "2", "-9.0": "-9"}
_WORDS = {"case": 1, "cases": 1, "control": 0, "controls": 0}
_CODES: dict[str, tuple[dict[str, int], frozenset[str], str]] = {
    # coding: (token -> 0/1, extra missing tokens, how to read it)
    "01": ({"0": 0, "1": 1}, frozenset(), "0 control, 1 case, -9/NA missing"),
    "case-control": (_WORDS, frozenset(), "case or control, NA missing"),
    "plink": ({"1": 0, "2": 1}, frozenset({"0"}), "1 control, 2 case, 0/-9 missing"),
}

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass(frozen=True)
class CohortSpec:
    """How to read one site's cohort table.

    `split_col=None` ignores any split column and always generates the split. `ancestries=None`
    accepts any non-empty label; otherwise labels are matched case-insensitively and returned
    in the spelling given here.
    """

    sample_col: str = "sample_id"
    ancestry_col: str = "ancestry"
    phenotype_col: str = "phenotype"
    split_col: str | None = "split"
    covariate_cols: tuple[str, ...] = ()
    phenotype_coding: str = "auto"
    ancestries: tuple[str, ...] | None = DEFAULT_ANCESTRIES
    test_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        # Normalise lists to tuples so the spec stays hashable (it keys caches).
        if isinstance(self.covariate_cols, str):
            object.__setattr__(self, "covariate_cols", (self.covariate_cols,))
        object.__setattr__(self, "covariate_cols", tuple(self.covariate_cols))
        if self.ancestries is not None:
            if isinstance(self.ancestries, str):
                object.__setattr__(self, "ancestries", (self.ancestries,))
            object.__setattr__(self, "ancestries", tuple(self.ancestries))
        self._validate()

    def _validate(self) -> None:
        named = [self.sample_col, self.ancestry_col, self.phenotype_col]
        named += [self.split_col] if self.split_col is not None else []
        named += list(self.covariate_cols)
        for name in named:
            if not isinstance(name, str) or not name.strip():
                raise InputError(None, f"cohort column name {name!r} must be a non-empty string")
        twice = sorted({n for n in named if named.count(n) > 1})
        if twice:
            raise InputError(None, f"cohort column(s) {', '.join(twice)} named for two roles")
        if self.phenotype_coding not in PHENOTYPE_CODINGS:
            raise InputError(
                None,
                f"phenotype coding {self.phenotype_coding!r} is not one of "
                f"{', '.join(PHENOTYPE_CODINGS)}",
            )
        if self.ancestries is not None:
            labels = list(self.ancestries)
            if not labels or not all(isinstance(a, str) and a.strip() for a in labels):
                raise InputError(None, "ancestries must be non-empty labels (or None for any)")
            folded = [a.strip().lower() for a in labels]
            if len(set(folded)) != len(folded):
                raise InputError(None, "ancestries list a label twice (case-insensitively)")
        fraction = self.test_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0.0 < fraction < 1.0
        ):
            raise InputError(None, f"test fraction {fraction!r} is not between 0 and 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise InputError(None, f"seed {self.seed!r} is not an integer")

    @classmethod
    def from_mapping(
        cls, settings: Mapping[str, Any], source: str | Path | None = None
    ) -> CohortSpec:
        """A spec from a site config: keys in kebab- or snake-case (`sample-col`, `covariates`).

        Keys: sample-col, ancestry-col, phenotype-col, split-col (empty/None: always generate),
        covariates (alias covariate-cols: a list or a comma-separated string), phenotype-coding,
        ancestries (a list, a comma-separated string, "default", or "any"/"*"/None for any),
        test-fraction, seed. Unknown keys are an InputError naming `source`.
        """
        kwargs: dict[str, Any] = {}
        for raw_key, value in settings.items():
            key = str(raw_key).strip().lower().replace("_", "-")
            field = _SETTING_KEYS.get(key)
            if field is None:
                raise InputError(
                    source,
                    f"unknown cohort setting {raw_key!r} "
                    f"(known: {', '.join(sorted(set(_SETTING_KEYS) - {'covariate-cols'}))})",
                )
            if field in kwargs:
                raise InputError(source, f"cohort setting {raw_key!r} given twice")
            kwargs[field] = _setting_value(field, value, raw_key, source)
        try:
            return cls(**kwargs)
        except InputError as err:
            raise InputError(source, err.problem, err.record) from None


_SETTING_KEYS = {
    "sample-col": "sample_col",
    "ancestry-col": "ancestry_col",
    "phenotype-col": "phenotype_col",
    "split-col": "split_col",
    "covariates": "covariate_cols",
    "covariate-cols": "covariate_cols",
    "phenotype-coding": "phenotype_coding",
    "ancestries": "ancestries",
    "test-fraction": "test_fraction",
    "seed": "seed",
}


def _str_list(value: Any, key: Any, source: str | Path | None) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    raise InputError(source, f"cohort setting {key!r} must be a list of names, not {value!r}")


def _setting_value(field: str, value: Any, key: Any, source: str | Path | None) -> Any:
    if field == "split_col" and (value is None or (isinstance(value, str) and not value.strip())):
        return None
    if field in ("sample_col", "ancestry_col", "phenotype_col", "split_col", "phenotype_coding"):
        if not isinstance(value, str):
            raise InputError(source, f"cohort setting {key!r} must be a string, not {value!r}")
        return value.strip()
    if field == "covariate_cols":
        return _str_list(value, key, source)
    if field == "ancestries":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("any", "*")):
            return None
        if isinstance(value, str) and value.strip().lower() == "default":
            return DEFAULT_ANCESTRIES
        return _str_list(value, key, source)
    if field == "test_fraction":
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise InputError(
                source, f"cohort setting {key!r} must be a number, not {value!r}"
            ) from None
    # seed
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(source, f"cohort setting {key!r} must be an integer, not {value!r}")
    return value


DEFAULT_SPEC = CohortSpec()


@dataclass(frozen=True)
class Cohort:
    sample_id: np.ndarray  # [N] str
    ancestry: np.ndarray  # [N] str
    phenotype: np.ndarray  # [N] int8, 0 control / 1 case
    split: np.ndarray  # [N] str, "train" or "test"
    covariates: np.ndarray | None = None  # [N, k] float32, NaN where missing; None -> [N, 0]
    covariate_names: tuple[str, ...] = ()
    n_missing_phenotype: int = 0  # people in the table left out for a missing phenotype
    phenotype_coding: str = "01"  # the coding the table was read with (auto resolved)
    # False: the table has no ancestry column (read with `ancestry_optional`); `ancestry` is
    # then "" until `relabel` gives the genetic labels (shared.ancestry).
    ancestry_declared: bool = True
    split_generated: bool = False  # the split came from `assign_split`, not the table

    def __post_init__(self) -> None:
        n = len(self.sample_id)
        if self.covariates is None:
            object.__setattr__(self, "covariates", np.zeros((n, 0), dtype=np.float32))
        cov = self.covariates
        if cov.ndim != 2 or cov.shape[0] != n or cov.shape[1] != len(self.covariate_names):
            raise ValueError(
                f"covariates of shape {cov.shape} do not match {n} people and "
                f"{len(self.covariate_names)} covariate names"
            )
        if not len(self.ancestry) == len(self.phenotype) == len(self.split) == n:
            raise ValueError("cohort columns differ in length")

    def __len__(self) -> int:
        return len(self.sample_id)

    def subset(self, mask: np.ndarray) -> Cohort:
        """The people selected by `mask` (bool or index array); table-level counts are kept."""
        return Cohort(
            self.sample_id[mask], self.ancestry[mask], self.phenotype[mask], self.split[mask],
            self.covariates[mask], self.covariate_names, self.n_missing_phenotype,
            self.phenotype_coding, self.ancestry_declared, self.split_generated,
        )  # fmt: skip


def relabel(cohort: Cohort, ancestry: np.ndarray, spec: CohortSpec | None = None) -> Cohort:
    """The cohort with other ancestry labels per person (e.g. genetic ones). A generated split
    is drawn again, stratified by the new labels, so every group the site evaluates has its
    held-out share; a split the table gave is kept."""
    spec = DEFAULT_SPEC if spec is None else spec
    ancestry = np.asarray(ancestry, dtype=str)
    if len(ancestry) != len(cohort):
        raise ValueError(f"{len(ancestry)} labels for {len(cohort)} people")
    split = cohort.split
    if cohort.split_generated:
        split = assign_split(cohort.sample_id, ancestry, cohort.phenotype, spec.test_fraction,
                             spec.seed)
    return Cohort(
        cohort.sample_id, ancestry, cohort.phenotype, split, cohort.covariates,
        cohort.covariate_names, cohort.n_missing_phenotype, cohort.phenotype_coding,
        cohort.ancestry_declared, cohort.split_generated,
    )  # fmt: skip


# --------------------------------------------------------------------------- reading the file


def _open_text(path: Path):
    opener = _COMPRESSED.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_header(path: Path) -> str:
    """The header line, decoded; rejects UTF-16 (Excel's "Unicode text") with a clear message."""
    opener = _COMPRESSED.get(path.suffix.lower())
    try:
        with opener(path, "rb") if opener else open(path, "rb") as fh:
            head = fh.read(4)
        if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InputError(path, "cohort table is UTF-16 text; save it as UTF-8")
        with _open_text(path) as fh:
            return fh.readline()
    except FileNotFoundError as err:
        raise InputError(path, "cohort table not found") from err
    except IsADirectoryError as err:
        raise InputError(path, "cohort table is a directory, not a file") from err
    except UnicodeDecodeError as err:
        raise InputError(path, f"cohort table is not UTF-8 text ({err.reason})", "line 1") from err
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise InputError(path, f"cohort table cannot be read ({err})") from err


def _separator(path: Path, header: str) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext == ".csv":
        return ","
    if ext == ".tsv":
        return "\t"
    if "\t" in header:
        return "\t"
    return "," if "," in header else "\t"


_FIELDS_ERROR = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _read_table(path: Path, wanted: set[str]) -> tuple[pd.DataFrame, str]:
    """The table as strings, header names stripped, blank lines dropped; index = line - 2."""
    header = _read_header(path)
    if not header.strip():
        raise InputError(path, "cohort table is empty (no header line)", "line 1")
    sep = _separator(path, header)
    try:
        df = pd.read_csv(
            path, sep=sep, dtype=str, na_filter=False, skip_blank_lines=False,
            encoding="utf-8-sig", compression="infer", engine="c",
        )  # fmt: skip
    except pd.errors.ParserError as err:
        m = _FIELDS_ERROR.search(str(err))
        if m:
            want, line, saw = m.groups()
            raise InputError(
                path, f"row has {saw} fields but the header has {want}", f"line {line}"
            ) from err
        raise InputError(path, f"not a readable cohort table ({err})") from err
    except UnicodeDecodeError as err:
        raise InputError(path, f"cohort table is not UTF-8 text ({err.reason})") from err
    except pd.errors.EmptyDataError as err:
        raise InputError(path, "cohort table is empty (no header line)") from err
    except (OSError, EOFError, lzma.LZMAError) as err:
        raise InputError(path, f"cohort table cannot be read ({err})") from err

    if not isinstance(df.index, pd.RangeIndex):
        # pandas takes the first column as an index when the first row has one field too many
        raise InputError(
            path, f"row has {df.shape[1] + 1} fields but the header has {df.shape[1]}", "line 2"
        )
    names = next(csv.reader([header.rstrip("\r\n")], delimiter=sep))
    names = [n.strip() for n in names]
    if names and names[0].startswith("#") and names[0] not in wanted:
        names[0] = names[0].lstrip("#").strip()  # "#IID", "#sample_id": PLINK/bcftools headers
    twice = sorted({n for n in names if n in wanted and names.count(n) > 1})
    if len(names) != df.shape[1]:  # quoting the csv module and pandas read differently
        names = [str(c).strip() for c in df.columns]
    df.columns = names
    if twice:
        raise InputError(path, f"header names column(s) {', '.join(twice)} twice", "line 1")
    # Rows keep their position as index: line = index + 2. Blank lines are dropped, not errors.
    # (A blank line has an empty first field, so only those rows are looked at in full.)
    if df.shape[1]:
        candidates = np.flatnonzero((df.iloc[:, 0] == "").to_numpy())
        if len(candidates):
            blank = (df.iloc[candidates] == "").all(axis=1).to_numpy()
            df = df.drop(index=df.index[candidates[blank]])
    return df, sep


def _first(mask: np.ndarray | pd.Series) -> int | None:
    """Position of the first True in a boolean mask, or None."""
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None


def _line(df: pd.DataFrame, pos: int) -> str:
    return f"line {int(df.index[pos]) + 2}"


def _brief(labels: tuple[str, ...]) -> str:
    if labels == DEFAULT_ANCESTRIES:
        return (
            "a 1000 Genomes population code (e.g. CEU, CHB, YRI), AFR, AMR, EAS, EUR, SAS or OTHER"
        )
    if len(labels) <= 12:
        return ", ".join(labels)
    return f"{', '.join(labels[:10])}, ... ({len(labels)} labels)"


# --------------------------------------------------------------------------- the columns


def _check_columns(path: Path, df: pd.DataFrame, spec: CohortSpec, sep: str,
                   ancestry_optional: bool = False) -> bool:
    """Raise for missing required/covariate columns; return whether the split column exists."""
    found = [str(c) for c in df.columns]
    optional = ancestry_optional and spec.ancestry_col not in found
    required = [spec.sample_col, *(() if optional else (spec.ancestry_col,)),
                spec.phenotype_col, *spec.covariate_cols]
    missing = [c for c in required if c not in found]
    if missing:
        problem = f"cohort table lacks column(s) {', '.join(missing)}; found: {', '.join(found)}"
        lower = {c.lower(): c for c in found}
        close = [f"{lower[c.lower()]!r} for {c!r}" for c in missing if c.lower() in lower]
        if close:
            problem += f" (did you mean {', '.join(close)}?)"
        other = "," if sep == "\t" else "\t"
        if len(found) == 1 and other in found[0]:
            sep_name = "commas" if other == "," else "tabs"
            problem += f" (the file seems separated by {sep_name}; name it .csv or .tsv)"
        raise InputError(path, problem, "line 1")
    return spec.split_col is not None and spec.split_col in found


def _sample_ids(path: Path, df: pd.DataFrame, spec: CohortSpec) -> pd.Series:
    ids = df[spec.sample_col].str.strip()
    pos = _first(ids == "")
    if pos is not None:
        raise InputError(path, f"empty sample id (column {spec.sample_col})", _line(df, pos))
    dup = ids.duplicated(keep="first").to_numpy()
    pos = _first(dup)
    if pos is not None:
        sample = ids.iloc[pos]
        first = _first((ids == sample).to_numpy())
        raise InputError(
            path,
            f"sample {sample!r} is listed twice "
            f"(lines {df.index[first] + 2} and {df.index[pos] + 2})",
            _line(df, pos),
        )
    return ids


class _Distinct:
    """A column as its distinct values (stripped) and each row's code: per-value logic runs once
    per distinct value, and row results come back by indexing with `codes`."""

    def __init__(self, column: pd.Series) -> None:
        codes, uniques = pd.factorize(column, use_na_sentinel=False)
        self.codes = codes
        self.values = [str(u).strip() for u in uniques]

    def first_row(self, bad: list[bool] | np.ndarray) -> int | None:
        """Position of the first row whose distinct value is flagged in `bad`."""
        bad = np.asarray(bad, dtype=bool)
        return _first(bad[self.codes]) if bad.any() else None

    def rows(self, per_value: list | np.ndarray, dtype: Any = None) -> np.ndarray:
        return np.asarray(per_value, dtype=dtype)[self.codes]


def _ancestry(path: Path, df: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    labels = _Distinct(df[spec.ancestry_col])
    pos = labels.first_row([v == "" for v in labels.values])
    if pos is not None:
        raise InputError(path, f"empty ancestry label (column {spec.ancestry_col})",
                         _line(df, pos))  # fmt: skip
    if spec.ancestries is None:
        return labels.rows(labels.values, dtype=str)
    canonical = {a.strip().lower(): a.strip() for a in spec.ancestries}
    pos = labels.first_row([v.lower() not in canonical for v in labels.values])
    if pos is not None:
        raise InputError(
            path,
            f"ancestry {labels.values[labels.codes[pos]]!r} is not an allowed label "
            f"(allowed: {_brief(spec.ancestries)}; a site config can set its own ancestries)",
            _line(df, pos),
        )
    return labels.rows([canonical[v.lower()] for v in labels.values], dtype=str)


def _token(value: str) -> str:
    token = value.lower()
    return _NUMERIC_ALIASES.get(token, token)


def _resolve_coding(path: Path, df: pd.DataFrame, pheno: _Distinct) -> str:
    """Decide the coding of an `auto` phenotype column from the values present."""
    tokens = [_token(v) for v in pheno.values]
    kinds = [
        "missing" if t in MISSING_TOKENS
        else "word" if t in _WORDS
        else "digit" if t in ("0", "1", "2")
        else "bad"
        for t in tokens
    ]  # fmt: skip
    pos = pheno.first_row([k == "bad" for k in kinds])
    if pos is not None:
        value = pheno.values[pheno.codes[pos]]
        raise InputError(path, f"phenotype {value!r} is neither case nor control", _line(df, pos))
    present = {t for t, k in zip(tokens, kinds, strict=True) if k != "missing"}
    if not present:
        return "01"  # everything missing: the caller reports it
    if present <= set(_WORDS):
        return "case-control"
    if present <= {"0", "1", "2"}:
        if {"0", "2"} <= present:
            raise InputError(
                path,
                "phenotype column holds 0 and 2: PLINK coding (0 missing, 1 control, 2 case, "
                "which would leave out everyone coded 0) or another trait? set the phenotype "
                "coding",
            )
        if "2" in present:
            return "plink"
        if "0" in present:
            return "01"  # {0, 1}; {0} alone is all controls (in PLINK it would be all missing)
        raise InputError(
            path,
            "phenotype column holds only the value 1: all cases (01 coding) or all controls "
            "(PLINK coding)? set the phenotype coding",
        )
    kind_rows = pheno.rows(kinds)
    first = _first(kind_rows != "missing")
    other = _first((kind_rows != "missing") & (kind_rows != kind_rows[first]))
    value = pheno.values
    raise InputError(
        path,
        f"phenotype column mixes case/control words and numeric codes "
        f"({value[pheno.codes[first]]!r} on {_line(df, first)}, "
        f"{value[pheno.codes[other]]!r} on {_line(df, other)}); set the phenotype coding",
        _line(df, other),
    )


def _phenotype(path: Path, df: pd.DataFrame, spec: CohortSpec) -> tuple[np.ndarray, str]:
    """(phenotype int8 with -1 for missing, resolved coding)."""
    pheno = _Distinct(df[spec.phenotype_col])
    coding = spec.phenotype_coding
    if coding == "auto":
        coding = _resolve_coding(path, df, pheno)
    codes, extra_missing, reading = _CODES[coding]
    missing = MISSING_TOKENS | extra_missing
    tokens = [_token(v) for v in pheno.values]
    pos = pheno.first_row([t not in codes and t not in missing for t in tokens])
    if pos is not None:
        raise InputError(
            path,
            f"phenotype {pheno.values[pheno.codes[pos]]!r} is neither case nor control "
            f"(coding {coding}: {reading})",
            _line(df, pos),
        )
    return pheno.rows([codes.get(t, -1) for t in tokens], dtype=np.int8), coding


def _split(path: Path, df: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    split = _Distinct(df[spec.split_col])
    pos = split.first_row([v.lower() not in SPLITS for v in split.values])
    if pos is not None:
        raise InputError(
            path,
            f"split {split.values[split.codes[pos]]!r} is not train or test "
            f"(column {spec.split_col}; leave the column out to have the split generated)",
            _line(df, pos),
        )
    return split.rows([v.lower() for v in split.values], dtype=str)


def assign_split(
    sample_id: np.ndarray,
    ancestry: np.ndarray,
    phenotype: np.ndarray,
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """Deterministic train/test labels, stratified by (ancestry, phenotype).

    Within each stratum people are ordered by a seeded 64-bit hash of their sample id (ties by
    the id itself), and the first round(n * test_fraction) are "test". The result depends on the
    set of people, never on row order; adding a person moves at most one other per stratum.
    """
    n = len(sample_id)
    if n == 0:
        return np.empty(0, dtype="<U5")
    key = hashlib.sha256(f"genofed-split:{seed}".encode()).hexdigest()[:16]
    ids = np.asarray(sample_id, dtype=object)
    h = pd.util.hash_array(ids, hash_key=key, categorize=False)
    group = pd.factorize(pd.Series(np.asarray(ancestry, dtype=object)), sort=True)[0]
    group = group.astype(np.int64) * 2 + np.asarray(phenotype, dtype=np.int64)
    order = np.lexsort((np.asarray(sample_id, dtype=str), h, group))
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, n])
    which = np.repeat(np.arange(len(starts)), sizes)
    rank = np.arange(n) - starts[which]
    n_test = np.floor(sizes * float(test_fraction) + 0.5).astype(np.int64)
    is_test = np.empty(n, dtype=bool)
    is_test[order] = rank < n_test[which]
    return np.where(is_test, "test", "train")


def _covariates(path: Path, df: pd.DataFrame, spec: CohortSpec) -> np.ndarray:
    out = np.empty((len(df), len(spec.covariate_cols)), dtype=np.float32)
    for j, column in enumerate(spec.covariate_cols):
        raw = df[column]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(over="ignore"):
            as32 = values.astype(np.float32)
        # Only the (few) cells that did not parse to a finite number are looked at as text.
        suspect = np.flatnonzero(~np.isfinite(as32))
        if len(suspect):
            text = raw.iloc[suspect].str.strip()
            bad = ~text.str.lower().isin(MISSING_TOKENS - {"-9"}).to_numpy()
            if bad.any():
                pos = int(suspect[_first(bad)])
                raise InputError(
                    path,
                    f"covariate {column!r} value {text.iloc[_first(bad)]!r} is not a finite number",
                    _line(df, pos),
                )
            as32[suspect] = np.nan
        out[:, j] = as32
    return out


def read_cohort(path: str | Path, spec: CohortSpec | None = DEFAULT_SPEC, *,
                ancestry_optional: bool = False) -> Cohort:
    """Read and validate a cohort table; one InputError naming the line for anything wrong.

    People with a missing phenotype are left out (counted in `n_missing_phenotype`); the split
    is generated when the table has no split column. With `ancestry_optional` a table without
    the ancestry column is read too (`Cohort.ancestry_declared` False): the caller then gives
    the labels with `relabel`.
    """
    path = Path(path)
    spec = DEFAULT_SPEC if spec is None else spec
    wanted = {spec.sample_col, spec.ancestry_col, spec.phenotype_col, spec.split_col}
    df, sep = _read_table(path, {c for c in wanted if c} | set(spec.covariate_cols))
    has_split = _check_columns(path, df, spec, sep, ancestry_optional)
    if df.empty:
        raise InputError(path, "cohort table has no people (only a header)")
    ids = _sample_ids(path, df, spec).to_numpy(dtype=str)
    declared = spec.ancestry_col in df.columns
    ancestry = _ancestry(path, df, spec) if declared else np.full(len(ids), "")
    y, coding = _phenotype(path, df, spec)
    split = _split(path, df, spec) if has_split else None
    covariates = _covariates(path, df, spec)

    keep = y >= 0
    n_missing = int((~keep).sum())
    if not keep.any():
        raise InputError(path, f"every phenotype is missing ({n_missing} people)")
    sample_id = ids[keep]
    ancestry_arr = ancestry[keep]
    y = y[keep]
    if split is None:
        split = assign_split(sample_id, ancestry_arr, y, spec.test_fraction, spec.seed)
    else:
        split = split[keep]
    return Cohort(
        sample_id=sample_id,
        ancestry=ancestry_arr,
        phenotype=y,
        split=split,
        covariates=covariates[keep],
        covariate_names=tuple(spec.covariate_cols),
        n_missing_phenotype=n_missing,
        phenotype_coding=coding,
        ancestry_declared=declared,
        split_generated=not has_split,
    )


def read_people(path: str | Path, spec: CohortSpec | None = None) -> np.ndarray:
    """Everyone a table lists, by sample id, whatever their phenotype (or without a phenotype
    column at all): the people a site scores with `site predict`."""
    path = Path(path)
    spec = DEFAULT_SPEC if spec is None else spec
    df, _ = _read_table(path, {spec.sample_col})
    if spec.sample_col not in [str(c) for c in df.columns]:
        raise InputError(path, f"the table lacks the sample column {spec.sample_col}; found: "
                               f"{', '.join(str(c) for c in df.columns)}", "line 1")
    if df.empty:
        raise InputError(path, "the table lists no people (only a header)")
    return _sample_ids(path, df, spec).to_numpy(dtype=str)


def read_people_ancestry(path: str | Path, spec: CohortSpec | None = None) -> np.ndarray | None:
    """The ancestry label of everyone `read_people` lists, in the same order ("" where the cell
    is empty), or None when the table has no ancestry column: what `site predict` picks each
    person's recalibration by."""
    path = Path(path)
    spec = DEFAULT_SPEC if spec is None else spec
    df, _ = _read_table(path, {spec.sample_col})
    if spec.ancestry_col not in [str(c) for c in df.columns]:
        return None
    labels = df[spec.ancestry_col].astype("string").fillna("").str.strip()
    return labels.to_numpy(dtype=str)


__all__ = [
    "COHORT_COLUMNS",
    "DEFAULT_ANCESTRIES",
    "DEFAULT_SPEC",
    "KGP_POPULATIONS",
    "KGP_SUPERPOPULATIONS",
    "MISSING_TOKENS",
    "PHENOTYPE_CODINGS",
    "SPLITS",
    "Cohort",
    "CohortSpec",
    "assign_split",
    "read_cohort",
    "read_people",
    "read_people_ancestry",
    "relabel",
]
