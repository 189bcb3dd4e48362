"""Popularity and EASE: the shared contract plus values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_mixin import RecommenderTestMixin

from crs_core.evaluation import evaluate_scores, rank_catalog
from crs_core.models import EASE, Popularity, Recommender, build_model
from crs_core.schema import Catalog, Item, Sample


class TestPopularity(RecommenderTestMixin):
    # Ignores the context, so it can only exploit the toy data's skew (random scores about 0.5).
    min_quality = 0.7

    def make_model(self) -> Recommender:
        return Popularity()


class TestEASE(RecommenderTestMixin):
    def make_model(self) -> Recommender:
        return EASE(l2=10.0)


# Three items whose catalog order (7, 3, 5) differs from their id order.
TINY = Catalog([Item(7, "a", ""), Item(3, "b", ""), Item(5, "c", "")])


def _s(context: tuple[int, ...], targets: tuple[int, ...] = ()) -> Sample:
    return Sample("s", "d", 1, (), (), context, targets=targets)


def test_popularity_counts_by_hand() -> None:
    # Targets: 3 three times, 5 twice, 7 never; 999 is outside the catalog and ignored.
    train = [_s((7,), (3,)), _s((), (3, 5)), _s((3,), (5,)), _s((), (3,)), _s((), (999,))]
    scores = Popularity().fit(train, TINY).score([_s((7,)), _s(())])
    np.testing.assert_array_equal(scores, [[0, 3, 2], [0, 3, 2]])


def test_popularity_ties_are_evaluated_as_the_mean_over_tie_orders() -> None:
    # 3 and 5 are targets twice each, 7 never: 3 and 5 tie at the top, so neither catalog order decides.
    train = [_s((), (3,)), _s((), (3, 5)), _s((), (5,))]
    model = Popularity().fit(train, TINY)
    test = [_s((), (5,))]
    result = evaluate_scores(model.score(test), test, TINY, tie_orders=20)
    firsts = [rank_catalog(model.score(test), TINY, tie_seed=seed)[0, 0] for seed in range(20)]
    assert result["ties"] == "mean over 20 random tie orders (1 of 1 rows tied)"
    # catalog order alone would always put 3 first (recall@1 = 0); the mean counts the orders with 5 first
    assert result["not_removed"]["recall@1"] == pytest.approx(firsts.count(5) / 20)
    assert 0 < firsts.count(5) < 20 and result["not_removed"]["recall@5"] == 1.0


# Rows of X (context ∪ targets) in catalog columns (a, b, c): {a, b}, {b, c}, {a, b, c}.
EASE_TRAIN = [_s((7,), (3,)), _s((3,), (5,)), _s((7, 3), (5,))]
# Targets: b once, c twice, so the tie-breaker adds 1e-6 * (0, 1/2, 1).
TIE = EASE.TIE_BREAK * np.array([0.0, 0.5, 1.0])


def test_ease_weights_by_hand() -> None:
    """l2 = 1:
    XᵀX = [[2, 2, 1], [2, 3, 2], [1, 2, 2]], so G = XᵀX + I = [[3, 2, 1], [2, 4, 2], [1, 2, 3]].
    det G = 3·(12-4) - 2·(6-2) + 1·(4-4) = 16; cofactors give
    P = G⁻¹ = [[8, -4, 0], [-4, 8, -4], [0, -4, 8]] / 16 = [[.5, -.25, 0], [-.25, .5, -.25], [0, -.25, .5]].
    diag(P) = .5 everywhere, so B = -P / .5 with a zero diagonal = [[0, .5, 0], [.5, 0, .5], [0, .5, 0]].
    Scoring a context picks and sums rows of B.
    """
    model = EASE(l2=1.0).fit(EASE_TRAIN, TINY)
    b = np.array([[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]])
    scores = model.score([_s((7,)), _s((3,)), _s((5,)), _s((7, 5)), _s((7, 7, 999)), _s(())])
    expected = np.stack([b[0], b[1], b[2], b[0] + b[2], b[0], np.zeros(3)]) + TIE
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-7)


def test_ease_zero_diagonal() -> None:
    """An item must not recommend itself: scoring one context item gives it exactly the tie-breaker."""
    model = EASE(l2=0.5).fit(EASE_TRAIN, TINY)
    scores = model.score([_s((7,)), _s((3,)), _s((5,))])
    np.testing.assert_array_equal(np.diag(scores), TIE.astype(np.float32))


def test_ease_extra_rows() -> None:
    """Adding the row {a, c} makes XᵀX + I = 2·(I + J) (J all ones), whose inverse is
    (I - J/4) / 2: diagonal 3/8, off-diagonal -1/8, so every off-diagonal B entry becomes 1/3.
    Ids outside the catalog are ignored, and extra rows leave the popularity tie-breaker alone."""
    model = EASE(l2=1.0).fit(EASE_TRAIN, TINY, extra_rows=[[7, 5, 999]])
    scores = model.score([_s((7,)), _s(())])
    np.testing.assert_allclose(scores, [[0, 1 / 3, 1 / 3] + TIE, TIE], rtol=0, atol=1e-7)


@pytest.mark.parametrize("l2", [0, -1.0, float("nan"), float("inf"), True, "500"])
def test_ease_rejects_bad_l2(l2: object) -> None:
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=l2)  # type: ignore[arg-type]


def test_build_model() -> None:
    model = build_model("ease", l2=3)
    assert isinstance(model, EASE) and model.params() == {"l2": 3.0}
    with pytest.raises(ValueError, match=r"unknown model 'als'; known models: "
                                         r"barcor, ease, llama, minilm, minilm-id, popularity, unicrs"):
        build_model("als")


def test_load_checks_saved_name(tmp_path: Path) -> None:
    Popularity().fit(EASE_TRAIN, TINY).save(tmp_path / "m")
    with pytest.raises(ValueError, match="holds a 'popularity' model, not 'ease'"):
        EASE.load(tmp_path / "m")
