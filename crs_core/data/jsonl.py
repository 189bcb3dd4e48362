"""Your own dataset, in any domain: a catalog JSONL and dialogue JSONL files (the format of docs/data.md).

catalog.jsonl, one item per line:
    {"item_id": 17, "title": "The Hobbit", "description": "...", "tags": ["fantasy"], "creators": ["J. R. R. Tolkien"],
     "people": ["Bilbo Baggins"]}
dialogues.jsonl, one dialogue per line:
    {"dialog_id": "b1", "split": "train", "turns": [{"role": "seeker", "text": "...", "items": []},
                                                    {"role": "recommender", "text": "Try The Hobbit", "items": [17]}]}
`item_id` is an integer, `title` a non-empty string; the rest is optional. Tags, creators and people fill the
catalog's genre, director and star slots, which the lexical retriever, the KG teacher and the feature student
read. A turn may list the `entities` it mentions; otherwise the catalog's tag and people names said in its text
are found. Splits: "{split}" in the dialogue file name (one file per split), else each dialogue's "split", else
a seeded shuffle (`data.test_fraction`, `data.valid_fraction`, `data.valid_seed`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from crs_core.data.dialogue import Dialogue, Turn
from crs_core.data.io import iter_jsonl
from crs_core.data.kg import EntityLinker
from crs_core.errors import DataError
from crs_core.schema import RECOMMENDER, SEEKER, SPLITS, Item

ROLES = (SEEKER, RECOMMENDER)
ITEM_LISTS = {"tags": "genres", "creators": "directors", "people": "stars"}


@dataclass
class JsonlDataset:
    items: list[Item]
    dialogues: dict[str, list[Dialogue]]
    sources: list[Path]


def describe_item(title: str, tags, creators, people, description: str) -> str:
    """The item text that retrieval embeds, in the shape of the movie catalogs' (title, facets, free text)."""
    parts = [title]
    if tags:
        parts.append("Tags: " + ", ".join(tags) + ".")
    if creators:
        parts.append("By " + ", ".join(creators) + ".")
    if people:
        parts.append("Featuring " + ", ".join(people) + ".")
    if description:
        parts.append(description.strip())
    return " ".join(parts)


def _field(record: dict, key: str, kind: type, path: Path, line: int, prefix: str = "", required: bool = True):
    if not isinstance(record, dict):
        raise DataError(path, "expected a JSON object", line=line, field=prefix.rstrip(".") or None)
    if key not in record or record[key] is None:
        if required:
            raise DataError(path, "missing", line=line, field=f"{prefix}{key}")
        return kind()
    value = record[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DataError(path, f"expected an integer, got {value!r}", line=line, field=f"{prefix}{key}")
    if not isinstance(value, kind):
        raise DataError(path, f"expected a {kind.__name__}, got {value!r}", line=line, field=f"{prefix}{key}")
    return value


def _strings(record: dict, key: str, path: Path, line: int, prefix: str = "") -> tuple[str, ...]:
    values = _field(record, key, list, path, line, prefix, required=False)
    for pos, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise DataError(path, f"expected a non-empty string, got {value!r}", line=line,
                            field=f"{prefix}{key}[{pos}]")
    return tuple(v.strip() for v in values)


def load_catalog(path: Path) -> list[Item]:
    """Items sorted by id; a repeated id, a missing title or a mistyped field is an error at its line."""
    items: dict[int, Item] = {}
    for line, record in iter_jsonl(path):
        item_id = _field(record, "item_id", int, path, line)
        if item_id < 0:
            raise DataError(path, f"expected an id >= 0, got {item_id}", line=line, field="item_id")
        if item_id in items:
            raise DataError(path, f"item {item_id} is listed twice", line=line, field="item_id")
        title = _field(record, "title", str, path, line).strip()
        if not title:
            raise DataError(path, "empty title", line=line, field="title")
        description = _field(record, "description", str, path, line, required=False)
        lists = {slot: _strings(record, key, path, line) for key, slot in ITEM_LISTS.items()}
        items[item_id] = Item(item_id=item_id, title=title, plot=description.strip(),
                              description=describe_item(title, *lists.values(), description), **lists)
    if not items:
        raise DataError(path, "the catalog has no items")
    return [items[i] for i in sorted(items)]


def _linker(items: list[Item]) -> EntityLinker:
    names = {name.lower(): name for item in items for name in (*item.genres, *item.directors, *item.stars)}
    return EntityLinker(names)


def _turn(record: dict, catalog: set[int], linker: EntityLinker, path: Path, line: int, prefix: str) -> Turn:
    role = _field(record, "role", str, path, line, prefix)
    if role not in ROLES:
        raise DataError(path, f"expected one of {', '.join(ROLES)}, got {role!r}", line=line, field=f"{prefix}role")
    text = _field(record, "text", str, path, line, prefix)
    items = _field(record, "items", list, path, line, prefix, required=False)
    for pos, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, int):
            raise DataError(path, f"expected an item id (integer), got {item!r}", line=line,
                            field=f"{prefix}items[{pos}]")
        if item not in catalog:
            raise DataError(path, f"item {item} is not in the catalog", line=line, field=f"{prefix}items[{pos}]")
    entities = (list(_strings(record, "entities", path, line, prefix)) if "entities" in record else linker(text))
    return Turn(role=role, text=text, items=list(items), entities=entities)


def load_dialogues(path: Path, catalog: set[int], linker: EntityLinker, split: str | None,
                   seen: dict[str, tuple[Path, int]]) -> list[tuple[str | None, Dialogue]]:
    """(split or None, dialogue) per line; `split` given: the file's split, and a line naming another is an error."""
    rows = []
    for line, record in iter_jsonl(path):
        dialog_id = _field(record, "dialog_id", str, path, line)
        if dialog_id in seen:
            first_path, first_line = seen[dialog_id]
            raise DataError(path, f"dialog_id {dialog_id!r} already used at {first_path}, line {first_line}",
                            line=line, field="dialog_id")
        seen[dialog_id] = (path, line)
        named = record.get("split")
        if named is not None and named not in SPLITS:
            raise DataError(path, f"expected one of {', '.join(SPLITS)}, got {named!r}", line=line, field="split")
        if split is not None and named not in (None, split):
            raise DataError(path, f"this file holds the {split} split", line=line, field="split")
        turns = _field(record, "turns", list, path, line)
        if not turns:
            raise DataError(path, "a dialogue needs at least one turn", line=line, field="turns")
        parsed = [_turn(t, catalog, linker, path, line, f"turns[{pos}].") for pos, t in enumerate(turns)]
        rows.append((split or named, Dialogue(dialog_id=dialog_id, turns=parsed)))
    return rows


def assign_splits(rows: list[tuple[str | None, Dialogue]], valid_fraction: float, test_fraction: float,
                  seed: int, path: Path) -> dict[str, list[Dialogue]]:
    """Named splits as given; with none named, a seeded shuffle: the first test_fraction is test, the next
    valid_fraction valid (CFCRS's rule for ReDial's valid split). Some named and some not is an error."""
    named = [split for split, _ in rows if split is not None]
    if named and len(named) != len(rows):
        raise DataError(path, f"{len(rows) - len(named)} of {len(rows)} dialogues have no 'split': give every "
                        "dialogue a split or none", field="split")
    if named:
        return {s: [d for split, d in rows if split == s] for s in SPLITS}
    shuffled = [d for _, d in rows]
    random.Random(seed).shuffle(shuffled)
    n_test, n_valid = int(len(shuffled) * test_fraction), int(len(shuffled) * valid_fraction)
    return {"test": shuffled[:n_test], "valid": shuffled[n_test:n_test + n_valid], "train": shuffled[n_test + n_valid:]}


def load_dataset(root: Path, catalog_name: str, dialogues_name: str, valid_fraction: float = 0.1,
                 test_fraction: float = 0.1, seed: int = 42) -> JsonlDataset:
    """Read and check a whole dataset; every split must end up with at least one dialogue."""
    catalog_path = root / catalog_name
    items = load_catalog(catalog_path)
    ids, linker, seen = {item.item_id for item in items}, _linker(items), {}
    if "{split}" in dialogues_name:
        paths = [root / dialogues_name.format(split=split) for split in SPLITS]
        dialogues = {split: [d for _, d in load_dialogues(path, ids, linker, split, seen)]
                     for split, path in zip(SPLITS, paths)}
    else:
        paths = [root / dialogues_name]
        rows = load_dialogues(paths[0], ids, linker, None, seen)
        dialogues = assign_splits(rows, valid_fraction, test_fraction, seed, paths[0])
    for split, chosen in dialogues.items():
        if not chosen:
            raise DataError(paths[0] if len(paths) == 1 else paths[SPLITS.index(split)],
                            f"no dialogue in the {split} split", field="split")
    return JsonlDataset(items=items, dialogues=dialogues, sources=[catalog_path, *paths])


def default_dialogues_name(root: Path) -> str:
    """`dialogues.jsonl` when present, else one file per split (`train.jsonl`, `valid.jsonl`, `test.jsonl`)."""
    single = [name for name in ("dialogues.jsonl", "dialogues.jsonl.gz") if (root / name).is_file()]
    if single:
        return single[0]
    return "{split}.jsonl.gz" if (root / "train.jsonl.gz").is_file() else "{split}.jsonl"


def format_check(dataset: JsonlDataset) -> str:
    """What `crs data check` prints for a dataset that passed every check."""
    lines = [f"catalog: {len(dataset.items)} items; files: {', '.join(str(p) for p in dataset.sources)}",
             f"{'split':<6} {'dialogues':>9} {'turns':>6} {'mentions':>8} {'rec. turns with items':>21}"]
    for split, dialogues in dataset.dialogues.items():
        turns = [t for d in dialogues for t in d.turns]
        recommending = sum(1 for t in turns if t.role == RECOMMENDER and t.items)
        lines.append(f"{split:<6} {len(dialogues):>9} {len(turns):>6} {sum(len(t.items) for t in turns):>8} "
                     f"{recommending:>21}")
    return "\n".join(lines)
