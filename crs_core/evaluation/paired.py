"""Per-pair hits and a paired bootstrap: how sure is a difference between two models on the same test set?

The FNSCRS recall is a micro average over (sample, target) pairs, so each model's result is a 0/1 hit per
pair and metric. `pair_hits` recomputes those hits from the rankings with the protocol's rules (rankings
cut to `top_n`; "removed" drops context items from the ranking and does not count mentioned targets; a
target's rank is its first occurrence), so their column means are the protocol's recall@k.

`paired_bootstrap` compares two models trained over the same seeds. A bootstrap draw resamples the test
pairs with replacement (as many as there are) and uses THE SAME resampled pairs for both models and every
seed; its statistic is the difference of the two models' recall on those pairs, each averaged over the
seeds. The 2.5th and 97.5th percentiles of that statistic over the draws are the 95% interval. Pairing
removes the spread that comes from which test dialogues happen to be easy, which is what an unpaired
mean ± std over seeds carries; the interval covers test-set sampling, the seed average covers training noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crs_core.schema import Sample

VARIANTS = ("removed", "not_removed")


def _hits(preds: Sequence[int], targets: Sequence[int], ks: Sequence[int]) -> list[list[bool]]:
    position: dict[int, int] = {}
    for i, item in enumerate(preds):
        position.setdefault(int(item), i)
    return [[position.get(int(t), len(preds)) < k for k in ks] for t in targets]


def pair_hits(rankings: Sequence[Sequence[int]], samples: Sequence[Sample], ks: Sequence[int],
              top_n: int) -> dict[str, dict]:
    """Per variant: {"pairs": [(sample_id, target), ...], "hits": bool array (n_pairs, len(ks))}, pairs in
    sample order, a hit at column j meaning the target ranks in the top ks[j]."""
    if len(rankings) != len(samples):
        raise ValueError(f"{len(rankings)} rankings for {len(samples)} samples; they must be aligned")
    out: dict[str, dict] = {variant: {"pairs": [], "hits": []} for variant in VARIANTS}
    for ranking, sample in zip(rankings, samples):
        preds = [int(p) for p in ranking[:top_n]]
        mentioned = set(sample.context_items)
        counted = {"not_removed": (preds, list(sample.targets)),
                   "removed": ([p for p in preds if p not in mentioned],
                               [t for t in sample.targets if t not in mentioned])}
        for variant, (kept, targets) in counted.items():
            out[variant]["pairs"] += [(sample.sample_id, int(t)) for t in targets]
            out[variant]["hits"] += _hits(kept, targets, ks)
    for result in out.values():
        result["hits"] = np.asarray(result["hits"], dtype=bool).reshape(-1, len(ks))
    return out


def paired_bootstrap(ours: np.ndarray, base: np.ndarray, draws: int = 10_000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
    """Mean difference ours - base and its percentile bootstrap interval, in the hits' unit (0-1).

    `ours`, `base`: (n_seeds, n_pairs) 0/1 hits of one metric, row s of both trained with seed s, columns the
    same test pairs. Averaging over seeds commutes with the resampling, so each draw is the mean over the
    resampled pairs of the seed-averaged per-pair difference; `draws` holds every draw's value.
    """
    ours, base = np.atleast_2d(np.asarray(ours, dtype=float)), np.atleast_2d(np.asarray(base, dtype=float))
    if ours.shape != base.shape or ours.shape[1] == 0:
        raise ValueError(f"paired hits need the same non-empty (seeds, pairs) shape; got {ours.shape} and {base.shape}")
    per_pair = (ours - base).mean(axis=0)
    n = per_pair.size
    rng = np.random.default_rng(seed)
    values = np.concatenate([per_pair[rng.integers(0, n, size=(min(1000, draws - start), n))].mean(axis=1)
                             for start in range(0, draws, 1000)])
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return {"difference": float(per_pair.mean()), "low": float(low), "high": float(high), "pairs": n,
            "seeds": ours.shape[0], "confidence": confidence, "draws": values}
