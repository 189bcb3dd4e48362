"""Stage `retrieve`: each context's top-K catalog items, from content alone (no collaborative statistics).

`retrieval.method: dense` ranks by embedding inner product (exact faiss search). `hybrid` adds what the
dialogue literally says (crs_core/lexical.py: genres asked for or refused, people named, films cited and
their KG neighbours): per context, both scores over the whole catalog are standardised and summed,
z(dense) + lexical_weight * z(lexical). With `exclude_mentioned`, films already mentioned in the context
are never returned. Writes `candidates/{train,valid,test}.parquet` (CANDIDATES_SCHEMA, rank 0 = best;
`similarity` is the score that ranked them). Candidate recall says how many gold targets the later
stages can possibly see.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crs_core.artifacts import RunDir, write_table
from crs_core.config import Config, RetrievalConfig
from crs_core.data.prepared import SPLITS, load_prepared
from crs_core.errors import ConfigError, DataError
from crs_core.lexical import LexicalIndex
from crs_core.schema import CANDIDATES_SCHEMA, Item, Sample, read_embeddings
from crs_core.stages.base import Stage, shown
from crs_core.stages.embed import ITEMS

OUTPUTS = tuple(f"candidates/{split}.parquet" for split in SPLITS)
CHUNK = 1024  # contexts scored against the whole catalog at once (hybrid)


def _gpu_resources():
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        raise ConfigError("retrieval.use_gpu: this faiss has no GPU support or sees no GPU "
                          "(install the gpu extra, faiss-gpu, on a GPU node; faiss-cpu and faiss-gpu never together)")
    return faiss.StandardGpuResources()


def top_k_inner_product(queries: np.ndarray, items: np.ndarray, k: int,
                        use_gpu: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices), each (n_queries, min(k, n_items)), best first, by exact inner product."""
    import faiss

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    if queries.ndim != 2 or items.ndim != 2 or (len(queries) and queries.shape[1] != items.shape[1]):
        raise ValueError(f"queries {queries.shape} and items {items.shape} must be 2-D with the same width")
    k = min(k, len(items))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), k), dtype=np.float32), np.zeros((len(queries), k), dtype=np.int64)
    index = faiss.IndexFlatIP(items.shape[1])
    if use_gpu:
        resources = _gpu_resources()  # a local, so it outlives the search below
        index = faiss.index_cpu_to_gpu(resources, 0, index)
    index.add(items)
    scores, indices = index.search(queries, k)
    return scores, indices.astype(np.int64)


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each row standardised to mean 0 and standard deviation 1 (a constant row becomes all 0)."""
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def hybrid_scores(dense: np.ndarray, lexical: np.ndarray, lexical_weight: float) -> np.ndarray:
    """z(dense) + lexical_weight * z(lexical) per row: the two scales never need calibrating to each other."""
    return zscore_rows(dense) + lexical_weight * zscore_rows(lexical)


def mask_mentioned(scores: np.ndarray, indices: np.ndarray, item_ids: np.ndarray,
                   samples: Sequence[Sample]) -> np.ndarray:
    """`scores` with -inf where `indices` points at a film already mentioned in that row's context."""
    mentioned = np.array([np.isin(item_ids[row], s.context_items) for row, s in zip(indices, samples)],
                         dtype=bool).reshape(indices.shape)
    return np.where(mentioned, -np.inf, scores)


def top_k_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices) of each row's k best columns, best first (ties: lower column first)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (len(scores), 1))
    order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
    indices = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, indices, axis=1), indices


def retrieve(queries: np.ndarray, item_vectors: np.ndarray, items: Sequence[Item], samples: Sequence[Sample],
             settings: RetrievalConfig, lexical: LexicalIndex | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, indices) of each sample's top_k items under `settings`; excluded films score -inf and
    sort last (candidates_table leaves them out). `lexical` is built from `items` when not given."""
    item_ids = np.array([item.item_id for item in items], dtype=np.int64)
    k = min(settings.top_k, len(item_ids))
    if settings.method == "dense":
        spare = max((len(s.context_items) for s in samples), default=0) if settings.exclude_mentioned else 0
        scores, indices = top_k_inner_product(queries, item_vectors, k + spare, settings.use_gpu)
        if settings.exclude_mentioned:
            scores, order = top_k_rows(mask_mentioned(scores, indices, item_ids, samples), k)
            indices = np.take_along_axis(indices, order, axis=1)
        return scores[:, :k], indices[:, :k]
    if lexical is None:
        lexical = LexicalIndex(items, settings.lexical)
    all_columns = np.arange(len(item_ids))
    parts = []
    for start in range(0, len(samples), CHUNK):
        chunk = samples[start:start + CHUNK]
        fused = hybrid_scores(queries[start:start + CHUNK] @ item_vectors.T, lexical.scores(chunk),
                              settings.lexical_weight)
        if settings.exclude_mentioned:
            fused = mask_mentioned(fused, np.broadcast_to(all_columns, fused.shape), item_ids, chunk)
        parts.append(top_k_rows(fused, k))
    if not parts:
        return np.zeros((0, k), dtype=np.float32), np.zeros((0, k), dtype=np.int64)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def candidates_table(sample_ids: Sequence[str], item_ids: np.ndarray, scores: np.ndarray,
                     indices: np.ndarray) -> pa.Table:
    """Long format: one row per (sample, candidate), samples in input order, ranks ascending.

    Entries scoring -inf (excluded films, sorted last) are left out, so a row may hold fewer than k.
    """
    n, k = indices.shape
    keep = np.isfinite(scores).reshape(-1) if scores.size else np.ones(0, dtype=bool)
    return pa.table({
        "sample_id": pa.array(np.repeat(np.asarray(sample_ids, dtype=object), k)[keep], pa.string()),
        "item_id": pa.array(np.asarray(item_ids, dtype=np.int64)[indices].reshape(-1)[keep]),
        "rank": pa.array(np.tile(np.arange(k, dtype=np.int32), n)[keep]),
        "similarity": pa.array(scores.reshape(-1).astype(np.float32)[keep]),
    }, schema=CANDIDATES_SCHEMA)


def candidate_recall(candidates: pa.Table, samples: Sequence[Sample]) -> dict:
    """Share of gold (sample, target) pairs whose target is among the sample's candidates.

    `recall`/`n` count every pair; `recall_new`/`n_new` only targets not already in context_items (the
    pairs the evaluation counts). A sample without candidates counts as all misses; recall is None at n=0.
    """
    found: dict[str, set[int]] = {}
    for sample_id, item_id in zip(candidates.column("sample_id").to_pylist(), candidates.column("item_id").to_pylist()):
        found.setdefault(sample_id, set()).add(item_id)
    hits = n = hits_new = n_new = 0
    for sample in samples:
        pool = found.get(sample.sample_id, set())
        for target in sample.targets:
            hit = target in pool
            hits, n = hits + hit, n + 1
            if target not in sample.context_items:
                hits_new, n_new = hits_new + hit, n_new + 1
    return {"recall": hits / n if n else None, "n": n,
            "recall_new": hits_new / n_new if n_new else None, "n_new": n_new}


class Retrieve(Stage):
    """Top-K candidates for every split's contexts from the embeddings (no collaborative data)."""

    name = "retrieve"
    about = "the top-{config.retrieval.top_k} candidate items of every context"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return ([run.path("embeddings", f"{group}.parquet") for group in (ITEMS, *SPLITS)]
                + [run.path("samples", f"{split}.parquet") for split in SPLITS])

    def outputs(self, config: Config) -> list[str]:
        return list(OUTPUTS)

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"retrieval": dataclasses.asdict(config.retrieval)}

    def work(self, config: Config, run: RunDir) -> dict:
        data = load_prepared(run.root)
        samples = data.samples
        items_path = run.path("embeddings", f"{ITEMS}.parquet")
        item_keys, item_vectors = read_embeddings(items_path)
        item_ids = np.array([int(key) for key in item_keys], dtype=np.int64)
        if any(int(i) not in data.catalog for i in item_ids):
            raise DataError(items_path, "keys are not the catalog's item ids: rerun the embed stage", field="key")
        items = [data.catalog.get(int(i)) for i in item_ids]
        settings = config.retrieval
        lexical = LexicalIndex(items, settings.lexical) if settings.method == "hybrid" else None
        k = min(settings.top_k, len(item_ids))
        summary: dict = {"top_k": k, "items": len(item_ids), "method": settings.method, "splits": {}}
        start = time.perf_counter()
        for split in SPLITS:
            path = run.path("embeddings", f"{split}.parquet")
            sample_ids, queries = read_embeddings(path)
            by_id = {s.sample_id: s for s in samples[split]}
            if sorted(sample_ids) != sorted(by_id):
                raise DataError(path, f"keys do not match samples/{split}.parquet: rerun the embed stage")
            ordered = [by_id[sample_id] for sample_id in sample_ids]
            scores, indices = retrieve(queries, item_vectors, items, ordered, settings, lexical)
            table = candidates_table(sample_ids, item_ids, scores, indices)
            write_table(run.path("candidates", f"{split}.parquet"), table, CANDIDATES_SCHEMA)
            summary["splits"][split] = {"samples": len(sample_ids), **candidate_recall(table, samples[split])}
        summary["seconds"] = round(time.perf_counter() - start, 3)
        return summary

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        k = figures["top_k"]
        lines = [f"candidate recall@{k} (gold targets among the retrieved top-{k}, retrieval "
                 f"{figures.get('method', 'dense')}; no collaborative data)",
                 f"  {'split':<6} {'all targets':>16} {'not mentioned before':>22}"]
        for split, r in figures["splits"].items():
            lines.append(f"  {split:<6} {shown(r['recall'], '.1%'):>8} (n={r['n']:<5}) "
                         f"{shown(r['recall_new'], '.1%'):>10} (n={r['n_new']})")
        return lines


STAGE = Retrieve()
