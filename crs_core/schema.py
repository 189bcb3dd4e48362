"""In-memory records shared by every stage and the Parquet schemas they are stored with.

Item ids are the knowledge-graph entity ids of the dataset (`kg/entity2id.json`), the same ids the
FNSCRS reference code ranks over, so the KG, the catalog and the evaluation agree on one id space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("description", pa.string(), nullable=False),
        pa.field("genres", pa.list_(pa.string()), nullable=False),
        pa.field("directors", pa.list_(pa.string()), nullable=False),
        pa.field("stars", pa.list_(pa.string()), nullable=False),
        pa.field("plot", pa.string(), nullable=False),
    ]
)

SAMPLES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("dialog_id", pa.string(), nullable=False),
        pa.field("turn_id", pa.int32(), nullable=False),
        pa.field("context", pa.list_(pa.string()), nullable=False),
        pa.field("context_roles", pa.list_(pa.string()), nullable=False),
        pa.field("context_items", pa.list_(pa.int64()), nullable=False),
        pa.field("context_entities", pa.list_(pa.string()), nullable=False),
        pa.field("targets", pa.list_(pa.int64()), nullable=False),
    ]
)

# Augmentation artifacts (docs/architecture.md). Each is keyed by (sample_id[, item_id]).
EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),  # str(item_id) for items, sample_id for contexts
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ]
)

CANDIDATES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 0 = most similar
        pa.field("similarity", pa.float32(), nullable=False),
    ]
)

TEACHER_STATUS_OK = "ok"
TEACHER_STATUS_FAILED = "failed"
TEACHER_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=True),  # 0..4; null when status == "failed", never a silent 0
        pa.field("rationale", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
        pa.field("error", pa.string(), nullable=True),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("output_tokens", pa.int64(), nullable=False),
        pa.field("cached", pa.bool_(), nullable=False),
    ]
)

SCORES_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # student's expected relevance in [0, 4]
    ]
)

SYNTHETIC_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("targets", pa.list_(pa.int64()), nullable=False),  # original targets + items scoring >= tau
        pa.field("synthetic", pa.list_(pa.int64()), nullable=False),  # the added items only
    ]
)

SEEKER = "seeker"
RECOMMENDER = "recommender"


@dataclass(frozen=True)
class Item:
    item_id: int
    title: str
    description: str
    genres: tuple[str, ...] = ()
    directors: tuple[str, ...] = ()
    stars: tuple[str, ...] = ()
    plot: str = ""


@dataclass(frozen=True)
class Sample:
    """One recommender turn: what was said before it and which catalog items it recommended."""

    sample_id: str
    dialog_id: str
    turn_id: int
    context: tuple[str, ...]
    context_roles: tuple[str, ...]
    context_items: tuple[int, ...]
    context_entities: tuple[str, ...] = ()
    targets: tuple[int, ...] = ()


@dataclass
class Catalog:
    """The recommendable items in a fixed order; score matrices use this column order."""

    items: list[Item]
    _index: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {item.item_id: i for i, item in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise ValueError("catalog has duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: int) -> bool:
        return item_id in self._index

    @property
    def item_ids(self) -> np.ndarray:
        return np.fromiter((item.item_id for item in self.items), dtype=np.int64, count=len(self.items))

    def column(self, item_id: int) -> int:
        """Column of `item_id` in score matrices (KeyError when not in the catalog)."""
        return self._index[item_id]

    def get(self, item_id: int) -> Item:
        return self.items[self._index[item_id]]


def items_to_table(items: list[Item]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "item_id": it.item_id,
                "title": it.title,
                "description": it.description,
                "genres": list(it.genres),
                "directors": list(it.directors),
                "stars": list(it.stars),
                "plot": it.plot,
            }
            for it in items
        ],
        schema=ITEMS_SCHEMA,
    )


def table_to_catalog(table: pa.Table) -> Catalog:
    rows = table.to_pylist()
    return Catalog(
        [
            Item(
                item_id=r["item_id"],
                title=r["title"],
                description=r["description"],
                genres=tuple(r["genres"]),
                directors=tuple(r["directors"]),
                stars=tuple(r["stars"]),
                plot=r["plot"],
            )
            for r in rows
        ]
    )


def samples_to_table(samples: list[Sample]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "sample_id": s.sample_id,
                "dialog_id": s.dialog_id,
                "turn_id": s.turn_id,
                "context": list(s.context),
                "context_roles": list(s.context_roles),
                "context_items": list(s.context_items),
                "context_entities": list(s.context_entities),
                "targets": list(s.targets),
            }
            for s in samples
        ],
        schema=SAMPLES_SCHEMA,
    )


def table_to_samples(table: pa.Table) -> list[Sample]:
    return [
        Sample(
            sample_id=r["sample_id"],
            dialog_id=r["dialog_id"],
            turn_id=r["turn_id"],
            context=tuple(r["context"]),
            context_roles=tuple(r["context_roles"]),
            context_items=tuple(r["context_items"]),
            context_entities=tuple(r["context_entities"]),
            targets=tuple(r["targets"]),
        )
        for r in table.to_pylist()
    ]
