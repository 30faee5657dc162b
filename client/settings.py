"""A site's own settings: its `site.toml`, read once into one typed object.

The file sits in the site's data folder, next to its genotypes; the SuperNode's node config
(`flower-supernode --node-config`) may override `[privacy]` keys and `balance`, since the
operator's command line is the last word at the site. Every command that reads a site (`site
check`, training, evaluation, `site predict`, `site budget`) goes through `SiteSettings.load`,
so they all see the same cohort columns, phenotype coding and budget.

    [privacy]   the budget (`client.budget.SiteBudget`); bare top-level keys are read as these
    [cohort]    how to read the cohort table (`shared.cohort.CohortSpec`)
    [training]  balance = "none" | "reweight"
    [genotypes] min-imputation-quality = 0.3 (imputed variants below it are read as missing);
                files = ["chr*.dose.vcf.gz"] (the genotype files, globs in the data folder)
    [ancestry]  groups = "auto" | "declared" | "genetic" (`client.ancestry`)

A file saved with a byte-order mark (Windows editors) reads the same; an unknown table or key is
one error naming the file, never silently ignored.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.budget import SiteBudget
from shared.cohort import CohortSpec
from shared.errors import InputError

SITE_CONFIG = "site.toml"
BALANCE_MODES = ("none", "reweight")
GROUP_SOURCES = ("auto", "declared", "genetic")  # where ancestry groups come from
TABLES = ("privacy", "cohort", "training", "genotypes", "ancestry")


@dataclass(frozen=True)
class TrainingOptions:
    # Ancestry balancing in training: "reweight" weighs each person's loss by the inverse of
    # their group's share (from DP-released counts, so one person's weight does not depend on
    # anyone else's exact presence).
    balance: str = "none"

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], where: Path | None) -> TrainingOptions:
        unknown = sorted(set(values) - {"balance"})
        if unknown:
            raise InputError(where, f"unknown training setting {unknown[0]!r} (known: balance)")
        options = cls(**{k: str(v) for k, v in values.items()})
        if options.balance not in BALANCE_MODES:
            raise InputError(where, f"balance must be one of {', '.join(BALANCE_MODES)}, "
                                    f"not {options.balance!r}")
        return options


@dataclass(frozen=True)
class GenotypeOptions:
    # Imputed variants whose record states a quality (INFO R2, DR2 or INFO) below this are
    # read as missing (0: every variant is used).
    min_imputation_quality: float = 0.0
    # The genotype files (names or globs in the data folder; several: per-chromosome files
    # read as one). Empty: genotypes.vcf.gz and the like, or files named chr1.*, chr2.*, ...
    files: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], where: Path | None) -> GenotypeOptions:
        unknown = sorted(set(values) - {"min-imputation-quality", "files"})
        if unknown:
            raise InputError(where, f"unknown genotypes setting {unknown[0]!r} "
                                    "(known: min-imputation-quality, files)")
        files = values.get("files", [])
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            raise InputError(where, "files must be a list of file names or globs")
        if any(Path(f).is_absolute() or ".." in Path(f).parts for f in files):
            raise InputError(where, "files must name files inside the data folder")
        try:
            quality = float(values.get("min-imputation-quality", 0.0))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(where, "min-imputation-quality must be a number") from None
        if not 0.0 <= quality <= 1.0:
            raise InputError(where, "min-imputation-quality must be in [0, 1]")
        return cls(quality, tuple(files))


@dataclass(frozen=True)
class AncestryOptions:
    # Which labels the site's releases are grouped by: the cohort table's ancestry column, the
    # genetic labels from the panel's ancestry reference, or ("auto") the column when the table
    # has one (`client.ancestry`).
    groups: str = "auto"

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], where: Path | None) -> AncestryOptions:
        unknown = sorted(set(values) - {"groups"})
        if unknown:
            raise InputError(where, f"unknown ancestry setting {unknown[0]!r} (known: groups)")
        groups = values.get("groups", cls.groups)
        if groups not in GROUP_SOURCES:
            raise InputError(where, f"ancestry groups must be one of {', '.join(GROUP_SOURCES)}, "
                                    f"not {groups!r}")
        return cls(str(groups))


@dataclass(frozen=True)
class SiteSettings:
    privacy: SiteBudget = field(default_factory=SiteBudget)
    cohort: CohortSpec = field(default_factory=CohortSpec)
    training: TrainingOptions = field(default_factory=TrainingOptions)
    genotypes: GenotypeOptions = field(default_factory=GenotypeOptions)
    ancestry: AncestryOptions = field(default_factory=AncestryOptions)

    @classmethod
    def load(cls, data_path: str | Path,
             node_config: Mapping[str, object] | None = None) -> SiteSettings:
        """Defaults, then `<data_path>/site.toml`, then the node config."""
        path = Path(data_path) / SITE_CONFIG
        doc = read_toml(path) if path.exists() else {}
        tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
        unknown = sorted(set(tables) - set(TABLES))
        if unknown:
            raise InputError(path, f"unknown table [{unknown[0]}] "
                                   f"(known: {', '.join(f'[{t}]' for t in TABLES)})")
        bare = {k: v for k, v in doc.items() if not isinstance(v, dict)}
        if bare and "privacy" in tables:
            raise InputError(path, f"setting {next(iter(bare))!r} outside a table; put it "
                                   "under one of " + ", ".join(f"[{t}]" for t in TABLES))
        node = dict(node_config or {})
        privacy = dict(tables.get("privacy", bare))
        names = {f.replace("_", "-") for f in SiteBudget.__dataclass_fields__}
        privacy.update({k: v for k, v in node.items() if k in names})
        training = dict(tables.get("training", {}))
        if "balance" in node:
            training["balance"] = node["balance"]
        return cls(
            privacy=SiteBudget.from_mapping(privacy, path),
            cohort=CohortSpec.from_mapping(tables.get("cohort", {}), path),
            training=TrainingOptions.from_mapping(training, path),
            genotypes=GenotypeOptions.from_mapping(tables.get("genotypes", {}), path),
            ancestry=AncestryOptions.from_mapping(tables.get("ancestry", {}), path),
        )


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; `InputError` naming the file for anything that is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"not valid TOML ({err})") from err
    except OSError as err:
        raise InputError(path, f"cannot read ({err.strerror})") from err
