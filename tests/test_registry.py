"""Configs that always apply: the packaged dataset configs from any directory and from an installed wheel, a run's
recorded settings on later commands, and config.yaml rewritten only when a setting changed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crs_core.errors import ConfigError, CRSError
from crs_core.registry import dataset_config, known_datasets, packaged_file
from rayjobs.common import resolve_config
from rayjobs.prepare import build_parser

REPO = Path(__file__).resolve().parents[1]


def _resolve(*argv: str):
    return resolve_config(build_parser().parse_args(list(argv)))


def test_the_packaged_configs_are_the_registry(monkeypatch) -> None:
    monkeypatch.delenv("CRS_CONFIG_PATH", raising=False)
    assert known_datasets() == ["inspired", "redial"]
    assert dataset_config("inspired").read_text().startswith("# INSPIRED")
    assert packaged_file("deepspeed_zero2.json").is_file()
    with pytest.raises(ConfigError, match=r"no config file movielens.yaml .*known: inspired, redial"):
        dataset_config("movielens")


def test_the_same_config_from_any_directory(tmp_path: Path, monkeypatch) -> None:
    saved = []
    for where in (REPO, tmp_path):
        monkeypatch.chdir(where)
        runs = tmp_path / f"runs-{len(saved)}"
        config = _resolve("--dataset", "inspired", "--runs-dir", str(runs))
        assert (config.student.kind, config.train.trainable_layers, config.data.label) == ("features", 0, "INSPIRED")
        saved.append(yaml.safe_load((runs / "inspired" / "default" / "config.yaml").read_text()))
    assert saved[0] | {"runs_dir": None} == saved[1] | {"runs_dir": None}


def test_a_command_on_an_existing_run_reads_what_the_run_recorded(tmp_path: Path, caplog) -> None:
    runs = str(tmp_path / "runs")
    _resolve("--dataset", "redial", "--runs-dir", runs, "--run-id", "r1", "--set", "train.alpha=2")
    recorded = tmp_path / "runs" / "redial" / "r1" / "config.yaml"
    before = recorded.stat().st_mtime_ns, recorded.read_bytes()
    config = _resolve("--runs-dir", runs, "--run-id", "r1")  # no --dataset, no --set
    assert (config.dataset, config.train.alpha, config.data.require_context_entity) == ("redial", 2.0, True)
    assert (recorded.stat().st_mtime_ns, recorded.read_bytes()) == before
    with caplog.at_level(logging.WARNING):
        assert _resolve("--runs-dir", runs, "--run-id", "r1", "--set", "train.alpha=0.5").train.alpha == 0.5
    assert "settings changed (train.alpha 2.0 -> 0.5); saved" in caplog.text
    assert yaml.safe_load(recorded.read_text())["train"]["alpha"] == 0.5


def test_ambiguous_runs_and_conflicting_datasets_are_refused(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    _resolve("--dataset", "redial", "--runs-dir", runs)
    _resolve("--dataset", "inspired", "--runs-dir", runs)
    with pytest.raises(ConfigError, match="pass --dataset"):
        _resolve("--runs-dir", runs)
    with pytest.raises(CRSError, match="--dataset inspired conflicts with dataset: redial"):
        _resolve("--dataset", "inspired", "--runs-dir", runs, "--set", "dataset=redial")


def test_a_config_file_layers_over_the_dataset(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("train:\n  alpha: 0.25\n")
    config = _resolve("--dataset", "redial", "--runs-dir", str(tmp_path / "runs"), "--config", str(profile))
    assert (config.train.alpha, config.data.label, config.teacher.kind) == (0.25, "ReDial-PARTIAL", "recorded")


@pytest.mark.slow
def test_an_installed_wheel_runs_prepare_with_its_packaged_config(tmp_path: Path, real_data_dir: Path) -> None:
    """The wheel (not the source tree) holds the configs: installed into a folder and imported from /tmp."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "wheel"), str(REPO)], check=True)
    (wheel,) = (tmp_path / "wheel").glob("crs_augment-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True)
    runs = tmp_path / "runs"
    code = ("import crs_core, sys; from rayjobs.cli import main; from crs_core.registry import packaged_file; "
            "print(crs_core.__file__); print(packaged_file('deepspeed_zero2.json')); "
            f"sys.exit(main(['prepare', '--dataset', 'inspired', '--runs-dir', {str(runs)!r}]))")
    env = os.environ | {"PYTHONPATH": str(tmp_path / "site"), "CRS_DATA_DIR": str(real_data_dir)}
    result = subprocess.run([sys.executable, "-c", code], cwd="/tmp", env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert all(line.startswith(str(tmp_path / "site")) for line in result.stdout.splitlines()[:2])
    assert "dataset: INSPIRED" in result.stdout
    recorded = yaml.safe_load((runs / "inspired" / "default" / "config.yaml").read_text())
    assert (recorded["student"]["kind"], recorded["train"]["deepspeed_config"]) == ("features", "deepspeed_zero2.json")
