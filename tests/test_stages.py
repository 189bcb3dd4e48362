"""The stage contract: every stage of the pipeline is a Stage in its own module, runs by one `run`, reuses its
outputs when current, and a new stage is one module plus one line in PIPELINE (the example of
docs/architecture.md, run here as written)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

import crs_core.stages as stages
from crs_core.artifacts import RunDir, write_table
from crs_core.config import Config
from crs_core.errors import DataError
from crs_core.schema import SYNTHETIC_SCHEMA
from crs_core.stages import AUGMENT, ON_REQUEST, PIPELINE, Stage, Summary, load_stage
from rayjobs.runner import run_stages

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


@pytest.mark.parametrize("name", PIPELINE + ON_REQUEST)
def test_every_stage_is_one_module_with_one_stage(name: str) -> None:
    stage = load_stage(name)
    assert isinstance(stage, Stage) and stage.name == name
    assert type(stage).__module__ == f"crs_core.stages.{name}"
    assert stage.announce(Config()).startswith(f"== {name}: ") and "{" not in stage.announce(Config())
    assert stage.outputs(Config())  # every stage writes something a later run can check


def test_augment_is_the_slice_from_embed_to_synthesize() -> None:
    assert AUGMENT == ("embed", "retrieve", "teach", "distill", "score", "synthesize")
    with pytest.raises(KeyError, match="unknown stage 'embd'"):
        load_stage("embd")


def test_summary_reads_like_its_figures_and_prints_itself() -> None:
    summary = Summary("embed", {"rows": 3}, ("3 texts",), reused=True, wall_s=0.2)
    assert summary["rows"] == 3 and dict(summary) == {"rows": 3} and len(summary) == 1
    assert str(summary) == "-- embed (unchanged, reused) [0.2s]\n3 texts"


class Counting(Stage):
    """A stage that counts the rows of one input file; `calls` counts its work."""

    name = "counting"
    about = "rows of input.txt"

    def __init__(self) -> None:
        self.calls = 0

    def inputs(self, config, run):
        return [run.path("input.txt")]

    def outputs(self, config):
        return ["count.json"]

    def settings(self, config, run):
        return {"seed": config.seed}

    def work(self, config, run):
        self.calls += 1
        rows = len(run.path("input.txt").read_text().splitlines())
        run.path("count.json").write_text(json.dumps(rows))
        return {"rows": rows}

    def describe(self, figures, config):
        return [f"{figures['rows']} rows"]


def test_run_reuses_when_current_and_reruns_on_a_changed_input_setting_or_missing_output(tmp_path) -> None:
    run, stage = RunDir(tmp_path), Counting()
    with pytest.raises(DataError, match="input.txt: artifact not found"):
        stage.run(Config(), run)
    run.path("input.txt").write_text("a\nb\n")
    first = stage.run(Config(), run)
    assert not first.reused and first["rows"] == 2 and first.lines == ("2 rows",) and stage.calls == 1
    assert stage.run(Config(), run).reused and stage.calls == 1
    assert not stage.run(Config(), run, force=True).reused and stage.calls == 2
    run.path("input.txt").write_text("a\nb\nc\n")
    assert stage.run(Config(), run)["rows"] == 3 and stage.calls == 3
    assert not stage.run(Config(seed=7), run).reused and stage.calls == 4
    run.path("count.json").unlink()
    assert not stage.run(Config(seed=7), run).reused and stage.calls == 5
    assert json.loads(run.stage_record("counting").read_text())["summary"] == {"rows": 3}


def test_a_stage_with_work_that_fails_records_nothing(tmp_path) -> None:
    class Failing(Counting):
        def work(self, config, run):
            raise DataError(run.path("input.txt"), "no rows")

    run = RunDir(tmp_path)
    run.path("input.txt").write_text("a\n")
    with pytest.raises(DataError, match="no rows"):
        Failing().run(Config(), run)
    assert not run.stage_record("counting").exists()


def test_the_documented_new_stage_runs_as_one_module_and_one_pipeline_line(tmp_path, monkeypatch, capsys) -> None:
    """docs/architecture.md's example stage, copied from the docs into a module of crs_core.stages."""
    code = re.search(r"```python\n# crs_core/stages/export_csv.py\n(.*?)```", ARCHITECTURE.read_text(), re.S).group(1)
    package = tmp_path / "stages"
    package.mkdir()
    (package / "export_csv.py").write_text(code)
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(package)])
    monkeypatch.setattr(stages, "PIPELINE", (*PIPELINE[: PIPELINE.index("synthesize") + 1], "export_csv"))
    config = Config(runs_dir=str(tmp_path / "runs"))
    run = RunDir(config.run_dir())
    rows = [{"sample_id": "s1", "targets": [1, 2], "synthetic": [2]},
            {"sample_id": "s2", "targets": [3], "synthetic": []}]
    write_table(run.path("synthetic.parquet"), pa.Table.from_pylist(rows, schema=SYNTHETIC_SCHEMA), SYNTHETIC_SCHEMA)

    first = run_stages(config, stages.PIPELINE[-1:])["export_csv"]
    assert not first.reused and first["rows"] == 2
    assert run.path("synthetic.csv").read_text().splitlines() == ['"sample_id","added"', '"s1",1', '"s2",0']
    assert run_stages(config, ["export_csv"])["export_csv"].reused
    out = capsys.readouterr().out
    assert "== export_csv: synthetic labels per context as CSV ..." in out
    assert "-- export_csv (unchanged, reused)" in out
