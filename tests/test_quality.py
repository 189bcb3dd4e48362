"""benchmarks/quality.py's LLM rows on the tiny data, against local scripted servers: the zero-shot row
(measured once, noted as one run) and the simulated-dialogue table, built from real Simulation results."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from llm_server import ScriptedServer
from tiny_data import make_inspired

from crs_core.artifacts import RunDir
from crs_core.config import load_config
from crs_core.models import load_model
from crs_core.prepare import load_prepared
from crs_core.simulate import open_simulation
from rayjobs.cli import main as crs

REPO = Path(__file__).resolve().parent.parent


def load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = load_quality()


def test_zero_shot_row_and_simulated_table(tmp_path):
    data_dir = make_inspired(tmp_path / "data")
    common = ["--dataset", "inspired", "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs")]
    assert crs(["baselines", *common]) == 0
    with ScriptedServer(["1. Heat (1995)\n2. Alien (1979)\n3. Up"]) as lists, \
            ScriptedServer(["Something tense, with a long shootout."]) as seeker:
        config = load_config(overrides=[
            f"data_dir={data_dir}", f"runs_dir={tmp_path / 'runs'}", "zero_shot.enabled=true",
            f"zero_shot.base_url={lists.base_url}", "zero_shot.model=lists", "simulate.enabled=true",
            f"simulate.base_url={seeker.base_url}", "simulate.model=seeker", "simulate.turns=2"])
        run = RunDir(config.run_dir())
        data = load_prepared(run.root)
        with open_simulation(config, data, run) as simulation:
            measured = quality.Measurements(data, config, simulation)
            popularity = load_model(run.path("models", "popularity"), data.catalog)
            for _seed in (42, 43):  # a row with two results gets mean ± std
                measured.add("popularity", popularity)
            measured.add("ease", load_model(run.path("models", "ease"), data.catalog))
            note = measured.add_zero_shot()
    assert note.startswith("zero-shot: 1 run (deterministic at temperature 0, so no std); LLM lists")
    assert list(measured.rows) == list(measured.simulated) == ["popularity", "ease", "zero-shot"]
    assert [len(v) for v in measured.simulated.values()] == [2, 1, 1]
    assert all("transcripts" not in r for results in measured.simulated.values() for r in results)
    meta = {"command": "--zero-shot --simulate", "teacher": "kg", "expansion": "-", "zero_shot": note,
            "simulate": "Seeker seeker"}
    markdown = quality.render("inspired", measured.rows, [42, 43], meta, measured.simulated)
    lines = markdown.splitlines()
    zero_shot_rows = [line for line in lines if line.startswith("| zero-shot |")]
    assert len(zero_shot_rows) == 4 and "±" not in zero_shot_rows[0]  # 2 variant tables + 2 simulated tables
    assert note + "." in lines and "measure the harness, not the method" in markdown
    header = lines.index("## Simulated dialogues (LLM user simulator)")
    assert "| model | n | R@10 turn 0 | R@50 turn 0 | R@10 after 2 | R@50 after 2 |" in lines[header:]
    ease = measured.simulated["ease"][0]["per_turn"]
    expected = [f"{100 * ease[turn]['removed'][f'recall@{k}']:.2f}" for turn in (0, 2) for k in (10, 50)]
    simulated_ease = next(line for line in lines[header:] if line.startswith("| ease |"))
    assert simulated_ease == f"| ease | {ease[0]['removed']['n']} | " + " | ".join(expected) + " |"
    simulated_popularity = next(line for line in lines[header:] if line.startswith("| popularity |"))
    assert simulated_popularity.count("± 0.00") == 4  # the same model twice: no spread


def test_an_llm_row_without_an_endpoint_is_refused_before_any_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["quality.py", "--zero-shot", "--set", f"runs_dir={tmp_path / 'runs'}",
                                      "--set", f"data_dir={tmp_path}"])
    with pytest.raises(SystemExit) as info:
        quality.main()
    assert info.value.code == 2
    assert "zero_shot.enabled: true needs an LLM endpoint: set zero_shot.base_url" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
