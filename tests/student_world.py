"""The toy world of the student tests: five space sci-fi movies and five romantic comedies; a seeker asks for one
genre, and the teacher rates same-genre candidates 4 and the others 0."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from crs_core.artifacts import RunDir, write_table
from crs_core.config import ActorPoolConfig, StudentConfig
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    TEACHER_SCHEMA,
    Catalog,
    Item,
    Sample,
    items_to_table,
    samples_to_table,
)
from crs_core.student.train import Triplet, teacher_triplets

SCIFI, ROMANCE = (11, 12, 13, 14, 15), (21, 22, 23, 24, 25)
SCIFI_PLOT = "Genre: science fiction. Astronauts fight aliens on a starship in deep space."
ROMANCE_PLOT = "Genre: romantic comedy. Two strangers fall in love in Paris."
CATALOG = Catalog([Item(i, f"Star Voyage {i}", f"Star Voyage {i}. {SCIFI_PLOT}") for i in SCIFI]
                  + [Item(i, f"Paris Kiss {i}", f"Paris Kiss {i}. {ROMANCE_PLOT}") for i in ROMANCE])
SCIFI_ASK = "I want a space movie with aliens and starships"
ROMANCE_ASK = "I want a sweet romantic comedy about falling in love"


def _sample(n: int, ask: str, context_items: tuple[int, ...], targets: tuple[int, ...]) -> Sample:
    greeting = f"Hi, I am recommender {n}! What are you in the mood for?"
    return Sample(f"s{n}", f"d{n}", 2, (greeting, ask), ("recommender", "seeker"), context_items, targets=targets)


SAMPLES = [
    _sample(0, SCIFI_ASK, (11,), (12,)),
    _sample(1, ROMANCE_ASK, (), (21,)),
    _sample(2, SCIFI_ASK, (13,), (14,)),
    _sample(3, ROMANCE_ASK, (22,), (23,)),
    _sample(4, SCIFI_ASK, (), (15,)),
    _sample(5, ROMANCE_ASK, (), (24, 25)),
]
GENRE = {**{i: SCIFI_ASK for i in SCIFI}, **{i: ROMANCE_ASK for i in ROMANCE}}


def teacher_rows(failed: tuple[tuple[str, int], ...] = (), items: tuple[int, ...] = SCIFI + ROMANCE) -> list[dict]:
    """Each (sample, item) rated 4 if same genre else 0; `failed` pairs have status failed and no score."""
    rows = []
    for s in SAMPLES:
        for item in items:
            bad = (s.sample_id, item) in failed
            score = None if bad else (4.0 if GENRE[item] == s.context[1] else 0.0)
            rows.append({"sample_id": s.sample_id, "item_id": item, "score": score,
                         "rationale": "", "model": "toy", "prompt_version": "v1", "status": "failed" if bad else "ok",
                         "error": "timeout" if bad else None, "input_tokens": 0, "output_tokens": 0, "cached": False})
    return rows


def write_run(root: Path) -> RunDir:
    run = RunDir(root)
    write_table(run.path("items.parquet"), items_to_table(CATALOG.items), ITEMS_SCHEMA)
    write_table(run.path("samples", "train.parquet"), samples_to_table(SAMPLES), SAMPLES_SCHEMA)
    cands = [{"sample_id": s.sample_id, "item_id": item, "rank": r, "similarity": 1.0 - r / 10}
             for s in SAMPLES for r, item in enumerate(CATALOG.item_ids.tolist())]
    write_table(run.path("candidates", "train.parquet"), pa.Table.from_pylist(cands), CANDIDATES_SCHEMA)
    teacher = pa.Table.from_pylist(teacher_rows(items=(11, 12, 21, 22)), schema=TEACHER_SCHEMA)
    write_table(run.path("teacher.parquet"), teacher, TEACHER_SCHEMA)
    return run


def student_config(**overrides) -> StudentConfig:
    settings = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-4, "max_length": 48, "holdout_fraction": 0.34,
                "pool": ActorPoolConfig(actors=1, num_cpus=0.5, batch_size=10)} | overrides
    return StudentConfig(**settings)


def triplets() -> list[Triplet]:
    return teacher_triplets(pa.Table.from_pylist(teacher_rows(), schema=TEACHER_SCHEMA), SAMPLES, CATALOG)
