"""Contract tests every Recommender must pass (the pattern of implicit's RecommenderBaseTestMixin).

A concrete test class mixes `RecommenderTestMixin` in and implements `make_model`; it may lower
`min_quality` when the model cannot use the context (see `test_learns_something`).

The toy data has two "genres" of ten items each. Dialogues stay within one genre, and within a
genre the first items are recommended far more often than the last, so popularity is skewed (a
popularity model beats random) while the genre structure rewards models that read the context.
Item ids are non-contiguous and the catalog order is not the id order, so code that confuses ids
with columns fails.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from crs_core.models import MODELS, NotFittedError, Recommender, build_model, load_model
from crs_core.schema import Catalog, Item, Sample

ITEM_IDS = tuple(101 + 7 * k for k in range(20))
GENRE_A, GENRE_B = ITEM_IDS[:10], ITEM_IDS[10:]
# Catalog order: a fixed shuffle that interleaves the genres.
CATALOG_ORDER = (13, 2, 19, 7, 0, 11, 5, 16, 9, 3, 18, 1, 14, 6, 10, 17, 4, 12, 8, 15)
CATALOG = Catalog([Item(ITEM_IDS[k], f"Movie {k}", f"toy movie {k}") for k in CATALOG_ORDER])
OUTSIDE_CATALOG = (5, 99999)

# Positions within a genre, repeated by how often they are recommended: position 0 is the hit.
SKEWED = (0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9)


def _sample(sample_id: str, genre: tuple[int, ...], k: int, n_context: int) -> Sample:
    """Deterministic dialogue `k` of `genre`: a skewed target and `n_context` other genre items."""
    target = SKEWED[(7 * k) % len(SKEWED)]
    context: list[int] = []
    j = 0
    while len(context) < n_context:
        pos = SKEWED[(3 * k + 5 * j + 1) % len(SKEWED)]
        if pos != target and pos not in context:
            context.append(pos)
        j += 1
    return Sample(
        sample_id=sample_id,
        dialog_id=f"d-{sample_id}",
        turn_id=1,
        context=tuple(f"I liked movie {p}" for p in context),
        context_roles=("seeker",) * len(context),
        context_items=tuple(genre[p] for p in context),
        targets=(genre[target],),
    )


TRAIN = (
    [_sample(f"train-a{k}", GENRE_A, k, 1 + k % 3) for k in range(24)]
    + [_sample(f"train-b{k}", GENRE_B, k, 1 + k % 3) for k in range(12)]
    + [_sample(f"train-e{k}", GENRE_A, k, 0) for k in range(4)]
)
TEST = [_sample(f"test-a{k}", GENRE_A, 100 + k, 2) for k in range(15)] + [
    _sample(f"test-b{k}", GENRE_B, 100 + k, 2) for k in range(15)
]
EMPTY_CONTEXT = Sample("edge-empty", "d-edge", 1, (), (), ())
UNKNOWN_CONTEXT = Sample("edge-unknown", "d-edge", 2, ("hi",), ("seeker",), (*OUTSIDE_CATALOG, GENRE_A[1]))


def above_median_rate(scores: np.ndarray, samples: list[Sample], catalog: Catalog) -> float:
    """Share of samples whose first target beats more than half of the other items. Ties count
    against the target, so a constant scorer gets 0 and a random one about 0.5."""
    hits = 0
    for row, sample in zip(scores, samples):
        col = catalog.column(sample.targets[0])
        at_least_as_high = int(np.sum(np.delete(row, col) >= row[col]))
        hits += at_least_as_high < (len(row) - 1) / 2
    return hits / len(samples)


class RecommenderTestMixin:
    """Mix into a `Test*` class and implement `make_model`."""

    min_quality = 0.8

    def make_model(self) -> Recommender:
        raise NotImplementedError

    def fitted(self) -> Recommender:
        return self.make_model().fit(TRAIN, CATALOG)

    def test_fit_returns_self(self) -> None:
        model = self.make_model()
        assert model.fit(TRAIN, CATALOG) is model

    def test_score_shape_dtype_finite(self) -> None:
        model = self.fitted()
        for samples in (TEST, TRAIN, []):
            scores = model.score(samples)
            assert scores.shape == (len(samples), len(CATALOG))
            assert scores.dtype == np.float32
            assert np.isfinite(scores).all()

    def test_not_fitted(self, tmp_path: Path) -> None:
        model = self.make_model()
        with pytest.raises(NotFittedError, match=model.name):
            model.score(TEST)
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "model")
        assert issubclass(NotFittedError, RuntimeError)

    def test_deterministic(self) -> None:
        np.testing.assert_array_equal(self.fitted().score(TEST), self.fitted().score(TEST))

    def test_rows_independent(self) -> None:
        model = self.fitted()
        full = model.score(TEST)
        subset = [3, 0, 17]
        np.testing.assert_array_equal(model.score([TEST[i] for i in subset]), full[subset])
        np.testing.assert_array_equal(model.score(TEST[::-1]), full[::-1])

    def test_inputs_not_mutated(self) -> None:
        train, catalog, test = copy.deepcopy(TRAIN), copy.deepcopy(CATALOG), copy.deepcopy(TEST)
        model = self.make_model().fit(train, catalog)
        model.score(test)
        assert train == TRAIN and test == TEST
        assert catalog.items == CATALOG.items
        np.testing.assert_array_equal(catalog.item_ids, CATALOG.item_ids)

    def test_edge_contexts(self) -> None:
        """An empty context and items outside the catalog are normal in dialogues, not errors."""
        scores = self.fitted().score([EMPTY_CONTEXT, UNKNOWN_CONTEXT])
        assert scores.shape == (2, len(CATALOG))
        assert np.isfinite(scores).all()

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        model = self.fitted()
        expected = model.score(TEST)
        directory = tmp_path / "models" / model.name
        model.save(directory)
        model.save(directory)  # overwriting a previous save works too
        assert sorted(p.name for p in tmp_path.joinpath("models").iterdir()) == [model.name]
        for loaded in (type(model).load(directory), load_model(directory, catalog=CATALOG)):
            assert type(loaded) is type(model)
            assert loaded.params() == model.params()
            np.testing.assert_array_equal(loaded.score(TEST), expected)

    def test_load_with_other_catalog_raises(self, tmp_path: Path) -> None:
        model = self.fitted()
        model.check_catalog(CATALOG)
        model.save(tmp_path / "m")
        reordered = Catalog(CATALOG.items[::-1])
        smaller = Catalog(CATALOG.items[:-1])
        for other in (reordered, smaller):
            with pytest.raises(ValueError, match="different catalog"):
                load_model(tmp_path / "m", catalog=other)
            with pytest.raises(ValueError, match="different catalog"):
                model.check_catalog(other)

    def test_registered(self) -> None:
        model = self.make_model()
        module, cls = MODELS[model.name].split(":")
        assert (type(model).__module__, type(model).__name__) == (module, cls)
        assert type(build_model(model.name, **model.params())) is type(model)

    def test_learns_something(self) -> None:
        """Loose quality floor: the target beats the median item for most toy test samples."""
        rate = above_median_rate(self.fitted().score(TEST), TEST, CATALOG)
        assert rate >= self.min_quality, f"only {rate:.2f} of targets above the median"
