"""ReDial (Li et al., 2018), partial: full test, ~2.3k train dialogues with text, KASCRS item sequences."""

from __future__ import annotations

import csv
import html
import random
import re
from pathlib import Path

from crs_core.data.dialogue import Dialogue, Turn
from crs_core.data.io import iter_jsonl, load_json, open_text, require
from crs_core.data.kg import EntityLinker, KnowledgeGraph, normalize_title
from crs_core.errors import DataError
from crs_core.schema import RECOMMENDER, SEEKER

ORIGINAL_TRAIN_FILES = ("train_subsets/kgsf_valid_data.jsonl.gz", "train_subsets/kepler_train_data.jsonl.gz")
CFCRS_TRAIN_FILE = "cfcrs/valid_data.jsonl.gz"
TEST_FILE = "original/test_data.jsonl.gz"
KASCRS_FILES = ("kascrs/train.csv.gz", "kascrs/valid.csv")
KASCRS_ITEM_MAP = "kascrs/item_id_to_redial_movieids.json"
MENTION = re.compile(r"@(\d+)")
KASCRS_ITEM = re.compile(r"\[I(\d+)\]")


class MentionResolver:
    """Maps a ReDial `@movieId` to a catalog item: id2info name first, the dialogue's own title second."""

    def __init__(self, kg: KnowledgeGraph, movie_to_item: dict[str, int]):
        self.kg = kg
        self.movie_to_item = movie_to_item

    def item(self, movie_id: str, mentions: dict) -> int | None:
        if movie_id in self.movie_to_item:
            return self.movie_to_item[movie_id]
        title = mentions.get(movie_id)
        return self.kg.movie_item(title) if isinstance(title, str) else None


def render(text: str, mentions: dict) -> str:
    """Replace `@id` by the title the dialogue gives it, as the CFCRS preprocessing does."""

    def title(match: re.Match) -> str:
        name = mentions.get(match.group(1))
        return normalize_title(name) if isinstance(name, str) else match.group(0)

    return html.unescape(" ".join(MENTION.sub(title, text).split()))


def _header(record, path: Path, line: int) -> tuple[str, int, int, dict]:
    dialog_id = require(record, "conversationId", (str, int), path, line)
    seeker = require(record, "initiatorWorkerId", int, path, line)
    recommender = require(record, "respondentWorkerId", int, path, line)
    mentions = require(record, "movieMentions", (dict, list), path, line)
    return str(dialog_id), seeker, recommender, mentions if isinstance(mentions, dict) else {}


def _role(sender: int, seeker: int, recommender: int, path: Path, line: int, field: str) -> str:
    if sender == seeker:
        return SEEKER
    if sender == recommender:
        return RECOMMENDER
    raise DataError(path, f"sender {sender} is neither the initiator nor the respondent", line=line, field=field)


def load_original(path: Path, resolver: MentionResolver, linker: EntityLinker) -> list[Dialogue]:
    """Original ReDial JSONL; consecutive messages of one sender are merged into one turn (as CFCRS does)."""
    dialogues = []
    for line, record in iter_jsonl(path):
        dialog_id, seeker, recommender, mentions = _header(record, path, line)
        merged: list[tuple[str, list[str]]] = []
        for pos, message in enumerate(require(record, "messages", list, path, line)):
            prefix = f"messages[{pos}]."
            text = require(message, "text", str, path, line, prefix)
            sender = require(message, "senderWorkerId", int, path, line, prefix)
            role = _role(sender, seeker, recommender, path, line, f"{prefix}senderWorkerId")
            if merged and merged[-1][0] == role:
                merged[-1][1].append(text)
            else:
                merged.append((role, [text]))
        turns = []
        for role, texts in merged:
            raw = " ".join(texts)
            movie_ids = MENTION.findall(raw)
            resolved = [resolver.item(m, mentions) for m in movie_ids]
            items = [i for i in resolved if i is not None]
            unmapped = [str(mentions.get(m, f"@{m}")) for m, i in zip(movie_ids, resolved) if i is None]
            text = render(raw, mentions)
            turns.append(Turn(role=role, text=text, items=items, entities=linker(text), unmapped=unmapped))
        dialogues.append(Dialogue(dialog_id=dialog_id, turns=turns))
    return dialogues


def load_cfcrs(path: Path, kg: KnowledgeGraph) -> list[Dialogue]:
    """CFCRS-annotated ReDial: turns already merged, with KG `item` titles and `entity` names per turn."""
    dialogues = []
    for line, record in iter_jsonl(path):
        dialog_id, seeker, recommender, mentions = _header(record, path, line)
        turns = []
        for pos, message in enumerate(require(record, "messages", list, path, line)):
            prefix = f"messages[{pos}]."
            sender = require(message, "senderWorkerId", int, path, line, prefix)
            role = _role(sender, seeker, recommender, path, line, f"{prefix}senderWorkerId")
            titles = require(message, "item", list, path, line, prefix)
            items = [i for i in (kg.movie_item(t) for t in titles) if i is not None]
            unmapped = [t for t in titles if kg.movie_item(t) is None]
            entities = [e for e in require(message, "entity", list, path, line, prefix) if e in kg.entity2id]
            text = render(require(message, "text", str, path, line, prefix), mentions)
            turns.append(Turn(role=role, text=text, items=items, entities=entities, unmapped=unmapped))
        dialogues.append(Dialogue(dialog_id=dialog_id, turns=turns))
    return dialogues


def load_train_pool(data_dir: Path, kg: KnowledgeGraph, resolver: MentionResolver) -> list[Dialogue]:
    """Every train-split dialogue with text: original-format copies first, then CFCRS-only dialogues."""
    root = data_dir / "redial"
    linker = kg.entity_linker()
    pool: dict[str, Dialogue] = {}
    for name in ORIGINAL_TRAIN_FILES:
        for dialogue in load_original(root / name, resolver, linker):
            pool.setdefault(dialogue.dialog_id, dialogue)
    for dialogue in load_cfcrs(root / CFCRS_TRAIN_FILE, kg):
        pool.setdefault(dialogue.dialog_id, dialogue)
    return [pool[k] for k in sorted(pool, key=int)]


def split_train_valid(pool: list[Dialogue], fraction: float, seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """CFCRS's split rule (data/redial/split.py): shuffle with random.seed(seed), first 10% is valid."""
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    cut = int(len(shuffled) * fraction)
    return shuffled[cut:], shuffled[:cut]


def load_test(data_dir: Path, kg: KnowledgeGraph, resolver: MentionResolver) -> list[Dialogue]:
    return load_original(data_dir / "redial" / TEST_FILE, resolver, kg.entity_linker())


def load_kascrs_item_sets(data_dir: Path, movie_to_item: dict[str, int],
                          exclude: set[str]) -> list[tuple[str, list[int]]]:
    """KASCRS train/valid item sequences (no text) as (dialog_id, catalog items) for collaborative baselines.

    Dialogues in `exclude` (our valid and test ids) are left out so no evaluation dialogue leaks in.
    """
    root = data_dir / "redial"
    kascrs_to_movie = load_json(root / KASCRS_ITEM_MAP)
    rows = []
    for name in KASCRS_FILES:
        path = root / name
        with open_text(path) as handle:
            reader = csv.DictReader(handle)
            for line, row in enumerate(reader, start=2):
                dialog_id = row.get("conversationId")
                sequence = row.get("sequence")
                if not dialog_id or sequence is None:
                    raise DataError(path, "missing conversationId or sequence", line=line,
                                    field="conversationId" if not dialog_id else "sequence")
                if dialog_id in exclude:
                    continue
                items = []
                for token in KASCRS_ITEM.findall(sequence):
                    movie_ids = kascrs_to_movie.get(f"I{token}")
                    if not movie_ids:
                        raise DataError(path, f"unknown KASCRS item id I{token}", line=line, field="sequence")
                    item = movie_to_item.get(str(movie_ids[0]))
                    if item is not None and item not in items:
                        items.append(item)
                if items:
                    rows.append((dialog_id, items))
    return rows

