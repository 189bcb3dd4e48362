"""Per-pair hits (hand-worked, and equal to the protocol's recall) and the paired bootstrap (hand-worked
point estimate, the spread and percentiles of an exactly enumerable case)."""

from __future__ import annotations

import numpy as np
import pytest

from crs_core.evaluation import evaluate_rankings
from crs_core.evaluation.paired import pair_hits, paired_bootstrap
from crs_core.schema import Sample

KS = (1, 2, 3)
SAMPLES = [
    Sample("a", "d1", 1, ("I loved film 5",), ("seeker",), (5,), targets=(7, 5)),
    Sample("b", "d2", 1, ("hi",), ("seeker",), (), targets=(3,)),
    Sample("c", "d3", 1, ("hi",), ("seeker",), (), targets=()),
]
RANKINGS = [[5, 9, 7, 3], [1, 2, 4, 3], [1, 2, 3, 4]]


def test_pair_hits_by_hand_and_equal_to_the_protocol() -> None:
    hits = pair_hits(RANKINGS, SAMPLES, KS, top_n=3)
    # not_removed: in a, 7 ranks third and 5 first; in b, 3 ranks fourth, past top_n = 3; c has no target.
    assert hits["not_removed"]["pairs"] == [("a", 7), ("a", 5), ("b", 3)]
    np.testing.assert_array_equal(hits["not_removed"]["hits"], [[0, 0, 1], [1, 1, 1], [0, 0, 0]])
    # removed: the mentioned 5 leaves a's ranking (7 moves up to second) and is not counted as a target.
    assert hits["removed"]["pairs"] == [("a", 7), ("b", 3)]
    np.testing.assert_array_equal(hits["removed"]["hits"], [[0, 1, 1], [0, 0, 0]])
    reference = evaluate_rankings(RANKINGS, SAMPLES, ks=KS, top_n=3)
    for variant, result in hits.items():
        assert reference[variant]["n"] == len(result["pairs"])
        for column, k in enumerate(KS):
            assert result["hits"][:, column].mean() == pytest.approx(reference[variant][f"recall@{k}"])


def test_pair_hits_refuses_misaligned_rankings() -> None:
    with pytest.raises(ValueError, match="2 rankings for 3 samples"):
        pair_hits(RANKINGS[:2], SAMPLES, KS, top_n=3)


def test_paired_bootstrap_by_hand() -> None:
    # Two seeds, four test pairs. Seed-averaged per-pair differences: (1 + 1) / 2, (1 - 1) / 2 ... = [1, 0, 0, -0.5].
    ours = [[1, 1, 0, 0], [1, 0, 0, 0]]
    base = [[0, 1, 0, 0], [0, 0, 0, 1]]
    result = paired_bootstrap(ours, base, draws=10_000, seed=3)
    assert result["difference"] == pytest.approx(0.375 - 0.25)  # mean recall 3/8 vs 2/8
    assert (result["pairs"], result["seeds"]) == (4, 2)
    # A draw is the mean of 4 picks from [1, 0, 0, -0.5]; its std is sqrt(0.296875 / 4) = 0.2724 (population
    # variance of the four differences over 4 picks).
    assert result["draws"].std() == pytest.approx(0.2724, abs=0.01)
    # Enumerating the 4^4 = 256 equally likely resamples: P(draw <= -0.5) = 1/256, P(<= -0.375) = 9/256, so the
    # 2.5% point is -0.375; P(draw >= 0.75) = 9/256, P(>= 0.625) = 13/256, so the 97.5% point is 0.75.
    assert (result["low"], result["high"]) == (-0.375, 0.75)


def test_paired_bootstrap_uses_the_same_pairs_for_both_models() -> None:
    """Identical models differ by exactly 0 in every draw, however different the pairs are."""
    hits = np.array([[1, 0, 1, 1, 0, 0]])
    result = paired_bootstrap(hits, hits, draws=500)
    assert (result["difference"], result["low"], result["high"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same non-empty"):
        paired_bootstrap(hits, hits[:, :3])
