"""The FNSCRS `final_evaluation` recommendation protocol, reproduced exactly.

Reference: xu1110/FNSCRS `BARCOR/final_evaluation.py` (same classes in `UniCRS/src/` and `llama2/`).
Every test turn with labels is ranked over the catalog (top 100), then scored twice:
"not_removed" (`RecMetricNotRemoved`) scores the raw ranking against every label; "removed"
(`RecMetricRemoved`) drops items mentioned in the context from the ranking and skips labels that were
mentioned. Metrics are micro averages over (sample, label) pairs, one pair per entry of the turn's
label list (a movie named twice counts twice), which is what the published numbers are. The "removed"
variant also reports coverage@k (distinct items in the top-k lists) and entropy@k (below).

Ties: a score matrix with equal scores inside a row's top `top_n` (popularity: many items share a
count) has no single ranking. `evaluate_scores` then reports the mean over `TIE_ORDERS` random tie
orders (seeds 0, 1, ...), and says so in the result's "ties" entry and under `format_table`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from crs_core.schema import Catalog, Sample

VARIANTS = ("removed", "not_removed")
DEFAULT_KS = (1, 5, 10, 25, 50)
TOP_N = 100
TIE_ORDERS = 50
NO_TIES = "none"

# Rows sorted per block: a full argsort of (n_samples, n_items) would need n*m int64 at once.
_ROW_CHUNK = 512


def rank_catalog(scores: np.ndarray, catalog: Catalog, top_n: int = TOP_N, tie_seed: int | None = None) -> np.ndarray:
    """Top `top_n` catalog item ids per row, best first.

    Equal scores keep catalog order (a stable sort) unless `tie_seed` is given: then they are put in a
    random order drawn from that seed, which is how `evaluate_scores` averages over tie orders.
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
    rng = np.random.default_rng(tie_seed) if tie_seed is not None else None
    out = np.empty((scores.shape[0], width), dtype=np.int64)
    for start in range(0, scores.shape[0], _ROW_CHUNK):
        block = -scores[start : start + _ROW_CHUNK].astype(np.float64)
        keys = rng.random(block.shape) if rng is not None else None  # drawn for the whole block, as always
        out[start : start + _ROW_CHUNK] = item_ids[_top_columns(block, keys, width)]
    return out


def _top_columns(block: np.ndarray, keys: np.ndarray | None, width: int) -> np.ndarray:
    """Per row, the `width` columns of smallest `block` value, ties by `keys` (else by column): the first
    `width` of a full sort, found by sorting only the columns not above the row's width-th value."""
    if width >= block.shape[1]:
        return (np.argsort(block, axis=1, kind="stable") if keys is None else np.lexsort((keys, block), axis=1))
    cutoff = np.partition(block, width - 1, axis=1)[:, width - 1]
    order = np.empty((block.shape[0], width), dtype=np.int64)
    for row, (values, limit) in enumerate(zip(block, cutoff)):
        columns = np.flatnonzero(values <= limit)  # every column a full sort could place in the first `width`
        ranked = (np.argsort(values[columns], kind="stable") if keys is None
                  else np.lexsort((keys[row, columns], values[columns])))
        order[row] = columns[ranked[:width]]
    return order


def tied_rows(scores: np.ndarray, top_n: int = TOP_N) -> np.ndarray:
    """Rows whose top `top_n` depends on the order of equal scores (a tie inside it or across its cut)."""
    scores = np.asarray(scores, dtype=np.float64)
    width = min(top_n + 1, scores.shape[1])
    tied = np.zeros(scores.shape[0], dtype=bool)
    for start in range(0, len(tied), _ROW_CHUNK):
        head = -np.sort(-scores[start : start + _ROW_CHUNK], axis=1)[:, :width]
        tied[start : start + _ROW_CHUNK] = (head[:, 1:] == head[:, :-1]).any(axis=1)
    return tied


def entropy(counts: Counter) -> float:
    """Shannon entropy (bits) of how often each item appears, as FNSCRS's `compute_entropy`."""
    if not counts:
        return 0.0
    shares = np.fromiter(counts.values(), dtype=np.float64)
    shares /= shares.sum()
    return float(-(shares * np.log2(shares)).sum())


class PairMetrics:
    """Sums over (sample, label) pairs for one variant; `add` is the per-label loop of the reference
    RecMetric classes."""

    def __init__(self, ks: tuple[int, ...]):
        self.ks = ks
        self.n = 0
        self.sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg", "mrr") for k in ks}
        self.shown: dict[int, Counter] = {k: Counter() for k in ks}

    def add(self, preds: list[int], targets: Iterable[int]) -> None:
        position: dict[int, int] = {}
        for i, p in enumerate(preds):
            position.setdefault(p, i)  # the reference uses list.index: first occurrence
        for g in targets:
            self.n += 1
            for k in self.ks:  # the reference adds a list's top k once per counted label
                self.shown[k].update(preds[:k])
            rank = position.get(g)
            if rank is None:
                continue
            for k in self.ks:
                if rank < k:
                    self.sums[f"recall@{k}"] += 1.0
                    self.sums[f"ndcg@{k}"] += 1.0 / math.log2(rank + 2)
                    self.sums[f"mrr@{k}"] += 1.0 / (rank + 1)

    def report(self, with_coverage: bool) -> dict:
        result: dict = {"n": self.n}
        for key, total in self.sums.items():
            result[key] = total / self.n if self.n else 0.0
        if with_coverage:
            for k in self.ks:
                result[f"coverage@{k}"] = len(self.shown[k])
                result[f"entropy@{k}"] = entropy(self.shown[k])
        return result


def check_ks(ks: Iterable[int]) -> tuple[int, ...]:
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
    ks = check_ks(ks)
    acc = {variant: PairMetrics(ks) for variant in VARIANTS}
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
    tie_orders: int = TIE_ORDERS,
) -> dict:
    """`rank_catalog` then `evaluate_rankings`: the whole protocol for a score matrix.

    When equal scores decide a row's top `top_n`, the result is the mean over `tie_orders` random tie
    orders of the tied rows (untied rows keep their one ranking); "ties" records which rule applied.
    """
    if tie_orders < 1:
        raise ValueError(f"tie_orders must be >= 1, got {tie_orders}")
    rankings = rank_catalog(scores, catalog, top_n)
    tied = tied_rows(scores, top_n)
    if not tied.any():
        return evaluate_rankings(rankings, samples, ks, top_n) | {"ties": NO_TIES}
    runs = []
    for seed in range(tie_orders):
        shuffled = rankings.copy()
        shuffled[tied] = rank_catalog(np.asarray(scores)[tied], catalog, top_n, tie_seed=seed)
        runs.append(evaluate_rankings(shuffled, samples, ks, top_n))
    mean = {variant: {key: (runs[0][variant][key] if key == "n" else float(np.mean([r[variant][key] for r in runs])))
                      for key in runs[0][variant]} for variant in VARIANTS}
    return mean | {"ties": f"mean over {tie_orders} random tie orders ({int(tied.sum())} of {len(tied)} rows tied)"}


def format_table(
    rows: list[tuple[str, dict]], ks_shown: Iterable[int] | None = None, rank_k: int | None = None
) -> str:
    """Fixed-width table (percentages, 2 decimals), one line per (model, variant). By default R@1/10/50 and
    NDCG/MRR@10, or those of the evaluated ks (e.g. a small catalog evaluated at 1, 5, 10) when some are missing."""
    evaluated = sorted({int(key.split("@")[1]) for _, result in rows[:1] for key in result[VARIANTS[0]]
                        if key.startswith("recall@")})
    if ks_shown is None:
        ks_shown = [k for k in (1, 10, 50) if k in evaluated] or evaluated[:3]
    if rank_k is None:
        rank_k = 10 if 10 in evaluated or not evaluated else evaluated[-1]
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
    notes = [f"ties in {model}'s scores: {result['ties']}" for model, result in rows
             if result.get("ties", NO_TIES) != NO_TIES]
    if notes and len(notes) < len(rows):
        notes.append("other models: no ties, one ranking")
    return "\n".join([render(headers), separator, *(render(line) for line in lines), *notes])
