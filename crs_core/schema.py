"""In-memory records shared by every stage and the Parquet schemas they are stored with.

Item ids are the knowledge-graph entity ids of the dataset (`kg/entity2id.json`), the same ids the
FNSCRS reference code ranks over, so the KG, the catalog and the evaluation agree on one id space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from crs_core.artifacts import read_table
from crs_core.errors import DataError

SPLITS = ("train", "valid", "test")

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

ITEM_SETS_SCHEMA = pa.schema([pa.field("dialog_id", pa.string(), False),
                              pa.field("items", pa.list_(pa.int64()), False)])

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


def _records_to_table(records: list, schema: pa.Schema) -> pa.Table:
    """Dataclass records -> a table of `schema` (tuples become lists); columns are the dataclass fields."""
    return pa.Table.from_pylist([{name: list(value) if isinstance(value, tuple) else value
                                  for name, value in vars(record).items()} for record in records], schema=schema)


def _table_to_records(table: pa.Table, record_type: type) -> list:
    """Rows of `table` -> `record_type` instances (lists become tuples)."""
    return [record_type(**{name: tuple(value) if isinstance(value, list) else value for name, value in row.items()})
            for row in table.to_pylist()]


def items_to_table(items: list[Item]) -> pa.Table:
    return _records_to_table(items, ITEMS_SCHEMA)


def table_to_catalog(table: pa.Table) -> Catalog:
    return Catalog(_table_to_records(table, Item))


def samples_to_table(samples: list[Sample]) -> pa.Table:
    return _records_to_table(samples, SAMPLES_SCHEMA)


def table_to_samples(table: pa.Table) -> list[Sample]:
    return _table_to_records(table, Sample)


def embeddings_table(keys: Sequence[str], matrix: np.ndarray) -> pa.Table:
    """Keys and an (n, dim) matrix -> an EMBEDDINGS_SCHEMA table (one fixed-size list per row)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dim = matrix.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    column = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=pa.float32()))
    return pa.table({"key": pa.array(list(keys), pa.string()), "embedding": column}, schema=EMBEDDINGS_SCHEMA)


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray]:
    """Keys and the (n, dim) float32 matrix of an embeddings artifact (all rows must share one dim)."""
    table = read_table(path, EMBEDDINGS_SCHEMA)
    column = table.column("embedding").combine_chunks()
    lengths = np.unique(column.value_lengths().to_numpy())
    if len(lengths) > 1:
        raise DataError(path, f"embeddings of different sizes {lengths.tolist()}", field="embedding")
    dim = int(lengths[0]) if len(lengths) else 0
    matrix = column.flatten().to_numpy().astype(np.float32, copy=False).reshape(len(column), dim)
    return table.column("key").to_pylist(), matrix


# The schemas and the records name the same fields in the same order (checked once, at import).
for _schema, _record in ((ITEMS_SCHEMA, Item), (SAMPLES_SCHEMA, Sample)):
    assert _schema.names == [f.name for f in fields(_record)], f"{_record.__name__} and its schema disagree"
