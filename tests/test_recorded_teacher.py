"""The recorded teacher: judgment files checked line by line against the run's samples and catalog, and the
teach stage importing every recorded train pair (no sampling) with the judge and rubric of the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_teacher import make_run

from crs_core.artifacts import RunDir, read_table
from crs_core.config import Config, TeacherConfig, load_config
from crs_core.errors import ConfigError, DataError
from crs_core.schema import ITEMS_SCHEMA, SAMPLES_SCHEMA, TEACHER_SCHEMA, table_to_catalog, table_to_samples
from crs_core.stages import run_stage
from crs_core.stages.teach import STAGE as TEACH
from crs_core.teacher import load_recorded, resolve_files
from crs_core.text import item_text, render_context

FILES = ["{dataset}/teacher/*.jsonl*"]


def inputs(run: RunDir):
    samples = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
    return samples, table_to_catalog(read_table(run.path("items.parquet"), ITEMS_SCHEMA))


def judgment(run: RunDir, sample_id: str, item_id: int, score, **changes) -> dict:
    """A line as the recorder writes it: the conversation and description this code renders."""
    samples, catalog = inputs(run)
    sample = next((s for s in samples if s.sample_id == sample_id), None)
    record = {
        "sample_id": sample_id, "split": "train",
        "conversation": render_context(sample, budget=4000) if sample else "",
        "item_id": item_id, "item_title": catalog.get(item_id).title if item_id in catalog else "?",
        "item_description": item_text(catalog.get(item_id)) if item_id in catalog else "?",
        "score": score, "rationale": f"reason {sample_id}/{item_id}", "judge": "judge-a", "rubric": "scale-v1",
    }
    return record | changes


def write(path: Path, lines: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def recorded_config(data: Path, **teacher) -> Config:
    return Config(dataset="inspired", data_dir=str(data), teacher=TeacherConfig(kind="recorded", files=FILES,
                                                                                **teacher))


def test_every_recorded_train_pair_is_imported(tmp_path):
    run, data = make_run(tmp_path / "run"), tmp_path / "data"
    folder = data / "inspired" / "teacher"
    write(folder / "a.jsonl.gz", [
        judgment(run, "train-0#4", 4, 3),
        judgment(run, "train-0#4", 2, 0),
        judgment(run, "train-1#4", 5, 4, conversation="User: an older rendering"),
        judgment(run, "valid-9#2", 3, 2, split="valid"),  # never a training label: skipped and counted
    ])
    write(folder / "b.jsonl", [judgment(run, "train-2#4", 6, 1, judge="judge-b", item_description="old text")])
    (folder / "notes.txt").write_text("not a judgment file")
    config = recorded_config(data, contexts=1, candidates_per_context=1)  # sampling settings do not apply

    summary = TEACH.run(config, run)
    rows = sorted(read_table(run.path("teacher.parquet"), TEACHER_SCHEMA).to_pylist(),
                  key=lambda r: (r["sample_id"], r["item_id"]))
    assert [(r["sample_id"], r["item_id"], r["score"], r["model"]) for r in rows] == [
        ("train-0#4", 2, 0.0, "judge-a"), ("train-0#4", 4, 3.0, "judge-a"),
        ("train-1#4", 5, 4.0, "judge-a"), ("train-2#4", 6, 1.0, "judge-b")]
    assert {(r["prompt_version"], r["status"], r["error"], r["input_tokens"], r["cached"]) for r in rows} == {
        ("scale-v1", "ok", None, 0, False)}
    assert rows[2]["rationale"] == "reason train-1#4/5"
    assert (summary["pairs"], summary["contexts"], summary["ok"], summary["failed"]) == (4, 3, 4, 0)
    assert summary["score_histogram"] == {"0": 1, "1": 1, "2": 0, "3": 1, "4": 1} and summary["mean_score"] == 2.0
    assert summary["files"] == {str((folder / "a.jsonl.gz").resolve()): 3, str((folder / "b.jsonl").resolve()): 1}
    assert summary["judges"] == {"judge-a": 3, "judge-b": 1} and summary["model"] == "judge-a, judge-b"
    assert (summary["mismatched_conversations"], summary["mismatched_descriptions"]) == (1, 1)
    assert summary["skipped_not_train"] == {"valid": 1} and summary["teacher"] == "recorded"

    config.teacher.contexts = 50
    assert TEACH.run(config, run).reused is True  # the sampling settings are not part of a recorded run
    write(folder / "c.jsonl", [judgment(run, "train-2#4", 3, 2)])
    again = TEACH.run(config, run)  # a new file changes the fingerprint
    assert again.reused is False and again["pairs"] == 5


BROKEN = [
    ("unknown-sample", lambda run: judgment(run, "train-99#4", 4, 3), "sample_id", "unknown sample 'train-99#4'"),
    ("unknown-item", lambda run: judgment(run, "train-1#4", 999, 3), "item_id", "unknown item 999"),
    ("score-high", lambda run: judgment(run, "train-1#4", 4, 5), "score", "score 5 is outside 0..4"),
    ("score-negative", lambda run: judgment(run, "train-1#4", 4, -1), "score", "score -1 is outside 0..4"),
    ("score-float", lambda run: judgment(run, "train-1#4", 4, 2.5), "score", "expected int, got float"),
    ("score-bool", lambda run: judgment(run, "train-1#4", 4, True), "score", "expected int, got bool"),
    ("item-as-text", lambda run: judgment(run, "train-1#4", "4", 3), "item_id", "expected int, got str"),
    ("missing-field", lambda run: {k: v for k, v in judgment(run, "train-1#4", 4, 3).items() if k != "rationale"},
     "rationale", "missing field"),
    ("bad-split", lambda run: judgment(run, "train-1#4", 4, 3, split="dev"), "split", "split 'dev' is not one of"),
    ("duplicate", lambda run: judgment(run, "train-0#4", 4, 1), "item_id", "pair ('train-0#4', 4) is judged twice"),
]


@pytest.mark.parametrize("name, make_line, field, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_line_names_file_line_and_field(tmp_path, name, make_line, field, message):
    run, data = make_run(tmp_path / "run"), tmp_path / "data"
    path = write(data / "inspired" / "teacher" / "j.jsonl", [judgment(run, "train-0#4", 4, 3), make_line(run)])
    with pytest.raises(DataError) as info:
        TEACH.run(recorded_config(data), run)
    assert str(info.value).startswith(f"{path.resolve()}, line 2, field '{field}': {message}")
    assert not run.path("teacher.parquet").exists()


def test_malformed_json_and_cross_file_duplicates(tmp_path):
    run, data = make_run(tmp_path / "run"), tmp_path / "data"
    folder = data / "inspired" / "teacher"
    first = write(folder / "a.jsonl", [judgment(run, "train-0#4", 4, 3)])
    second = write(folder / "b.jsonl", [judgment(run, "train-1#4", 4, 3), judgment(run, "train-0#4", 4, 2)])
    files = resolve_files(FILES, data, "inspired")
    assert files == [first.resolve(), second.resolve()]
    samples, catalog = inputs(run)
    with pytest.raises(DataError) as info:
        load_recorded(files, samples, catalog)
    assert str(info.value) == (f"{second.resolve()}, line 2, field 'item_id': pair ('train-0#4', 4) is judged twice: "
                               f"first at {first.resolve()}, line 1")
    broken = write(folder / "b.jsonl", [judgment(run, "train-1#4", 4, 3), '{"sample_id": "train-1#4", "score": '])
    with pytest.raises(DataError, match=rf"^{broken.resolve()}, line 2: malformed JSON"):
        load_recorded(files, samples, catalog)


def test_file_settings_are_checked_before_reading(tmp_path):
    with pytest.raises(ConfigError, match="teacher.files: kind 'recorded' needs at least one"):
        load_config(overrides=["teacher.kind=recorded", "teacher.files=[]"])
    with pytest.raises(ConfigError) as info:
        resolve_files(["{dataset}/teacher/*.jsonl"], tmp_path, "redial")
    assert str(info.value) == (f"teacher.files: no judgment file matches '{{dataset}}/teacher/*.jsonl' "
                               f"(looked for {tmp_path}/redial/teacher/*.jsonl); without recorded judgments use "
                               "--set teacher.kind=kg (or openai)")
    absolute = write(tmp_path / "elsewhere" / "x.jsonl", [])
    assert resolve_files([str(absolute), str(tmp_path / "elsewhere" / "*.jsonl")], tmp_path / "data", "x") == [
        absolute.resolve()]


def test_real_inspired_judgments_import_completely(tmp_path, real_data_dir):
    config = load_config(base={"dataset": "inspired", "data_dir": str(real_data_dir), "runs_dir": str(tmp_path)},
                         overrides=["teacher.kind=recorded"])
    run_stage("prepare", config)
    samples, catalog = inputs(RunDir(config.run_dir()))
    recorded = load_recorded(resolve_files(config.teacher.files, real_data_dir, "inspired"), samples, catalog)
    scores = [label.score for label in recorded.labels]
    assert len(scores) == 4800 and len({label.sample_id for label in recorded.labels}) == 480
    assert recorded.mismatched_conversations == recorded.mismatched_descriptions == 0
    assert recorded.model == "frontier-llm-2026-12" and not recorded.skipped_splits
    assert [scores.count(float(s)) for s in range(5)] == [810, 1536, 1277, 866, 311]
