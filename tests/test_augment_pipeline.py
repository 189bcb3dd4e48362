"""`crs augment` end to end on a tiny dataset: every stage on real models, Ray Data actors, resumable."""

from __future__ import annotations

import pyarrow.parquet as pq
from llm_server import ScriptedServer
from tiny_data import TINY_AUGMENT, make_inspired

from crs_core.config import load_config
from crs_core.stages import AUGMENT as STAGES, PIPELINE
from rayjobs.augment import run_augment


def test_augment_runs_every_stage_then_resumes(tmp_path, ray_local, capsys):
    data = make_inspired(tmp_path / "data")
    config = load_config(overrides=TINY_AUGMENT, base={"dataset": "inspired", "data_dir": str(data),
                                               "runs_dir": str(tmp_path / "runs")})
    summaries = run_augment(config)
    out = capsys.readouterr().out
    assert list(summaries) == ["prepare", *STAGES]
    for header in ("== embed", "candidate recall@3", "teacher kg / model kg-rubric-v2", "held-out MAE",
                   "label expansion, inspired, tau = 0"):  # no registry file here: the label is the name
        assert header in out
    run = config.run_dir()
    candidates = pq.read_table(run / "candidates" / "train.parquet")
    scores = pq.read_table(run / "scores.parquet")
    assert scores.num_rows == candidates.num_rows  # every (sample, candidate) scored exactly once
    synthetic = pq.read_table(run / "synthetic.parquet").to_pylist()
    # tau = 0 keeps every scored candidate that is neither a target already nor mentioned before
    assert summaries["synthesize"]["synthetic_labels"] > summaries["synthesize"]["original_labels"]
    assert all(row["targets"][: len(row["targets"]) - len(row["synthetic"])] for row in synthetic)

    again = run_augment(config)
    assert all(again[stage].reused for stage in STAGES)
    raised = load_config(overrides=[*TINY_AUGMENT, "synthesize.threshold=4.0"], base={
        "dataset": "inspired", "data_dir": str(data), "runs_dir": str(tmp_path / "runs")})
    rerun = run_augment(raised, stages=("score", "synthesize"))
    assert rerun["score"].reused and not rerun["synthesize"].reused


def test_crs_run_runs_the_whole_pipeline_and_prints_one_table(tmp_path, ray_local, capsys):
    """`crs run` on the tiny data: prepare, augment, baselines, both training variants, the test table, and the
    two LLM stages switched on against local scripted servers (a title list; a seeker's answer)."""
    import json

    from rayjobs.cli import main

    data = make_inspired(tmp_path / "data")
    base = ["--dataset", "inspired", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs")]
    with ScriptedServer(["1. Heat (1995)\n2. Alien (1979)\n3. Up"]) as lists, \
            ScriptedServer(["Something tense, with a long shootout."]) as seeker:
        llm = ("zero_shot.enabled=true", f"zero_shot.base_url={lists.base_url}", "zero_shot.model=lists",
               "simulate.enabled=true", f"simulate.base_url={seeker.base_url}", "simulate.model=seeker",
               "simulate.turns=2")
        sets = [arg for pair in (("--set", s) for s in
                                 (*TINY_AUGMENT, "train.epochs_stage1=1", "train.epochs_stage2=1",
                                  "train.max_length=32", "train.trainable_layers=0", "train.batch_size=4", *llm))
                for arg in pair]
        assert main(["run", *base, *sets]) == 0
    out = capsys.readouterr().out
    for header in ("== embed", "== synthesize", "== train", "no augmentation", "stage 2 (+KL)", "wall time per stage",
                   "== zero_shot", "zero-shot LLM: model lists", "mapped to the catalog", "seeker seeker",
                   "measures the harness"):
        assert header in out
    rows = [line.split() for line in out.splitlines()
            if len(line.split()) == 8 and line.split()[1] in ("removed", "not_removed")]
    assert [(r[0], r[1]) for r in rows] == [(m, v) for m in ("minilm", "minilm-aug", "popularity", "ease", "zero-shot")
                                             for v in ("removed", "not_removed")]
    run = tmp_path / "runs" / "inspired" / "default"
    assert (run / "models" / "minilm-aug" / "model.json").exists()
    assert (run / "checkpoints" / "stage1" / "model.json").exists()
    timings = json.loads((run / "timings.json").read_text())
    assert sorted(timings) == sorted(PIPELINE)  # every stage, the two LLM stages switched on
    assert "zero-shot LLM lists" in json.loads((run / "metrics.json").read_text())["test"]["zero-shot"]["source"]
    report = json.loads((run / "simulate.json").read_text())
    assert list(report["models"]) == ["minilm", "minilm-aug", "zero-shot"] and report["seeker_model"] == "seeker"
    assert all(len(result["per_turn"]) == 3 for result in report["models"].values())
    assert lists.requests > 0 and seeker.requests > 0
