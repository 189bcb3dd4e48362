"""How well a retriever's ranks agree with recorded relevance judgments (0-4 per (sample, item) pair).

Judged pairs are a fixed sample: per context the gold targets plus a few candidates drawn from the
bands of ONE retriever's top-50. A different retriever is measured on the same pairs by where IT ranks
them: a band's mean covers only the judged pairs that fall into that band under the retriever being
measured (their count is reported with it), and pairs it did not retrieve go to "not in top-K". Gold
pairs (the item the human recommender named) are left out of the band means, since every retriever
is judged on the candidates it adds beside them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import spearmanr

from crs_core.artifacts import read_table
from crs_core.errors import DataError
from crs_core.schema import TEACHER_SCHEMA, TEACHER_STATUS_OK, Sample

BANDS = ((0, 10), (10, 25), (25, 50))  # 0-based rank ranges [start, stop): ranks 1-10, 11-25, 26-50
JUDGMENTS_SCHEMA = pa.schema([pa.field("sample_id", pa.string(), nullable=False),
                              pa.field("item_id", pa.int64(), nullable=False),
                              pa.field("score", pa.float64(), nullable=False)])


def band_name(start: int, stop: int | None) -> str:
    return f"{start + 1}-{stop}" if stop is not None else f"not in top-{start}"


def read_judgments(path: Path) -> pa.Table:
    """(sample_id, item_id, score) from recorded judgments (JSONL, optionally .gz) or a teacher.parquet.

    Failed teacher rows (no score) are dropped; a JSONL line without the three fields is refused.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        table = read_table(path, TEACHER_SCHEMA)
        table = table.filter(pc.equal(table.column("status"), TEACHER_STATUS_OK))
        return table.select(["sample_id", "item_id", "score"]).cast(JUDGMENTS_SCHEMA)
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"not JSON: {exc.msg}", line=line_no) from None
            for name, kind in (("sample_id", str), ("item_id", int), ("score", (int, float))):
                if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
                    raise DataError(path, f"missing or not {getattr(kind, '__name__', 'a number')}", line=line_no,
                                    field=name)
            rows.append({"sample_id": record["sample_id"], "item_id": record["item_id"],
                         "score": float(record["score"])})
    return pa.Table.from_pylist(rows, schema=JUDGMENTS_SCHEMA)


def rank_band_report(candidates: pa.Table, judgments: pa.Table, samples: Sequence[Sample],
                     top_k: int = 50) -> dict:
    """Mean judged score of non-gold pairs per rank band, and Spearman(similarity, score).

    `candidates` is CANDIDATES_SCHEMA (rank 0 = best); ranks >= `top_k` and judged pairs absent from it
    fall in the "not in top-K" band. Spearman runs over every judged pair (gold included) that has a
    similarity in `candidates`; list more than top_k candidates per sample to cover them all. Only
    judgments of `samples` count (their targets say which pairs are gold).
    """
    gold = {s.sample_id: set(s.targets) for s in samples}
    position = {(sid, item): (rank, sim) for sid, item, rank, sim in zip(
        candidates.column("sample_id").to_pylist(), candidates.column("item_id").to_pylist(),
        candidates.column("rank").to_pylist(), candidates.column("similarity").to_pylist())}
    bands = [*BANDS, (top_k, None)]
    band_scores: list[list[float]] = [[] for _ in bands]
    similarities, scores = [], []
    for sid, item, score in zip(judgments.column("sample_id").to_pylist(), judgments.column("item_id").to_pylist(),
                                judgments.column("score").to_pylist()):
        if sid not in gold:
            continue
        rank, similarity = position.get((sid, item), (None, None))
        if similarity is not None:
            similarities.append(similarity)
            scores.append(score)
        if item in gold[sid]:
            continue
        band = len(bands) - 1 if rank is None or rank >= top_k else next(
            i for i, (start, stop) in enumerate(BANDS) if start <= rank < stop)
        band_scores[band].append(score)
    rho = spearmanr(similarities, scores).statistic if len(scores) > 2 else None
    return {
        "bands": {band_name(start, stop): {"mean": float(np.mean(values)) if values else None, "n": len(values)}
                  for (start, stop), values in zip(bands, band_scores)},
        "spearman": None if rho is None or np.isnan(rho) else float(rho),
        "spearman_n": len(scores),
    }


def top_band_lift(report: dict) -> float | None:
    """Mean of the first band minus the mean of the last band inside the top-K (the goal is >= 0.3)."""
    first, last = (report["bands"][band_name(start, stop)]["mean"] for start, stop in (BANDS[0], BANDS[-1]))
    return None if first is None or last is None else first - last
