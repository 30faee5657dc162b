"""A synthetic multi-ancestry cohort, written as the files hospitals would really hold.

Real genomes cannot be shared, so the whole project is exercised on a coalescent simulation
(stdpopsim `OutOfAfrica_3G09`: YRI, CEU, CHB) whose genotypes land in per-site bgzipped,
tabix-indexed VCFs next to a matching reference FASTA. A liability-threshold phenotype with
additive and pairwise-interaction effects gives a disease whose best possible predictor (the
"oracle", `truth.tsv`) is known, so federated models can be judged against a ceiling. Sites
get deliberately different ancestry mixes and sizes, because that heterogeneity is what makes
federated training and per-ancestry fairness hard.

Coordinates: tskit site positions are 0-based; VCF POS is `position + 1`, so the REF base of a
record sits at 0-based FASTA index POS-1 and every variant lies in `[start, start + length)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pysam

from client.identity import IDENTITY, RECEIPT_PUB, keygen
from client.privacy_state import BINDING
from shared.ancestry import ancestry_path, fit_reference
from shared.errors import GenofedError, InputError
from shared.fsio import atomic_write, write_json
from shared.panel import read_panel
from shared.receipts import SiteRegistry

POPULATIONS = ("YRI", "CEU", "CHB")
CHROM = "chr22"
# Dominant ancestry of the non-mixed sites, in site order (site-1 mostly CEU, site-2 mostly YRI).
_DOMINANT_CYCLE = ("CEU", "YRI", "CHB")
# A dominant site takes this many people of each other ancestry per person of its own (80/10/10).
_MINORITY_RATIO = 1 / 8
_MIN_SITE_PEOPLE = 10
DESIGNS = ("skewed", "spread")
# The spread design's site sizes run from the smallest to the largest of these, in proportion
# (scaled to the people simulated), and no ancestry exceeds SPREAD_MAX_SHARE of a site.
SPREAD_SIZES = (400, 1500)
# With three populations one must hold at least a third of a site; this is as even as the
# sites can be while differing.
SPREAD_MAX_SHARE = 0.4
_NUCLEOTIDES = frozenset("ACGT")
_FASTA_WIDTH = 60
_VCF_CHUNK = 2048  # variants rendered at once: bounds the (variants x samples x 4) byte buffer


@dataclass(frozen=True)
class SimulationConfig:
    seed: int = 0
    sites: int = 3
    people_per_population: int = 2000  # diploid individuals simulated per population
    # Diploids per population in a public reference sample (like 1000 Genomes' ~100), outside
    # every site, whose pooled alt-allele frequencies become the panel's `af` column; 0: none.
    public_people_per_population: int = 100
    sequence_length: int = 1_000_000  # bp of chr22 simulated, starting at `start`
    start: int = 20_000_000
    panel_size: int = 256  # variants in the coordinator's panel
    min_panel_maf: float = 0.05
    n_causal: int = 40  # causal variants, drawn from the panel
    n_interactions: int = 4  # pairwise interactions between panel variants far apart
    interaction_share: float = 0.2  # fraction of genetic variance from interactions
    heritability: float = 0.5
    prevalence: float = 0.2
    test_fraction: float = 0.25
    missing_rate: float = 0.002  # fraction of genotype calls written as missing ./.
    # How people are spread over sites: "skewed" (each hospital mostly one ancestry, 80/10/10,
    # the last one mixed) or "spread" (sites of SPREAD_SIZES-like unequal sizes, every ancestry
    # near a third of every site: where pooling matters most).
    design: str = "skewed"


@dataclass(frozen=True)
class _Genotypes:
    """Biallelic SNVs of the whole cohort; haplotype columns 2i, 2i+1 belong to person i."""

    pos: np.ndarray  # int64 VCF POS (1-based)
    ref: np.ndarray  # str, ancestral allele
    alt: np.ndarray  # str, derived allele
    haplotypes: np.ndarray  # int8 (variants, 2 * people), 1 = derived
    ancestry: np.ndarray  # str (people,)

    @property
    def n_people(self) -> int:
        return self.haplotypes.shape[1] // 2

    def dosage(self, rows: np.ndarray) -> np.ndarray:
        """Derived-allele counts (rows, people) as float, for the few variants that need them."""
        h = self.haplotypes[rows].astype(np.float64)
        return h[:, 0::2] + h[:, 1::2]


@dataclass(frozen=True)
class _Trait:
    causal: np.ndarray  # variant rows
    effects: np.ndarray  # per standardized dosage, after scaling
    pairs: np.ndarray  # (n_interactions, 2) variant rows
    pair_effects: np.ndarray
    genetic: np.ndarray
    liability: np.ndarray
    phenotype: np.ndarray  # int8 0/1


# --------------------------------------------------------------------------- validation


def _validate(config: SimulationConfig) -> None:
    """Reject configs that would fail deep inside msprime or yield a meaningless cohort."""
    checks = [
        (config.sites >= 1, "sites must be at least 1"),
        (config.people_per_population >= 1, "people-per-population must be at least 1"),
        (config.public_people_per_population >= 0,
         "public-people-per-population must be non-negative"),
        (config.sequence_length >= 1_000, "sequence-length must be at least 1000 bp"),
        (config.start >= 0, "start must be non-negative"),
        (config.panel_size >= 1, "panel-size must be at least 1"),
        (0 < config.min_panel_maf <= 0.5, "min-panel-maf must be in (0, 0.5]"),
        (1 <= config.n_causal <= config.panel_size, "n-causal must be in [1, panel-size]"),
        (config.n_interactions >= 0, "n-interactions must be non-negative"),
        (0 <= config.interaction_share <= 1, "interaction-share must be in [0, 1]"),
        (
            config.interaction_share == 0 or config.n_interactions > 0,
            "interaction-share > 0 needs n-interactions > 0",
        ),
        (0 <= config.heritability <= 1, "heritability must be in [0, 1]"),
        (0 < config.prevalence < 1, "prevalence must be in (0, 1)"),
        (0 <= config.test_fraction < 1, "test-fraction must be in [0, 1)"),
        (0 <= config.missing_rate < 1, "missing-rate must be in [0, 1)"),
        (config.design in DESIGNS, f"design must be one of {', '.join(DESIGNS)}"),
    ]
    for ok, problem in checks:
        if not ok:
            raise InputError(None, problem)


# --------------------------------------------------------------------------- genotypes


def _simulate_tree_sequence(config: SimulationConfig):
    """Run the coalescent offline: flat recombination only, since genetic maps are downloads."""
    try:
        import stdpopsim  # slow import; only the simulation needs it (the `sim` extra)
    except ImportError:
        raise GenofedError(
            "simulating a cohort needs the simulation extra: pip install 'genofed[sim]' "
            "(a site's install does not carry msprime, stdpopsim or tskit)"
        ) from None

    species = stdpopsim.get_species("HomSap")
    model = species.get_demographic_model("OutOfAfrica_3G09")
    try:
        contig = species.get_contig(
            CHROM, left=config.start, right=config.start + config.sequence_length
        )
    except ValueError as err:
        raise InputError(
            None, f"bad region {CHROM}:{config.start}+{config.sequence_length}: {err}"
        ) from err
    n = config.people_per_population + config.public_people_per_population
    engine = stdpopsim.get_engine("msprime")
    with warnings.catch_warnings():
        # Known and accepted: the contig's mutation rate differs from the model's.
        warnings.simplefilter("ignore")
        return engine.simulate(
            model, contig, samples={pop: n for pop in POPULATIONS}, seed=config.seed
        )


def _biallelic_snv_sites(ts) -> np.ndarray:
    """Boolean per site: one mutation, nucleotide REF/ALT that differ (what a caller would emit)."""
    keep = np.zeros(ts.num_sites, dtype=bool)
    for site in ts.sites():
        if len(site.mutations) != 1:
            continue
        anc, der = site.ancestral_state, site.mutations[0].derived_state
        keep[site.id] = anc in _NUCLEOTIDES and der in _NUCLEOTIDES and anc != der
    return keep


def _extract_genotypes(ts, public_per_population: int) -> tuple[_Genotypes, _Genotypes]:
    """Pull int8 haplotypes variant by variant, never materialising tskit's int32 matrix.

    The first `public_per_population` people of each population are set aside as the public
    reference sample (coalescent samples are exchangeable, so that is as good as a random draw):
    returns (the cohort, the public sample at the cohort's variants). Variants
    monomorphic in the cohort are dropped, as a caller on the cohort would never emit them.
    """
    nodes = np.array([ind.nodes for ind in ts.individuals()], dtype=np.int64)
    sample_index = np.full(ts.num_nodes, -1, dtype=np.int64)
    sample_index[ts.samples()] = np.arange(ts.num_samples)
    order = sample_index[nodes.ravel()]
    identity = np.array_equal(order, np.arange(ts.num_samples))

    names = {p.id: p.metadata["name"] for p in ts.populations()}
    node_pop = ts.tables.nodes.population[nodes[:, 0]]
    ancestry = np.array([names[p] for p in node_pop], dtype="<U3")
    public = np.zeros(len(ancestry), dtype=bool)
    for pop in POPULATIONS:
        public[np.flatnonzero(ancestry == pop)[:public_per_population]] = True
    public_haps = np.repeat(public, 2)  # haplotype columns 2i, 2i+1 belong to person i

    keep = _biallelic_snv_sites(ts)
    haplotypes = np.empty((int(keep.sum()), ts.num_samples), dtype=np.int8)
    row = 0
    for site_id, var in enumerate(ts.variants(copy=False)):
        if keep[site_id]:
            haplotypes[row] = var.genotypes if identity else var.genotypes[order]
            row += 1

    counts = (haplotypes.sum(axis=1, dtype=np.int64)
              - haplotypes[:, public_haps].sum(axis=1, dtype=np.int64))  # in the cohort
    polymorphic = (counts > 0) & (counts < 2 * int((~public).sum()))
    sites = np.flatnonzero(keep)[polymorphic]
    positions = ts.tables.sites.position[sites].astype(np.int64) + 1
    ref = np.array([ts.site(s).ancestral_state for s in sites], dtype="<U1")
    alt = np.array([ts.site(s).mutations[0].derived_state for s in sites], dtype="<U1")
    cohort = _Genotypes(positions, ref, alt, haplotypes[np.ix_(polymorphic, ~public_haps)],
                        ancestry[~public])
    public_sample = _Genotypes(positions, ref, alt, haplotypes[np.ix_(polymorphic, public_haps)],
                               ancestry[public])
    return cohort, public_sample


# --------------------------------------------------------------------------- reference


def _reference(config: SimulationConfig, geno: _Genotypes, rng: np.random.Generator) -> bytes:
    """Random bases for the simulated region with each variant's REF planted at POS-1.

    Bases before `start` are N: nothing is simulated there and it keeps the FASTA honest.
    """
    length = config.start + config.sequence_length
    seq = np.full(length, ord("N"), dtype=np.uint8)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)
    seq[config.start :] = alphabet[rng.integers(0, 4, size=config.sequence_length)]
    seq[geno.pos - 1] = np.frombuffer("".join(geno.ref).encode(), dtype=np.uint8)
    return seq.tobytes()


def _write_fasta(path: Path, sequence: bytes) -> None:
    """Line-wrapped FASTA built with numpy (tens of MB) plus the .fai that pysam readers need."""
    seq = np.frombuffer(sequence, dtype=np.uint8)
    full = len(seq) // _FASTA_WIDTH
    body = seq[: full * _FASTA_WIDTH].reshape(full, _FASTA_WIDTH)
    newline = np.full((full, 1), ord("\n"), dtype=np.uint8)
    with atomic_write(path, "wb") as fh:
        fh.write(f">{CHROM}\n".encode())
        fh.write(np.hstack([body, newline]).tobytes())
        tail = seq[full * _FASTA_WIDTH :].tobytes()
        if tail:
            fh.write(tail + b"\n")
    pysam.faidx(str(path))


# --------------------------------------------------------------------------- panel and trait


def _choose_panel(geno: _Genotypes, config: SimulationConfig) -> np.ndarray:
    """Common variants thinned evenly by position, so the panel spans the region uniformly."""
    freq = geno.haplotypes.sum(axis=1, dtype=np.int64) / geno.haplotypes.shape[1]
    maf = np.minimum(freq, 1 - freq)
    common = np.flatnonzero(maf >= config.min_panel_maf)
    if len(common) < config.panel_size:
        raise InputError(
            None,
            f"only {len(common)} variants have MAF >= {config.min_panel_maf}, fewer than "
            f"panel-size {config.panel_size}; lengthen the region or shrink the panel",
        )
    picks = np.round(np.linspace(0, len(common) - 1, config.panel_size)).astype(np.int64)
    return common[np.unique(picks)]


def _interaction_pairs(
    geno: _Genotypes,
    panel: np.ndarray,
    causal: np.ndarray,
    config: SimulationConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Pairs anchored on causal variants with a far panel partner: epistasis that local
    (short-window) models cannot see, which is what the transformer's long context is for."""
    min_gap = config.sequence_length / 4
    pairs: list[tuple[int, int]] = []
    anchors = rng.permutation(causal)
    for k in range(config.n_interactions * 4):
        if len(pairs) == config.n_interactions:
            break
        a = int(anchors[k % len(anchors)])
        far = panel[np.abs(geno.pos[panel] - geno.pos[a]) >= min_gap]
        far = [int(b) for b in far if tuple(sorted((a, int(b)))) not in pairs]
        if far:
            pairs.append(tuple(sorted((a, int(rng.choice(far))))))
    if len(pairs) < config.n_interactions:
        raise InputError(
            None,
            f"could not find {config.n_interactions} panel variant pairs at least "
            f"{min_gap:.0f} bp apart; lower n-interactions or enlarge the panel",
        )
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


def _scale_to(values: np.ndarray, variance: float) -> tuple[np.ndarray, float]:
    """Rescale a genetic component to a target pooled variance; returns (values, factor)."""
    current = float(values.var())
    if current == 0 or variance == 0:
        return np.zeros_like(values), 0.0
    factor = np.sqrt(variance / current)
    return values * factor, float(factor)


def _trait(
    geno: _Genotypes, panel: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> _Trait:
    """Liability-threshold disease; effects shared across ancestries, so any per-ancestry
    accuracy gap comes from LD and frequency differences, as in real polygenic scores."""
    causal = np.sort(rng.choice(panel, size=config.n_causal, replace=False))
    pairs = _interaction_pairs(geno, panel, causal, config, rng)
    h2, share = config.heritability, config.interaction_share

    dosage = geno.dosage(causal)
    sd = dosage.std(axis=1, keepdims=True)
    z = (dosage - dosage.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1)
    beta = rng.normal(size=len(causal))
    additive, factor = _scale_to(beta @ z, h2 * (1 - share))
    beta = beta * factor

    gamma = rng.normal(size=len(pairs))
    epistatic = np.zeros(geno.n_people)
    if len(pairs):
        da, db = geno.dosage(pairs[:, 0]), geno.dosage(pairs[:, 1])
        products = (da - da.mean(axis=1, keepdims=True)) * (db - db.mean(axis=1, keepdims=True))
        epistatic, factor = _scale_to(gamma @ products, h2 * share)
        gamma = gamma * factor

    genetic = additive + epistatic
    liability = genetic + rng.normal(scale=np.sqrt(1 - h2), size=geno.n_people)
    threshold = np.quantile(liability, 1 - config.prevalence)
    phenotype = (liability > threshold).astype(np.int8)
    return _Trait(causal, beta, pairs, gamma, genetic, liability, phenotype)


# --------------------------------------------------------------------------- sites


def _spread_counts(n_sites: int, available: dict[str, int]) -> np.ndarray:
    """People per (site, population) for the spread design: site sizes spaced evenly between
    SPREAD_SIZES (in proportion), each site's mix a rotation of slightly unequal shares, fitted
    to the populations' totals by iterative proportional fitting and rounded so that every
    person lands in exactly one site."""
    sizes = np.array([available[pop] for pop in POPULATIONS], dtype=np.float64)
    rows = np.linspace(*SPREAD_SIZES, n_sites)
    rows *= sizes.sum() / rows.sum()
    base = np.array([0.37, 0.33, 0.30])
    m = np.array([np.roll(base, k) for k in range(n_sites)]) * rows[:, None]
    for _ in range(200):  # raking: rows to the site sizes, columns to the populations
        m *= (sizes / m.sum(axis=0))[None, :]
        m *= (rows / m.sum(axis=1))[:, None]
    counts = np.floor(m).astype(np.int64)
    for j, pop in enumerate(POPULATIONS):  # hand out the rounding remainders, largest first
        short = available[pop] - counts[:, j].sum()
        order = np.argsort(-(m[:, j] - counts[:, j]), kind="stable")
        counts[order[:short], j] += 1
    return counts


def _site_counts(config: SimulationConfig, available: dict[str, int]) -> np.ndarray:
    """People per (site, population): dominant sites (80/10/10) of shrinking size, the last
    site mixed and taking everyone left, so each person lands in exactly one site (the
    skewed design), or `_spread_counts`."""
    n_sites = config.sites
    if config.design == "spread":
        return _spread_counts(n_sites, available)
    counts = np.zeros((n_sites, len(POPULATIONS)), dtype=np.int64)
    dominant = [_DOMINANT_CYCLE[k % len(_DOMINANT_CYCLE)] for k in range(n_sites - 1)]
    if dominant:
        weights = np.array([1 / (1 + 0.3 * k) for k in range(len(dominant))])
        share = np.array(
            [[1.0 if pop == dom else _MINORITY_RATIO for pop in POPULATIONS] for dom in dominant]
        )
        raw = weights[:, None] * share
        # Dominant sites together take at most (S-1)/S of any population.
        scale = ((n_sites - 1) / n_sites) / raw.sum(axis=0).max()
        sizes = np.array([available[pop] for pop in POPULATIONS], dtype=np.float64)
        counts[:-1] = np.floor(scale * raw * sizes).astype(np.int64)
    counts[-1] = [available[pop] for pop in POPULATIONS] - counts[:-1].sum(axis=0)
    too_small = [k + 1 for k in range(n_sites) if counts[k].sum() < _MIN_SITE_PEOPLE]
    if too_small:
        raise InputError(
            None,
            f"site(s) {too_small} would hold fewer than {_MIN_SITE_PEOPLE} people; raise "
            "people-per-population or lower sites",
        )
    return counts


def _assign_sites(
    ancestry: np.ndarray, config: SimulationConfig, rng: np.random.Generator
) -> np.ndarray:
    """Site index per person, drawn at random within each ancestry."""
    available = {pop: int((ancestry == pop).sum()) for pop in POPULATIONS}
    counts = _site_counts(config, available)
    site = np.empty(len(ancestry), dtype=np.int64)
    for j, pop in enumerate(POPULATIONS):
        people = rng.permutation(np.flatnonzero(ancestry == pop))
        site[people] = np.repeat(np.arange(config.sites), counts[:, j])
    return site


def _sample_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Random, unique IDs that reveal neither ancestry, site nor simulation order."""
    width = max(7, len(str(10 * n)))
    numbers = rng.choice(10**width, size=n, replace=False)
    return np.array([f"S{x:0{width}d}" for x in numbers])


def _split(
    site: np.ndarray, ancestry: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """train/test per person, stratified by (site, ancestry) so every stratum is evaluated."""
    split = np.full(len(site), "train", dtype="<U5")
    for s in np.unique(site):
        for pop in POPULATIONS:
            members = rng.permutation(np.flatnonzero((site == s) & (ancestry == pop)))
            n_test = int(np.floor(len(members) * fraction + 0.5))
            split[members[:n_test]] = "test"
    return split


# --------------------------------------------------------------------------- VCF


def _vcf_header(samples: list[str], contig_length: int) -> bytes:
    lines = [
        "##fileformat=VCFv4.2",
        "##source=genofed-simulate",
        "##reference=reference.fa",
        f"##contig=<ID={CHROM},length={contig_length}>",
        '##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">',
        "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT"])
        + "\t"
        + "\t".join(samples),
    ]
    return ("\n".join(lines) + "\n").encode()


# Genotype code (2 * allele0 + allele1, or 4 = missing) -> the 4 bytes written for it.
_GT_BYTES = np.frombuffer(b"0|0\t0|1\t1|0\t1|1\t.|.\t", dtype=np.uint8).reshape(5, 4)


def _vcf_body_chunks(
    geno: _Genotypes, people: np.ndarray, missing_rate: float, rng: np.random.Generator
):
    """Yield VCF record bytes, vectorised over samples: a per-call Python loop would take
    minutes for a real-sized cohort."""
    hap0, hap1 = 2 * people, 2 * people + 1
    n_var, n_people = len(geno.pos), len(people)
    for lo in range(0, n_var, _VCF_CHUNK):
        hi = min(lo + _VCF_CHUNK, n_var)
        block = geno.haplotypes[lo:hi]
        codes = block[:, hap0] * 2 + block[:, hap1]
        n_missing = rng.binomial(codes.size, missing_rate) if missing_rate else 0
        if n_missing:
            codes.flat[rng.integers(0, codes.size, size=n_missing)] = 4
        text = _GT_BYTES[codes]
        text[:, -1, 3] = ord("\n")
        rows = text.reshape(hi - lo, n_people * 4)
        for i in range(hi - lo):
            v = lo + i
            prefix = f"{CHROM}\t{geno.pos[v]}\t.\t{geno.ref[v]}\t{geno.alt[v]}\t.\tPASS\t.\tGT\t"
            yield prefix.encode() + rows[i].tobytes()


def _write_vcf(
    path: Path,
    geno: _Genotypes,
    people: np.ndarray,
    samples: list[str],
    contig_length: int,
    missing_rate: float,
    rng: np.random.Generator,
) -> None:
    """Plain text first, then BGZF + tabix: the layout every genomics tool expects."""
    plain = path.with_suffix("")  # genotypes.vcf
    with atomic_write(plain, "wb") as fh:
        fh.write(_vcf_header(samples, contig_length))
        for record in _vcf_body_chunks(geno, people, missing_rate, rng):
            fh.write(record)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    pysam.tabix_index(str(path), preset="vcf", force=True)


# --------------------------------------------------------------------------- writing


def _write_tsv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_write(path) as fh:
        frame.to_csv(fh, sep="\t", index=False, float_format="%.6f", lineterminator="\n")


def _link_or_copy(src: Path, dst: Path) -> None:
    """Sites share the (large) reference; a hard link costs nothing when the filesystem allows."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _write_site(
    folder: Path,
    top: Path,
    geno: _Genotypes,
    people: np.ndarray,
    cohort: pd.DataFrame,
    contig_length: int,
    missing_rate: float,
    rng: np.random.Generator,
) -> None:
    """Everything one hospital holds: its VCF, the shared reference, the panel, its labels."""
    folder.mkdir()
    samples = cohort["sample_id"].tolist()
    _write_vcf(folder / "genotypes.vcf.gz", geno, people, samples, contig_length, missing_rate, rng)
    for name in ("reference.fa", "reference.fa.fai"):
        _link_or_copy(top / name, folder / name)
    shutil.copyfile(top / "panel.tsv", folder / "panel.tsv")
    reference = ancestry_path(top / "panel.tsv")
    if reference.exists():
        shutil.copyfile(reference, folder / reference.name)
    _write_tsv(folder / "cohort.tsv", cohort[["sample_id", "ancestry", "phenotype", "split"]])
    # The ancestry labels the consortium agreed on: a site's DP releases are broken down by
    # its declared labels, so a short list keeps the noise on its totals small.
    labels = ", ".join(f'"{p}"' for p in POPULATIONS)
    (folder / "site.toml").write_text(f"[cohort]\nancestries = [{labels}]\n")


# The public reference sample behind the panel's `af` column, at the panel's variants, laid out
# as 1000 Genomes publishes its own: what `genofed model explain --reference` reads.
PUBLIC_VCF, PUBLIC_LABELS = "public-reference.vcf.gz", "public-reference.tsv"


def _write_public_reference(out: Path, public: _Genotypes, panel: np.ndarray,
                            contig_length: int) -> None:
    """The public people's genotypes at the panel (no missing calls: no random draw, so every
    other file stays as it was) and a sample table with 1000 Genomes' `sample` and `pop`
    columns."""
    at_panel = _Genotypes(public.pos[panel], public.ref[panel], public.alt[panel],
                          public.haplotypes[panel], public.ancestry)
    samples = [f"PUB{i:05d}" for i in range(public.n_people)]
    _write_vcf(out / PUBLIC_VCF, at_panel, np.arange(public.n_people), samples, contig_length,
               0.0, np.random.default_rng(0))
    _write_tsv(out / PUBLIC_LABELS, pd.DataFrame({"sample": samples, "pop": public.ancestry}))


def _write_ancestry_reference(panel_path: Path, haplotypes: np.ndarray,
                              populations: np.ndarray) -> None:
    """The panel's public ancestry reference (`shared.ancestry`), fitted on the public sample's
    people, who are in no site: their haplotypes [T, 2n] at the panel and their populations."""
    codes = (haplotypes[:, 0::2] + haplotypes[:, 1::2]).T  # [n, T] alt-allele counts
    fit_reference(codes, populations, read_panel(panel_path)).write(ancestry_path(panel_path))


def _oracle_auroc(truth: pd.DataFrame) -> dict[str, float | None]:
    """The ceiling a model can reach per ancestry: the true genetic liability on test people."""
    from sklearn.metrics import roc_auc_score

    result: dict[str, float | None] = {}
    test = truth[truth["split"] == "test"]
    for pop in POPULATIONS:
        rows = test[test["ancestry"] == pop]
        if rows["phenotype"].nunique() < 2:
            result[pop] = None
        else:
            auc = roc_auc_score(rows["phenotype"], rows["genetic_liability"])
            result[pop] = round(float(auc), 6)
    return result


def _site_summary(truth: pd.DataFrame, names: list[str]) -> dict[str, dict]:
    summary = {}
    for name in names:
        rows = truth[truth["site"] == name]
        summary[name] = {
            "n": len(rows),
            "by_ancestry": {pop: int((rows["ancestry"] == pop).sum()) for pop in POPULATIONS},
            "cases": int(rows["phenotype"].sum()),
        }
    return summary


def _build(out: Path, config: SimulationConfig) -> dict:
    """Simulate and write every file into `out` (a fresh, private directory)."""
    seeds = np.random.SeedSequence(config.seed).spawn(6)
    ref_rng, trait_rng, site_rng, id_rng, split_rng = (np.random.default_rng(s) for s in seeds[:5])
    missing_seeds = seeds[5].spawn(config.sites)

    geno, public = _extract_genotypes(
        _simulate_tree_sequence(config), config.public_people_per_population
    )
    panel = _choose_panel(geno, config)
    trait = _trait(geno, panel, config, trait_rng)
    site = _assign_sites(geno.ancestry, config, site_rng)
    ids = _sample_ids(geno.n_people, id_rng)
    split = _split(site, geno.ancestry, config.test_fraction, split_rng)
    names = [f"site-{k + 1}" for k in range(config.sites)]

    contig_length = config.start + config.sequence_length
    _write_fasta(out / "reference.fa", _reference(config, geno, ref_rng))
    panel_frame = pd.DataFrame(
        {"chrom": CHROM, "pos": geno.pos[panel], "ref": geno.ref[panel], "alt": geno.alt[panel]}
    )
    if public.n_people:
        panel_frame["af"] = public.haplotypes[panel].mean(axis=1, dtype=np.float64)
    _write_tsv(out / "panel.tsv", panel_frame)
    if public.n_people:
        _write_public_reference(out, public, panel, contig_length)
        _write_ancestry_reference(out / "panel.tsv", public.haplotypes[panel], public.ancestry)

    truth = pd.DataFrame(
        {
            "person": np.arange(geno.n_people),
            "sample_id": ids,
            "site": np.array(names)[site],
            "ancestry": geno.ancestry,
            "genetic_liability": trait.genetic,
            "liability": trait.liability,
            "phenotype": trait.phenotype,
            "split": split,
        }
    ).sort_values(["site", "sample_id"], key=_natural_site_key, ignore_index=True)
    _write_tsv(out / "truth.tsv", truth.drop(columns="person"))

    def write_one(k: int) -> None:
        rows = truth[truth["site"] == names[k]]
        _write_site(
            out / names[k],
            out,
            geno,
            rows["person"].to_numpy(),
            rows,
            contig_length,
            config.missing_rate,
            np.random.default_rng(missing_seeds[k]),
        )

    # BGZF compression releases the GIL: two sites at a time use both cores.
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(write_one, range(config.sites)))

    metadata = {
        "config": asdict(config),
        "chrom": CHROM,
        "contig_length": contig_length,
        "populations": list(POPULATIONS),
        "sites": _site_summary(truth, names),
        "n_people": int(geno.n_people),
        "n_cases": int(trait.phenotype.sum()),
        "n_variants": int(len(geno.pos)),
        "panel_size": int(len(panel)),
        "causal_positions": [int(p) for p in geno.pos[trait.causal]],
        "causal_effects": [round(float(b), 6) for b in trait.effects],
        "interaction_pairs": [[int(geno.pos[a]), int(geno.pos[b])] for a, b in trait.pairs],
        "interaction_effects": [round(float(g), 6) for g in trait.pair_effects],
        "oracle_auroc": _oracle_auroc(truth),
    }
    write_json(out / "cohort.json", metadata)
    _open_permissions(out)
    return metadata


def _open_permissions(root: Path) -> None:
    """Temp files and dirs are created private (0600/0700); a cohort is meant to be read by the
    site's other tools and containers, so give it the permissions the umask would have."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _natural_site_key(column: pd.Series) -> pd.Series:
    """Order site-2 before site-10."""
    if column.name == "site":
        return column.str.removeprefix("site-").astype(np.int64)
    return column


def _prepare_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(out, "exists and is not empty; pass --force to replace it")


def simulate_cohort(out: Path, config: SimulationConfig, *, force: bool = False) -> dict:
    """Simulate the cohort into `out` and return the metadata written to `out/cohort.json`.

    Everything is built in a sibling temporary directory and renamed into place, so a failed
    or interrupted run leaves either the old directory or nothing, never a half-written cohort.
    """
    out = Path(out)
    _validate(config)
    _prepare_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=out.parent))
    try:
        metadata = _build(build, config)
        _swap_into_place(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return metadata


def _swap_into_place(build: Path, out: Path) -> None:
    """Rename the finished build over `out`; an old `out` is moved aside first, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()
        out.rename(old)
    try:
        build.rename(out)
    except BaseException:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- CLI


def _summary(metadata: dict, out: Path, seconds: float) -> str:
    lines = [
        f"cohort written to {out} in {seconds:.1f} s: {metadata['n_people']} people, "
        f"{metadata['n_cases']} cases, {metadata['n_variants']} variants, "
        f"panel {metadata['panel_size']}",
    ]
    for name, info in metadata["sites"].items():
        mix = ", ".join(f"{pop} {n}" for pop, n in info["by_ancestry"].items())
        lines.append(f"  {name}: {info['n']} people ({mix}), {info['cases']} cases")
    auroc = ", ".join(
        f"{pop} {'n/a' if v is None else f'{v:.3f}'}" for pop, v in metadata["oracle_auroc"].items()
    )
    lines.append(f"  oracle AUROC (test): {auroc}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    names = {f.name for f in fields(SimulationConfig)}
    config = SimulationConfig(**{k: v for k, v in vars(args).items() if k in names})
    began = time.perf_counter()
    metadata = simulate_cohort(Path(args.out), config, force=args.force)
    print(_summary(metadata, Path(args.out), time.perf_counter() - began))
    return 0


# --------------------------------------------------------------------------- using a cohort


def fresh_copy(cohort: Path, dst: Path) -> Path:
    """A copy of a cohort without any site state (privacy spent, its binding, caches): a run
    on it starts afresh, as privacy spent is persisted per site folder. Each site keeps its
    identity (its keys), so the cohort's site registry still names them."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        if Path(folder).name == ".genofed-state":
            return {n for n in names if n != IDENTITY}
        return {n for n in names if n == BINDING}

    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(cohort, dst, ignore=ignore)
    return dst


def register_sites(cohort: Path) -> Path:
    """Every simulated site makes its own keys (in its state folder, as `genofed site keygen`
    does at a hospital) and the coordinator's registry of their public receipt keys is written
    where the run config looks by default (`<data-root>/site-registry.json`)."""
    pems = {}
    for site in sorted(p for p in cohort.glob("site-*") if p.is_dir()):
        folder = site / ".genofed-state" / IDENTITY
        if not (folder / RECEIPT_PUB).exists():
            keygen(folder, site.name)
        pems[site.name] = (folder / RECEIPT_PUB).read_bytes()
    path = cohort / "site-registry.json"
    SiteRegistry.from_pem(pems).save(path)
    return path


def register(subparsers) -> None:
    """Add the `cohort` group with its `simulate` sub-command."""
    group = subparsers.add_parser("cohort", help="synthetic multi-ancestry cohorts")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sim = commands.add_parser(
        "simulate",
        help="simulate genotypes and phenotypes and write one folder per site",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = SimulationConfig()
    sim.add_argument("--out", required=True, help="output directory (must be empty or absent)")
    sim.add_argument("--force", action="store_true", help="replace a non-empty --out")
    options: list[tuple[str, type, object, str]] = [
        ("--sites", int, d.sites, "number of hospitals"),
        ("--seed", int, d.seed, "random seed (same seed, same files)"),
        ("--people-per-population", int, d.people_per_population, "diploids per ancestry"),
        ("--public-people-per-population", int, d.public_people_per_population,
         "diploids per ancestry in the public sample behind the panel's af column (0: none)"),
        ("--sequence-length", int, d.sequence_length, "bp of chr22 simulated"),
        ("--start", int, d.start, "0-based start of the region on chr22"),
        ("--panel-size", int, d.panel_size, "variants in the coordinator's panel"),
        ("--min-panel-maf", float, d.min_panel_maf, "minimum pooled MAF of panel variants"),
        ("--n-causal", int, d.n_causal, "causal variants, drawn from the panel"),
        ("--n-interactions", int, d.n_interactions, "pairwise interactions"),
        ("--interaction-share", float, d.interaction_share, "genetic variance share of them"),
        ("--heritability", float, d.heritability, "liability-scale heritability"),
        ("--prevalence", float, d.prevalence, "fraction of cases"),
        ("--test-fraction", float, d.test_fraction, "fraction of each stratum held out"),
        ("--missing-rate", float, d.missing_rate, "fraction of calls written as missing"),
        ("--design", str, d.design, "site design: skewed (one ancestry per hospital) or spread"),
    ]
    for flag, kind, default, text in options:
        sim.add_argument(flag, type=kind, default=default, help=text)
    sim.set_defaults(func=_run)
