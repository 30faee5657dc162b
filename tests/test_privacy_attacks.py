"""Attacks on the site's privacy claims, as a curious coordinator would mount them.

Each test reproduces one finding of the privacy review (issue 27) as an attack that succeeded on
the code it was found on; it must fail there and pass now.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from client.app import SiteClient, SiteError
from client.budget import SiteBudget
from client.privacy_state import BINDING, reset_budget
from client.release import (
    CohortCounts,
    balancing_weights,
    release_counts,
    release_scores,
)
from client.site import Site
from deploy.simulate import fresh_copy
from server.strategy import initial_weights
from shared.metrics import logit_to_bin
from shared.privacy import epsilon_for, gaussian_release
from shared.protocol import (
    EVALUATE_METRICS,
    FIT_METRICS,
    PANEL_SHA256,
    SERVER_ROUND,
    ProtocolError,
    check_reply,
)
from shared.runconfig import RunSettings

SMALL = dict(batch_size=32, local_epochs=1, model_dim=16, model_layers=1, suppression_k=5,
             num_server_rounds=2)
FAST = SiteBudget(accountant="rdp")  # RDP: a faster accountant, same rules


def site_copy(tiny_cohort: Path, dst: Path) -> Path:
    return fresh_copy(tiny_cohort / "site-1", dst)


def weights_for(site: Site) -> list[np.ndarray]:
    data = site.data()
    cfg = site.settings.model_config(len(data.panel))
    return initial_weights(cfg, 0)


def history(site_dir: Path) -> list:
    return json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())["history"]


# --- finding 1: the DP noise was predictable ------------------------------------------------


def test_identical_inputs_release_different_weights(tiny_cohort: Path, tmp_path: Path) -> None:
    """Everything the coordinator knows (run config, seed, round, site name, weights, run id)
    is the same for two copies of one site; with the noise seeded from those, both released
    the same weights and a replay on zero data recovered the gradient sum. Now the noise is the
    site's secret: the two releases differ by about the noise's size."""
    settings = RunSettings(**SMALL)
    updates = []
    for copy in ("a", "b"):
        site = Site(site_copy(tiny_cohort, tmp_path / copy), settings, name="site-1",
                    budget=FAST)
        torch.manual_seed(0)  # a coordinator-known global seed changes nothing either
        report = site.fit(weights_for(site), 1, "run-1")
        assert report.metrics["declined"] == 0
        updates.append(np.concatenate([w.ravel() for w in report.weights]))
    gap = np.abs(updates[0] - updates[1])
    assert np.mean(gap > 0) > 0.9  # nearly every weight differs


def test_dp_randomness_is_not_torchs_global_generator(tiny_cohort: Path, tmp_path: Path) -> None:
    """The replay of the review: reset torch's global generator the same way before two
    trainings on the same people; seeded Opacus drew identical Poisson batches and noise."""
    from client.train import DPPlan, pick_device, train_dp

    site = Site(site_copy(tiny_cohort, tmp_path / "s"), RunSettings(**SMALL), budget=FAST)
    data = site.data()
    g, y, _ = data.split("train")
    plan = DPPlan.for_site(len(y), 32, 1)
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        model = site.model(data, weights_for(site))
        train_dp(model, g, y, data.features, plan=plan, learning_rate=0.05,
                 noise_multiplier=1.0, max_grad_norm=1.0, device=pick_device(), optimizer="sgd")
        runs.append(np.concatenate([p.detach().numpy().ravel() for p in model.parameters()]))
    assert not np.allclose(runs[0], runs[1])


# --- finding 2: held-out patients were published ---------------------------------------------


def exact_release(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict:
    """What the reviewed code sent: exact per-bin counts (its grid was finer still)."""
    from shared.metrics import GroupedScores

    return json.loads(GroupedScores.from_predictions(logits, labels, groups).to_json(exact=True))


def test_evaluation_differencing_attack_is_bounded_by_the_dp_guarantee() -> None:
    """The coordinator knows every held-out person but one, and that person's score: it asks
    for an evaluation and guesses whether the person is in it from the count in their bin.
    With exact counts it is right every time; with the site's release its accuracy stays
    under the bound the release's epsilon allows (and near what the Gaussian noise gives)."""
    rng = np.random.default_rng(7)
    logits = rng.normal(-0.5, 1.0, 300)
    labels = (rng.random(300) < 0.3).astype(int)
    groups = np.array(["CEU"] * 300)
    target = 0
    others = np.arange(1, 300)
    bin_of = int(logit_to_bin(logits[[target]])[0])
    cls = "case" if labels[target] else "control"
    counts = CohortCounts(("CEU",), {"train": 0.0, "test": 300.0, **{
        f"CEU/{s}/{c}": 150.0 for s in ("train", "test") for c in ("case", "control")}}, 1.0)
    sigma = 2.0

    def observed(with_target: bool, exact: bool) -> float:
        keep = np.r_[[target], others] if with_target else others
        if exact:
            return exact_release(logits[keep], labels[keep], groups[keep])["groups"]["CEU"][
                cls][bin_of]
        scores = release_scores(logits[keep], labels[keep], groups[keep], counts, 10, sigma,
                                0.0, rng)
        return json.loads(scores.to_json())["groups"]["CEU"][cls][bin_of]

    baseline = exact_release(logits[others], labels[others], groups[others])["groups"]["CEU"][
        cls][bin_of]
    for exact in (True, False):
        right = 0
        trials = 400
        for t in range(trials):
            present = bool(t % 2)
            guess = observed(present, exact) - baseline > 0.5
            right += guess == present
        accuracy = right / trials
        if exact:
            assert accuracy == 1.0  # the attack works on an exact release
        else:
            eps = epsilon_for([gaussian_release(sigma)], 1e-5, "prv")
            bound = math.exp(eps) / (1 + math.exp(eps)) + 1e-5
            assert accuracy <= bound
            assert accuracy < 0.7  # Phi(1 / (2 sigma)) = 0.60 for the optimal threshold test


def test_evaluation_is_charged_refused_past_budget_and_floored_by_the_site(
        tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = site_copy(tiny_cohort, tmp_path / "s")
    budget = SiteBudget(accountant="rdp", max_epsilon=50.0, min_group_size=1)
    site = Site(site_dir, RunSettings(**SMALL, target_epsilon=50.0), budget=budget)
    w = weights_for(site)
    metrics = site.evaluate(w, "run", 2, min_group=1).metrics
    assert metrics["declined"] == 0 and float(metrics["epsilon"]) > 0
    assert len(history(site_dir)) == 2  # the counts, then the evaluation itself
    shown = set(json.loads(metrics["scores"])["groups"])
    assert shown  # some group passes a floor of 1
    # The coordinator may raise the floor, never lower it: the site's own floor holds.
    strict = Site(site_dir, site.settings, budget=SiteBudget(accountant="rdp",
                                                               max_epsilon=50.0,
                                                               min_group_size=10_000))
    assert json.loads(strict.evaluate(w, "run", 2, min_group=1).metrics["scores"])["groups"] == {}
    raised = json.loads(site.evaluate(w, "run", 2, min_group=10_000).metrics["scores"])
    assert raised["groups"] == {}
    # The floor is on cases AND controls: a group with plenty of one class only is withheld.
    counts = CohortCounts(("A",), {"train": 0.0, "test": 500.0, "A/test/case": 3.0,
                                   "A/test/control": 497.0, "A/train/case": 0.0,
                                   "A/train/control": 0.0}, 0.5)
    assert counts.evaluable(10) == []
    # Past its budget the site refuses to evaluate, by category.
    tight = Site(site_dir, RunSettings(**SMALL, target_epsilon=0.2), budget=budget)
    refused = tight.evaluate(w, "run-2", 2).metrics
    assert refused["declined"] == 1 and refused["reason"] == "budget-exhausted"
    assert "scores" not in refused


# --- finding 3 and 6: exact statistics and error text ---------------------------------------


def test_no_field_outside_the_protocol_leaves(tiny_cohort: Path, tmp_path: Path) -> None:
    site = Site(site_copy(tiny_cohort, tmp_path / "s"), RunSettings(**SMALL), budget=FAST)
    client = SiteClient(site, "run")
    config = {SERVER_ROUND: 1, PANEL_SHA256: site.data().panel.sha256}
    _, n, metrics = client.fit(weights_for(site), config)
    check_reply(metrics, FIT_METRICS)
    assert "train_loss" not in metrics and not any("_s" in k for k in metrics)
    with pytest.raises(ProtocolError, match="train_loss"):
        check_reply({**metrics, "train_loss": 0.69}, FIT_METRICS)
    with pytest.raises(ProtocolError):
        check_reply({"reason": "cohort.tsv line 3: S0117155 has phenotype 7"}, FIT_METRICS)
    loss, zero, evaluation = client.evaluate(weights_for(site), config)
    assert (loss, zero) == (0.0, 0)
    check_reply(evaluation, EVALUATE_METRICS)
    # FedAvg's example count is the released (noisy) training size, not the exact one.
    ledger = json.loads((site.state_path / "privacy-ledger.json").read_text())
    [released] = [v for k, v in ledger["releases"].items() if k.startswith("counts:")]
    assert n == max(1, round(released["cells"]["train"]))


def test_counts_are_released_with_noise_of_the_stated_size() -> None:
    rng = np.random.default_rng(3)
    groups = np.array(["A"] * 40 + ["B"] * 60)
    split = np.array(["train", "test"] * 50)
    phenotype = np.array([0, 1, 1, 0] * 25)
    draws = [release_counts(groups, split, phenotype, ("A", "B", "C"), 4.0, rng)
             for _ in range(300)]
    train = np.array([c.n_train for c in draws])
    assert abs(train.mean() - 50) < 1.0 and 3.4 < train.std() < 4.6
    absent = np.array([c.get("C", "test", "case") for c in draws])  # a group nobody is in
    assert 3.4 < absent.std() < 4.6  # released like the others, as noise
    assert not np.isin(train, np.round(train)).all()


def test_failures_reach_the_coordinator_as_a_category_only(
        tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower forwards a ClientApp exception's text to the coordinator; it quoted sample IDs,
    phenotype values and paths. Now only a category leaves."""
    site_dir = site_copy(tiny_cohort, tmp_path / "s")
    table = (site_dir / "cohort.tsv").read_text().splitlines()
    victim = table[1].split("\t")[0]
    table[1] = table[1].rsplit("\t", 2)[0] + "\tbanana\ttrain"
    (site_dir / "cohort.tsv").write_text("\n".join(table) + "\n")
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    client = SiteClient(site, "run")
    _, n, metrics = client.fit([], {SERVER_ROUND: 1})
    assert n == 0 and metrics["declined"] == 1 and metrics["reason"] == "data-error"
    assert victim not in json.dumps(metrics) and str(tmp_path) not in json.dumps(metrics)

    def leak(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{victim} has phenotype 1 in {site_dir}")

    monkeypatch.setattr(Site, "fit", leak)
    with pytest.raises(SiteError) as raised:
        client.fit([], {SERVER_ROUND: 1})
    assert str(raised.value) == "internal-error" and raised.value.__cause__ is None


# --- finding 4: lost budget --------------------------------------------------------------


CONCURRENT = """
import sys
from pathlib import Path
from client.budget import SiteBudget
from client.site import Site
from server.strategy import initial_weights
from shared.encoding import model_config
from shared.runconfig import RunSettings
site = Site(Path(sys.argv[1]), RunSettings(**{small!r}, target_epsilon=2.0),
            budget=SiteBudget(accountant="rdp", max_epsilon=2.0))
data = site.data()
cfg = site.settings.model_config(len(data.panel))
report = site.fit(initial_weights(cfg, 0), 1, sys.argv[2])
print(report.metrics["declined"], report.metrics["epsilon"])
"""


def test_two_concurrent_runs_record_both_spends(tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = site_copy(tiny_cohort, tmp_path / "s")
    Site(site_dir, RunSettings(**SMALL), budget=FAST).data()  # warm the genotype cache
    root = Path(__file__).resolve().parent.parent
    script = CONCURRENT.format(small=SMALL)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(site_dir), f"run-{i}"],
                              cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    results = [o[0].split() for o in outs]
    trained = [r for r in results if r[0] == "0"]
    assert trained  # at least the first run trained
    spent = epsilon_for([tuple(e) for e in history(site_dir)], 1e-5, "rdp")
    assert spent <= 2.0 * 1.001  # never more than the budget, whatever the interleaving
    # Every release is in the ledger: the reported epsilons are prefixes of its history.
    assert max(float(r[1]) for r in results) == pytest.approx(spent, rel=1e-9)
    runs = json.loads((site_dir / ".genofed-state" / "privacy-ledger.json").read_text())["runs"]
    assert set(runs) == {"run-0", "run-1"}


def test_a_missing_or_repointed_ledger_is_refused_until_reset(
        tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = site_copy(tiny_cohort, tmp_path / "s")
    site = Site(site_dir, RunSettings(**SMALL), budget=FAST)
    assert site.fit(weights_for(site), 1, "run").metrics["declined"] == 0
    binding = json.loads((site_dir / BINDING).read_text())
    # Re-pointed: a fresh state folder elsewhere does not start from zero.
    moved = Site(site_dir, RunSettings(**SMALL), budget=FAST, state_path=tmp_path / "other")
    _, n, metrics = SiteClient(moved, "run").fit(weights_for(site), {SERVER_ROUND: 1})
    assert n == 0 and metrics["reason"] == "ledger-error"
    # Deleted: refused too.
    (site_dir / ".genofed-state" / "privacy-ledger.json").unlink()
    _, n, metrics = SiteClient(site, "run").fit(weights_for(site), {SERVER_ROUND: 1})
    assert n == 0 and metrics["reason"] == "ledger-error"
    # An explicit, recorded reset starts a new ledger.
    new_id = reset_budget(site_dir, site.state_path, "rdp", "ledger lost in a disk failure")
    after = json.loads((site_dir / BINDING).read_text())
    assert after["ledger_id"] == new_id != binding["ledger_id"]
    assert after["resets"][-1]["replaced"] == binding["ledger_id"]
    assert after["resets"][-1]["reason"] == "ledger lost in a disk failure"
    assert site.fit(weights_for(site), 1, "run-2").metrics["declined"] == 0


# --- finding 5: reweighting broke the sensitivity ---------------------------------------


def per_person_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                         features: object) -> np.ndarray:
    """Each person's (unweighted) loss gradient, flattened: Opacus' per-sample hooks."""
    from opacus import GradSampleModule

    from shared.model import register_grad_samplers

    register_grad_samplers()
    gsm = GradSampleModule(model, loss_reduction="sum")
    torch.nn.functional.binary_cross_entropy_with_logits(
        gsm(x, features), y, reduction="sum").backward()
    per = torch.cat([p.grad_sample.reshape(len(x), -1) for p in gsm.parameters()
                     if p.grad_sample is not None], dim=1)
    gsm._close()
    return per.detach().double().numpy()


def clipped_sum(grads: np.ndarray, weights: np.ndarray, clip: float) -> np.ndarray:
    """DP-SGD's sum of per-person clipped gradients of the weighted loss."""
    weighted = grads * weights[:, None]
    norms = np.linalg.norm(weighted, axis=1)
    return (weighted * np.minimum(1.0, clip / (norms + 1e-12))[:, None]).sum(0)


def test_reweighting_keeps_each_persons_influence_within_the_clipping_norm(
        tiny_cohort: Path, tmp_path: Path) -> None:
    """Remove one person: with weights from the exact training set everyone else's weight
    moves, and the clipped sum moves by more than the clipping norm C the accountant assumes;
    with weights from the released counts it moves by at most C."""
    site = Site(site_copy(tiny_cohort, tmp_path / "s"), RunSettings(**SMALL), budget=FAST)
    data = site.data()
    g, y, groups = data.split("train")
    cells = {"train": float(len(y)), "test": 0.0}
    for a in data.vocabulary:
        for s in ("train", "test"):
            for c, label in (("case", 1), ("control", 0)):
                exact = ((groups == a) & (y == label)).sum() if s == "train" else 0
                cells[f"{a}/{s}/{c}"] = float(exact) + 0.3  # as if released: not exact
    counts = CohortCounts(tuple(data.vocabulary), cells, 1.0)

    def exact_weights(gr: np.ndarray) -> np.ndarray:  # the reviewed code's rule
        names, inverse, n = np.unique(gr, return_inverse=True, return_counts=True)
        return (len(gr) / (len(names) * n))[inverse]

    def released_weights(gr: np.ndarray) -> np.ndarray:
        return balancing_weights(gr, counts, 1)

    torch.manual_seed(0)
    grads = per_person_gradients(site.model(data, None), torch.as_tensor(g, dtype=torch.long),
                                 torch.as_tensor(y, dtype=torch.float32), data.features)
    clip = float(np.quantile(np.linalg.norm(grads * exact_weights(groups)[:, None], axis=1), 0.9))
    smallest = min(set(groups), key=lambda a: (groups == a).sum())
    victims = np.flatnonzero(groups == smallest)

    def worst_shift(rule) -> float:  # type: ignore[no-untyped-def]
        shifts = []
        for v in victims:
            rest = np.delete(np.arange(len(y)), v)
            full = clipped_sum(grads, rule(groups), clip)
            less = clipped_sum(grads[rest], rule(groups[rest]), clip)
            shifts.append(float(np.linalg.norm(full - less)))
        return max(shifts)

    assert worst_shift(exact_weights) > clip * 1.01
    assert worst_shift(released_weights) <= clip * (1 + 1e-9)
