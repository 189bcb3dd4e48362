"""The metric FNSCRS picks the best epoch with, reproduced so that our models are selected the same way.

Reference (xu1110/FNSCRS): `BARCOR/train_rec.py` and `llama2/train_rec*.py` keep the epoch with the highest
valid `recall@50`, `UniCRS/src/train_rec.py` the highest valid `recall@25` (a strictly higher value replaces
the kept one, so the earliest of equal epochs wins). The valid set is built with `--repeated_item_removed`
(every INSPIRED script passes it): one pair per entry of a turn's labels that was not mentioned in the
context (`DatasetForRec`), and each pair is scored against the model's plain top 50 (`torch.topk(k=50)`),
context items NOT removed from it (`RecMetric`). This differs from the "removed" variant of
`final_evaluation`, which also filters the ranking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from crs_core.evaluation.protocol import PairMetrics, check_ks, rank_catalog
from crs_core.schema import Catalog, Sample

SELECTION_TOP = 50
SELECTION_KS = (1, 10, 25, 50)
SELECTION_K = {"unicrs": 25}  # every other backbone: 50
DEFAULT_SELECTION_K = 50


def selection_key(backbone: str) -> str:
    """The validation metric name a backbone's best epoch is chosen by (e.g. `valid_recall@50`)."""
    return f"valid_recall@{SELECTION_K.get(backbone, DEFAULT_SELECTION_K)}"


def selection_rule(backbone: str) -> str:
    """One line for the training record: which metric chose the model, and how it is computed."""
    return (f"{selection_key(backbone)}: FNSCRS train-time valid recall over the unfiltered top {SELECTION_TOP}, "
            "labels mentioned in the context left out, repeated labels counted per entry")


def selection_rankings(rankings: Sequence[Sequence[int]], samples: Sequence[Sample],
                       ks: Iterable[int] = SELECTION_KS) -> dict:
    """Recall/NDCG/MRR@k over (sample, label) pairs whose label was not mentioned before, top-50 as ranked."""
    if len(rankings) != len(samples):
        raise ValueError(f"{len(rankings)} rankings for {len(samples)} samples; they must be aligned")
    ks = check_ks(ks)
    if max(ks) > SELECTION_TOP:
        raise ValueError(f"selection ks must be <= {SELECTION_TOP} (the reference ranks only the top {SELECTION_TOP})")
    acc = PairMetrics(ks)
    for ranking, sample in zip(rankings, samples):
        mentioned = set(sample.context_items)
        acc.add([int(p) for p in ranking[:SELECTION_TOP]], [g for g in sample.targets if g not in mentioned])
    return acc.report(with_coverage=False)


def selection_scores(scores: np.ndarray, samples: Sequence[Sample], catalog: Catalog,
                     ks: Iterable[int] = SELECTION_KS) -> dict:
    """`selection_rankings` on the top 50 of a score matrix (equal scores in catalog order, as `topk` is one order)."""
    return selection_rankings(rank_catalog(scores, catalog, SELECTION_TOP), samples, ks)
