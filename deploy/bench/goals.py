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
# A loss-threshold membership attack on the DP model stays within this of guessing (AUROC 0.5).
MIA_TOLERANCE = 0.05
# The coordinator's noise-aware AUROC interval (from the sites' DP evaluation histograms) holds
# the exact pooled AUROC in at least this share of simulated releases, in every population.
EVALUATION_COVERAGE = 0.8
# `make bench` finishes within this many seconds on the development machine.
BENCH_BUDGET_S = 3600.0
