"""Stage `distill`: fine-tune the student on the teacher's labels and save it under `checkpoints/student/`.

The student learns the teacher's 0-4 ratings on the judged pairs so that `score` can rate every retrieved
pair. It is trained in the driver; each scoring actor later loads it once from the run directory (a cluster
needs the run directory on shared storage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crs_core import __version__
from crs_core.artifacts import RunDir, atomic_dir, read_table
from crs_core.config import Config
from crs_core.schema import (
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    TEACHER_SCHEMA,
    table_to_catalog,
    table_to_samples,
)
from crs_core.stages.base import Stage, shown
from crs_core.student import build_scorer

STUDENT_DIR = "checkpoints/student"
STUDENT_OUTPUTS = (f"{STUDENT_DIR}/student.json",)


def agreement(student: Mapping[str, Any]) -> dict:
    """The student's agreement with the teacher on pairs it did not train on (held-out or out-of-fold)."""
    return {"mae": student.get("holdout_mae"), "spearman": student.get("holdout_spearman"),
            **{k: v for k, v in student.get("oof", {}).items() if k not in ("mae", "spearman")}}


class Distill(Stage):
    """Train the student on teacher.parquet; the actor pool and the scoring engine do not decide it."""

    name = "distill"
    about = "student {config.student.kind} learns the teacher's ratings"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        inputs = [run.path("teacher.parquet"), run.path("items.parquet"), run.path("samples", "train.parquet")]
        if config.student.kind == "features":
            inputs.append(run.path("embeddings", "items.parquet"))
        return inputs

    def outputs(self, config: Config) -> list[str]:
        return list(STUDENT_OUTPUTS)

    def settings(self, config: Config, run: RunDir) -> dict:
        student = {k: v for k, v in dataclasses.asdict(config.student).items()
                   if k not in ("pool", "max_candidates", "engine", "candidates")}
        return {"student": student, "seed": config.seed, "version": __version__}

    def work(self, config: Config, run: RunDir) -> dict:
        from crs_core.student.train import save_student, teacher_triplets, train_student

        catalog = table_to_catalog(read_table(run.path("items.parquet"), ITEMS_SCHEMA))
        samples = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
        judged = read_table(run.path("teacher.parquet"), TEACHER_SCHEMA)
        if config.student.kind == "features":
            from crs_core.student.feature_pipeline import train_feature_student

            with atomic_dir(run.path(STUDENT_DIR)) as tmp:
                return train_feature_student(config.student, config.seed, judged, samples, catalog, run, Path(tmp))
        scorer = build_scorer(config.student, config.seed)
        summary = {"kind": config.student.kind,
                   **train_student(scorer, teacher_triplets(judged, samples, catalog), config.student, config.seed)}
        save_student(scorer, run.path(STUDENT_DIR))
        return summary

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        agree = agreement(figures)
        held = (f"out-of-fold ({figures['folds']}-fold grouped by context, {figures['contexts']} contexts)"
                if "folds" in figures else "held-out")
        lines = [f"student ({figures['kind']}): {figures['train_pairs']} training pairs, "
                 f"{figures['failed_excluded']} failed teacher rows left out; "
                 f"{held} MAE {shown(agree['mae'], '.3f')}, Spearman {shown(agree['spearman'], '.3f')}"]
        if "spearman_non_gold" in agree:
            lines.append(f"  Spearman on non-gold pairs {shown(agree['spearman_non_gold'], '.3f')}; "
                         f"student calls >= 3: {agree['calls_relevant']}, of which the LLM judged >= 3: "
                         f"{shown(agree['precision_relevant'], '.3f')}")
        return lines


STAGE = Distill()
