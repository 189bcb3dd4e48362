"""Retrieval benchmarks: rank quality against recorded judgments, and faiss vs numpy speed.

    python benchmarks/retrieval.py quality --run-dir runs/inspired/default \
        --judgments $CRS_DATA_DIR/inspired/teacher/llm_judgments_train.jsonl.gz [--setting NAME=key=v,key=v ...]
    python benchmarks/retrieval.py speed [--queries 10000] [--items 6576] [--dim 384] [--k 50]

`quality` measures every retrieval setting in one run on a prepared and embedded run directory (its
embeddings are reused; only the ranking changes). Per setting: the mean judged score of NON-GOLD pairs
in rank bands 1-10 / 11-25 / 26-50 / not in the top-50, with the number of judged pairs that fall in each
band under THIS setting (the judged pairs were drawn from one MiniLM top-50, so other retrievers put fewer
of them in the top-50); the top-10 band minus the 26-50 band; Spearman of the retrieval score with the
judgment over every judged pair (each judged context ranked over the whole catalog); candidate recall@K of
targets not mentioned before on valid and test. Choose settings on valid and the judgments, not test.
Prints a Markdown table (for benchmarks/results.md) and writes retrieval_quality.json next to this script.

`speed` (defaults: ReDial scale, 6,576 items, MiniLM's 384 dimensions) prints queries/s of faiss and a
chunked numpy brute force, their ratio and whether the top-k sets agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from crs_core.config import RetrievalConfig, load_config
from crs_core.data.prepared import load_prepared
from crs_core.lexical import LexicalIndex
from crs_core.retrieval_report import rank_band_report, read_judgments, top_band_lift
from crs_core.schema import read_embeddings
from crs_core.stages.embed import ITEMS
from crs_core.stages.retrieve import candidate_recall, candidates_table, retrieve, top_k_inner_product

CHUNK = 1024


def numpy_top_k(queries: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k by a matrix product per chunk of queries and argpartition, sorted best first."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), CHUNK):
        scores = queries[start:start + CHUNK] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start:start + CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


SETTINGS = {
    "dense (before)": "method=dense,exclude_mentioned=false",
    "dense, mentioned excluded": "method=dense",
    "lexical only": "lexical_weight=1000",
    "hybrid w=0.5": "lexical_weight=0.5",
    "hybrid w=1 (default)": "",
    "hybrid w=2": "lexical_weight=2",
    "hybrid w=1, no recency": "lexical.decay=1.0",
    "hybrid w=1, seeker turns only": "lexical.recommender_turns=0",
    "hybrid w=1, no cited-film evidence": "lexical.cited_person=0,lexical.cited_genre=0",
    "hybrid w=1, people x2": "lexical.person=2",
}


def retrieval_settings(overrides: str) -> RetrievalConfig:
    """RetrievalConfig defaults updated by `key=value,key=value` (keys as under `retrieval:` in YAML)."""
    return load_config(overrides=[f"retrieval.{text}" for text in overrides.split(",") if text]).retrieval


def measure(settings: RetrievalConfig, run_dir: Path, judgments, data, item_ids: np.ndarray,
            item_vectors: np.ndarray) -> dict:
    items = [data.catalog.get(int(i)) for i in item_ids]
    lexical = LexicalIndex(items, settings.lexical)
    queries = {}
    for split in ("train", "valid", "test"):
        keys, matrix = read_embeddings(run_dir / "embeddings" / f"{split}.parquet")
        queries[split] = dict(zip(keys, matrix))
    judged_ids = set(judgments.column("sample_id").to_pylist())
    judged = [s for s in data.samples["train"] if s.sample_id in judged_ids]
    whole_catalog = dataclasses.replace(settings, top_k=len(item_ids))
    result = {}
    for split, samples, split_settings in (("train", judged, whole_catalog), ("valid", data.samples["valid"], settings),
                                           ("test", data.samples["test"], settings)):
        vectors = np.stack([queries[split][s.sample_id] for s in samples])
        scores, indices = retrieve(vectors, item_vectors, items, samples, split_settings, lexical)
        table = candidates_table([s.sample_id for s in samples], item_ids, scores, indices)
        if split == "train":
            result["report"] = rank_band_report(table, judgments, samples, top_k=settings.top_k)
        else:
            result[split] = candidate_recall(table, samples)
    return result


def quality(args: argparse.Namespace) -> None:
    run_dir = Path(args.run_dir)
    data = load_prepared(run_dir)
    judgments = read_judgments(Path(args.judgments))
    keys, item_vectors = read_embeddings(run_dir / "embeddings" / f"{ITEMS}.parquet")
    item_ids = np.array([int(k) for k in keys], dtype=np.int64)
    chosen = dict(s.split("=", 1) for s in args.setting) if args.setting else SETTINGS
    rows = []
    print("| setting | 1-10 | 11-25 | 26-50 | not in top-50 | top-10 minus 26-50 | Spearman | "
          "valid R@50 new | test R@50 new | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, overrides in chosen.items():
        start = time.perf_counter()
        result = measure(retrieval_settings(overrides), run_dir, judgments, data, item_ids, item_vectors)
        seconds = time.perf_counter() - start
        report = result["report"]
        bands = " | ".join("-" if b["mean"] is None else f"{b['mean']:.2f} (n={b['n']})"
                           for b in report["bands"].values())
        lift = top_band_lift(report)
        print(f"| {name} | {bands} | {'-' if lift is None else f'{lift:+.2f}'} | {report['spearman']:.3f} | "
              f"{100 * result['valid']['recall_new']:.1f} | {100 * result['test']['recall_new']:.1f} | {seconds:.1f} |",
              flush=True)
        rows.append({"setting": name, "overrides": overrides, "seconds": round(seconds, 2), **result})
    out = Path(__file__).with_name("retrieval_quality.json")
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written: {out.name}")


def speed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    queries, items = unit_rows(rng, args.queries, args.dim), unit_rows(rng, args.items, args.dim)

    start = time.perf_counter()
    _, faiss_idx = top_k_inner_product(queries, items, args.k)
    faiss_s = time.perf_counter() - start
    start = time.perf_counter()
    numpy_idx = numpy_top_k(queries, items, args.k)
    numpy_s = time.perf_counter() - start

    same_sets = float(np.mean([set(a) == set(b) for a, b in zip(faiss_idx, numpy_idx)]))
    result = {
        "queries": args.queries, "items": args.items, "dim": args.dim, "k": args.k,
        "faiss_queries_per_s": round(args.queries / faiss_s, 1),
        "numpy_queries_per_s": round(args.queries / numpy_s, 1),
        "faiss_speedup": round(numpy_s / faiss_s, 2),
        "identical_top_k_sets": same_sets,
    }
    print(f"{'method':<8} {'seconds':>8} {'queries/s':>10}")
    print(f"{'faiss':<8} {faiss_s:>8.3f} {result['faiss_queries_per_s']:>10,.0f}")
    print(f"{'numpy':<8} {numpy_s:>8.3f} {result['numpy_queries_per_s']:>10,.0f}")
    print(f"faiss speed-up x{result['faiss_speedup']}; "
          f"identical top-{args.k} sets for {100 * same_sets:.1f}% of queries")
    out = Path(__file__).with_name("retrieval.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    rank = modes.add_parser("quality", help="rank bands, Spearman and recall per retrieval setting")
    rank.add_argument("--run-dir", required=True, help="a run directory after prepare + embed")
    rank.add_argument("--judgments", required=True, help="recorded judgments (.jsonl[.gz]) or a teacher.parquet")
    rank.add_argument("--setting", action="append",
                      help="NAME=key=value,key=value (repeatable; default: a preset list)")
    rank.set_defaults(func=quality)
    fast = modes.add_parser("speed", help="faiss vs numpy queries/s on random unit vectors")
    fast.add_argument("--queries", type=int, default=10_000)
    fast.add_argument("--items", type=int, default=6_576)
    fast.add_argument("--dim", type=int, default=384)
    fast.add_argument("--k", type=int, default=50)
    fast.add_argument("--seed", type=int, default=0)
    fast.set_defaults(func=speed)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
