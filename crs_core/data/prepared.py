"""The prepared run data every stage after `prepare` reads: the catalog, the samples of each split, item sets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crs_core.artifacts import RunDir, read_table
from crs_core.schema import (
    ITEM_SETS_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    SPLITS,
    Catalog,
    Sample,
    table_to_catalog,
    table_to_samples,
)


@dataclass
class PreparedData:
    catalog: Catalog
    samples: dict[str, list[Sample]]
    item_sets: list[list[int]]


def load_prepared(run_dir: Path) -> PreparedData:
    """Read what `prepare` wrote (schemas checked), for the stages after it."""
    run = RunDir(run_dir)
    catalog = table_to_catalog(read_table(run.path("items.parquet"), ITEMS_SCHEMA))
    samples = {s: table_to_samples(read_table(run.path("samples", f"{s}.parquet"), SAMPLES_SCHEMA)) for s in SPLITS}
    item_sets = read_table(run.path("item_sets.parquet"), ITEM_SETS_SCHEMA).column("items").to_pylist()
    return PreparedData(catalog=catalog, samples=samples, item_sets=item_sets)
