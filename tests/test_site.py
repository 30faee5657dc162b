"""A site's local work without Flower: DP training, budget enforcement, what leaves the site."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from client.budget import SiteBudget
from client.site import Site
from client.train import DPPlan, pick_device, train_dp
from deploy.demo import fresh_copy
from server.strategy import initial_weights
from shared.encoding import model_config
from shared.errors import InputError
from shared.model import RiskTransformer, get_weights
from shared.privacy import PrivacyLedger
from shared.runconfig import RunSettings

SMALL = dict(batch_size=32, local_epochs=1, model_dim=16, model_layers=1, suppression_k=5,
             num_server_rounds=2)


@pytest.fixture()
def site_dir(tiny_cohort: Path, tmp_path: Path) -> Path:
    return fresh_copy(tiny_cohort / "site-1", tmp_path / "site-1")


def fresh_weights(site: Site) -> list[np.ndarray]:
    data = site.data()
    cfg = model_config(len(data.panel), site.settings.encoder(), **site.settings.architecture())
    return initial_weights(cfg, 0)


def test_one_dp_step_changes_weights(site_dir: Path) -> None:
    site = Site(site_dir, RunSettings(**SMALL))
    data = site.data()
    g, y, _ = data.split("train")
    cfg = model_config(len(data.panel), site.settings.encoder(), **site.settings.architecture())
    model = RiskTransformer(cfg)
    before = [w.copy() for w in get_weights(model)]
    plan = DPPlan.for_site(len(y), batch_size=32, epochs=1)
    result = train_dp(model, g, y, data.features, plan=plan, learning_rate=0.01,
                      noise_multiplier=1.0, max_grad_norm=1.0, seed=0, device=pick_device(),
                      optimizer="sgd")
    assert result.steps == plan.steps
    after = get_weights(model)
    assert all(a.shape == b.shape for a, b in zip(before, after, strict=True))
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None
                   for p in model.parameters())  # Opacus hooks removed after training


def test_dp_training_takes_every_planned_step_where_opacus_would_round_down(
        site_dir: Path) -> None:
    """Opacus sizes its Poisson loader as int(1 / sample_rate): for 93 steps per epoch that is
    int(92.99999999999999) = 92, so a site of 5,889-5,952 people at batch 64 (or 7,425-7,488:
    117 steps) could not train at all. At batch 1 about a third of the Poisson batches are
    empty: each is still a step (pure noise), which the model's forward must survive."""
    site = Site(site_dir, RunSettings(**SMALL))
    data = site.data()
    g, y, _ = data.split("train")
    assert int(1 / (1 / 93)) == 92  # the floating-point case this guards against
    plan = DPPlan.for_site(93, batch_size=1, epochs=2)
    assert plan.steps_per_epoch == 93
    cfg = model_config(len(data.panel), site.settings.encoder(), **site.settings.architecture())
    model = RiskTransformer(cfg)
    empty = torch.zeros(0, len(data.panel), dtype=torch.long)
    assert model(empty, data.features).shape == (0,)
    rows = np.arange(93) % len(y)  # the site has fewer training people: some twice
    result = train_dp(model, g[rows], y[rows], data.features, plan=plan, learning_rate=0.01,
                      noise_multiplier=1.0, max_grad_norm=1.0, seed=0, device=pick_device(),
                      optimizer="sgd")
    assert result.steps == plan.steps == 186  # counted in the loop, not copied from the plan
    assert result.empty_steps > 0  # empty batches did occur, and were taken as steps


def test_a_large_site_grows_its_batch_rather_than_its_step_count() -> None:
    """The cap on steps per epoch: a small site keeps batch-size, a large one takes larger
    batches (and so a higher sample rate) for no more than the cap's steps."""
    assert DPPlan.for_site(500, 64, 4, max_steps_per_epoch=10) == DPPlan(64, 8, 4)
    assert DPPlan.for_site(2485, 64, 4, max_steps_per_epoch=10) == DPPlan(249, 10, 4)
    assert DPPlan.for_site(2485, 64, 4, max_steps_per_epoch=0) == DPPlan(64, 39, 4)
    assert DPPlan.for_site(5, 64, 1, max_steps_per_epoch=10) == DPPlan(5, 1, 1)


def test_the_site_trains_and_accounts_on_the_capped_plan(site_dir: Path) -> None:
    """What the site's ledger records (and so spends) is the capped plan's sample rate and
    steps, the plan its DP-SGD ran."""
    site = Site(site_dir, RunSettings(**{**SMALL, "batch_size": 8, "max_steps_per_epoch": 3}))
    n = len(site.data().split("train")[1])
    assert n > 8 * 3  # uncapped, this site would take more than 3 steps per epoch
    assert site.fit(fresh_weights(site), 1, "run").metrics["declined"] == 0
    ledger = json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())
    [(_, sample_rate, steps)] = ledger["history"]
    assert (sample_rate, steps) == (1 / 3, 3)


def test_training_message_scores_the_weights_it_received_first(site_dir: Path) -> None:
    """The ClientApp's fit, asked to, evaluates the incoming aggregate (the previous round's)
    before training: the scores are those of the received weights, not of the site's update."""
    from client.app import SiteClient
    from shared.runconfig import EVALUATE_RECEIVED

    site = Site(site_dir, RunSettings(**SMALL))
    w = fresh_weights(site)
    config = {"server-round": 1, "panel-sha256": site.data().panel.sha256}
    weights, n, plain = SiteClient(site, "run").fit(w, {**config, EVALUATE_RECEIVED: 0})
    assert n > 0 and "scores" not in plain and "evaluate_s" not in plain
    _, _, metrics = SiteClient(site, "run").fit(w, {**config, "server-round": 2,
                                                    EVALUATE_RECEIVED: 1})
    assert metrics["declined"] == 0 and metrics["evaluate_s"] > 0
    assert metrics["scores"] == site.evaluate(w)[2]["scores"] != site.evaluate(weights)[2]["scores"]
    ids = set(site.data().cohort.sample_id)
    assert not any(i in json.dumps(metrics) for i in ids)


def test_fit_reports_cumulative_epsilon_and_declines_past_budget(site_dir: Path) -> None:
    settings = RunSettings(**SMALL, target_epsilon=3.0)
    site = Site(site_dir, settings)
    w = fresh_weights(site)
    reports = [site.fit(w, r, "run-a") for r in (1, 2)]
    eps = [float(r.metrics["epsilon"]) for r in reports]
    assert 0 < eps[0] < eps[1] <= 3.0
    assert all(r.metrics["declined"] == 0 and r.n_examples > 0 for r in reports)
    ledger = json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())
    assert len(ledger["history"]) == 2
    # A second run on the same data starts from what was spent, never from zero.
    again = Site(site_dir, settings).fit(w, 1, "run-b")
    assert again.metrics["declined"] == 1 or float(again.metrics["epsilon"]) > eps[1]
    # Once the run's rounds are used up, a further round would overspend and is declined.
    extra = Site(site_dir, settings).fit(w, 3, "run-a")
    assert extra.metrics["declined"] == 1 and extra.n_examples == 0
    assert "budget" in str(extra.metrics["reason"])


def test_what_leaves_the_site_holds_no_person_level_data(site_dir: Path) -> None:
    site = Site(site_dir, RunSettings(**SMALL))
    w = fresh_weights(site)
    fit = site.fit(w, 1, "run")
    loss, n, metrics = site.evaluate(fit.weights)
    ids = set(site.data().cohort.sample_id)
    sent = json.dumps({"fit": fit.metrics, "eval": metrics, "loss": loss, "n": n})
    assert not any(i in sent for i in ids)
    assert set(fit.metrics) <= {"site", "declined", "epsilon", "delta", "noise_multiplier",
                                "train_loss", "train_s", "train_ended_at", "reason"}
    assert set(metrics) == {"site", "scores", "evaluate_s", "evaluate_ended_at"}
    assert fit.metrics["train_s"] > 0 and metrics["evaluate_s"] > 0
    # When the work ended, in Unix time: the training before the evaluation that followed it.
    assert fit.metrics["train_ended_at"] < metrics["evaluate_ended_at"] <= time.time()
    scores = json.loads(metrics["scores"])
    n_test = int((site.data().cohort.split == "test").sum())
    for group in scores["groups"].values():
        assert group["n"] >= 5  # groups under k are withheld
        assert group["n"] < n_test or len(scores["groups"]) == 1
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in fit.weights)



def copy_site(tiny_cohort: Path, dst: Path) -> Path:
    return fresh_copy(tiny_cohort / "site-1", dst)


def test_coordinator_cannot_lower_a_sites_noise(tiny_cohort: Path, tmp_path: Path) -> None:
    strict = copy_site(tiny_cohort, tmp_path / "a")
    (strict / "site.toml").write_text("[privacy]\nmax-epsilon = 2.0\n")
    greedy = Site(strict, RunSettings(**SMALL, target_epsilon=100.0))  # coordinator asks for more
    honest = Site(copy_site(tiny_cohort, tmp_path / "b"), RunSettings(**SMALL, target_epsilon=2.0))
    w = fresh_weights(honest)
    a, b = greedy.fit(w, 1, "r"), honest.fit(w, 1, "r")
    assert a.metrics["noise_multiplier"] == pytest.approx(b.metrics["noise_multiplier"])
    assert float(a.metrics["epsilon"]) <= 2.0
    # ... but it may ask for less loss, which means more noise.
    cautious_dir = copy_site(tiny_cohort, tmp_path / "c")
    cautious = Site(cautious_dir, RunSettings(**SMALL, target_epsilon=1.0))
    assert cautious.fit(w, 1, "r").metrics["noise_multiplier"] > b.metrics["noise_multiplier"]


def test_minimum_noise_multiplier_from_node_config(tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = copy_site(tiny_cohort, tmp_path / "s")
    budget = SiteBudget.load(site_dir, {"min-noise-multiplier": 5.0, "data-path": "x"})
    site = Site(site_dir, RunSettings(**SMALL), budget=budget)
    report = site.fit(fresh_weights(site), 1, "r")
    assert report.metrics["noise_multiplier"] == 5.0


def test_spent_site_declines_instead_of_failing(tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = copy_site(tiny_cohort, tmp_path / "s")
    state = site_dir / ".genofed-state"
    PrivacyLedger(path=state / "privacy-ledger.json", history=[(0.5, 0.5, 200)]).save()
    site = Site(site_dir, RunSettings(**SMALL))
    report = site.fit(fresh_weights(site), 1, "new-run")
    assert report.metrics["declined"] == 1 and report.n_examples == 0
    assert "cannot fund" in str(report.metrics["reason"])


def test_bad_site_config_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("max-epsilon = [\n")
    with pytest.raises(InputError, match="site.toml: not valid TOML"):
        SiteBudget.load(tmp_path)
    (tmp_path / "site.toml").write_text("max-epsilon = -1\n")
    with pytest.raises(InputError, match="max-epsilon must be > 0"):
        SiteBudget.load(tmp_path)
    (tmp_path / "site.toml").write_text("epsilon = 3\n")
    with pytest.raises(InputError, match="unknown privacy setting"):
        SiteBudget.load(tmp_path)


def test_balancing_weights_equalize_groups() -> None:
    from client.train import balancing_weights

    groups = np.array(["CEU"] * 80 + ["YRI"] * 15 + ["CHB"] * 5)
    w = balancing_weights(groups)
    assert w.mean() == pytest.approx(1.0)
    totals = {g: w[groups == g].sum() for g in ("CEU", "YRI", "CHB")}
    assert max(totals.values()) == pytest.approx(min(totals.values()))


def test_reweighting_changes_training_and_is_validated(tiny_cohort: Path, tmp_path: Path) -> None:
    plain = copy_site(tiny_cohort, tmp_path / "plain")
    balanced = copy_site(tiny_cohort, tmp_path / "balanced")
    (balanced / "site.toml").write_text('[training]\nbalance = "reweight"\n')
    a, b = Site(plain, RunSettings(**SMALL)), Site(balanced, RunSettings(**SMALL))
    assert (a.balance, b.balance) == ("none", "reweight")
    w = fresh_weights(a)
    wa, wb = a.fit(w, 1, "r").weights, b.fit(w, 1, "r").weights
    assert any(not np.allclose(x, y) for x, y in zip(wa, wb, strict=True))
    (balanced / "site.toml").write_text('[training]\nbalance = "oversample"\n')
    with pytest.raises(InputError, match="balance must be one of"):
        Site(balanced, RunSettings(**SMALL))


def test_evaluation_never_loads_opacus(site_dir: Path) -> None:
    """Flower deployments start a ClientApp process per message; one that only evaluates must
    not pay for importing Opacus (~2 s here). Checked in a fresh interpreter, after a real
    evaluation of the site's held-out people."""
    import subprocess
    import sys

    script = f"""
import sys
from pathlib import Path
import client.app
from client.site import Site
from shared.model import get_weights
from shared.runconfig import RunSettings
site = Site(Path({str(site_dir)!r}), RunSettings(**{SMALL!r}))
data = site.data()
loss, n, metrics = site.evaluate(get_weights(site.model(data, None)), data.panel.sha256)
assert n > 0 and "scores" in metrics
print(sorted(m for m in ("opacus", "scipy.stats") if m in sys.modules))
"""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_under_dp_noise_adam_moves_every_weight_a_full_step_and_sgd_follows_the_gradient(
        site_dir: Path) -> None:
    """Why the sites' default update rule is SGD: on one DP step whose gradient is mostly
    noise, Adam moves nearly every weight by the learning rate (its first step is lr * g / |g|),
    signal or not; SGD moves each weight in proportion to its noisy gradient."""
    site = Site(site_dir, RunSettings(**SMALL))
    data = site.data()
    g, y, _ = data.split("train")
    cfg = model_config(len(data.panel), site.settings.encoder(), **site.settings.architecture())
    plan = DPPlan.for_site(len(y), batch_size=len(y), epochs=1)
    moves = {}
    for name in ("adam", "sgd"):
        torch.manual_seed(0)
        model = RiskTransformer(cfg)  # the same initial weights for both
        before = np.concatenate([w.ravel() for w in get_weights(model)])
        train_dp(model, g, y, data.features, plan=plan, learning_rate=1e-3, noise_multiplier=50.0,
                 max_grad_norm=1.0, seed=0, device=pick_device(), optimizer=name)
        moves[name] = np.abs(np.concatenate([w.ravel() for w in get_weights(model)]) - before)
    moved = moves["adam"][moves["adam"] > 0]
    assert np.mean(np.isclose(moved, 1e-3, rtol=0.02)) > 0.95
    spread = moves["sgd"].std() / moves["sgd"].mean()
    assert spread > 0.5  # |N(0, 1)| has 0.76: the step follows each gradient's size


def test_the_optimizer_is_the_coordinators_choice_and_costs_no_privacy(
        tiny_cohort: Path, tmp_path: Path) -> None:
    """The update rule acts on gradients already clipped and noised (post-processing): both
    spend the same ε from the same plan, and they train to different weights."""
    reports = {}
    for name, rate in (("sgd", 0.1), ("adam", 0.01)):
        site = Site(fresh_copy(tiny_cohort / "site-1", tmp_path / name),
                    RunSettings(**SMALL, optimizer=name, learning_rate=rate))
        reports[name] = site.fit(fresh_weights(site), 1, "run")
    sgd, adam = reports["sgd"], reports["adam"]
    assert sgd.metrics["declined"] == adam.metrics["declined"] == 0
    for key in ("epsilon", "noise_multiplier"):
        assert sgd.metrics[key] == adam.metrics[key]
    assert any(not np.allclose(a, b) for a, b in zip(sgd.weights, adam.weights, strict=True))
