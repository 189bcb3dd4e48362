"""Every place bad input enters the `crs` CLI, with the fragments its ONE error line must contain.

Each case runs through `rayjobs.cli.main` (test_reliability.py::test_bad_input_is_one_clear_error_line) in a
workspace of {data} (the tiny INSPIRED tree of tiny_data.py), {runs} (runs dir), {files} (config files,
model folders, predictions) and {run} (the run directory); `break_input` damages it first. Expected: exit
code 2, no traceback, one `error:` line naming what is wrong and where (file, line, field / key, argument).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tiny_data import DIALOGUE

UNICRS = "inspired/unicrs"
KG = "inspired/kg"


@dataclass(frozen=True)
class BadInput:
    case: str
    enters: str  # where the input enters: data file, config file, --set, CLI argument, model path, predictions
    argv: tuple[str, ...]  # after the common "--dataset inspired --data-dir {data} --runs-dir {runs}"
    expected: tuple[str, ...]  # fragments of the error line ({placeholders} filled in)
    break_input: Callable[[dict[str, Path]], None] | None = None
    prepared: bool = False  # run `crs prepare` on the intact tree first
    common_args: bool = True


def write(relative: str, text: str) -> Callable[[dict[str, Path]], None]:
    def apply(paths: dict[str, Path]) -> None:
        root, _, rest = relative.partition("/")
        target = paths[root] / rest
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return apply


def truncate_train_gzip(paths: dict[str, Path]) -> None:
    payload = gzip.compress((json.dumps(DIALOGUE) + "\n").encode() * 50)
    (paths["data"] / UNICRS / "train_data_dbpedia.jsonl.gz").write_bytes(payload[: len(payload) // 2])


def lines(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def empty_model_folder(paths: dict[str, Path]) -> None:
    (paths["files"] / "not_a_model").mkdir(parents=True)


def predictions(*records: dict) -> Callable[[dict[str, Path]], None]:
    return write("files/preds.jsonl", lines(*records))


def bad_saved_model(paths: dict[str, Path]) -> None:
    (paths["run"] / "models" / "broken").mkdir(parents=True)
    (paths["run"] / "models" / "broken" / "model.json").write_text("{not json")


PREP = ("prepare",)
RANKING = list(range(4))

BAD_INPUTS = [
    # --- data files ---------------------------------------------------------------------------------
    BadInput("truncated-gzip", "data file", PREP, ("train_data_dbpedia.jsonl.gz", "truncated file"),
             truncate_train_gzip),
    BadInput("malformed-json", "data file", PREP, ("test_data_dbpedia.jsonl", "line 2", "malformed JSON"),
             write(f"data/{UNICRS}/test_data_dbpedia.jsonl", lines(DIALOGUE) + "{not json\n")),
    BadInput("missing-field", "data file", PREP, ("test_data_dbpedia.jsonl", "line 1", "field '[0].text'", "missing"),
             write(f"data/{UNICRS}/test_data_dbpedia.jsonl", lines([{"role": "SEEKER", "movie": []}]))),
    BadInput("wrong-field-type", "data file", PREP,
             ("valid_data_dbpedia.jsonl", "line 1", "'[0].movie'", "expected list"),
             write(f"data/{UNICRS}/valid_data_dbpedia.jsonl",
                   lines([{"text": "hi", "role": "SEEKER", "movie": "Up"}]))),
    BadInput("wrong-schema", "data file", PREP, ("valid_data_dbpedia.jsonl", "line 1", "expected a list of utterances"),
             write(f"data/{UNICRS}/valid_data_dbpedia.jsonl", lines({"dialog": DIALOGUE}))),
    BadInput("unknown-role", "data file", PREP, ("valid_data_dbpedia.jsonl", "line 1", "'[0].role'", "'BOT'"),
             write(f"data/{UNICRS}/valid_data_dbpedia.jsonl", lines([{"text": "hi", "role": "BOT", "movie": []}]))),
    BadInput("empty-dialogue", "data file", PREP, ("test_data_dbpedia.jsonl", "line 2", "empty dialogue"),
             write(f"data/{UNICRS}/test_data_dbpedia.jsonl", lines(DIALOGUE, []))),
    BadInput("empty-split", "data file", PREP, ("valid_data_dbpedia.jsonl", "no dialogues"),
             write(f"data/{UNICRS}/valid_data_dbpedia.jsonl", "\n")),
    BadInput("unknown-item-id", "data file", PREP, ("item_ids.json", "unknown to entity2id.json", "first: 99"),
             write(f"data/{KG}/item_ids.json", "[0, 1, 2, 3, 99]")),
    BadInput("catalog-missing-name", "data file", PREP, ("id2info_inspired.json", "field '0.name'"),
             write(f"data/{KG}/id2info_inspired.json", json.dumps({"0": {"genre": []}}))),
    BadInput("kg-wrong-type", "data file", PREP, ("entity2id.json", "int id"),
             write(f"data/{KG}/entity2id.json", json.dumps({"Alien (1979)": "zero"}))),
    BadInput("missing-data-file", "data file", PREP, ("item_ids.json", "file not found"),
             lambda paths: (paths["data"] / KG / "item_ids.json").unlink()),
    # --- config files and --set ---------------------------------------------------------------------
    BadInput("config-unknown-key", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "unknown key 'teacher.modle'"), write("files/c.yaml", "teacher:\n  modle: gpt-4o\n")),
    BadInput("config-wrong-type", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "seed: expected int, got 'abc'"), write("files/c.yaml", "seed: abc\n")),
    BadInput("config-alpha-out-of-range", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "train.alpha: -0.5 must be >= 0"), write("files/c.yaml", "train:\n  alpha: -0.5\n")),
    BadInput("config-tau-out-of-range", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "synthesize.threshold: 4.5 must be in [0, 4]"),
             write("files/c.yaml", "synthesize:\n  threshold: 4.5\n")),
    BadInput("config-invalid-yaml", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "not valid YAML", "line 3"), write("files/c.yaml", "seed: 1\nray: [1,\n")),
    BadInput("config-not-a-mapping", "config file", (*PREP, "--config", "{files}/c.yaml"),
             ("{files}/c.yaml", "expected a mapping"), write("files/c.yaml", "- seed\n")),
    BadInput("config-file-missing", "config file", (*PREP, "--config", "{files}/nope.yaml"),
             ("config file {files}/nope.yaml not found",)),
    BadInput("set-tau-out-of-range", "--set", (*PREP, "--set", "synthesize.threshold=-1"),
             ("--set synthesize.threshold=-1", "synthesize.threshold")),
    BadInput("set-alpha-wrong-type", "--set", (*PREP, "--set", "train.alpha=high"),
             ("--set train.alpha=high", "train.alpha: expected float")),
    BadInput("set-failure-share", "--set", (*PREP, "--set", "teacher.max_failure_share=1.5"),
             ("--set teacher.max_failure_share=1.5", "teacher.max_failure_share: 1.5 must be in [0, 1]")),
    BadInput("set-without-value", "--set", (*PREP, "--set", "seed"), ("--set 'seed'", "expected key=value")),
    # --- CLI arguments ------------------------------------------------------------------------------
    BadInput("unknown-command", "CLI argument", ("bogus",), ("unknown command 'bogus'",), common_args=False),
    BadInput("bad-choice", "CLI argument", ("prepare", "--dataset", "movielens"),
             ("no config file movielens.yaml", "known: inspired, redial"), common_args=False),
    BadInput("unknown-stage", "CLI argument", ("augment", "--stages", "embed,bogus"), ("--stages", "bogus")),
    BadInput("data-dir-missing", "CLI argument", ("prepare", "--dataset", "inspired", "--data-dir", "{files}/none",
                                                  "--runs-dir", "{runs}"),
             ("data_dir: {files}/none is not a directory",), common_args=False),
    BadInput("evaluate-before-prepare", "CLI argument", ("evaluate",), ("items.parquet", "run the stage")),
    BadInput("unknown-saved-model", "CLI argument", ("evaluate", "--models", "nosuch"),
             ("no saved model 'nosuch'",), prepared=True),
    BadInput("predictions-without-name", "CLI argument", ("evaluate", "--predictions", "{files}/preds.jsonl"),
             ("expected NAME=FILE",)),
    # --- model paths --------------------------------------------------------------------------------
    BadInput("model-path-missing", "model path", (*PREP, "--set", "student.model={files}/no_such_model"),
             ("student.model: {files}/no_such_model is not a model folder",)),
    BadInput("model-path-not-a-model", "model path", (*PREP, "--set", "train.model={files}/not_a_model"),
             ("train.model: {files}/not_a_model holds no config.json",), empty_model_folder),
    BadInput("model-name-malformed", "model path", (*PREP, "--set", "encoder.model=a/b/c"),
             ("encoder.model: a/b/c is not a model folder",)),
    BadInput("saved-model-broken", "model path", ("evaluate", "--models", "broken"),
             ("models/broken/model.json, line 1: not valid JSON",), bad_saved_model, prepared=True),
    # --- predictions files (an outside model's rankings) ------------------------------------------------
    BadInput("predictions-unknown-item", "predictions file", ("evaluate", "--predictions", "x={files}/preds.jsonl"),
             ("preds.jsonl", "line 1", "field 'ranking'", "item id 99 is not in the catalog"),
             predictions({"sample_id": "test-1#2", "ranking": [99]}), prepared=True),
    BadInput("predictions-unknown-sample", "predictions file", ("evaluate", "--predictions", "x={files}/preds.jsonl"),
             ("preds.jsonl", "line 2", "field 'sample_id'", "unknown sample 'nope#1'"),
             predictions({"sample_id": "test-1#2", "ranking": RANKING}, {"sample_id": "nope#1", "ranking": RANKING}),
             prepared=True),
]
