"""Stage `retrieve`: each context's top-K catalog items by embedding inner product (exact faiss search).

Writes `candidates/{train,valid,test}.parquet` (CANDIDATES_SCHEMA, rank 0 = most similar). Only the
embeddings are used, no collaborative statistics, so the candidates (and everything the teacher
labels later) come from content similarity alone. Candidate recall says how many gold targets the
later stages can possibly see.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import pyarrow as pa

from crs_core.artifacts import RunDir, fingerprint, write_table
from crs_core.config import Config
from crs_core.embed import ITEMS, read_embeddings
from crs_core.errors import ConfigError, DataError
from crs_core.prepare import SPLITS, load_prepared
from crs_core.schema import CANDIDATES_SCHEMA, Sample

OUTPUTS = tuple(f"candidates/{split}.parquet" for split in SPLITS)


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


def candidates_table(sample_ids: Sequence[str], item_ids: np.ndarray, scores: np.ndarray,
                     indices: np.ndarray) -> pa.Table:
    """Long format: one row per (sample, candidate), samples in input order, ranks ascending."""
    n, k = indices.shape
    return pa.table({
        "sample_id": pa.array(np.repeat(np.asarray(sample_ids, dtype=object), k), pa.string()),
        "item_id": pa.array(np.asarray(item_ids, dtype=np.int64)[indices].reshape(-1)),
        "rank": pa.array(np.tile(np.arange(k, dtype=np.int32), n)),
        "similarity": pa.array(scores.reshape(-1).astype(np.float32)),
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
    return {"recall": hits / n if n else None, "n": n, "recall_new": hits_new / n_new if n_new else None, "n_new": n_new}


def run_retrieve(config: Config, run: RunDir, force: bool = False) -> dict:
    """Top-K candidates for every split's contexts unless saved ones match the embeddings and settings."""
    embedding_files = [run.path("embeddings", f"{group}.parquet") for group in (ITEMS, *SPLITS)]
    sample_files = [run.path("samples", f"{split}.parquet") for split in SPLITS]
    fp = fingerprint({"retrieval": dataclasses.asdict(config.retrieval)}, embedding_files + sample_files)
    if not force and run.is_current("retrieve", fp, OUTPUTS):
        return run.summary("retrieve") | {"skipped": True}

    samples = load_prepared(run.root).samples
    item_keys, item_vectors = read_embeddings(embedding_files[0])
    item_ids = np.array([int(key) for key in item_keys], dtype=np.int64)
    k = min(config.retrieval.top_k, len(item_ids))
    summary: dict = {"top_k": k, "items": len(item_ids), "splits": {}}
    start = time.perf_counter()
    for split, path in zip(SPLITS, embedding_files[1:]):
        sample_ids, queries = read_embeddings(path)
        if sorted(sample_ids) != sorted(s.sample_id for s in samples[split]):
            raise DataError(path, f"keys do not match samples/{split}.parquet: rerun the embed stage")
        scores, indices = top_k_inner_product(queries, item_vectors, k, config.retrieval.use_gpu)
        table = candidates_table(sample_ids, item_ids, scores, indices)
        write_table(run.path("candidates", f"{split}.parquet"), table, CANDIDATES_SCHEMA)
        summary["splits"][split] = {"samples": len(sample_ids), **candidate_recall(table, samples[split])}
    summary["seconds"] = round(time.perf_counter() - start, 3)
    run.mark_done("retrieve", fp, OUTPUTS, summary)
    return summary | {"skipped": False}
