"""A tiny INSPIRED/ReDial-shaped data directory, written per test so each test can break one file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

MOVIES = {"Alien (1979)": 0, "Aliens (1986)": 1, "Heat (1995)": 2, "Up (2009)": 3}
OTHER_ENTITIES = {"horror": 10, "action": 11, "comedy": 12, "James Cameron": 13}
INFO = {
    "0": {"name": "Alien (1979)", "genre": ["horror"], "director": ["Ridley Scott"], "star": ["Sigourney Weaver"],
          "plot": "A crew meets a creature."},
    "1": {"name": "Aliens (1986)", "genre": ["horror", "action"], "director": ["James Cameron"],
          "star": ["Sigourney Weaver"], "plot": "The creature returns."},
    "2": {"name": "Heat (1995)", "genre": ["action"], "director": ["Michael Mann"], "star": ["Al Pacino"], "plot": ""},
    "3": {"name": "Up (2009)", "genre": ["comedy"], "director": [], "star": [], "plot": "A house flies."},
}


def utt(role: str, text: str, movies=()) -> dict:
    return {"text": text, "role": role, "movie": list(movies), "entity_link": [], "entity_name": [],
            "movie_link": [], "movie_name": []}


DIALOGUE = [
    utt("RECOMMENDER", "Hi! What do you like?"),
    utt("SEEKER", "I love horror like Alien", ["Alien (1979)"]),
    utt("RECOMMENDER", "Try Aliens or Alien", ["Aliens (1986)", "Alien (1979)"]),
    utt("SEEKER", "Anything with action? Not Star Wars", ["Star Wars (1977)"]),
    utt("RECOMMENDER", "Heat is great", ["Heat (1995)"]),
]


def write_jsonl(path: Path, rows: list, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)


def make_inspired(root: Path) -> Path:
    kg = root / "inspired" / "kg"
    kg.mkdir(parents=True)
    (kg / "entity2id.json").write_text(json.dumps({**MOVIES, **OTHER_ENTITIES}))
    types = {**{m: "movie" for m in MOVIES}, "horror": "genre", "action": "genre", "comedy": "genre",
             "James Cameron": "person"}
    (kg / "entity2type.json").write_text(json.dumps(types))
    (kg / "item_ids.json").write_text(json.dumps(sorted(MOVIES.values())))
    (kg / "id2info_inspired.json").write_text(json.dumps(INFO))
    uni = root / "inspired" / "unicrs"
    write_jsonl(uni / "train_data_dbpedia.jsonl.gz", [DIALOGUE, DIALOGUE[:3]], gz=True)
    write_jsonl(uni / "valid_data_dbpedia.jsonl", [DIALOGUE])
    write_jsonl(uni / "test_data_dbpedia.jsonl", [DIALOGUE])
    return root


# `--set` overrides that make every augmentation stage take seconds on the tiny tree (real models, tiny sizes).
TINY_AUGMENT = [
    "teacher.kind=kg",  # the tiny data tree has no recorded judgments
    "student.folds=2",  # a handful of judged contexts
    "retrieval.top_k=3",
    "teacher.contexts=10",
    "teacher.candidates_per_context=3",
    "student.epochs=1",
    "student.max_length=64",
    "student.batch_size=4",
    "student.pool.actors=1",
    "student.pool.num_cpus=0.5",
    "encoder.pool.actors=2",
    "encoder.pool.num_cpus=0.5",
    "encoder.max_length=64",
    "synthesize.threshold=0.0",
]
