"""A site's cohort table: who is in the study, their ancestry label, phenotype and split.

This table never leaves the site. Only aggregate, suppressed statistics derived from it do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.errors import InputError

COHORT_COLUMNS = ("sample_id", "ancestry", "phenotype", "split")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Cohort:
    sample_id: np.ndarray  # [N] str
    ancestry: np.ndarray  # [N] str
    phenotype: np.ndarray  # [N] int8, 0 control / 1 case
    split: np.ndarray  # [N] str, "train" or "test"

    def __len__(self) -> int:
        return len(self.sample_id)

    def subset(self, mask: np.ndarray) -> Cohort:
        return Cohort(self.sample_id[mask], self.ancestry[mask], self.phenotype[mask],
                      self.split[mask])


def read_cohort(path: str | Path) -> Cohort:
    """Read and validate a cohort TSV/CSV; one InputError naming the row for anything wrong."""
    path = Path(path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise InputError(path, "cohort table not found") from err
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"not a readable cohort table ({err})") from err
    missing = [c for c in COHORT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"cohort table lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise InputError(path, "cohort table has no people")
    dup = df.sample_id[df.sample_id.duplicated()]
    if len(dup):
        row = int(dup.index[0]) + 2
        raise InputError(path, f"sample {dup.iloc[0]!r} is listed twice", f"line {row}")
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if not row.sample_id:
            raise InputError(path, "empty sample_id", f"line {i}")
        if row.phenotype not in ("0", "1"):
            raise InputError(path, f"phenotype {row.phenotype!r} is neither 0 nor 1", f"line {i}")
        if row.split not in SPLITS:
            raise InputError(path, f"split {row.split!r} is not train or test", f"line {i}")
        if not row.ancestry:
            raise InputError(path, "empty ancestry label", f"line {i}")
    return Cohort(
        sample_id=df.sample_id.to_numpy(dtype=str),
        ancestry=df.ancestry.to_numpy(dtype=str),
        phenotype=df.phenotype.astype(np.int8).to_numpy(),
        split=df.split.to_numpy(dtype=str),
    )
