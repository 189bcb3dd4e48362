"""Stage `embed`: item descriptions and dialogue contexts -> unit vectors, on a Ray Data actor pool.

Writes `embeddings/items.parquet` (key = str(item_id)) and `embeddings/{train,valid,test}.parquet`
(key = sample_id) in EMBEDDINGS_SCHEMA. Every text goes through one actor pool in one pass (items are
"document"s, contexts "query"s), so each actor loads the model once for the whole stage.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crs_core.artifacts import RunDir, write_table
from crs_core.config import ActorPoolConfig, Config, EncoderConfig
from crs_core.data.prepared import SPLITS, PreparedData, load_prepared
from crs_core.encoders import DOCUMENT, KINDS, QUERY, Encoder, build_encoder
from crs_core.memory import release_free_memory
from crs_core.progress import progress
from crs_core.schema import EMBEDDINGS_SCHEMA, Sample, embeddings_table
from crs_core.stages.base import Stage
from crs_core.text import render_context, seeker_query

ITEMS = "items"
GROUPS = (ITEMS, *SPLITS)
OUTPUTS = tuple(f"embeddings/{group}.parquet" for group in GROUPS)
TEXT_VERSION = 1  # bump when the texts handed to the encoder change, so old embeddings are not reused
TEXTS_SCHEMA = pa.schema([("row", pa.int64()), ("group", pa.string()), ("key", pa.string()),
                          ("kind", pa.string()), ("text", pa.string())])


def query_text(sample: Sample, seeker_turns: int | None) -> str:
    """A context's retrieval query: the seeker's newest `seeker_turns` turns, or the whole dialogue when None
    (the encoder then truncates it from the left, so the newest turns stay)."""
    return render_context(sample) if seeker_turns is None else seeker_query(sample, seeker_turns)


def embedding_texts(data: PreparedData, seeker_turns: int | None = None) -> pa.Table:
    """One row per text to embed: catalog descriptions (documents), then each split's contexts (queries)."""
    rows = [(ITEMS, str(item.item_id), DOCUMENT, item.description) for item in data.catalog.items]
    rows += [(split, s.sample_id, QUERY, query_text(s, seeker_turns)) for split in SPLITS for s in data.samples[split]]
    return pa.Table.from_pylist(
        [{"row": i, "group": g, "key": k, "kind": kind, "text": t} for i, (g, k, kind, t) in enumerate(rows)],
        schema=TEXTS_SCHEMA,
    )


class EmbedBatch:
    """`map_batches` callable: the model is loaded once per actor; adds an "embedding" column."""

    def __init__(self, encoder_config: EncoderConfig):
        self.encoder = build_encoder(encoder_config)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts, kinds = batch["text"], batch["kind"]
        out = np.zeros((len(texts), self.encoder.dim), dtype=np.float32)
        for kind in KINDS:
            rows = np.flatnonzero(kinds == kind)
            if len(rows):
                out[rows] = self.encoder.encode([str(t) for t in texts[rows]], kind)
        release_free_memory()
        return {**batch, "embedding": out}


def embed_with_ray(texts: pa.Table, encoder_config: EncoderConfig, pool: ActorPoolConfig) -> np.ndarray:
    """Embeddings of `texts` (TEXTS_SCHEMA) in the table's row order, computed on an actor pool.

    The table is one block, so it is repartitioned into about one block per batch: every actor gets
    work and the progress bar moves. Ray Data may return blocks out of order; rows are re-aligned by
    the "row" column.
    """
    import ray
    import ray.data

    if ray.is_initialized():  # else Ray Data starts a local Ray on every CPU of the machine
        pool.check_fits("encoder.pool", ray.cluster_resources().get("CPU", 0.0))
    n = texts.num_rows
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    blocks = max(pool.actors, math.ceil(n / pool.batch_size))
    ds = ray.data.from_arrow(texts).repartition(blocks).map_batches(
        EmbedBatch,
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        batch_size=pool.batch_size,
        batch_format="numpy",
        fn_constructor_kwargs={"encoder_config": encoder_config},
    )
    rows, vectors = [], []
    done = progress(total=n, desc="embed: texts", on_terminal=False)
    for batch in ds.select_columns(["row", "embedding"]).iter_batches(batch_format="numpy", batch_size=None):
        rows.append(batch["row"])
        vectors.append(batch["embedding"])
        done.update(len(batch["row"]))
    rows_all = np.concatenate(rows)
    if sorted(rows_all.tolist()) != list(range(n)):
        raise RuntimeError(f"Ray Data returned {len(rows_all)} rows for {n} inputs (lost or duplicated rows)")
    out = np.empty((n, vectors[0].shape[1]), dtype=np.float32)
    out[rows_all] = np.concatenate(vectors)
    return out


def embed_in_process(encoder: Encoder, texts: Sequence[str], kind: str, batch_size: int = 64) -> np.ndarray:
    """The same encoding as the Ray path, in a plain loop in this process (reference and benchmark)."""
    parts = [encoder.encode(list(texts[i:i + batch_size]), kind) for i in range(0, len(texts), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)


class Embed(Stage):
    """The catalog and every split's contexts to vectors; the actor pool settings are left out of the
    fingerprint: they change speed, not the vectors."""

    name = "embed"
    about = "item descriptions and dialogue contexts to vectors (encoder {config.encoder.kind})"
    needs_ray = True

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return [run.path("items.parquet"), *(run.path("samples", f"{s}.parquet") for s in SPLITS)]

    def outputs(self, config: Config) -> list[str]:
        return list(OUTPUTS)

    def settings(self, config: Config, run: RunDir) -> dict:
        encoder_settings = {k: v for k, v in dataclasses.asdict(config.encoder).items() if k != "pool"}
        return {"encoder": encoder_settings, "text_version": TEXT_VERSION}

    def work(self, config: Config, run: RunDir) -> dict:
        texts = embedding_texts(load_prepared(run.root), config.encoder.query_seeker_turns)
        pool = config.encoder.pool
        start = time.perf_counter()
        matrix = embed_with_ray(texts, config.encoder, pool)
        seconds = time.perf_counter() - start
        groups = np.asarray(texts.column("group").to_pylist())
        keys = np.asarray(texts.column("key").to_pylist(), dtype=object)
        counts = {}
        for group in GROUPS:
            rows = np.flatnonzero(groups == group)
            write_table(run.path("embeddings", f"{group}.parquet"), embeddings_table(keys[rows], matrix[rows]),
                        EMBEDDINGS_SCHEMA)
            counts[group] = len(rows)
        return {
            "encoder": config.encoder.model or config.encoder.kind,
            "dim": int(matrix.shape[1]) if matrix.size else 0,
            "counts": counts,
            "rows": texts.num_rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(texts.num_rows / seconds, 1) if seconds > 0 else None,
            "actors": pool.actors,
            "num_cpus_per_actor": pool.num_cpus,
            "num_gpus_per_actor": pool.num_gpus,
        }

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        f = figures
        return [(f"encoder {f['encoder']} (dim {f['dim']}): {f['rows']} texts in {f['seconds']}s "
                 f"({f['rows_per_s']} rows/s, {f['actors']} actor(s))")]


STAGE = Embed()
