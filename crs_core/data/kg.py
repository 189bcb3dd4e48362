"""The CFCRS knowledge graph files: entity names, which entities are recommendable movies, and the catalog."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from crs_core.data.io import load_json
from crs_core.errors import DataError
from crs_core.schema import Item

_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
MAX_ENTITY_WORDS = 4


def normalize_title(title: str) -> str:
    """Collapse runs of whitespace: ReDial titles carry double spaces before the year."""
    return _SPACES.sub(" ", title).strip()


@dataclass
class KnowledgeGraph:
    entity2id: dict[str, int]
    entity2type: dict[str, str]
    item_ids: set[int]

    @classmethod
    def load(cls, kg_dir: Path) -> KnowledgeGraph:
        entity2id = load_json(kg_dir / "entity2id.json")
        entity2type_path = kg_dir / "entity2type.json"
        entity2type = load_json(entity2type_path) if entity2type_path.exists() else {}
        item_ids = load_json(kg_dir / "item_ids.json")
        if not isinstance(entity2id, dict) or not all(isinstance(v, int) for v in entity2id.values()):
            raise DataError(kg_dir / "entity2id.json", "expected an object of {name: int id}")
        if not isinstance(item_ids, list) or not all(isinstance(v, int) for v in item_ids):
            raise DataError(kg_dir / "item_ids.json", "expected a list of int entity ids")
        unknown = sorted(set(item_ids) - set(entity2id.values()))
        if unknown:
            raise DataError(kg_dir / "item_ids.json", f"{len(unknown)} item id(s) unknown to entity2id.json "
                                                      f"(first: {unknown[0]})")
        normalized = {normalize_title(name): idx for name, idx in entity2id.items()}
        return cls(entity2id={**normalized, **entity2id}, entity2type=entity2type, item_ids=set(item_ids))

    def movie_item(self, title: str) -> int | None:
        """Catalog item id of a movie title, or None when the title is not a recommendable KG movie."""
        idx = self.entity2id.get(title)
        if idx is None:
            idx = self.entity2id.get(normalize_title(title))
        return idx if idx is not None and idx in self.item_ids else None

    def entity_linker(self) -> EntityLinker:
        names = {
            name.lower(): name
            for name, kind in self.entity2type.items()
            if kind in ("genre", "person") and name in self.entity2id
        }
        return EntityLinker(names)


@dataclass
class EntityLinker:
    """Finds genre and person names of the KG in free text by exact word n-gram match.

    Used where a dataset file carries no entity annotation (original ReDial, UniCRS INSPIRED), so that
    `context_entities` and the ReDial "context has an entity" rule work on every source alike.
    """

    names: dict[str, str]

    def __call__(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        found: list[str] = []
        for n in range(MAX_ENTITY_WORDS, 0, -1):
            for start in range(len(words) - n + 1):
                phrase = " ".join(words[start : start + n])
                name = self.names.get(phrase)
                if name is None and n == 1:
                    name = next((self.names[s] for s in _singulars(phrase) if s in self.names), None)
                if name is not None and name not in found:
                    found.append(name)
        return found


def _singulars(word: str) -> list[str]:
    """Plural forms seen in dialogues: "comedies" -> "comedy", "thrillers" -> "thriller"."""
    forms = []
    if word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if word.endswith("s"):
        forms.append(word[:-1])
    return forms


def describe(title: str, info: dict) -> str:
    """The item text that retrieval embeds: title, genres, director, stars, plot."""
    parts = [title]
    if info.get("genre"):
        parts.append("Genres: " + ", ".join(info["genre"]) + ".")
    if info.get("director"):
        parts.append("Directed by " + ", ".join(info["director"]) + ".")
    if info.get("star"):
        parts.append("Starring " + ", ".join(info["star"]) + ".")
    if info.get("plot"):
        parts.append("Plot: " + info["plot"].strip())
    return " ".join(parts)


def _str_list(value, path: Path, key: str, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(path, "expected a list of strings", line=None, field=f"{key}.{field}")
    return tuple(value)


def load_catalog(id2info_path: Path, kg: KnowledgeGraph) -> tuple[list[Item], dict[str, int]]:
    """Items from an `id2info` file, keyed by KG entity id.

    Returns the items (sorted by item id) and a map from the file's own keys to item ids (ReDial keys
    are ReDial movieIds, INSPIRED keys are already entity ids). Records whose name is not a
    recommendable KG movie are skipped: the reference code ranks over `item_ids` only.
    """
    raw = load_json(id2info_path)
    if not isinstance(raw, dict):
        raise DataError(id2info_path, "expected an object of {id: info}")
    items: dict[int, Item] = {}
    key_to_item: dict[str, int] = {}
    for key, info in raw.items():
        if not isinstance(info, dict):
            raise DataError(id2info_path, "expected an object", field=key)
        name = info.get("name")
        if not isinstance(name, str) or not name.strip():
            raise DataError(id2info_path, "missing or empty movie name", field=f"{key}.name")
        item_id = kg.movie_item(name)
        if item_id is None:
            continue
        key_to_item[key] = item_id
        if item_id in items:
            continue
        title = normalize_title(name)
        plot = info.get("plot") or ""
        if not isinstance(plot, str):
            raise DataError(id2info_path, "expected a string", field=f"{key}.plot")
        items[item_id] = Item(
            item_id=item_id,
            title=title,
            description=describe(title, info),
            genres=_str_list(info.get("genre"), id2info_path, key, "genre"),
            directors=_str_list(info.get("director"), id2info_path, key, "director"),
            stars=_str_list(info.get("star"), id2info_path, key, "star"),
            plot=plot.strip(),
        )
    return [items[i] for i in sorted(items)], key_to_item
