"""benchmarks/quality.py: the paired-difference table and figure from hand-made hits, the per-backbone
overrides, the shared stages copied into a teacher's run, the whole benchmark on the tiny data (the ID-head
backbone, 2 seeds, 1 epoch per stage; slow), and the LLM rows against local scripted servers: the zero-shot row
(measured once, noted as one run) and the simulated-dialogue table, built from real Simulation results."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from llm_server import ScriptedServer
from tiny_data import TINY_AUGMENT, make_inspired

from crs_core.artifacts import RunDir
from crs_core.config import load_config
from crs_core.data.prepared import load_prepared
from crs_core.models import load_model
from crs_core.simulation import open_simulation
from rayjobs.cli import main as crs

REPO = Path(__file__).resolve().parent.parent


def load_quality():
    spec = importlib.util.spec_from_file_location("quality", REPO / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quality = load_quality()


def _result(n: int, recalls: tuple[float, float, float]) -> dict:
    metrics = {"n": n, **{f"recall@{k}": r for k, r in zip(quality.KS, recalls)}}
    return {"removed": metrics, "not_removed": metrics}


def test_paired_table_and_figure_from_hand_made_hits(tmp_path):
    """Two seeds, four test pairs. At R@10 ours hits pairs [0, 1] and [0] where no augmentation hits [1] and
    [3]: per-pair differences averaged over seeds [1, 0, 0, -0.5], mean +12.50 points; enumerating the 256
    resamples puts the 2.5% and 97.5% points at -37.50 and +75.00 (tests/test_paired.py). R@1 and R@50 have
    equal hits, so a difference of exactly 0."""
    def hits(at_10: list[int]) -> dict:
        column = np.array(at_10, dtype=bool)
        table = np.stack([column, column, np.ones(4, dtype=bool)], axis=1)
        table[:, 0] = False
        return {"removed": table, "not_removed": table}

    measured = {"minilm no augmentation": [hits([0, 1, 0, 0]), hits([0, 0, 0, 1])],
                "minilm ours (kg)": [hits([1, 1, 0, 0]), hits([1, 0, 0, 0])],
                "popularity": [hits([0, 0, 0, 0])]}
    rows = {"popularity": [_result(4, (0, 0, 1))],
            "minilm no augmentation": [_result(4, (0, 0.25, 1)), _result(4, (0, 0.25, 1))],
            "minilm ours (kg)": [_result(4, (0, 0.5, 1)), _result(4, (0, 0.25, 1))]}
    differences = quality.paired_differences(measured, rows, draws=10_000, seed=3)
    assert [(d["model"], d["base"], d["variant"]) for d in differences] == [
        ("minilm ours (kg)", "minilm no augmentation", v) for v in ("removed", "not_removed")]
    at_10 = differences[0]["recall"][10]
    assert (round(at_10["difference"], 6), at_10["low"], at_10["high"]) == (12.5, -37.5, 75.0)
    assert differences[0]["recall"][1] == differences[0]["recall"][50] == {"difference": 0, "low": 0, "high": 0}
    meta = {"command": "--seeds 42,43", "teacher": "kg", "expansion": "4 -> 6", "draws": 10_000,
            "bootstrap_seed": 3, "commands": ["python benchmarks/quality.py --seeds 42,43"]}
    lines = quality.render("inspired", rows, [42, 43], meta, differences=differences).splitlines()
    assert ("| minilm ours (kg) | minilm no augmentation | 4 | 2 | +0.00 [+0.00, +0.00] | "
            "+12.50 [-37.50, +75.00] | +0.00 [+0.00, +0.00] |") in lines
    assert "| minilm ours (kg) | 4 | 0.00 ± 0.00 | 37.50 ± 17.68 | 100.00 ± 0.00 |" in lines
    assert any(line.startswith("How the intervals work:") and "10000 draws" in line for line in lines)
    assert "python benchmarks/quality.py --seeds 42,43" in lines
    quality.plot(rows, tmp_path / "r.png", "INSPIRED test, n = 4", differences)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_backbone_overrides_are_parsed_and_checked():
    assert quality.parse_backbone_sets(["minilm-id:train.learning_rate=3e-3"], ["minilm", "minilm-id"]) == {
        "minilm": [], "minilm-id": ["train.learning_rate=3e-3"]}
    for bad in ("barcor:train.learning_rate=1", "minilm-id=3", "minilm-id:train.learning_rate"):
        with pytest.raises(ValueError, match="BACKBONE:key=value"):
            quality.parse_backbone_sets([bad], ["minilm", "minilm-id"])


def test_a_teacher_run_gets_the_shared_stages_copied(tmp_path):
    source, target = RunDir(tmp_path / "shared"), RunDir(tmp_path / "kg")
    outputs = ("items.parquet", "embeddings/items.parquet", "candidates/t.parquet")
    for stage, output in zip(quality.SHARED_STAGES, outputs):
        source.path(output).parent.mkdir(parents=True, exist_ok=True)
        source.path(output).write_text(stage)
        source.mark_done(stage, f"fp-{stage}", [output], {})
    quality.seed_teacher_run(source, target)
    assert target.is_current("retrieve", "fp-retrieve", ["candidates/t.parquet"])
    assert target.path("embeddings/items.parquet").read_text() == "embed"
    target.path("items.parquet").write_text("kept")  # a current record is left alone
    quality.seed_teacher_run(source, target)
    assert target.path("items.parquet").read_text() == "kept"


@pytest.mark.slow
def test_the_benchmark_on_the_tiny_data(tmp_path, ray_local, monkeypatch, capsys):
    """The ID-head backbone, 2 seeds, 1 epoch per stage, the KG teacher (the tiny tree has no recorded judgments);
    10 Ray Train runs, about 4 minutes on 2 CPUs."""
    data = make_inspired(tmp_path / "data")
    sets = [*TINY_AUGMENT, f"data_dir={data}", f"runs_dir={tmp_path / 'runs'}", "train.epochs_stage1=1",
            "train.epochs_stage2=1", "train.max_length=32", "train.trainable_layers=0", "train.batch_size=4"]
    monkeypatch.setattr(sys, "argv", ["quality.py", "--seeds", "42,43", "--backbones", "minilm-id",
                                      "--teachers", "kg", "--draws", "200",
                                      "--backbone-set", "minilm-id:train.learning_rate=1e-2",
                                      "--out-dir", str(tmp_path / "out"), "--name", "tiny",
                                      *(arg for s in sets for arg in ("--set", s))])
    quality.main()
    report = json.loads((tmp_path / "out" / "tiny.json").read_text())
    names = [f"minilm-id {v}" for v in ("no augmentation", "self-distillation", "ours (kg)")]
    assert list(report["rows"]) == ["popularity", "ease", *names]
    assert all(len(report["rows"][n]) == 2 for n in names)
    assert {(d["model"], d["variant"]) for d in report["paired"]} == {
        (n, v) for n in names if "no augmentation" not in n for v in ("removed", "not_removed")}
    assert {k: len(v) for k, v in report["training_wall_s"].items()} == {
        "no augmentation": 2, "self-distillation": 2, "ours (kg)": 2}
    assert (tmp_path / "runs" / "inspired" / "quality-kg" / "synthetic.parquet").exists()
    assert (tmp_path / "runs" / "inspired" / "quality" / "synthetic-kg.parquet").exists()
    markdown = (tmp_path / "out" / "tiny.md").read_text()
    assert "## Paired differences" in markdown and "| minilm-id ours (kg) | minilm-id no augmentation |" in markdown
    assert (tmp_path / "out" / "tiny.png").exists()


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
