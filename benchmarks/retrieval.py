"""Retrieval throughput: faiss IndexFlatIP vs chunked numpy brute force, same vectors, one run.

    python benchmarks/retrieval.py [--queries 10000] [--items 6576] [--dim 384] [--k 50]

Defaults are ReDial scale (6,576 catalog items, MiniLM's 384 dimensions). Prints queries/s for both, the
ratio, and whether the top-k index sets agree; writes the figures as JSON next to this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from crs_core.retrieval import top_k_inner_product

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=6_576)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
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
    print(f"faiss speed-up x{result['faiss_speedup']}; identical top-{args.k} sets for {100 * same_sets:.1f}% of queries")
    out = Path(__file__).with_name("retrieval.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out.name}")


if __name__ == "__main__":
    main()
