"""`make bench` in miniature: the runner writes one JSON file, `--only` merges into it, and the
data-path section measures every decoder on the same VCF and checks they agree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.bench import readme as readme_table
from deploy.bench.data_path import parse_gt_lines
from deploy.bench.data_scale import QUICK_SIZES, growth
from deploy.bench.run import code_revision, format_table
from shared.genotypes import gt_code

ROOT = Path(__file__).resolve().parents[1]


def _bench(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "deploy.bench", "--out", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """An existing bench.json with another section, then `--only data_path --quick` on it."""
    out = tmp_path_factory.mktemp("bench")
    earlier = {"meta": {"date": "earlier"}, "other_section": {"value_s": 1.5, "wall_s": 2.0}}
    (out / "bench.json").write_text(json.dumps(earlier))
    proc = _bench(out, "--only", "data_path", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "bench.json").read_text()), proc.stdout


def test_data_path_measures_every_decoder(quick_run: tuple[Path, dict, str]) -> None:
    _, doc, _ = quick_run
    data = doc["data_path"]
    for key in ("calls_per_s", "panel_calls_per_s", "per_sample_pysam_calls_per_s",
                "cached_load_s", "cold_load_s", "wall_s"):
        assert isinstance(data[key], float) and data[key] > 0, key
    assert data["calls"] == data["samples"] * data["variants"] > 0
    assert data["file_bytes"] > 0
    if shutil.which("bcftools") is None:
        assert data["bcftools_calls_per_s"] is None
        assert "bcftools" in data["bcftools_reason"]
    else:
        assert isinstance(data["bcftools_calls_per_s"], float)
        assert data["bcftools_calls_per_s"] > 0
        assert any(c.startswith("bcftools") for c in data["agree_checks"])
    assert data["agree"] is True
    assert data["cached_load_s"] < data["cold_load_s"]


def test_data_path_scale_rows_agree_and_stay_in_memory(
        quick_run: tuple[Path, dict, str]) -> None:
    """Every reader loads every size in its own process, all to the same codes, and loading
    holds the codes plus bounded overhead."""
    _, doc, _ = quick_run
    scale = doc["data_path"]["scale"]
    assert [(r["people"], r["variants"]) for r in scale["sizes"]] == list(QUICK_SIZES)
    readers = {"genofed_vcf", "genofed_plink", "pgenlib", "load_site"}
    if shutil.which("bcftools") is not None:
        readers.add("bcftools")
    else:
        assert all("bcftools" in r["bcftools"]["reason"] for r in scale["sizes"])
    for row in scale["sizes"]:
        assert set(row["agree"]) == readers
        for reader in readers:
            m = row[reader]
            assert m["seconds"] > 0 and m["output_bytes"] == row["people"] * row["variants"]
            assert m["peak_bytes"] >= m["baseline_bytes"] > 0
    assert scale["memory_goal"]["met"] is True
    assert set(scale["growth"]) == readers
    goal = [g for g in doc["targets"] if g["name"] == "load_memory"]
    assert len(goal) == 1 and goal[0]["met"]


def test_growth_exponents_follow_the_times() -> None:
    """Time linear in variants and quadratic in people reads as exponents 1 and 2."""
    rows = [{"people": p, "variants": v,
             "genofed_vcf": {"seconds": 1e-6 * p * p * v, "output_bytes": p * v,
                             "extra_bytes": 3 * p * v + 1000}}
            for p, v in ((10, 10), (10, 100), (10, 1000), (100, 10), (100, 100))]
    got = growth(rows)["genofed_vcf"]
    assert got["time_exponent_variants"] == pytest.approx(1.0)
    assert got["time_exponent_people"] == pytest.approx(2.0)
    assert got["extra_per_output_byte"] == pytest.approx(3.0)
    assert got["extra_constant_bytes"] == pytest.approx(1000, abs=1e-6)
    assert got["ns_per_call"]["100x10"] == pytest.approx(1e3 * 100)


def test_only_merges_and_records_the_machine(quick_run: tuple[Path, dict, str]) -> None:
    out, doc, stdout = quick_run
    assert doc["other_section"] == {"value_s": 1.5, "wall_s": 2.0}
    meta = doc["meta"]
    assert meta["cpu_count"] >= 1 and meta["python"] and meta["date"] != "earlier"
    assert "torch" in meta and meta["sections_run"] == ["data_path"]
    # The figures name the code they measured; the merged-in section had none and keeps none.
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    expected = head.stdout.strip() if head.returncode == 0 else None
    assert meta["code"]["commit"] == expected
    assert doc["data_path"]["code"] == meta["code"]
    assert "code" not in doc["other_section"]
    assert not list(out.glob(".bench.json.*")), "temporary file left behind"
    # The table: one row per measurement, with units.
    assert "calls_per_s" in stdout and "M calls/s" in stdout and "cold_load_s" in stdout


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    proc = _bench(tmp_path, "--only", "no_such_section")
    assert proc.returncode == 2 and "available: data_path" in proc.stderr
    assert not (tmp_path / "bench.json").exists()


def test_bcftools_output_parse_matches_gt_code() -> None:
    lines = ["0|0\t0/1\t1|1\t.|.\t\n", "1\t0\t.\t2|1\t\n", "10|1\t0|2\t1/.\t0/1/1\t\n"]
    expected = [[gt_code(f, 100, 1) for f in line.rstrip("\t\n").split("\t")] for line in lines]
    assert parse_gt_lines("".join(lines).encode(), 4).tolist() == expected


def test_table_units() -> None:
    table = format_table({"s": {"calls_per_s": 2.5e7, "load_s": 0.25, "file_bytes": 3_000_000,
                                "variants": 12, "agree": True, "x_calls_per_s": None}})
    rows = {line.split()[1]: line.split()[2:] for line in table.splitlines()[2:]}
    assert rows["calls_per_s"] == ["25.00", "M", "calls/s"]
    assert rows["load_s"] == ["0.250", "s"]
    assert rows["file_bytes"] == ["3.0", "MB"]
    assert rows["variants"] == ["12", "variants"]
    assert rows["agree"] == ["yes"] and rows["x_calls_per_s"] == ["n/a"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                   cwd=repo, check=True, capture_output=True)


def test_code_revision_names_the_commit_and_uncommitted_changes(tmp_path: Path) -> None:
    assert code_revision(tmp_path) == {"commit": None, "dirty": None}  # not a checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "model.py").write_text("x = 1\n")
    _git(repo, "add", "model.py")
    _git(repo, "commit", "-q", "-m", "one")
    first = code_revision(repo)
    assert len(first["commit"]) == 40 and first["dirty"] is False
    (repo / "scratch.txt").write_text("untracked files are not the measured code\n")
    assert code_revision(repo)["dirty"] is False
    (repo / "model.py").write_text("x = 2\n")
    assert code_revision(repo) == {"commit": first["commit"], "dirty": True}
    _git(repo, "commit", "-q", "-am", "two")
    second = code_revision(repo)
    assert second["commit"] != first["commit"] and second["dirty"] is False


def test_readme_says_which_commit_each_figure_measured() -> None:
    now, then = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True}
    doc = {"meta": {"date": "2026-11-28", "code": now},
           "utility": {"code": now}, "federation": {"code": then}}
    def measured(text: str) -> str:
        return next(line for line in text.splitlines() if line.startswith("Measured"))

    line = measured(readme_table.render(doc))
    assert line.startswith("Measured 2026-11-28 at commit aaaaaaaaaa; "
                           "federation at bbbbbbbbbb with uncommitted changes on ")
    assert measured(readme_table.headline(doc)) == line  # the README says the same
    doc["federation"]["code"] = now
    assert "federation" not in measured(readme_table.render(doc))
    del doc["meta"]["code"]  # a bench.json from before commits were recorded
    assert measured(readme_table.render(doc)).startswith("Measured 2026-11-28 on ")
