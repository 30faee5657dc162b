"""`genofed audit report` shows an auditor what the verified ledger says, and nothing it hides.

Real Ed25519 signing, real MetricFrame dicts computed from synthetic scores, and the page rendered
by a real headless Chromium: the report is evidence for a hospital's auditor, so the checks look
at the bytes it writes and at what a browser makes of them.
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from markupsafe import escape

from shared import cli
from shared.audit.page import render_html
from shared.audit.report import (
    CSV_COLUMNS,
    METRIC_COLUMNS,
    build_report,
    write_csv,
    write_json,
)
from shared.ledger import Ledger, ensure_signing_key, load_private_key
from shared.metrics import GroupedScores, MetricFrame

CHROMIUM = Path("/usr/bin/chromium")
K = 10
# people per ancestry group; OCE has 3 cases, fewer than K, so it is suppressed every round.
GROUPS = {"AFR": 300, "EUR": 400, "SAS": 250, "OCE": 30}
SMALL = "OCE"
SHOWN = ("AFR", "EUR", "SAS")
EVIL_SITE = 'site-<i>"c"&amp;'
EVIL_REASON = "<script>alert('x')</script> budget of 8.0 & more"
SITES = ("site-a", "site-b", EVIL_SITE)
ROUNDS = 3
SIGMA = 0.3  # per-bin noise sd of each site's release: OCE's 3 cases stay far under K


def _metric_frame(rng: np.random.Generator, rnd: int) -> dict:
    """What the coordinator signs: two sites' DP-noised releases, parsed strictly and merged."""
    logits, labels, groups = [], [], []
    for group, n in GROUPS.items():
        y = np.zeros(n, dtype=np.int64)
        y[: 3 if group == SMALL else int(0.3 * n)] = 1
        signal_strength = 0.4 + 0.35 * rnd + (0.3 if group == "EUR" else 0.0)
        logits.append(rng.normal(size=n) + signal_strength * y - 1.0)
        labels.append(y)
        groups.append(np.full(n, group))
    logits_a, labels_a, groups_a = (np.concatenate(x) for x in (logits, labels, groups))
    site = rng.integers(0, 2, len(logits_a))
    payloads = [
        GroupedScores.from_predictions(logits_a[site == s], labels_a[site == s],
                                       groups_a[site == s])
        .with_groups(GROUPS).with_noise(SIGMA, rng).to_json()
        for s in (0, 1)
    ]
    pooled = sum(GroupedScores.from_json(p) for p in payloads)
    return MetricFrame.from_scores(pooled, k=K, reference="EUR").to_dict()


def _body(rnd: int, metrics: dict) -> dict:
    declined = {EVIL_SITE: EVIL_REASON} if rnd == 3 else {}
    rejected = {"site-b": "array 0 has non-finite values"} if rnd == 2 else {}
    return {
        "round": rnd,
        "sites": sorted(s for s in SITES if s not in declined and s not in rejected),
        "declined": declined,
        "rejected": rejected,
        "weights_sha256": hashlib.sha256(f"weights {rnd}".encode()).hexdigest(),
        "config_sha256": "c0" * 32,
        "panel_sha256": "9a" * 32,
        "privacy": {
            site: {"epsilon": 1.5 * rnd + 0.1 * i, "delta": 1e-5} for i, site in enumerate(SITES)
        },
        "metrics": metrics,
        "time": f"2025-03-0{rnd}T12:00:00+00:00",
    }


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """A 3-round ledger signed with a real key, and the MetricFrame dicts it holds."""
    root = tmp_path_factory.mktemp("report")
    private, public = root / "keys" / "ledger.key", root / "keys" / "ledger.pub"
    assert ensure_signing_key(private, public)
    ledger = Ledger(root / "ledger.jsonl", load_private_key(private))
    rng = np.random.default_rng(11)
    frames = []
    for rnd in range(1, ROUNDS + 1):
        frame = _metric_frame(rng, rnd)
        assert frame["by_group"][SMALL] == {"suppressed": True}
        assert all(not frame["by_group"][g].get("suppressed") for g in SHOWN)
        assert frame["by_group"]["EUR"]["noise_sd"] == pytest.approx(SIGMA * math.sqrt(2))
        frames.append(frame)
        ledger.append(_body(rnd, frame))
    return root / "ledger.jsonl", public, frames


def _row_html(page: str, population: str, kind: str = "group") -> str:
    name = re.escape(escape(population))
    pattern = rf'<tr [^>]*data-kind="{kind}" data-population="{name}"[^>]*>.*?</tr>'
    rows = re.findall(pattern, page, flags=re.S)
    assert len(rows) == 1, f"{kind} row {population!r}: found {len(rows)}"
    return rows[0]


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment))


def _run_report(ledger: Path, public: Path, out: Path) -> int:
    return cli.main(
        [
            "audit",
            "report",
            str(ledger),
            "--key",
            str(public),
            "--out",
            str(out / "report.html"),
            "--csv",
            str(out / "report.csv"),
            "--json",
            str(out / "report.json"),
        ]
    )


def test_report_of_verified_ledger(signed, tmp_path: Path, capsys) -> None:
    ledger, public, frames = signed
    assert _run_report(ledger, public, tmp_path) == 0
    assert "OK: 3 records" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()
    data = build_report(ledger, public)
    assert data.ok and data.records == ROUNDS and len(data.rounds) == ROUNDS

    # Verification banner on top, before any metrics.
    assert 'data-status="ok"' in page and f"<code>{data.key_id}</code>" in page
    assert page.index('id="verification"') < page.index('id="metrics"')
    assert "3 records" in _text(page)

    # Latest round's metrics table: shown groups, overall, difference and ratio rows.
    latest = frames[-1]
    for group in SHOWN:
        row = _row_html(page, group)
        m = latest["by_group"][group]
        lo, hi = m["auroc_ci"]
        assert f"{m['auroc']:.3f} ({lo:.3f}\u2013{hi:.3f})" in _text(row)
        assert f"<td>{m['n']}</td><td>{m['cases']}</td>" in row
        assert f"<td>{m['calibration_slope']:.3f}</td>" in row
    overall = _row_html(page, "overall", "overall")
    assert f"<td>{latest['overall']['n']}</td>" in overall
    assert f"{latest['difference']['auroc']:.3f}" in _text(
        _row_html(page, "difference", "difference")
    )
    assert f"{latest['ratio']['auroc']:.3f}" in _text(_row_html(page, "ratio", "ratio"))
    assert _row_html(page, "AFR", "vs_reference")

    # The suppressed group: a label and the notice, no number at all.
    small = _row_html(page, SMALL)
    assert 'data-suppressed="true"' in small
    assert _text(small) == f"{SMALL}suppressed (< {K})"
    plots = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(plots) == 3
    assert all(SMALL not in svg for svg in plots)

    # Per-round table, ledger strings escaped (by the template's autoescape, which writes quotes
    # as &#34; and &#39;), page self-contained.
    for rnd in range(ROUNDS):
        assert f'<tr data-seq="{rnd}">' in page
    assert escape(EVIL_REASON) in page and escape(EVIL_SITE) in page
    assert "<script" not in page and EVIL_SITE not in page
    for external in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert external not in page

    # CSV: one row per round x row of the frame; suppressed rows carry no numbers.
    with open(tmp_path / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == CSV_COLUMNS
    small_rows = [r for r in rows if r["population"] == SMALL and r["kind"] == "group"]
    assert len(small_rows) == ROUNDS
    for r in small_rows:
        assert r["suppressed"] == "true"
        assert all(r[c] == "" for c in METRIC_COLUMNS)
    afr = [r for r in rows if r["population"] == "AFR" and r["kind"] == "group"]
    assert [float(r["auroc"]) for r in afr] == [f["by_group"]["AFR"]["auroc"] for f in frames]
    assert all(r["suppressed"] == "false" for r in afr)

    # JSON: the same rows, structured; suppressed rows hold only their label.
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["verification"]["ok"] is True and doc["verification"]["records"] == ROUNDS
    assert [r["round"] for r in doc["rounds"]] == [1, 2, 3]
    for rnd in doc["rounds"]:
        (entry,) = [m for m in rnd["metrics"] if m["population"] == SMALL]
        assert entry == {"population": SMALL, "kind": "group", "suppressed": True}
        assert SMALL not in rnd["calibration_curves"]["by_group"]
    last = {m["population"]: m for m in doc["rounds"][-1]["metrics"] if m["kind"] == "group"}
    assert last["SAS"]["ece"] == latest["by_group"]["SAS"]["ece"]
    assert doc["rounds"][-1]["declined"] == {EVIL_SITE: EVIL_REASON}


def test_tampered_ledger_shows_failure_banner_and_prefix(signed, tmp_path: Path, capsys) -> None:
    ledger, public, _ = signed
    lines = ledger.read_bytes().split(b"\n")
    at = lines[1].index(b'"time":"2025-03-02') + len(b'"time":"2025-03-0')
    lines[1] = lines[1][:at] + b"7" + lines[1][at + 1 :]  # one byte of record 1's body
    bad = tmp_path / "ledger.jsonl"
    bad.write_bytes(b"\n".join(lines))

    data = build_report(bad, public)
    assert not data.ok and data.first_bad == 1 and len(data.rounds) == 1

    assert _run_report(bad, public, tmp_path) == 1
    assert "FAILED: record 1 (line 2)" in capsys.readouterr().out
    page = (tmp_path / "report.html").read_text()
    banner = re.search(r'<div id="verification"[^>]*>.*?</div>', page, flags=re.S)
    assert banner and 'class="banner failed"' in banner.group(0)
    assert "VERIFICATION FAILED: record 1 (line 2)" in _text(banner.group(0))
    assert "bad signature" in _text(banner.group(0))
    assert '<tr data-seq="0">' in page and 'data-seq="1"' not in page
    assert "round 1 (latest verified)" in page
    with open(tmp_path / "report.csv", newline="") as fh:
        assert {r["seq"] for r in csv.DictReader(fh)} == {"0"}
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["verification"]["first_bad"] == 1 and len(doc["rounds"]) == 1


def test_odd_and_empty_ledgers_still_render(tmp_path: Path) -> None:
    private, public = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    ensure_signing_key(private, public)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    data = build_report(empty, public)
    assert data.ok and data.rounds == [] and "no verified records" in render_html(data)

    odd = tmp_path / "odd.jsonl"
    Ledger(odd, load_private_key(private)).append({"round": 1, "metrics": {"auc": 0.6}})
    page = render_html(build_report(odd, public))
    assert "No verified round carries metrics" in page and page.count("<svg") == 3

    # A wrong key path is a usage error (2) and writes nothing.
    assert (
        cli.main(
            [
                "audit",
                "report",
                str(odd),
                "--key",
                str(tmp_path / "nope.pub"),
                "--out",
                str(tmp_path / "r.html"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "r.html").exists()


def test_report_when_only_the_final_model_is_scored(tmp_path: Path) -> None:
    """`evaluate-rounds = last`: earlier rounds are signed without metrics; the report lists
    every round and shows metrics (table, CSV, AUROC points) for the final one only."""
    private, public = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    ensure_signing_key(private, public)
    ledger_path = tmp_path / "ledger.jsonl"
    ledger = Ledger(ledger_path, load_private_key(private))
    final = _metric_frame(np.random.default_rng(12), ROUNDS)
    for rnd in range(1, ROUNDS + 1):
        ledger.append(_body(rnd, final if rnd == ROUNDS else None))
    data = build_report(ledger_path, public)
    assert data.ok and [r.has_metrics for r in data.rounds] == [False] * (ROUNDS - 1) + [True]
    assert data.latest() is data.rounds[-1]
    page = render_html(data)
    assert f"round {ROUNDS} (latest verified)" in page
    for rnd in range(ROUNDS):
        assert f'<tr data-seq="{rnd}">' in page
    m = final["by_group"]["AFR"]
    assert f"{m['auroc']:.3f}" in _text(_row_html(page, "AFR"))
    assert f"AFR, round {ROUNDS}: AUROC" in page and "AFR, round 1: AUROC" not in page
    assert _text(_row_html(page, SMALL)) == f"{SMALL}suppressed (< {K})"
    write_csv(data, tmp_path / "report.csv")
    with open(tmp_path / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["round"] for r in rows} == {str(ROUNDS)}


def _chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run headless Chromium in its own process group, killed whole if it hangs."""
    with subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (make chromium)")
def test_report_renders_in_headless_chromium(signed, tmp_path: Path) -> None:
    ledger, public, _ = signed
    data = build_report(ledger, public)
    report = tmp_path / "report.html"
    report.write_text(render_html(data))
    write_csv(data, tmp_path / "report.csv")
    write_json(data, tmp_path / "report.json")
    url = report.resolve().as_uri()

    dumped = _chromium(f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert '<table id="metrics">' in dom and '<table id="rounds">' in dom
    for group in (*SHOWN, SMALL):
        assert f'data-population="{group}"' in dom
    assert 'data-kind="overall"' in dom and 'data-kind="difference"' in dom
    assert dom.count("<svg") == 3
    for plot in ("plot-auroc", "plot-calibration", "plot-epsilon"):
        assert f'id="{plot}"' in dom
    assert "<polyline" in dom and 'data-status="ok"' in dom

    shot = tmp_path / "shot.png"
    shotted = _chromium(
        f"--user-data-dir={tmp_path / 'profile-shot'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        url,
    )
    assert shotted.returncode == 0, shotted.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


# --------------------------------------------------------------------------- variant effects

EVIL_POP = '<b>"POP"&amp;'


def _explanation(tmp_path: Path, weights: str) -> tuple[Path, tuple[str, str]]:
    """A real `shared.explain` output for a known function of 6 variants: variant 2 has the
    largest effect, the pair (1, 4) the only interaction; the checkpoint named by `weights`."""
    from shared.explain import explain, write_outputs

    rng = np.random.default_rng(3)
    beta = np.array([0.1, 0.3, 2.0, -0.2, 0.4, 0.0])
    codes = rng.integers(0, 3, size=(60, 6)).astype(np.int8)
    pops = np.repeat(["AFR", "EUR", EVIL_POP], 20)
    names = [f"chr1:{100 + i}:A:G" for i in range(6)]
    expl = explain(lambda x: x.astype(float) @ beta + 0.9 * x[:, 1] * x[:, 4], codes, pops,
                   names, top=6)
    provenance = {"checkpoint": {"sha256": "ab" * 32, "weights_sha256": weights, "round": 2},
                  "reference": {"genotypes": {"path": "ref.vcf.gz", "sha256": "cd" * 32},
                                "labels": {"path": "ref.tsv", "sha256": "ef" * 32},
                                "population_col": "pop"}}
    write_outputs(expl, tmp_path / "explained", provenance, {"top": 6})
    return tmp_path / "explained" / "explanation.json", (names[1], names[4])


def test_report_shows_the_variant_effects_and_which_signed_round_they_explain(
    signed, tmp_path: Path
) -> None:
    ledger, public, _ = signed
    weights = hashlib.sha256(b"weights 2").hexdigest()  # what the ledger signed for round 2
    path, (a, b) = _explanation(tmp_path, weights)
    out = tmp_path / "report.html"
    assert cli.main(["audit", "report", str(ledger), "--key", str(public), "--out", str(out),
                     "--explanation", str(path)]) == 0
    page = out.read_text()
    section = re.search(r'<section id="explanation">.*?</section>', page, flags=re.S).group(0)
    assert 'id="explained-round" data-round="2"' in section
    assert weights in section and "cd" * 32 in section and "ef" * 32 in section
    top = re.search(r'<table id="explain-top">.*?</table>', section, flags=re.S).group(0)
    first = re.findall(r'<tr data-variant="([^"]+)"', top)[0]
    assert first == "chr1:102:A:G"  # the largest effect
    pairs = re.findall(r'<tr data-pair="([^"]+)"', section)
    assert pairs[0] == f"{a}|{b}"
    first_pair = re.search(r'<tr data-pair="[^"]+">.*?</tr>', section, flags=re.S).group(0)
    assert "+0.900" in _text(first_pair)
    assert EVIL_POP not in page and str(escape(EVIL_POP)) in section
    assert section.count('class="explain-pop"') == 3
    assert 'id="plot-effects"' in section

    # Weights no verified round signed: said plainly.
    other, _ = _explanation(tmp_path / "other", "00" * 32)
    assert cli.main(["audit", "report", str(ledger), "--key", str(public), "--out", str(out),
                     "--explanation", str(other)]) == 0
    assert 'id="explained-round" data-round="none"' in out.read_text()


def test_report_refuses_a_file_that_is_not_an_explanation(signed, tmp_path: Path,
                                                          capsys) -> None:
    ledger, public, _ = signed
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    out = tmp_path / "report.html"
    assert cli.main(["audit", "report", str(ledger), "--key", str(public), "--out", str(out),
                     "--explanation", str(bad)]) == 2
    assert "not a genofed explanation" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (make chromium)")
def test_variant_effect_section_renders_in_headless_chromium(signed, tmp_path: Path) -> None:
    ledger, public, _ = signed
    path, (a, b) = _explanation(tmp_path, hashlib.sha256(b"weights 3").hexdigest())
    out = tmp_path / "report.html"
    assert cli.main(["audit", "report", str(ledger), "--key", str(public), "--out", str(out),
                     "--explanation", str(path)]) == 0
    dumped = _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                       out.resolve().as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    assert '<section id="explanation">' in dom and 'data-round="3"' in dom
    assert dom.count("<svg") == 4 and 'id="plot-effects"' in dom
    assert dom.count("<circle") > 30  # the effect plot's markers (and the others')
    assert f'data-pair="{a}|{b}"' in dom
    for table in ("explain-top", "explain-differ", "explain-pairs"):
        assert f'<table id="{table}">' in dom
