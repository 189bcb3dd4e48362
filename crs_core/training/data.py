"""What a training stage reads (catalog, labelled train contexts, valid contexts) and how it is batched.

Stage 1 trains on the synthetic targets (original + added positives, `synthetic.parquet`); stage 2 and
the no-augmentation baseline on the original targets. Both are plain `Sample`s whose `targets` differ,
so batching, sharding and evaluation are one code path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crs_core.artifacts import RunDir, read_table
from crs_core.errors import DataError
from crs_core.schema import SYNTHETIC_SCHEMA, Catalog, Sample

STAGES = ("pretrain", "finetune")
SYNTHETIC = "synthetic.parquet"


@dataclass(frozen=True)
class TrainingData:
    catalog: Catalog
    train: list[Sample]  # `targets` are what this stage learns (synthetic for pretrain)
    valid: list[Sample]  # original targets: model selection always uses the real labels

    def digest(self) -> str:
        """Short hash of the ids and labels, so a Ray run name changes when the data does."""
        h = hashlib.sha256()
        h.update(self.catalog.item_ids.tobytes())
        for split in (self.train, self.valid):
            for s in split:
                h.update(f"{s.sample_id}:{','.join(map(str, s.targets))};".encode())
            h.update(b"|")
        return h.hexdigest()[:16]


def with_synthetic_targets(samples: Sequence[Sample], synthetic: Sequence[dict]) -> list[Sample]:
    """`samples` with their targets replaced by the synthetic rows' (every sample must have a row)."""
    by_id = {row["sample_id"]: row["targets"] for row in synthetic}
    missing = [s.sample_id for s in samples if s.sample_id not in by_id]
    if missing:
        raise DataError(SYNTHETIC, f"no synthetic targets for {len(missing)} train samples, e.g. {missing[0]!r}: "
                                   "rerun synthesize")
    return [dataclasses.replace(s, targets=tuple(by_id[s.sample_id])) for s in samples]


def load_training_data(run_dir: Path, stage: str, synthetic: str = SYNTHETIC) -> TrainingData:
    """The prepared run's data for `stage` ("pretrain" reads the synthetic labels, "finetune" does not)."""
    from crs_core.data.prepared import load_prepared

    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    prepared = load_prepared(run_dir)
    train = prepared.samples["train"]
    if stage == "pretrain":
        rows = read_table(RunDir(run_dir).path(synthetic), SYNTHETIC_SCHEMA).select(["sample_id", "targets"])
        train = with_synthetic_targets(train, rows.to_pylist())
    return TrainingData(prepared.catalog, train, prepared.samples["valid"])


def labelled(samples: Sequence[Sample], catalog: Catalog) -> tuple[list[Sample], list[list[int]]]:
    """Samples with >= 1 catalog target and their target columns (targets outside the catalog dropped)."""
    kept, columns = [], []
    for sample in samples:
        cols = [catalog.column(t) for t in sample.targets if t in catalog]
        if cols:
            kept.append(sample)
            columns.append(cols)
    return kept, columns


def shard_size(n: int, world_size: int) -> int:
    return math.ceil(n / world_size)


def epoch_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's sample indices for `epoch`: one permutation shared by all ranks (seeded by seed and
    epoch), padded by wrapping to a multiple of `world_size` and dealt round-robin, so every rank gets
    the same number of batches (DDP/ZeRO all-reduce every step and would hang on uneven shards)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    padded = np.resize(order, shard_size(n, world_size) * world_size)
    return padded[rank::world_size]


@dataclass(frozen=True)
class Batch:
    inputs: dict[str, Any]  # model inputs (tensors), e.g. input_ids and attention_mask
    targets: list[list[int]]  # catalog columns per context


def iter_batches(tokenize: Callable[[Sequence[Sample]], dict[str, Any]], samples: Sequence[Sample],
                 columns: Sequence[Sequence[int]], indices: np.ndarray, batch_size: int) -> Iterator[Batch]:
    """Batches of `batch_size` contexts in `indices` order, tokenized one batch at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        yield Batch(tokenize([samples[i] for i in idx]), [list(columns[i]) for i in idx])
