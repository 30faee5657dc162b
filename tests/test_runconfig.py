"""The run configuration: pyproject's defaults and the parser agree; bad keys are refused."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from shared.runconfig import RunSettings

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def app_config() -> dict[str, object]:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_defaults_are_the_settings_defaults() -> None:
    assert RunSettings.from_run_config(app_config()) == RunSettings()


def test_unknown_key_and_bad_k_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown run config key"):
        RunSettings.from_run_config({"num-rounds": 3})
    with pytest.raises(ValueError, match="at least 1"):
        RunSettings.from_run_config({"suppression-k": 0})
    with pytest.raises(ValueError, match="max-steps-per-epoch"):
        RunSettings.from_run_config({"max-steps-per-epoch": -1})
    assert RunSettings.from_run_config({"max-steps-per-epoch": 0}).max_steps_per_epoch == 0
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam"):
        RunSettings.from_run_config({"optimizer": "rmsprop"})
    assert RunSettings.from_run_config({"optimizer": "adam"}).optimizer == "adam"


def test_hash_ignores_local_paths_but_not_training_settings() -> None:
    base = RunSettings()
    assert RunSettings(data_root="/elsewhere", out_dir="/x").sha256() == base.sha256()
    assert RunSettings(target_epsilon=4.0).sha256() != base.sha256()
