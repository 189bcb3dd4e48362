"""What a person reads: flags only where they act, `crs --version`, quiet third-party loggers, progress at most
once a minute off a terminal, and a line when a stage starts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tiny_data import TINY_AUGMENT, make_inspired

from crs_core import progress as progress_module
from crs_core.progress import LOG_LEVEL_ENV, PROGRESS_ENV, EpochLines, LineProgress, progress
from rayjobs import console
from rayjobs.cli import main

REPO = Path(__file__).resolve().parent.parent
CONSOLE_VARIABLES = ("RAY_LOGGER_LEVEL", "TRANSFORMERS_VERBOSITY", "RAY_TRAIN_ENABLE_PRINT_PATCH",
                     "RAY_DATA_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE",
                     LOG_LEVEL_ENV, PROGRESS_ENV)


@pytest.fixture
def clean_console(monkeypatch):
    """Logger levels and the environment variables configure_console sets, restored after the test."""
    for name in CONSOLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    names = ("", *console.OWN_LOGGERS, "faiss.loader")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    console.settings = console.ConsoleSettings()


@pytest.mark.parametrize("argv, flag", [
    (["prepare", "--address", "auto"], "--address"),  # prepare never starts Ray
    (["evaluate", "--force"], "--force"),  # evaluate has nothing to rerun
    (["simulate", "--address", "auto"], "--address"),
    (["baselines", "--address", "auto"], "--address"),
])
def test_a_flag_the_verb_would_ignore_is_refused(argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_verbs_that_start_ray_and_rerun_stages_take_address_and_force(capsys):
    for verb in ("augment", "train", "tune", "run"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        out = capsys.readouterr().out
        assert "--address" in out and "--force" in out and "--log-level" in out
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    assert "--force" in out and "--address" not in out


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_is_the_package_version(flag, capsys):
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert main([flag]) == 0
    assert capsys.readouterr().out == f"crs-augment {declared}\n"


def test_own_loggers_at_the_level_third_party_from_warning(clean_console):
    console.configure_console("INFO", interactive=False)
    assert logging.getLogger("crs_core.stages.teach").isEnabledFor(logging.INFO)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)  # "Could not load library ..."
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.WARNING)
    assert os.environ["RAY_LOGGER_LEVEL"] == "warning"
    assert os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"  # a Ray Train worker's print() came out twice

    console.configure_console("ERROR", interactive=True)
    assert not logging.getLogger("crs_core.stages.teach").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.WARNING)
    console.configure_console("DEBUG", interactive=True)
    assert logging.getLogger("rayjobs.common").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("faiss.loader").isEnabledFor(logging.INFO)
    assert not logging.getLogger("faiss.loader").isEnabledFor(logging.DEBUG)


def test_a_terminal_keeps_its_progress_bars(clean_console):
    console.configure_console("INFO", interactive=True)
    assert "RAY_DATA_DISABLE_PROGRESS_BARS" not in os.environ and "TQDM_DISABLE" not in os.environ
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.enable_rich_progress_bars, context.use_ray_tqdm)
    try:
        console.configure_ray_output()  # Ray Data's rich view: its tqdm bars do not reach a local terminal
        assert (context.enable_rich_progress_bars, context.use_ray_tqdm) == (True, False)
    finally:
        context.enable_progress_bars, context.enable_rich_progress_bars, context.use_ray_tqdm = saved


def test_line_progress_logs_at_most_once_a_minute(caplog):
    now = [0.0]
    bar = LineProgress(total=10, desc="teach: pairs labelled", clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="crs_core.progress"):
        for t in (1, 30, 59.9):  # three pairs inside the first minute: silent
            now[0] = t
            bar.update()
        now[0] = 60.0  # the fourth pair, one minute in: 4 pairs / 60 s, 6 left at that rate = 90 s
        bar.update()
        now[0] = 100.0  # 40 s after the last line: silent
        bar.update()
    assert [r.getMessage() for r in caplog.records] == [
        "teach: pairs labelled: 4/10 (60s, 0.1/s, about 90s left)"]
    assert bar.n == 5


@pytest.mark.parametrize("progress_mode, level, printed", [
    ("lines", "INFO", [1, 3, 10]),  # first, the one a minute after it (epoch 3 at 61 s), last
    ("bars", "INFO", list(range(1, 11))),  # a terminal: every epoch
    ("lines", "DEBUG", list(range(1, 11))),
])
def test_epoch_lines_off_a_terminal_are_first_last_and_one_a_minute(monkeypatch, capsys, progress_mode, level,
                                                                    printed):
    monkeypatch.setenv(PROGRESS_ENV, progress_mode)
    monkeypatch.setenv(LOG_LEVEL_ENV, level)
    times = iter([0.0, 30.0, 61.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0, 121.0])
    lines = EpochLines("pretrain", 10, clock=lambda: next(times))
    for epoch in range(1, 11):
        lines(epoch, {"epoch": epoch, "train_loss": 1 / epoch})
    out = capsys.readouterr().out.splitlines()
    assert [int(line.split("epoch ")[1].split("/")[0]) for line in out] == printed
    assert out[0] == "[pretrain] epoch 1/10: train_loss 1.0000"


def test_configure_console_tells_ray_workers_how_to_show_progress(clean_console):
    console.configure_console("WARNING", interactive=False)
    assert (os.environ[PROGRESS_ENV], os.environ[LOG_LEVEL_ENV]) == ("lines", "WARNING")
    console.configure_console("INFO", interactive=True)
    assert os.environ[PROGRESS_ENV] == "bars"


def test_progress_is_a_line_logger_off_a_terminal_and_iterates_everything(monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: False)
    bar = progress(range(7), desc="x")
    assert isinstance(bar, LineProgress) and bar.total == 7
    assert list(bar) == list(range(7)) and bar.n == 7
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    assert type(progress(range(3), desc="x")).__name__ == "tqdm"
    beside_ray_data = progress(total=5, desc="x", on_terminal=False)  # Ray Data draws the bar on a terminal
    assert isinstance(beside_ray_data, LineProgress) and beside_ray_data.every_s == float("inf")


@pytest.mark.slow
@pytest.mark.ray
def test_a_stage_off_a_terminal_says_it_starts_and_prints_no_progress_dumps(tmp_path):
    """`crs augment --stages embed` with stdout and stderr piped (as in CI or `make demo > log`), in its own
    process so that its console settings and its local Ray are those of a real run."""
    data = make_inspired(tmp_path / "data")
    overrides = [arg for setting in TINY_AUGMENT for arg in ("--set", setting)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PYTHONPATH": str(REPO)}
    for name in CONSOLE_VARIABLES:
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "rayjobs.augment", "--dataset", "inspired", "--data-dir", str(data),
         "--runs-dir", str(tmp_path / "runs"), "--stages", "embed", "--set", "ray.num_cpus=2", *overrides],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout
    start = next(i for i, line in enumerate(lines) if line.startswith("== embed: "))
    summary = next(i for i, line in enumerate(lines) if line.startswith("-- embed ["))
    assert start < summary
    assert not [line for line in lines if "logging_progress" in line or "Running Dataset" in line
                or "Loading weights" in line or "Starting execution" in line]
    assert not [line for line in lines if "Could not load library" in line]
    assert len(lines) < 20, done.stdout
