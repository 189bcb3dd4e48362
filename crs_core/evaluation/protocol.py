"""The FNSCRS `final_evaluation` recommendation protocol, reproduced exactly.

Every test turn with targets is ranked over the catalog (top 100), then scored twice:
"not_removed" scores the raw ranking; "removed" drops items already mentioned in the context from
the ranking and does not count targets that were mentioned. Metrics are micro averages over
(sample, target) pairs, which is what the published numbers are, so results stay comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from crs_core.schema import Catalog, Sample

VARIANTS = ("removed", "not_removed")
DEFAULT_KS = (1, 5, 10, 25, 50)
TOP_N = 100

# Rows sorted per block: a full argsort of (n_samples, n_items) would need n*m int64 at once.
_ROW_CHUNK = 512


def rank_catalog(scores: np.ndarray, catalog: Catalog, top_n: int = TOP_N) -> np.ndarray:
    """Top `top_n` catalog item ids per row, best first; ties go to the earlier catalog column.

    A stable sort makes the tie order part of the protocol, so reruns and different models that
    emit equal scores (e.g. popularity baselines) get identical, reproducible rankings.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    scores = np.asarray(scores)
    expected = f"(n_samples, {len(catalog)})"
    if scores.ndim != 2 or scores.shape[1] != len(catalog):
        raise ValueError(f"scores must have shape {expected} (catalog order), got {scores.shape}")
    if not (np.issubdtype(scores.dtype, np.integer) or np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if np.issubdtype(scores.dtype, np.floating) and np.isnan(scores).any():
        rows = np.flatnonzero(np.isnan(scores).any(axis=1))
        raise ValueError(f"scores contain NaN (rows {rows[:5].tolist()}); a NaN has no rank")
    width = min(top_n, len(catalog))
    item_ids = catalog.item_ids
    out = np.empty((scores.shape[0], width), dtype=np.int64)
    for start in range(0, scores.shape[0], _ROW_CHUNK):
        block = -scores[start : start + _ROW_CHUNK].astype(np.float64)
        order = np.argsort(block, axis=1, kind="stable")[:, :width]
        out[start : start + _ROW_CHUNK] = item_ids[order]
    return out


class _Accumulator:
    """Sums for one variant; `add` is the per-target loop of the reference RecMetric classes."""

    def __init__(self, ks: tuple[int, ...]):
        self.ks = ks
        self.n = 0
        self.sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "mrr") for k in ks}
        self.covered: dict[int, set[int]] = {k: set() for k in ks}

    def add(self, preds: list[int], targets: Iterable[int]) -> None:
        position: dict[int, int] = {}
        for i, p in enumerate(preds):
            position.setdefault(p, i)  # the reference uses list.index: first occurrence
        counted = False
        for g in targets:
            counted = True
            self.n += 1
            rank = position.get(g)
            if rank is None:
                continue
            for k in self.ks:
                if rank < k:
                    self.sums[f"recall@{k}"] += 1.0
                    self.sums[f"ndcg@{k}"] += 1.0 / math.log2(rank + 2)
                    self.sums[f"mrr@{k}"] += 1.0 / (rank + 1)
        if counted:  # the reference only records coverage for lists of counted targets
            for k in self.ks:
                self.covered[k].update(preds[:k])

    def report(self, with_coverage: bool) -> dict:
        result: dict = {"n": self.n}
        for key, total in self.sums.items():
            result[key] = total / self.n if self.n else 0.0
        if with_coverage:
            for k in self.ks:
                result[f"coverage@{k}"] = len(self.covered[k])
        return result


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks}")
    return ks


def evaluate_rankings(
    rankings: Sequence[Sequence[int]],
    samples: Sequence[Sample],
    ks: Iterable[int] = DEFAULT_KS,
    top_n: int = TOP_N,
) -> dict:
    """Score rankings aligned with `samples` under both variants.

    Rankings are cut to `top_n` before context items are removed, as in the reference, so the
    "removed" list can be shorter than `top_n` instead of being refilled from further down.
    """
    if len(rankings) != len(samples):
        raise ValueError(f"{len(rankings)} rankings for {len(samples)} samples; they must be aligned")
    ks = _check_ks(ks)
    acc = {variant: _Accumulator(ks) for variant in VARIANTS}
    for ranking, sample in zip(rankings, samples):
        if not sample.targets:
            continue
        preds = [int(p) for p in ranking[:top_n]]
        mentioned = set(sample.context_items)
        acc["not_removed"].add(preds, sample.targets)
        acc["removed"].add(
            [p for p in preds if p not in mentioned],
            [g for g in sample.targets if g not in mentioned],
        )
    return {variant: acc[variant].report(with_coverage=variant == "removed") for variant in VARIANTS}


def evaluate_scores(
    scores: np.ndarray,
    samples: Sequence[Sample],
    catalog: Catalog,
    ks: Iterable[int] = DEFAULT_KS,
    top_n: int = TOP_N,
) -> dict:
    """`rank_catalog` then `evaluate_rankings`: the whole protocol for a score matrix."""
    return evaluate_rankings(rank_catalog(scores, catalog, top_n), samples, ks, top_n)


def format_table(
    rows: list[tuple[str, dict]], ks_shown: Iterable[int] = (1, 10, 50), rank_k: int = 10
) -> str:
    """Fixed-width table (percentages, 2 decimals), one line per (model, variant)."""
    ks_shown = tuple(ks_shown)
    headers = ["model", "variant", "n", *(f"R@{k}" for k in ks_shown), f"NDCG@{rank_k}", f"MRR@{rank_k}"]
    keys = [*(f"recall@{k}" for k in ks_shown), f"ndcg@{rank_k}", f"mrr@{rank_k}"]
    lines = []
    for model, result in rows:
        for variant in VARIANTS:
            metrics = result[variant]
            missing = [key for key in keys if key not in metrics]
            if missing:
                raise ValueError(f"{model}/{variant}: result has no {missing}; evaluate with these ks")
            lines.append([model, variant, str(metrics["n"]), *(f"{100 * metrics[key]:.2f}" for key in keys)])
    widths = [max(len(cell) for cell in column) for column in zip(headers, *lines)]

    def render(cells: list[str]) -> str:
        text = [cells[0].ljust(widths[0]), cells[1].ljust(widths[1])]
        text += [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:])]
        return "  ".join(text)

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([render(headers), separator, *(render(line) for line in lines)])
