"""The feature student inside the `distill` and `score` stages: build features from the run's artifacts,
fit with grouped cross-validation, save, and score (context, item) pairs in-process.

Scoring runs vectorised in the driver, not on Ray Data actors: features and predictions are computed for
blocks of ~200k pairs at once (a block's features are dropped before the next), which is what makes 1.4M
pairs take about a minute on two cores in bounded memory; per-context actor calls would rebuild the item
side in every actor and lose the batching, for a model whose prediction step is itself milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from crs_core.artifacts import RunDir, write_table
from crs_core.config import StudentConfig
from crs_core.errors import DataError
from crs_core.schema import TEACHER_STATUS_OK, Catalog, Sample, read_embeddings
from crs_core.student.feature_scorer import FeatureScorer, fidelity
from crs_core.student.features import (
    FEATURE_NAMES,
    ContextSide,
    ItemSide,
    context_side,
    item_side,
    pair_features,
)

OOF_FILE = "oof.parquet"
OOF_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("item_id", pa.int64(), nullable=False),
    pa.field("teacher", pa.float64(), nullable=False),
    pa.field("student", pa.float64(), nullable=False),  # calibrated out-of-fold score
    pa.field("gold", pa.bool_(), nullable=False),
])


def _aligned(path: Path, keys: Sequence[str]) -> np.ndarray:
    found, matrix = read_embeddings(path)
    index = {k: n for n, k in enumerate(found)}
    missing = [k for k in keys if k not in index]
    if missing:
        raise DataError(path, f"no embedding for {len(missing)} keys, e.g. {missing[0]!r}: embed is out of step")
    return matrix[[index[k] for k in keys]]


def build_sides(run: RunDir, samples: Sequence[Sample], catalog: Catalog) -> tuple[ItemSide, ContextSide]:
    """Item and context sides of the features from items, train samples and the embed stage's item vectors."""
    items = item_side(catalog, _aligned(run.path("embeddings", "items.parquet"), [str(i) for i in catalog.item_ids]))
    return items, context_side(samples, catalog, items)


def judged_pairs(teacher: pa.Table, samples: Sequence[Sample], catalog: Catalog) -> dict[str, np.ndarray]:
    """The teacher's usable rows as index arrays: context row, catalog row, score, gold flag, sample id."""
    row_of = {s.sample_id: n for n, s in enumerate(samples)}
    keep = {"c": [], "i": [], "y": [], "gold": [], "sample_id": [], "item_id": []}
    for r in teacher.select(["sample_id", "item_id", "score", "status"]).to_pylist():
        if r["sample_id"] not in row_of or r["item_id"] not in catalog:
            raise DataError("teacher.parquet", f"pair ({r['sample_id']}, {r['item_id']}) is not a train sample and "
                                               "catalog item: teacher and prepare are out of step")
        if r["status"] != TEACHER_STATUS_OK or r["score"] is None:
            continue
        c = row_of[r["sample_id"]]
        keep["c"].append(c)
        keep["i"].append(catalog.column(r["item_id"]))
        keep["y"].append(float(r["score"]))
        keep["gold"].append(r["item_id"] in samples[c].targets)
        keep["sample_id"].append(r["sample_id"])
        keep["item_id"].append(r["item_id"])
    return {k: np.asarray(v) for k, v in keep.items()}


def trees_params(config: StudentConfig) -> dict:
    t = config.trees
    return {"max_iter": t.max_iter, "learning_rate": t.learning_rate, "max_leaf_nodes": t.max_leaf_nodes,
            "min_samples_leaf": t.min_samples_leaf, "l2_regularization": t.l2_regularization}


def train_feature_student(config: StudentConfig, seed: int, teacher: pa.Table, samples: Sequence[Sample],
                          catalog: Catalog, run: RunDir, out_dir: Path) -> dict:
    """Fit the feature student on every judged pair, save it and its out-of-fold predictions into `out_dir`;
    returns the distill summary with grouped out-of-fold agreement."""
    pairs = judged_pairs(teacher, samples, catalog)
    if len(pairs["y"]) == 0:
        raise ValueError("no usable teacher rows (every row failed or the table is empty)")
    judged = np.unique(pairs["c"])  # only the judged contexts' features are needed: cost does not grow with train
    items, contexts = build_sides(run, [samples[r] for r in judged], catalog)
    x = features_of(items, contexts, np.searchsorted(judged, pairs["c"]), pairs["i"])
    scorer = FeatureScorer(FEATURE_NAMES, trees_params(config))
    oof = scorer.fit(x, pairs["y"], pairs["sample_id"], config.folds, seed)
    agree = fidelity(pairs["y"], oof, pairs["gold"])
    summary = {"kind": "features", "train_pairs": int(len(pairs["y"])), "contexts": int(len(set(pairs["sample_id"]))),
               "failed_excluded": teacher.num_rows - int(len(pairs["y"])), "folds": config.folds,
               "holdout_mae": agree["mae"], "holdout_spearman": agree["spearman"], "oof": agree}
    scorer.save(out_dir, summary)
    write_table(out_dir / OOF_FILE, pa.table({
        "sample_id": pa.array(pairs["sample_id"].tolist(), pa.string()),
        "item_id": pa.array(pairs["item_id"].tolist(), pa.int64()),
        "teacher": pa.array(pairs["y"], pa.float64()), "student": pa.array(oof, pa.float64()),
        "gold": pa.array(pairs["gold"].tolist(), pa.bool_())}, schema=OOF_SCHEMA), OOF_SCHEMA)
    return summary


def context_blocks(c: np.ndarray, block: int = 200_000) -> Iterator[slice]:
    """Slices of about `block` pairs that never split a context (c sorted), so memory is bounded by the block."""
    start = 0
    while start < len(c):
        end = min(len(c), start + block)
        while end < len(c) and c[end] == c[end - 1]:
            end += 1
        yield slice(start, end)
        start = end


def features_of(items: ItemSide, contexts: ContextSide, c: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Features of the pairs, computed in blocks of whole contexts (when c is sorted by context)."""
    parts = [pair_features(contexts, items, c[b], i[b]) for b in context_blocks(c)]
    return np.concatenate(parts) if parts else np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)


def score_feature_rows(student_dir: Path, rows: Sequence[dict], samples: Sequence[Sample], catalog: Catalog,
                       run: RunDir) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Score every (context, item) of `rows` ({sample_id, item_ids}) with the saved feature student:
    (sample ids, item ids, calibrated scores), in row order."""
    scorer = FeatureScorer.load(student_dir)
    if tuple(scorer.feature_names) != FEATURE_NAMES:
        raise DataError(student_dir / "student.json", "saved with other features than this code computes; "
                                                      "rerun distill", field="feature_names")
    items, contexts = build_sides(run, samples, catalog)
    row_of = {s.sample_id: n for n, s in enumerate(samples)}
    c = np.concatenate([np.full(len(r["item_ids"]), row_of[r["sample_id"]]) for r in rows])
    item_ids = np.concatenate([np.asarray(r["item_ids"], dtype=np.int64) for r in rows])
    column = {int(item): n for n, item in enumerate(catalog.item_ids)}
    i = np.array([column[int(item)] for item in item_ids])
    order = np.argsort(c, kind="stable")
    c, i = c[order], i[order]
    scores = np.empty(len(c), dtype=np.float32)
    for block in context_blocks(c):  # features live one block at a time: memory does not grow with the pairs
        scores[order[block]] = scorer.predict(pair_features(contexts, items, c[block], i[block]))
    sample_ids = [r["sample_id"] for r in rows for _ in r["item_ids"]]
    return sample_ids, item_ids, scores
