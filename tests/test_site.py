"""A site's local work without Flower: DP training, budget enforcement, what leaves the site."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client.budget import SiteBudget
from client.settings import SiteSettings
from client.site import Site
from client.train import DPPlan, pick_device, predict_logits, train_dp
from deploy.simulate import fresh_copy
from server.strategy import initial_weights
from shared.errors import InputError
from shared.model import RiskTransformer, get_weights
from shared.privacy import PrivacyLedger
from shared.runconfig import RunSettings

SMALL = dict(batch_size=32, local_epochs=1, model_dim=16, model_layers=1, suppression_k=5,
             num_server_rounds=2)
# The tiny cohort's held-out groups are a handful of people: only a large budget (little noise
# on the counts) and a floor of 1 let any of them be evaluated.
GENEROUS = SiteBudget(max_epsilon=50.0, min_group_size=1, accountant="rdp")
# RDP calibrates a few times faster than PRV; tests/test_privacy.py checks PRV itself.
FAST = SiteBudget(accountant="rdp")


@pytest.fixture()
def site_dir(tiny_cohort: Path, tmp_path: Path) -> Path:
    return fresh_copy(tiny_cohort / "site-1", tmp_path / "site-1")


def fresh_weights(site: Site) -> list[np.ndarray]:
    data = site.data()
    cfg = site.settings.model_config(len(data.panel))
    return initial_weights(cfg, 0)


def test_one_dp_step_changes_weights(site_dir: Path) -> None:
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    data = site.data()
    g, y, _ = data.split("train")
    cfg = site.settings.model_config(len(data.panel))
    model = RiskTransformer(cfg)
    before = [w.copy() for w in get_weights(model)]
    plan = DPPlan.for_site(len(y), batch_size=32, epochs=1)
    result = train_dp(model, g, y, data.features, plan=plan, learning_rate=0.01,
                      noise_multiplier=1.0, max_grad_norm=1.0, device=pick_device(),
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
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    data = site.data()
    g, y, _ = data.split("train")
    assert int(1 / (1 / 93)) == 92  # the floating-point case this guards against
    plan = DPPlan.for_site(93, batch_size=1, epochs=2)
    assert plan.steps_per_epoch == 93
    cfg = site.settings.model_config(len(data.panel))
    model = RiskTransformer(cfg)
    empty = torch.zeros(0, len(data.panel), dtype=torch.long)
    assert model(empty, data.features).shape == (0,)
    rows = np.arange(93) % len(y)  # the site has fewer training people: some twice
    result = train_dp(model, g[rows], y[rows], data.features, plan=plan, learning_rate=0.01,
                      noise_multiplier=1.0, max_grad_norm=1.0, device=pick_device(),
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
    site = Site(site_dir, RunSettings(**{**SMALL, "batch_size": 8, "max_steps_per_epoch": 3}),
                budget=FAST)
    n = len(site.data().split("train")[1])
    assert n > 8 * 3  # uncapped, this site would take more than 3 steps per epoch
    assert site.fit(fresh_weights(site), 1, "run").metrics["declined"] == 0
    ledger = json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())
    [(_, sample_rate, steps)] = [e for e in ledger["history"] if e[1] < 1]  # DP-SGD, not counts
    assert (sample_rate, steps) == (1 / 3, 3)


def test_training_message_scores_the_weights_it_received_first(site_dir: Path) -> None:
    """The ClientApp's fit, asked to, evaluates the incoming aggregate (the previous round's)
    before training on it, and pays for that evaluation like any other release."""
    from client.app import SiteClient
    from shared.protocol import EVALUATE_RECEIVED, MIN_GROUP_SIZE, PANEL_SHA256, SERVER_ROUND

    site = Site(site_dir, RunSettings(**SMALL, target_epsilon=50.0), budget=GENEROUS)
    w = fresh_weights(site)
    config = {SERVER_ROUND: 1, PANEL_SHA256: site.data().panel.sha256, MIN_GROUP_SIZE: 1}
    _, n, plain = SiteClient(site, "run").fit(w, {**config, EVALUATE_RECEIVED: 0})
    assert n > 0 and "scores" not in plain
    history = len(site_history(site_dir))
    _, _, metrics = SiteClient(site, "run").fit(w, {**config, SERVER_ROUND: 2,
                                                    EVALUATE_RECEIVED: 1})
    assert metrics["declined"] == 0 and json.loads(metrics["scores"])["groups"]
    events = [json.loads(line)["event"] for line in
              (site_dir / ".genofed-state" / "activity.jsonl").read_text().splitlines()]
    assert events == ["train", "evaluate", "train"]  # scored before it trained on them
    assert len(site_history(site_dir)) == history + 2  # the evaluation and the round, charged
    ids = set(site.data().cohort.sample_id)
    assert not any(i in json.dumps(metrics) for i in ids)


def site_history(site_dir: Path) -> list:
    return json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())["history"]


def test_fit_reports_cumulative_epsilon_and_declines_past_budget(site_dir: Path) -> None:
    settings = RunSettings(**SMALL, target_epsilon=3.0)
    site = Site(site_dir, settings, budget=FAST)
    w = fresh_weights(site)
    reports = [site.fit(w, r, "run-a") for r in (1, 2)]
    eps = [float(r.metrics["epsilon"]) for r in reports]
    assert 0 < eps[0] < eps[1] <= 3.0
    assert all(r.metrics["declined"] == 0 and r.n_examples > 0 for r in reports)
    # counts once, then one DP-SGD block per round
    assert [e[1] == 1.0 for e in site_history(site_dir)] == [True, False, False]
    # A second run on the same data starts from what was spent, never from zero.
    again = Site(site_dir, settings, budget=FAST).fit(w, 1, "run-b")
    assert again.metrics["declined"] == 1 or float(again.metrics["epsilon"]) > eps[1]
    # Once the run's rounds and its planned evaluation are used up, a further round would
    # overspend and is declined, by category only.
    site.evaluate(reports[-1].weights, "run-a", 2)
    extra = Site(site_dir, settings, budget=FAST).fit(w, 3, "run-a")
    assert extra.metrics["declined"] == 1 and extra.n_examples == 0
    assert extra.metrics["reason"] == "budget-exhausted"


def test_what_leaves_the_site_is_in_the_protocol_and_holds_no_person_level_data(
        site_dir: Path) -> None:
    from shared.protocol import EVALUATE_METRICS, FIT_METRICS, check_reply

    site = Site(site_dir, RunSettings(**SMALL, target_epsilon=50.0), budget=GENEROUS)
    w = fresh_weights(site)
    fit = site.fit(w, 1, "run")
    metrics = site.evaluate(fit.weights, "run", 2, min_group=1).metrics
    check_reply(fit.metrics, FIT_METRICS)
    check_reply(metrics, EVALUATE_METRICS)
    ids = set(site.data().cohort.sample_id)
    sent = json.dumps({"fit": fit.metrics, "eval": metrics, "n": fit.n_examples})
    assert not any(i in sent for i in ids)
    scores = json.loads(metrics["scores"])
    assert scores["groups"] and scores["noise_sd"] > 0
    for group in scores["groups"].values():  # noisy: counts are not whole numbers
        assert not all(float(v).is_integer() for v in group["case"] + group["control"])
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in fit.weights)


def copy_site(tiny_cohort: Path, dst: Path) -> Path:
    return fresh_copy(tiny_cohort / "site-1", dst)


def test_coordinator_cannot_lower_a_sites_noise(tiny_cohort: Path, tmp_path: Path) -> None:
    # One step per epoch whatever the (noisy) size: the plans agree, so do the multipliers.
    one = {**SMALL, "max_steps_per_epoch": 1}
    strict = copy_site(tiny_cohort, tmp_path / "a")
    (strict / "site.toml").write_text("[privacy]\nmax-epsilon = 2.0\n")
    greedy = Site(strict, RunSettings(**one, target_epsilon=100.0))  # coordinator asks for more
    honest = Site(copy_site(tiny_cohort, tmp_path / "b"), RunSettings(**one, target_epsilon=2.0))
    w = fresh_weights(honest)
    a, b = greedy.fit(w, 1, "r"), honest.fit(w, 1, "r")
    assert a.metrics["noise_multiplier"] == pytest.approx(b.metrics["noise_multiplier"])
    assert float(a.metrics["epsilon"]) <= 2.0
    # ... but it may ask for less loss, which means more noise.
    cautious_dir = copy_site(tiny_cohort, tmp_path / "c")
    cautious = Site(cautious_dir, RunSettings(**one, target_epsilon=1.0))
    assert cautious.fit(w, 1, "r").metrics["noise_multiplier"] > b.metrics["noise_multiplier"]


def test_minimum_noise_multiplier_from_node_config(tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = copy_site(tiny_cohort, tmp_path / "s")
    own = SiteSettings.load(site_dir, {"min-noise-multiplier": 5.0, "data-path": "x"})
    site = Site(site_dir, RunSettings(**SMALL), own=own)
    report = site.fit(fresh_weights(site), 1, "r")
    assert report.metrics["noise_multiplier"] == 5.0


def test_spent_site_declines_instead_of_failing(tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = copy_site(tiny_cohort, tmp_path / "s")
    state = site_dir / ".genofed-state"
    PrivacyLedger(path=state / "privacy-ledger.json", history=[(0.5, 0.5, 200)],
                  accountant="rdp").save()
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    report = site.fit(fresh_weights(site), 1, "new-run")
    assert report.metrics["declined"] == 1 and report.n_examples == 0
    assert report.metrics["reason"] == "budget-exhausted"


@pytest.mark.parametrize(("text", "problem"), [
    ("max-epsilon = [\n", "site.toml: not valid TOML"),
    ("max-epsilon = -1\n", "max-epsilon must be > 0"),
    ("epsilon = 3\n", "unknown privacy setting 'epsilon'"),
    ("[privacy]\nmax-epsilon = 2.0\n[cohort]\nsample-column = 'id'\n", "unknown cohort setting"),
    ("[trainig]\nbalance = 'reweight'\n", r"unknown table \[trainig\]"),
    ("[training]\nbalance = 'equal'\n", "balance must be one of none, reweight"),
    ("[training]\nbalanse = 'none'\n", "unknown training setting 'balanse'"),
    ("delta = 1e-6\n[privacy]\nmax-epsilon = 2.0\n", "'delta' outside a table"),
])
def test_bad_site_config_is_one_clear_error(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "site.toml").write_text(text)
    with pytest.raises(InputError, match=problem):
        SiteSettings.load(tmp_path)


def test_site_config_is_read_once_the_same_for_every_part(tmp_path: Path) -> None:
    """Saved by a Windows editor (byte-order mark), read the same; the node config wins."""
    text = ("[privacy]\nmax-epsilon = 2.5\n[cohort]\nsample-col = 'IID'\n"
            "phenotype-coding = 'plink'\n[training]\nbalance = 'reweight'\n")
    (tmp_path / "site.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    own = SiteSettings.load(tmp_path)
    assert own.privacy.max_epsilon == 2.5 and own.training.balance == "reweight"
    assert own.cohort.sample_col == "IID" and own.cohort.phenotype_coding == "plink"
    by_node = SiteSettings.load(tmp_path, {"max-epsilon": 1.0, "balance": "none"})
    assert by_node.privacy.max_epsilon == 1.0 and by_node.training.balance == "none"
    assert SiteSettings.load(tmp_path / "absent") == SiteSettings()


def test_balancing_weights_equalize_groups_from_released_counts() -> None:
    from client.release import CohortCounts, balancing_weights

    groups = np.array(["CEU"] * 80 + ["YRI"] * 15 + ["CHB"] * 5)
    sizes = {"CEU": 80.4, "YRI": 14.6, "CHB": 5.2}  # as released: noisy
    cells = {f"{g}/{s}/{c}": (n / 2 if s == "train" else 0.0)
             for g, n in sizes.items() for s in ("train", "test") for c in ("case", "control")}
    counts = CohortCounts(("CEU", "CHB", "YRI"), cells, 2.0)
    w = balancing_weights(groups, counts, floor=3)
    totals = {g: w[groups == g].sum() / groups[groups == g].size * sizes[g] for g in sizes}
    assert max(totals.values()) == pytest.approx(min(totals.values()))
    assert w[groups == "CHB"][0] == pytest.approx(100.2 / (3 * 5.2))
    # A group under the floor keeps weight 1 and takes no share.
    w = balancing_weights(groups, counts, floor=10)
    assert (w[groups == "CHB"] == 1).all()
    assert w[groups == "YRI"][0] == pytest.approx(95.0 / (2 * 14.6))


def test_reweighting_is_validated(tiny_cohort: Path, tmp_path: Path) -> None:
    balanced = copy_site(tiny_cohort, tmp_path / "balanced")
    (balanced / "site.toml").write_text('[training]\nbalance = "reweight"\n')
    assert Site(balanced, RunSettings(**SMALL)).balance == "reweight"
    (balanced / "site.toml").write_text('[training]\nbalance = "oversample"\n')
    with pytest.raises(InputError, match="balance must be one of"):
        Site(balanced, RunSettings(**SMALL))


def test_under_dp_noise_adam_moves_every_weight_a_full_step_and_sgd_follows_the_gradient(
        site_dir: Path) -> None:
    """Why the sites' default update rule is SGD: on one DP step whose gradient is mostly
    noise, Adam moves nearly every weight by the learning rate (its first step is lr * g / |g|),
    signal or not; SGD moves each weight in proportion to its noisy gradient."""
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    data = site.data()
    g, y, _ = data.split("train")
    cfg = site.settings.model_config(len(data.panel))
    plan = DPPlan.for_site(len(y), batch_size=len(y), epochs=1)
    moves = {}
    for name in ("adam", "sgd"):
        torch.manual_seed(0)
        model = RiskTransformer(cfg)  # the same initial weights for both
        before = np.concatenate([w.ravel() for w in get_weights(model)])
        train_dp(model, g, y, data.features, plan=plan, learning_rate=1e-3, noise_multiplier=50.0,
                 max_grad_norm=1.0, device=pick_device(), optimizer=name)
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
                    RunSettings(**{**SMALL, "max_steps_per_epoch": 1}, optimizer=name,
                                learning_rate=rate), budget=FAST)
        reports[name] = site.fit(fresh_weights(site), 1, "run")
    sgd, adam = reports["sgd"], reports["adam"]
    assert sgd.metrics["declined"] == adam.metrics["declined"] == 0
    for key in ("epsilon", "noise_multiplier"):
        assert sgd.metrics[key] == adam.metrics[key]
    assert any(not np.allclose(a, b) for a, b in zip(sgd.weights, adam.weights, strict=True))


def test_evaluation_bins_follow_the_model_from_public_inputs_alone(tiny_cohort: Path,
                                                                   tmp_path: Path) -> None:
    """Two sites with the same weights centre their bins alike, on the model's median logit
    over a public sample drawn from the panel's allele frequencies; the centre travels in the
    payload; `fixed` centring keeps the configured one."""
    from shared.metrics import snap_center
    from shared.panel import public_sample

    a = Site(copy_site(tiny_cohort, tmp_path / "a"), RunSettings(**SMALL, target_epsilon=50.0),
             budget=GENEROUS)
    b = Site(fresh_copy(tiny_cohort / "site-2", tmp_path / "b"),
             RunSettings(**SMALL, target_epsilon=50.0), budget=GENEROUS)
    data_a, data_b = a.data(), b.data()
    shifted = a.model(data_a, fresh_weights(a))
    with torch.no_grad():
        shifted.head.bias -= 6.0  # every logit far below the fixed bins, as a drifted intercept
    w = get_weights(shifted)
    centre = a._bin_center(a.model(data_a, w), data_a, 0.0)
    assert centre == b._bin_center(b.model(data_b, w), data_b, 0.0) < -4
    af = data_a.features.alt_freq.numpy().astype(np.float64)
    people = np.random.default_rng(0).binomial(2, af, size=(512, len(af))).astype(np.int8)
    np.testing.assert_array_equal(public_sample(af), people)  # anyone can draw it again
    logits = predict_logits(a.model(data_a, w), people, data_a.features, a.device)
    assert centre == snap_center(float(np.median(logits)))
    sent = json.loads(a.evaluate(w, "run", 1, min_group=1).metrics["scores"])
    assert sent["center"] == centre
    fixed = Site(a.data_path, RunSettings(**SMALL, target_epsilon=50.0,
                                          score_centering="fixed"), budget=GENEROUS)
    assert fixed._bin_center(fixed.model(data_a, w), data_a, 0.5) == 0.5
