"""INSPIRED (Hayati et al., 2020): UniCRS dialogues for train, the CFCRS annotations for valid/test.

Valid/test are what FNSCRS evaluates on: its `inspired_rec` files are made by CFCRS's
`model/*/data/inspired_rec/prepare.py` from `data/inspired/{valid,test}_data.jsonl` (the files under
`cfcrs/`). Train keeps the UniCRS text, the only complete copy of the 801 train dialogues.
"""

from __future__ import annotations

from pathlib import Path

from crs_core.data.dialogue import Dialogue, Turn
from crs_core.data.io import iter_jsonl, require
from crs_core.data.kg import EntityLinker, KnowledgeGraph
from crs_core.errors import DataError
from crs_core.schema import RECOMMENDER, SEEKER

UNICRS_FILES = {
    "train": "unicrs/train_data_dbpedia.jsonl.gz",
    "valid": "unicrs/valid_data_dbpedia.jsonl",
    "test": "unicrs/test_data_dbpedia.jsonl",
}
CFCRS_FILES = {"valid": "cfcrs/valid_data.jsonl", "test": "cfcrs/test_data.jsonl"}
ROLES = {"RECOMMENDER": RECOMMENDER, "SEEKER": SEEKER}


def _role(value: str, path: Path, line: int, field: str) -> str:
    if value not in ROLES:
        raise DataError(path, f"unknown role {value!r} (expected RECOMMENDER or SEEKER)", line=line, field=field)
    return ROLES[value]


def _turn(text: str, role: str, movies: list, entities: list[str], kg: KnowledgeGraph,
          path: Path, line: int, field: str) -> Turn:
    items, unmapped = [], []
    for title in movies:
        if not isinstance(title, str):
            raise DataError(path, "movie titles must be strings", line=line, field=field)
        item = kg.movie_item(title)
        (items.append(item) if item is not None else unmapped.append(title))
    return Turn(role=role, text=text, items=items, entities=entities, unmapped=unmapped)


def load_unicrs(path: Path, split: str, kg: KnowledgeGraph, linker: EntityLinker) -> list[Dialogue]:
    """UniCRS files hold one JSON list of utterances per line and no dialogue id: named `<split>-<line>`."""
    dialogues = []
    for line, utterances in iter_jsonl(path):
        if not isinstance(utterances, list):
            raise DataError(path, f"expected a list of utterances, got {type(utterances).__name__}", line=line)
        if not utterances:
            raise DataError(path, "empty dialogue: no utterances", line=line)
        turns = []
        for pos, utt in enumerate(utterances):
            prefix = f"[{pos}]."
            text = require(utt, "text", str, path, line, prefix)
            role = _role(require(utt, "role", str, path, line, prefix), path, line, f"{prefix}role")
            movies = require(utt, "movie", list, path, line, prefix)
            turns.append(_turn(text, role, movies, linker(text), kg, path, line, f"{prefix}movie"))
        dialogues.append(Dialogue(dialog_id=f"{split}-{line}", turns=turns))
    if not dialogues:
        raise DataError(path, "no dialogues in the file")
    return dialogues


def _cfcrs_turn(turn: dict, kg: KnowledgeGraph, path: Path, line: int, prefix: str) -> Turn:
    """One CFCRS turn under the FNSCRS/CFCRS rule: a name counts when it is a key of entity2id.

    `items` are the entity ids of the turn's `movie` names, every occurrence kept: the reference turns
    each into a label (`rec`) or a context mention (`entity`), repeats and all. One name in the data,
    the empty string, is a KG genre rather than a movie; it is kept too, since FNSCRS counts it as a
    label that no ranking over the items can hit.
    """
    text = require(turn, "text", str, path, line, prefix)
    role = _role(require(turn, "role", str, path, line, prefix), path, line, f"{prefix}role")
    names = {}
    for key in ("movie", "entity"):
        values = require(turn, key, list, path, line, prefix)
        if not all(isinstance(v, str) for v in values):
            raise DataError(path, f"{key} names must be strings", line=line, field=f"{prefix}{key}")
        names[key] = values
    items = [kg.entity2id[m] for m in names["movie"] if m in kg.entity2id]
    unmapped = [m for m in names["movie"] if m not in kg.entity2id]
    entities = [e for e in names["entity"] if e in kg.entity2id]
    return Turn(role=role, text=text, items=items, entities=entities, unmapped=unmapped)


def load_cfcrs(path: Path, kg: KnowledgeGraph) -> list[Dialogue]:
    """CFCRS-annotated INSPIRED: `{"dialog_id", "dialog": [{role, text, movie, entity, ...}]}`."""
    dialogues = []
    for line, record in iter_jsonl(path):
        dialog_id = require(record, "dialog_id", str, path, line)
        utterances = require(record, "dialog", list, path, line)
        if not utterances:
            raise DataError(path, "empty dialogue: no utterances", line=line, field="dialog")
        turns = [_cfcrs_turn(turn, kg, path, line, f"dialog[{pos}].") for pos, turn in enumerate(utterances)]
        dialogues.append(Dialogue(dialog_id=dialog_id, turns=turns))
    if not dialogues:
        raise DataError(path, "no dialogues in the file")
    return dialogues


def source_file(data_dir: Path, split: str) -> Path:
    """The file a split is read from: CFCRS for valid/test when present (a small test tree may have only
    the UniCRS copies), UniCRS for train."""
    root = data_dir / "inspired"
    if split in CFCRS_FILES and (root / CFCRS_FILES[split]).exists():
        return root / CFCRS_FILES[split]
    return root / UNICRS_FILES[split]


def load_split(data_dir: Path, split: str, kg: KnowledgeGraph) -> list[Dialogue]:
    """Valid/test as FNSCRS evaluates them (CFCRS annotations), train from the UniCRS text."""
    path = source_file(data_dir, split)
    if path.parent.name == "cfcrs":
        return load_cfcrs(path, kg)
    return load_unicrs(path, split, kg, kg.entity_linker())
