"""Most-recommended-first baseline: the floor every context-aware model has to beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crs_core.models.base import Recommender
from crs_core.schema import Catalog, Sample


def target_counts(train: Sequence[Sample], catalog: Catalog) -> np.ndarray:
    """How often each catalog item is a training target (catalog order; other targets ignored)."""
    counts = np.zeros(len(catalog), dtype=np.float64)
    for sample in train:
        for item_id in sample.targets:
            if item_id in catalog:
                counts[catalog.column(item_id)] += 1.0
    return counts


class Popularity(Recommender):
    """Scores each item by its number of (training sample, target) pairs, ignoring the context.

    Many items share a count, so its ranking depends on how ties are ordered; `evaluate_scores`
    reports the mean over random tie orders rather than the catalog order's one draw.
    """

    name = "popularity"

    def __init__(self) -> None:
        super().__init__()
        self._counts: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {}

    def fit(self, train: Sequence[Sample], catalog: Catalog) -> Popularity:
        self._bind_catalog(catalog)
        self._counts = target_counts(train, catalog).astype(np.float32)
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._require_fitted()
        assert self._counts is not None
        return np.tile(self._counts, (len(samples), 1))

    def _state(self) -> dict[str, np.ndarray]:
        assert self._counts is not None
        return {"counts": self._counts}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._counts = state["counts"].astype(np.float32)
