"""The recorded teacher: judgments an LLM made earlier, read from JSONL files instead of asked again.

Each line rates one (train context, catalog item) pair 0..4 with a reason, the judge's name and its
rubric (fields: data README §4). The files are checked against this run's train samples and catalog
before anything is used: a line naming an unknown sample or item, a score outside 0..4, a missing or
mistyped field or a pair judged twice (also across files) stops the import with one error naming the
file, the line and the field. A recorded conversation or item description that no longer matches what
this code would show the judge (the samples or the catalog changed since the recording) is counted,
not refused: the score still belongs to the pair. Judgments of valid or test contexts are never
training labels: they are skipped and counted.
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from crs_core.data.io import iter_jsonl, require
from crs_core.errors import ConfigError, DataError
from crs_core.schema import SPLITS, TEACHER_STATUS_OK, Catalog, Sample
from crs_core.teacher.client import Label
from crs_core.teacher.prompt import CONTEXT_CHAR_BUDGET
from crs_core.text import item_text, render_context

FIELDS: dict[str, type | tuple[type, ...]] = {
    "sample_id": str, "split": str, "conversation": str, "item_id": int, "item_title": str,
    "item_description": str, "score": int, "rationale": str, "judge": str, "rubric": str,
}
MIN_SCORE, MAX_SCORE = 0, 4


def resolve_files(patterns: list[str], data_dir: Path, dataset: str) -> list[Path]:
    """The judgment files the patterns name, sorted and without repeats; relative patterns live under
    `data_dir`, "{dataset}" becomes the dataset name. A pattern that matches nothing is a ConfigError."""
    files: dict[Path, None] = {}
    for pattern in patterns:
        path = Path(pattern.replace("{dataset}", dataset)).expanduser()
        path = path if path.is_absolute() else data_dir / path
        matches = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        if not matches:
            raise ConfigError(f"teacher.files: no judgment file matches {pattern!r} (looked for {path}); "
                              "without recorded judgments use --set teacher.kind=kg (or openai)")
        files.update(dict.fromkeys(p.resolve() for p in matches))
    return list(files)


@dataclass
class RecordedJudgments:
    """What the files hold for this run: one Label per train pair plus the counts the summary reports."""

    labels: list[Label] = field(default_factory=list)
    pairs_per_file: dict[str, int] = field(default_factory=dict)
    judges: Counter = field(default_factory=Counter)
    mismatched_conversations: int = 0  # pairs whose recorded conversation differs from render_context
    mismatched_descriptions: int = 0  # pairs whose recorded item description differs from the catalog's
    skipped_splits: Counter = field(default_factory=Counter)  # judgments of valid/test contexts, not used

    @property
    def model(self) -> str:
        return ", ".join(sorted(self.judges))

    @property
    def prompt_version(self) -> str:
        return ", ".join(sorted({label.prompt_version for label in self.labels}))

    def describe(self) -> dict:
        return {
            "files": dict(self.pairs_per_file),
            "judges": dict(self.judges),
            "mismatched_conversations": self.mismatched_conversations,
            "mismatched_descriptions": self.mismatched_descriptions,
            "skipped_not_train": dict(self.skipped_splits),
        }


def _int_field(record: dict, key: str, path: Path, line: int) -> int:
    value = require(record, key, int, path, line)
    if isinstance(value, bool):  # JSON true/false are ints to Python
        raise DataError(path, "expected int, got bool", line=line, field=key)
    return value


def load_recorded(files: list[Path], samples: list[Sample], catalog: Catalog) -> RecordedJudgments:
    """Read and check every judgment line of `files` against the train `samples` and the `catalog`."""
    by_id = {s.sample_id: s for s in samples}
    rendered: dict[str, str] = {}
    first_seen: dict[tuple[str, int], str] = {}
    result = RecordedJudgments()
    for path in files:
        used = 0
        for line, record in iter_jsonl(path):
            for key, kind in FIELDS.items():
                value = _int_field(record, key, path, line) if kind is int else require(record, key, kind, path, line)
                if key == "split" and value not in SPLITS:
                    raise DataError(path, f"split {value!r} is not one of {', '.join(SPLITS)}", line=line, field=key)
            sample_id, item_id, score = record["sample_id"], record["item_id"], record["score"]
            if not MIN_SCORE <= score <= MAX_SCORE:
                raise DataError(path, f"score {score} is outside {MIN_SCORE}..{MAX_SCORE}", line=line, field="score")
            if record["split"] != "train":
                result.skipped_splits[record["split"]] += 1
                continue
            sample = by_id.get(sample_id)
            if sample is None:
                raise DataError(path, f"unknown sample {sample_id!r}: not a train sample of this run (samples/"
                                "train.parquet; was it recorded for another dataset or data setting?)",
                                line=line, field="sample_id")
            if item_id not in catalog:
                raise DataError(path, f"unknown item {item_id}: not in this run's catalog (items.parquet)",
                                line=line, field="item_id")
            where = f"{path}, line {line}"
            earlier = first_seen.setdefault((sample_id, item_id), where)
            if earlier != where:
                raise DataError(path, f"pair ({sample_id!r}, {item_id}) is judged twice: first at {earlier}",
                                line=line, field="item_id")
            if sample_id not in rendered:
                rendered[sample_id] = render_context(sample, budget=CONTEXT_CHAR_BUDGET)
            result.mismatched_conversations += record["conversation"] != rendered[sample_id]
            result.mismatched_descriptions += record["item_description"] != item_text(catalog.get(item_id))
            result.judges[record["judge"]] += 1
            result.labels.append(Label(
                sample_id=sample_id, item_id=item_id, score=float(score), rationale=record["rationale"],
                model=record["judge"], prompt_version=record["rubric"], status=TEACHER_STATUS_OK,
            ))
            used += 1
        result.pairs_per_file[str(path)] = used
    return result
