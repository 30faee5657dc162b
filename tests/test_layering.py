"""The package layout's promises: who imports whom, and what a hospital's install carries."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "client", "server", "deploy")
# Who may import whom: dependencies point one way, deploy on top.
ALLOWED = {
    "shared": {"shared"},
    "client": {"client", "shared"},
    "server": {"server", "shared"},
    "deploy": set(PACKAGES),
}
SIMULATION = {"msprime", "stdpopsim", "tskit"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every module `path` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted((_imports(path) & set(PACKAGES)) - ALLOWED[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_a_site_install_carries_no_simulator() -> None:
    """msprime, stdpopsim and tskit are the `sim` extra: `pip install .` at a hospital leaves
    them out, and nothing a site, the coordinator or an auditor runs imports them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {r.split("==")[0].split("[")[0].lower() for r in project["dependencies"]}
    assert not required & SIMULATION
    assert {r.split("==")[0] for r in project["optional-dependencies"]["sim"]} == SIMULATION
    for package in ("shared", "client", "server"):
        for path in (ROOT / package).rglob("*.py"):
            assert not _imports(path) & SIMULATION, path
    # Every module of the three roles imports with the simulator hidden, and the CLI still
    # builds; simulating a cohort then says which extra to install.
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in ("shared", "client", "server") for p in (ROOT / package).rglob("*.py"))
    script = "\n".join([
        "import importlib, sys",
        *(f"sys.modules[{name!r}] = None" for name in sorted(SIMULATION)),
        *(f"importlib.import_module({m!r})" for m in modules),
        "from shared.cli import main",
        "sys.exit(main(['cohort', 'simulate', '--out', sys.argv[1]]))",
    ])
    out = subprocess.run([sys.executable, "-c", script, str(ROOT / "never-written")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode != 0, out.stderr[-2000:]
    assert "pip install 'genofed[sim]'" in out.stderr and "Traceback" not in out.stderr
    assert not (ROOT / "never-written").exists()


def test_reading_genotypes_does_not_need_torch() -> None:
    """The genotype codes are the tokenizer's: reading a VCF pulls in no deep-learning stack."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys, shared.genotypes, shared.tokenizer, shared.panel; "
                               "print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
