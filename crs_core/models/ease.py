"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a strong item-to-item
baseline with a closed-form fit, so it needs no training loop and no hyper-parameter besides l2."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from crs_core.models.base import Recommender
from crs_core.models.popularity import target_counts
from crs_core.schema import Catalog, Sample


class EASE(Recommender):
    """Item-item weights B from the closed form G = XᵀX + l2·I, P = G⁻¹, B = -P / diag(P), diag(B) = 0.

    X has one binary row per training sample (its context items ∪ targets) plus one per
    `extra_rows` set passed to `fit`; a sample is scored as x @ B with x its binary context.

    Ties are broken by popularity: score = x @ B + TIE_BREAK * pop / max(pop), where pop counts
    training targets per item. A sample with no catalog item in its context has x @ B = 0 and so is
    ranked by popularity alone instead of arbitrarily. TIE_BREAK = 1e-6 is a fixed choice, not
    derived from the data: the term can only reorder items whose EASE scores differ by less than
    1e-6, while one co-occurrence already weighs roughly 1 / (l2 + item count) (about 2e-3 at the
    default l2 = 500), so in practice it only separates exact or near-exact ties. Lower it if
    you use a very large l2.
    """

    name = "ease"
    TIE_BREAK = 1e-6

    def __init__(self, l2: float = 500.0) -> None:
        super().__init__()
        if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not (math.isfinite(l2) and l2 > 0):
            raise ValueError(f"EASE l2 must be a finite number > 0, got {l2!r}")
        self.l2 = float(l2)
        self._weights: np.ndarray | None = None
        self._popularity: np.ndarray | None = None

    def params(self) -> dict[str, Any]:
        return {"l2": self.l2}

    def fit(
        self,
        train: Sequence[Sample],
        catalog: Catalog,
        *,
        extra_rows: Sequence[Sequence[int]] | None = None,
    ) -> EASE:
        """Fit on `train`; `extra_rows` are item-id sets from other sources (e.g. ReDial's KASCRS
        item sequences) added as rows of X. They shape B but not the popularity tie-breaker,
        which estimates how often an item is a *target*."""
        self._bind_catalog(catalog)
        rows = [self._columns_of((*s.context_items, *s.targets)) for s in train]
        rows += [self._columns_of(r) for r in extra_rows or ()]
        gram = _gram(rows, len(catalog))
        gram[np.diag_indices_from(gram)] += self.l2
        weights = np.linalg.inv(gram)
        del gram
        weights /= -np.diag(weights)[None, :]
        np.fill_diagonal(weights, 0.0)
        self._weights = weights.astype(np.float32)
        pop = target_counts(train, catalog)
        self._popularity = pop / pop.max() if pop.max() > 0 else pop
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        """x @ B computed as the sum of the B rows of the context columns (x is sparse)."""
        self._require_fitted()
        assert self._weights is not None and self._popularity is not None
        tie_break = self.TIE_BREAK * self._popularity
        out = np.empty((len(samples), self._weights.shape[1]), dtype=np.float32)
        for i, sample in enumerate(samples):
            cols = self._columns_of(sample.context_items)
            out[i] = self._weights[cols].sum(axis=0, dtype=np.float64) + tie_break
        return out

    def _state(self) -> dict[str, np.ndarray]:
        assert self._weights is not None and self._popularity is not None
        return {"weights": self._weights, "popularity": self._popularity}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._weights = state["weights"].astype(np.float32)
        self._popularity = state["popularity"].astype(np.float64)


def _gram(rows: list[np.ndarray], n_items: int) -> np.ndarray:
    """XᵀX for binary rows given as column arrays, without materialising the (rows × items) X:
    each row adds 1 to every (i, j) pair of its columns."""
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    rows = [r for r in rows if len(r)]
    if rows:
        left = np.concatenate([np.repeat(r, len(r)) for r in rows])
        right = np.concatenate([np.tile(r, len(r)) for r in rows])
        np.add.at(gram, (left, right), 1.0)
    return gram
