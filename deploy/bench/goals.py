"""The project's measured goals: each threshold defined here once.

`deploy.bench.utility` computes the utility goals' margins with these, `deploy.bench.readme`
judges every goal from `bench.json` and writes its rule from the same numbers.
"""

from __future__ import annotations

# Federated DP attainable AUROC (AUROC as a fraction of what the true liability attains) is at
# least this fraction of the centralized non-private model's, in every population.
FEDERATED_VS_CENTRALIZED = 0.9
# The worst population's attainable AUROC is at least this fraction of the best population's.
WORST_VS_BEST = 0.8
# A DP-SGD step costs at most this many times the same non-private step (time and memory).
DP_STEP_RATIO = 1.3
# Local attention's DP-SGD step on a panel 16 times larger (16,384 vs 1,024 variants, same
# batch) takes at most this many times as long: linear growth, with a little slack.
LOCAL_ATTENTION_GROWTH = 20.0
# The coordinator's own work takes at most this fraction of a round, at 10 sites.
COORDINATOR_OVERHEAD = 0.10
# Federated DP AUROC is at least the best single site's own non-private score plus this, in
# every population (what joining must be worth to a hospital).
BEST_SITE_GAIN = 0.02
# Federated DP AUROC is within this of the pooled non-private ceiling (the better of the pooled
# transformer and the pooled L2-logistic score), in every population.
POOLED_GAP = 0.02
# Recalibrated risk on held-out people, every population: Cox slope within these bounds and
# calibration-in-the-large within +- CALIBRATION_INTERCEPT.
CALIBRATION_SLOPE = (0.8, 1.25)
CALIBRATION_INTERCEPT = 0.1
# The coordinator's noise-aware AUROC interval (from the sites' DP evaluation histograms) holds
# the exact pooled AUROC in at least this share of simulated releases, in every population.
EVALUATION_COVERAGE = 0.8
# `make bench` finishes within this many seconds on the development machine.
BENCH_BUDGET_S = 3600.0
# Loading a site's genotypes holds the people x variants int8 result plus at most this factor of
# it and this constant more (peak over the process before loading): streamed, never whole-file.
LOAD_MEMORY_FACTOR = 0.5
LOAD_MEMORY_CONSTANT_BYTES = 256 * 2**20
