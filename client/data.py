"""A site's data folder, loaded and encoded for the model. Nothing here leaves the site.

Layout (what a hospital holds): `genotypes.vcf.gz` (or `.bcf`, a PLINK fileset, or one indexed
file per chromosome) with its index, `reference.fa` with `.fai`, `cohort.tsv` and the
coordinator's `panel.tsv`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.ancestry import reads_without_ancestry, site_groups
from client.cache import GenotypeCache
from client.release import ALL, cohort_fingerprint
from shared.ancestry import ancestry_path
from shared.cohort import Cohort, CohortSpec, read_cohort
from shared.encoding import EncoderSettings, encode_panel
from shared.errors import InputError
from shared.genotypes import PanelGenotypes, harmonize_panel_genotypes, require_calls
from shared.model import PanelFeatures
from shared.panel import Panel, read_panel
from shared.plink import PlinkFiles, is_plink

# A site's genotypes: the first of these its folder holds (PLINK: with its two companions).
VCF_NAMES = ("genotypes.vcf.gz", "genotypes.bcf", "genotypes.pgen", "genotypes.bed")
# Else per-chromosome files, named as imputation servers write them (chr1.dose.vcf.gz, 22.bcf),
# or those its site.toml lists (`[genotypes] files`), read as one source.
CHROMOSOME_FILE = re.compile(r"^(chr)?([0-9]{1,2}|X|Y|M|MT)([._-].*)?\.(vcf\.gz|bcf)$", re.I)


@dataclass(frozen=True)
class SitePaths:
    root: Path
    vcf: Path
    reference: Path
    cohort: Path
    panel: Path
    chromosome_files: tuple[Path, ...] = ()  # several per-chromosome files (vcf: the first)

    @classmethod
    def in_folder(cls, root: str | Path) -> SitePaths:
        root = Path(root)
        if not root.is_dir():
            raise InputError(root, "site data folder not found")
        vcf = next((root / n for n in VCF_NAMES if (root / n).exists()), root / VCF_NAMES[0])
        files = genotype_files(root, default=vcf)
        return cls(root, files[0], root / "reference.fa", root / "cohort.tsv",
                   root / "panel.tsv", files if len(files) > 1 else ())

    @property
    def genotypes(self) -> Path | tuple[Path, ...]:
        """What every reader reads the genotypes from: one file, or the per-chromosome files."""
        return self.chromosome_files or self.vcf

    def require(self, cohort: bool = True) -> None:
        """Refuse a folder that lacks a file or an index (genofed never writes into it)."""
        if not self.vcf.exists():
            raise InputError(self.vcf, other_format(self.root) or "required site file not found")
        for p in (self.reference, self.panel, *((self.cohort,) if cohort else ())):
            if not p.exists():
                raise InputError(p, "required site file not found")
        if is_plink(self.vcf):
            PlinkFiles.of(self.vcf)
            return
        for vcf in self.chromosome_files or (self.vcf,):
            if index_path(vcf) is None:
                raise InputError(vcf, "no .tbi or .csi index next to the VCF/BCF")

    def genotype_inputs(self) -> list[Path | None]:
        """The files the genotypes are read from (a cache is valid while they are unchanged)."""
        if is_plink(self.vcf):
            return list(PlinkFiles.of(self.vcf).inputs)
        return [p for vcf in self.chromosome_files or (self.vcf,) for p in (vcf, index_path(vcf))]


def genotype_files(root: Path, default: Path) -> tuple[Path, ...]:
    """The genotype files of a site folder: those its site.toml lists (names or globs), else
    `default` when it exists, else the per-chromosome files its folder holds (chromosome order),
    else `default` (named as missing by `require`)."""
    from client.settings import SITE_CONFIG, SiteSettings

    listed = SiteSettings.load(root).genotypes.files if (root / SITE_CONFIG).exists() else ()
    if listed:
        found: list[Path] = []
        for pattern in listed:
            hits = sorted((p for p in root.glob(pattern) if p.is_file()), key=_chromosome_order)
            if not hits:
                raise InputError(root / SITE_CONFIG, f"[genotypes] files: {pattern!r} names no "
                                                     f"file in {root}")
            found += [p for p in hits if p not in found]
        if len(found) > 1 and any(is_plink(p) for p in found):
            raise InputError(root / SITE_CONFIG, "[genotypes] files: per-chromosome files must "
                                                 "be VCF/BCF (convert PLINK filesets first)")
        return tuple(found)
    if default.exists():
        return (default,)
    found = sorted((p for p in root.iterdir() if p.is_file() and CHROMOSOME_FILE.match(p.name)),
                   key=_chromosome_order)
    return tuple(found) or (default,)


def _chromosome_order(path: Path) -> tuple[int, str]:
    """chr1 < chr2 < chr10 < chrX: the number a name starts with, then the name."""
    match = re.match(r"(?:chr)?([0-9]+)", path.name, re.I)
    return (int(match.group(1)) if match else 1000, path.name)


# Genotype files genofed does not read itself, and the command that makes one it reads.
_CONVERSIONS = (
    ("genotypes.vcf", "an uncompressed VCF: `bgzip genotypes.vcf && tabix -p vcf "
                      "genotypes.vcf.gz`"),
    ("*.pgen", "PLINK 2 files ({stem}.pgen/.pvar/.psam): name them genotypes.pgen, "
               "genotypes.pvar and genotypes.psam (read as they are), or convert: `plink2 "
               "--pfile {stem} --export vcf bgz id-paste=iid --out genotypes && tabix -p vcf "
               "genotypes.vcf.gz`"),
    ("*.bed", "PLINK 1 files ({stem}.bed/.bim/.fam): name them genotypes.bed, genotypes.bim "
              "and genotypes.fam (read as they are), or convert: `plink2 --bfile {stem} "
              "--export vcf bgz id-paste=iid --out genotypes && tabix -p vcf genotypes.vcf.gz`"),
    ("*.bgen", "BGEN ({stem}.bgen): `plink2 --bgen {stem}.bgen ref-first --sample {stem}.sample "
               "--export vcf bgz vcf-dosage=DS id-paste=iid --out genotypes && tabix -p vcf "
               "genotypes.vcf.gz`"),
    ("*.vcf.gz", "VCFs named otherwise ({n} files, e.g. {name}): list them in site.toml "
                 "(`[genotypes] files = [\"{pattern}\"]`, per-chromosome files read as one), "
                 "or `bcftools concat -Oz -o genotypes.vcf.gz {pattern} && tabix -p vcf "
                 "genotypes.vcf.gz`"),
)


def other_format(root: Path) -> str | None:
    """What genotype files a site folder holds instead of genotypes.vcf.gz / genotypes.bcf,
    and the one command that converts them; None when there are none."""
    for pattern, text in _CONVERSIONS:
        found = sorted(p for p in Path(root).glob(pattern) if p.is_file())
        if found:
            stem = found[0].name.split(".")[0]
            many = (re.sub(r"[0-9]+", "*", found[0].name, count=1)
                    if len(found) > 1 else found[0].name)
            return ("no genotypes.vcf.gz or genotypes.bcf, but " + text.format(
                stem=stem, n=len(found), name=found[0].name, pattern=many))
    return None


@dataclass(frozen=True)
class SiteData:
    panel: Panel
    features: PanelFeatures
    cohort: Cohort
    genotypes: np.ndarray  # [N, T] int8 codes, rows in cohort order
    found: np.ndarray  # [T] bool: panel variant present in this site's VCF
    how: list[str]  # [T] how each panel variant was matched (shared.genotypes.MATCH_KINDS)
    # The ancestry labels the site declared it may hold (its settings, not its people): what
    # its DP releases are broken down by. One group "ALL" when it accepts any label.
    vocabulary: tuple[str, ...] = (ALL,)
    # [N, T, 3] float32 genotype probabilities where the VCF holds fractional dosages (DS/GP),
    # else None (shared.genotypes.PanelGenotypes.probs): what the model reads when present.
    probs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.probs is not None and self.probs.shape != (*self.genotypes.shape, 3):
            raise ValueError(f"genotype probabilities {self.probs.shape} do not match the "
                             f"codes {self.genotypes.shape}")

    @property
    def inputs(self) -> np.ndarray:
        """What the model reads: the genotype probabilities where there are any, else codes."""
        return self.genotypes if self.probs is None else self.probs

    @property
    def groups(self) -> np.ndarray:
        """Each person's release group: their ancestry, or "ALL" without a vocabulary."""
        if self.vocabulary == (ALL,):
            return np.full(len(self.cohort.ancestry), ALL)
        return np.asarray(self.cohort.ancestry)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model input, phenotype, release group) of the people in split `name`; the model
        input is `inputs`: codes, or genotype probabilities where the VCF has dosages."""
        mask = self.cohort.split == name
        return self.inputs[mask], self.cohort.phenotype[mask], self.groups[mask]

    def fingerprint(self) -> str:
        """Identifies this version of the cohort table (see client.release)."""
        c = self.cohort
        return cohort_fingerprint(c.sample_id, self.groups, c.phenotype, c.split)


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def index_path(vcf: Path) -> Path | None:
    """The VCF/BCF's tabix or CSI index, if present."""
    return next((p for p in (Path(f"{vcf}.tbi"), Path(f"{vcf}.csi")) if p.exists()), None)


def load_site(
    root: str | Path, encoder: EncoderSettings, cache_dir: str | Path | None = None,
    spec: CohortSpec | None = None, min_quality: float | None = None, groups: str | None = None,
) -> SiteData:
    """Load and encode a site folder (its cohort table read as `spec`, imputed variants below
    `min_quality` left missing, ancestry `groups` from `client.ancestry`; by default all as its
    `site.toml` says).

    Cached in memory per process while its files are unchanged, and, with `cache_dir`, on the
    site's disk keyed by the content of its inputs, so the next process skips the VCF.
    """
    paths = SitePaths.in_folder(root)
    paths.require()
    reference = ancestry_path(paths.panel)
    key = tuple(_stamp(p) for p in (*paths.genotype_inputs(), paths.reference, paths.cohort,
                                     paths.panel, reference) if p is not None and p.exists())
    cache = Path(cache_dir) if cache_dir is not None else None
    if spec is None or min_quality is None or groups is None:
        from client.settings import SiteSettings

        own = SiteSettings.load(paths.root)
        spec = own.cohort if spec is None else spec
        min_quality = own.genotypes.min_imputation_quality if min_quality is None else min_quality
        groups = own.ancestry.groups if groups is None else groups
    return _load(paths, encoder, spec, min_quality, groups, cache, key)


@functools.lru_cache(maxsize=4)
def _load(
    paths: SitePaths, encoder: EncoderSettings, spec: CohortSpec, min_quality: float,
    groups: str, cache: Path | None, _key: tuple,
) -> SiteData:
    panel = read_panel(paths.panel)
    cohort = read_cohort(paths.cohort, spec,
                         ancestry_optional=reads_without_ancestry(groups, paths.panel))
    features = encode_panel(panel, paths.reference, encoder)
    samples = list(cohort.sample_id)
    def read() -> PanelGenotypes:
        return harmonize_panel_genotypes(paths.genotypes, panel, samples, paths.reference,
                                         min_quality)

    if cache is None:
        genotypes = read()
    else:
        fai = Path(f"{paths.reference}.fai")
        inputs = [*paths.genotype_inputs(), paths.panel, paths.cohort,
                  fai if fai.exists() else None]
        genotypes = GenotypeCache(cache).get_or_build(
            inputs, encoder, samples, read, reading={"min_imputation_quality": min_quality})
    require_calls(genotypes.codes, genotypes.found, paths.vcf)
    cohort, vocabulary = site_groups(cohort, genotypes.codes, panel, paths.panel, spec, groups,
                                     paths.root / "site.toml")
    return SiteData(panel, features, cohort, genotypes.codes, genotypes.found, genotypes.how,
                    vocabulary, genotypes.probs)
