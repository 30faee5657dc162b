"""What a hospital or a consortium would do instead of joining, on the utility section's cohort.

- `site_alone_plain`: each site on its own people, WITHOUT DP (a hospital needs none for its own
  patients): the L2-logistic score (C by cross-validation on the site's people) and the same
  transformer trained as the pooled reference is (Adam, cosine decay, same epochs). Per
  population the best of every site's two models is what joining must beat.
- `meta_gwas` / `meta_gwas_multi`: the sites share per-variant GWAS summary statistics, the
  consortium meta-analyses them and builds a C+T score (`deploy.bench.gwas`). The thresholds
  (and the multi-ancestry combination weights) are chosen on a validation fifth of the training
  people, stratified by site, ancestry and outcome, whom the GWAS does not see: PRSice's recipe
  needs people outside the discovery GWAS to tune on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from client.train import pick_device, predict_logits
from deploy.bench.common import say
from deploy.bench.gwas import ct_baselines

if TYPE_CHECKING:
    from deploy.bench.utility import CohortData, People
    from shared.model import ModelConfig

VALIDATION_SHARE = 0.2


def validation_mask(people: People, seed: int) -> np.ndarray:
    """A stratified (site x ancestry x outcome) VALIDATION_SHARE of `people`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(people.labels), dtype=bool)
    strata = np.char.add(np.char.add(people.site.astype(str), "|"),
                         np.char.add(people.ancestry.astype(str), people.labels.astype(str)))
    for stratum in np.unique(strata):
        idx = np.flatnonzero(strata == stratum)
        take = int(round(VALIDATION_SHARE * len(idx)))
        mask[rng.choice(idx, take, replace=False)] = True
    return mask


def meta_gwas(data: CohortData, contig: np.ndarray, populations: tuple[str, ...], seed: int,
              ) -> dict[str, Any]:
    """Held-out scores and fits of the single- and multi-ancestry meta-analysed C+T scores."""
    from deploy.bench.utility import dosages

    val = validation_mask(data.train, seed)
    disc, tune = data.train.subset(~val), data.train.subset(val)
    pos = data.features.coord.numpy().astype(np.int64)
    out = ct_baselines(
        (dosages(disc.genotypes), disc.labels, disc.ancestry, disc.site),
        (dosages(tune.genotypes), tune.labels, tune.ancestry),
        (dosages(data.test.genotypes), data.test.ancestry), contig, pos, populations)
    for part in out.values():
        part["fit"]["discovery_people"] = int(len(disc.labels))
        part["fit"]["validation_people"] = int(len(tune.labels))
    return out


def site_alone_plain(
    data: CohortData, cfg: ModelConfig, settings: Any, epochs: int, learning_rate: float,
    seed: int,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Each site's own non-private models: held-out scores {site: {"linear": s, "transformer":
    s}} and what each fit chose."""
    from deploy.bench.utility import CohortData as _Data
    from deploy.bench.utility import fresh_model, linear_prs, train_plain

    device = pick_device()
    scores: dict[str, dict[str, np.ndarray]] = {}
    info: dict[str, Any] = {}
    for name in data.sites:
        own = data.train.subset(data.train.site == name)
        say("utility", f"site_alone_plain: {name} ({len(own.labels)} people), L2 logistic and "
                       f"the transformer without DP, {epochs} epochs")
        alone = _Data(data.features, data.n_variants, own, data.test, [name])
        linear, linear_fit = linear_prs(alone, seed)
        model = fresh_model(cfg, seed)
        losses, _ = train_plain(model, own.genotypes, own.labels, data.features, epochs=epochs,
                                batch_size=settings.batch_size, learning_rate=learning_rate,
                                seed=seed, cosine=True)
        scores[name] = {"linear": linear,
                        "transformer": predict_logits(model, data.test.genotypes, data.features,
                                                      device)}
        info[name] = {"n_train": int(len(own.labels)), "linear_fit": linear_fit,
                      "transformer_final_loss": losses[-1] if losses else None}
    return scores, info
