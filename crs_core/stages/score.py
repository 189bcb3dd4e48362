"""Stage `score` (after `distill`): score EVERY retrieved (train sample, candidate) pair with the student on
Ray Data actors.

One Ray Data row is one context with all its ~50 candidates, so an actor scores them in one tensor batch
(`student.pool.batch_size` pairs per forward pass) instead of 50 one-pair calls. The student is trained in
the driver and saved under `checkpoints/student/`; each actor loads it once from there (a cluster needs
the run directory on shared storage).
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from crs_core.artifacts import RunDir, read_table, write_table
from crs_core.config import ActorPoolConfig, Config
from crs_core.errors import DataError
from crs_core.memory import release_free_memory
from crs_core.progress import progress
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    SCORES_SCHEMA,
    Catalog,
    Sample,
    table_to_catalog,
    table_to_samples,
)
from crs_core.stages.base import Stage, shown
from crs_core.stages.distill import STUDENT_DIR, agreement
from crs_core.student import StudentScorer, expected_score
from crs_core.text import item_text, render_context

CANDIDATES = "candidates/train.parquet"
SCORES = "scores.parquet"
PARTS_DIR = "scores.parts"  # finished blocks of a scoring run, removed once scores.parquet is written
HISTOGRAM_EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)


def candidate_rows(candidates: pa.Table, samples: Sequence[Sample], catalog_ids: set[int],
                   max_candidates: int | None = None) -> list[dict]:
    """One row per context: {sample_id, context, item_ids (retrieval rank order)}, in sample order,
    keeping the `max_candidates` best-ranked candidates of each context when given.

    Checked here, in the driver, so that stale artifacts fail with a clear message, not inside an actor."""
    by_id = {s.sample_id: s for s in samples}
    ranked: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for sid, item, rank in zip(*(candidates.column(c).to_pylist() for c in ("sample_id", "item_id", "rank"))):
        if sid not in by_id or item not in catalog_ids:
            raise DataError(CANDIDATES, f"pair ({sid!r}, {item}) is not a train sample and catalog item: "
                                        "retrieve and prepare are out of step")
        ranked[sid].append((rank, item))
    for sid, pairs in ranked.items():
        if len({i for _, i in pairs}) != len(pairs):
            raise DataError(CANDIDATES, f"sample {sid!r} lists a candidate item twice")
    return [{"sample_id": s.sample_id, "context": render_context(s),
             "item_ids": [i for _, i in sorted(ranked[s.sample_id])][:max_candidates]}
            for s in samples if s.sample_id in ranked]


def catalog_rows(samples: Sequence[Sample], catalog: Catalog) -> list[dict]:
    """student.candidates=catalog: every catalog item for every train context (no retriever in the way)."""
    ids = catalog.item_ids.tolist()
    return [{"sample_id": s.sample_id, "context": render_context(s), "item_ids": ids} for s in samples]


def _scores_table(sample_ids: list[str], item_ids: list[int], scores: np.ndarray) -> pa.Table:
    return pa.table({"sample_id": pa.array(sample_ids, pa.string()), "item_id": pa.array(item_ids, pa.int64()),
                     "score": pa.array(np.asarray(scores, dtype=np.float32), pa.float32())})


def score_rows(scorer: StudentScorer, rows: Sequence[dict], item_texts: dict[int, str],
               pairs_per_forward: int) -> pa.Table:
    """Score every (context, candidate) of `rows` batched: `pairs_per_forward` pairs per forward pass."""
    sample_ids = [r["sample_id"] for r in rows for _ in r["item_ids"]]
    contexts = [r["context"] for r in rows for _ in r["item_ids"]]
    item_ids = [int(i) for r in rows for i in r["item_ids"]]
    scores = scorer.score_pairs(contexts, [item_texts[i] for i in item_ids], batch_size=pairs_per_forward)
    return _scores_table(sample_ids, item_ids, scores)


def score_one_pair_at_a_time(scorer: StudentScorer, rows: Sequence[dict], item_texts: dict[int, str]) -> pa.Table:
    """The loop batched scoring is benchmarked against: one forward pass of one full prompt per pair."""
    sample_ids, item_ids, scores = [], [], []
    scorer.train(False)
    with torch.inference_mode():
        for row in rows:
            for item in row["item_ids"]:
                sample_ids.append(row["sample_id"])
                item_ids.append(int(item))
                logits = scorer.logits([row["context"]], [item_texts[int(item)]])
                scores.append(expected_score(torch.softmax(logits.float(), dim=-1).cpu().numpy())[0])
    return _scores_table(sample_ids, item_ids, np.array(scores))


def load_item_texts(items_path: Path) -> dict[int, str]:
    catalog = table_to_catalog(read_table(Path(items_path), ITEMS_SCHEMA))
    return {item.item_id: item_text(item) for item in catalog.items}


class ScoreCandidates:
    """Ray Data callable: loads the saved student and the item texts once per actor."""

    def __init__(self, checkpoint: str, items_path: str, pairs_per_forward: int, engine: str = "hf"):
        from crs_core.student.vllm_scorer import load_scoring_engine

        self.scorer = load_scoring_engine(Path(checkpoint), engine)
        self.item_texts = load_item_texts(Path(items_path))
        self.pairs_per_forward = pairs_per_forward

    def __call__(self, batch: pa.Table) -> pa.Table:
        scores = score_rows(self.scorer, batch.to_pylist(), self.item_texts, self.pairs_per_forward)
        release_free_memory()
        return scores


def _pair_keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(table["sample_id"], pc.cast(table["item_id"], pa.string()), "\x1f")


def read_parts(parts_dir: Path) -> pa.Table:
    """Every finished part of an interrupted scoring run (an unfinished part is a hidden temp file, never read)."""
    files = sorted(parts_dir.glob("part-*.parquet")) if parts_dir.exists() else []
    tables = [read_table(f, SCORES_SCHEMA) for f in files]
    return pa.concat_tables(tables) if tables else SCORES_SCHEMA.empty_table()


def score_with_ray(rows: Sequence[dict], checkpoint: Path, items_path: Path, pool: ActorPoolConfig,
                   parts_dir: Path, engine: str = "hf") -> tuple[pa.Table, int]:
    """Score `rows` on an actor pool (Ray must be initialised), streaming each finished block to
    `parts_dir/part-*.parquet` as it arrives. Contexts already in `parts_dir` (a killed run's work) are not
    scored again. Returns (every (sample, item) exactly once, sorted; pairs scored by this call)."""
    import ray

    pool.check_fits("student.pool", ray.cluster_resources().get("CPU", 0.0))
    done = read_parts(parts_dir)
    done_ids = set(done.column("sample_id").to_pylist())
    todo = [r for r in rows if r["sample_id"] not in done_ids]
    fresh = 0
    if todo:
        rows_per_batch = max(1, pool.batch_size // max(len(r["item_ids"]) for r in todo))  # default: 1 context
        ds = ray.data.from_items(todo, override_num_blocks=min(len(todo), 4 * pool.actors))
        scored = ds.map_batches(
            ScoreCandidates,
            fn_constructor_kwargs={"checkpoint": str(checkpoint), "items_path": str(items_path),
                                   "pairs_per_forward": pool.batch_size, "engine": engine},
            compute=ray.data.ActorPoolStrategy(size=pool.actors),
            num_cpus=pool.num_cpus,
            num_gpus=pool.num_gpus,
            batch_size=rows_per_batch,
            batch_format="pyarrow",
        )
        start = len(list(parts_dir.glob("part-*.parquet"))) if parts_dir.exists() else 0
        pairs = progress(total=sum(len(r["item_ids"]) for r in todo), desc="score: pairs", on_terminal=False)
        for n, part in enumerate(scored.iter_batches(batch_format="pyarrow", batch_size=None)):
            if part.num_rows:  # written as it arrives: a killed run keeps every finished block
                write_table(parts_dir / f"part-{start + n:06d}.parquet", part, SCORES_SCHEMA)
                fresh += part.num_rows
                pairs.update(part.num_rows)
    table = read_parts(parts_dir)
    expected = sum(len(r["item_ids"]) for r in rows)
    if table.num_rows != expected or pc.count_distinct(_pair_keys(table)).as_py() != expected:
        raise RuntimeError(f"scoring produced {table.num_rows} rows for {expected} candidate pairs "
                           f"(parts in {parts_dir})")
    return table.sort_by([("sample_id", "ascending"), ("item_id", "ascending")]), fresh


def score_histogram(scores: np.ndarray) -> dict[str, int]:
    counts, _ = np.histogram(scores, bins=HISTOGRAM_EDGES)
    return {f"{lo:g}-{hi:g}": int(c) for lo, hi, c in zip(HISTOGRAM_EDGES, HISTOGRAM_EDGES[1:], counts)}


class Score(Stage):
    """Writes scores.parquet (SCORES_SCHEMA). The student enters the fingerprint through the fingerprint
    `distill` recorded, so a retrained student rescores."""

    name = "score"
    about = "student {config.student.kind} scores every candidate"
    needs_ray = True

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return [run.path(CANDIDATES), run.path("items.parquet"), run.path("samples", "train.parquet")]

    def outputs(self, config: Config) -> list[str]:
        return [SCORES]

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"student": run.recorded_fingerprint("distill"), "max_candidates": config.student.max_candidates,
                "engine": config.student.engine, "candidates": config.student.candidates}

    def work(self, config: Config, run: RunDir) -> dict:
        candidates_path, items_path, samples_path = self.inputs(config, run)
        samples = table_to_samples(read_table(samples_path, SAMPLES_SCHEMA))
        catalog = table_to_catalog(read_table(items_path, ITEMS_SCHEMA))
        if config.student.candidates == "catalog":
            rows = catalog_rows(samples, catalog)
        else:
            rows = candidate_rows(read_table(candidates_path, CANDIDATES_SCHEMA), samples,
                                  set(catalog.item_ids.tolist()), config.student.max_candidates)
        if not rows:
            raise DataError(candidates_path, "no candidates for any train sample")
        started = time.perf_counter()
        if config.student.kind == "features":
            from crs_core.student.feature_pipeline import score_feature_rows

            table = _scores_table(*score_feature_rows(run.path(STUDENT_DIR), rows, samples, catalog, run))
            table, fresh = table.sort_by([("sample_id", "ascending"), ("item_id", "ascending")]), table.num_rows
        else:
            parts_dir = run.path(PARTS_DIR, self.fingerprint(config, run)[:16])
            table, fresh = score_with_ray(rows, run.path(STUDENT_DIR), items_path, config.student.pool, parts_dir,
                                          config.student.engine)
            shutil.rmtree(run.path(PARTS_DIR))
        seconds = time.perf_counter() - started
        write_table(run.path(SCORES), table, SCORES_SCHEMA)
        features = config.student.kind == "features"
        return {
            "contexts": len(rows),
            "pairs": table.num_rows,
            "scored_now": fresh,
            "resumed": table.num_rows - fresh,
            "seconds": seconds,
            "pairs_per_second": fresh / seconds if seconds > 0 and fresh else None,
            "candidates": config.student.candidates,
            "actors": 0 if features else config.student.pool.actors,
            "engine": "in-process (vectorised)" if features else config.student.engine,
            "agreement": agreement(run.summary("distill")),
            "histogram": score_histogram(table.column("score").to_numpy()),
        }

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        return format_score(figures).splitlines()


def format_score(summary: Mapping[str, Any]) -> str:
    """What `crs score` prints: throughput and where the scores fall (the student's agreement with the teacher
    is distill's)."""
    s = summary
    return "\n".join([
        f"scored {s['pairs']:,} pairs ({s.get('candidates', 'retrieved')} candidates) of "
        f"{s['contexts']:,} contexts in {s['seconds']:.1f} s ({shown(s['pairs_per_second'], '.3f')} pairs/s, "
        + (f"{s['actors']} actor(s)" if s["actors"] else s["engine"])
        + (f"; {s['resumed']:,} kept from an interrupted run)" if s.get("resumed") else ")"),
        "score histogram: " + "  ".join(f"{k}: {v}" for k, v in s["histogram"].items())])


STAGE = Score()
