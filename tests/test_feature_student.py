"""The feature student: hand-worked agreement numbers, grouped folds, features of a hand-made dialogue, and
fit / save / load / score of the calibrated trees."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crs_core.errors import ConfigError
from crs_core.schema import SCORES_SCHEMA, Catalog, Item, Sample
from crs_core.stages.synthesize import tau_curve
from crs_core.student.feature_scorer import FeatureScorer, fidelity, grouped_folds, synthetic_precision
from crs_core.student.features import FEATURE_NAMES, context_side, item_side, pair_features

TRUTH = np.array([0, 1, 2, 3, 4, 3], dtype=float)
PRED = np.array([0.5, 1.0, 3.0, 2.5, 3.5, 3.2])
GOLD = np.array([False, False, False, False, True, False])


def test_fidelity_by_hand() -> None:
    # ranks truth [1,2,3,4.5,6,4.5], pred [1,2,4,3,6,5]: cov 15.5, var 17 and 17.5
    got = fidelity(TRUTH, PRED, GOLD)
    assert got["spearman"] == pytest.approx(15.5 / math.sqrt(17 * 17.5))
    # without the gold pair: ranks truth [1,2,3,4.5,4.5], pred [1,2,4,3,5]: cov 8, var 9.5 and 10
    assert got["spearman_non_gold"] == pytest.approx(8 / math.sqrt(95))
    assert got["mae"] == pytest.approx(2.7 / 6)
    assert got["calls_relevant"] == 3  # 3.0, 3.5, 3.2
    assert got["precision_relevant"] == pytest.approx(2 / 3)  # the 3.0 call was a 2


def test_synthetic_precision_by_hand() -> None:
    assert synthetic_precision(TRUTH, PRED, GOLD, 3.0) == (0.5, 2)  # non-gold 3.0 (a 2) and 3.2 (a 3)
    precision, n = synthetic_precision(TRUTH, PRED, GOLD, 2.5)
    assert (precision, n) == (pytest.approx(2 / 3), 3)
    assert synthetic_precision(TRUTH, PRED, GOLD, 3.9) == (None, 0)


def test_grouped_folds_never_split_a_context() -> None:
    groups = np.repeat([f"ctx{k}" for k in range(11)], 4)
    folds = grouped_folds(groups, 5)
    assert len(folds) == 5
    held_all = np.concatenate([held for _, held in folds])
    assert sorted(held_all.tolist()) == list(range(len(groups)))
    for train, held in folds:
        assert not set(groups[train]) & set(groups[held])


def _catalog() -> Catalog:
    return Catalog([
        Item(1, "Insidious (2010)", "", ("horror", "thriller"), ("James Wan",), ("Patrick Wilson",),
             "A haunted house."),
        Item(2, "Big (1988)", "", ("comedy", "family"), ("Penny Marshall",), ("Tom Hanks",), "A boy wakes up grown."),
        Item(3, "Toy Story 4 (2019)", "", ("animation", "comedy"), ("Josh Cooley",), ("Tom Hanks",), "Toys road trip."),
        Item(4, "Earth (2007)", "", ("documentary",), ("Alastair Fothergill",), ("James Earl Jones",), "Nature."),
    ])


def _sample() -> Sample:
    return Sample("s1", "d1", 5,
                  ("Hi! What do you like?", "I saw Toy Story 4 last week.", "Nice. Any genres?",
                   "I don't like horror at all. I want something funny with Tom Hanks, something new."),
                  ("recommender", "seeker", "recommender", "seeker"), context_items=(3,), targets=(2,))


def test_features_of_a_hand_made_dialogue() -> None:
    catalog = _catalog()
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    items = item_side(catalog, emb)
    ctx = context_side([_sample()], catalog, items)
    x = pair_features(ctx, items, np.zeros(4, dtype=int), np.arange(4))
    f = {name: x[:, k] for k, name in enumerate(FEATURE_NAMES)}
    assert f["topic_negated"].tolist() == [1, 0, 0, 0]  # "don't like horror" (haunted = horror too)
    assert f["topic_latest"].tolist() == [1, 1, 1, 0]  # horror said (negated), "funny" = comedy
    assert f["people_named"].tolist() == [0, 1, 1, 0]  # Tom Hanks
    assert f["item_is_short"].tolist() == [0, 0, 0, 1]
    assert f["item_year"].tolist() == [2010, 1988, 2019, 2007]
    assert f["year_new_fit"].tolist() == [-5, -27, 4, -8]  # "something new": year - 2015
    # cited Toy Story 4 (animation, comedy): Big shares comedy of its comedy+family, 1 person (Tom Hanks)
    assert f["genre_share_cited"].tolist() == [0, 0.5, 1.0, 0]
    assert f["stars_cited"].tolist() == [0, 1, 2, 0]  # the cited film itself (never a new label) shares both
    assert f["genre_jaccard_cited_max"][1] == pytest.approx(1 / 3)
    assert f["genre_jaccard_cited_max"][2] == 0  # an item is never compared with itself
    assert f["gold_people"].tolist() == [0, 0, 1, 0]  # gold Big: Tom Hanks; Big itself is not compared with Big
    assert f["gold_cos_max"][1] == 0 and f["gold_cos_max"][0] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-6)
    assert f["title_words_any"][2] == pytest.approx(1.0)  # "toy" and "story"... only non-stopwords count
    assert f["title_words_any"][0] == 0


def test_pair_products_equal_the_contexts_by_catalog_product() -> None:
    """Per-pair dot products (no contexts x catalog matrix) give exactly the values of the full product, for
    dense topic rows with recency weights and for sparse word rows with idf weights."""
    from scipy import sparse

    from crs_core.student.features import _row_dot

    rng = np.random.default_rng(0)
    left = (rng.random((30, 23)) < 0.2) * 0.5 ** rng.integers(0, 6, (30, 23)).astype(np.float32)
    right = (rng.random((40, 23)) < 0.3).astype(np.float32)
    words_left = sparse.csr_matrix((rng.random((30, 500)) < 0.02).astype(np.float32))
    words_right = sparse.csr_matrix((rng.random((40, 500)) < 0.01) * rng.random((40, 500)).astype(np.float32))
    c, i = rng.integers(0, 30, 300), rng.integers(0, 40, 300)
    contexts, position = np.unique(c, return_inverse=True)
    for a, b in ((left.astype(np.float32), right), (words_left, words_right)):
        full = np.asarray((sparse.csr_matrix(a[contexts]) @ sparse.csr_matrix(b).T).todense(), dtype=np.float32)
        assert np.array_equal(_row_dot(a, b, contexts, position, i), full[position, i])


def test_feature_student_fits_saves_loads_and_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_groups, per = 60, 8
    groups = np.repeat([f"c{k}" for k in range(n_groups)], per)
    x = rng.uniform(size=(len(groups), len(FEATURE_NAMES))).astype(np.float32)
    y = np.clip(np.round(4 * x[:, 0] + rng.normal(0, 0.4, len(groups))), 0, 4)
    params = {"max_iter": 50, "learning_rate": 0.1, "max_leaf_nodes": 7, "min_samples_leaf": 10}
    scorer = FeatureScorer(FEATURE_NAMES, params)
    oof = scorer.fit(x, y, groups, folds=4, seed=0)
    assert fidelity(y, oof, np.zeros(len(y), bool))["spearman"] > 0.8
    assert oof.min() >= 0 and oof.max() <= 4
    scorer.save(tmp_path, {"train_pairs": len(y)})
    loaded = FeatureScorer.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(x[:20]), scorer.predict(x[:20]))
    assert loaded.feature_names == FEATURE_NAMES and loaded.params == params
    with pytest.raises(ConfigError, match="student.folds: 4 folds need at least 4 judged contexts"):
        FeatureScorer(FEATURE_NAMES, params).fit(x[:16], y[:16], groups[:16], folds=4, seed=0)


def test_tau_curve_by_hand() -> None:
    samples = [Sample("a", "d", 1, ("hi",), ("seeker",), context_items=(9,), targets=(1,)),
               Sample("b", "d", 3, ("hi",), ("seeker",), context_items=(), targets=(2,))]
    scores = pa.table({"sample_id": ["a", "a", "a", "b", "b"], "item_id": [1, 5, 9, 6, 7],
                       "score": pa.array([3.9, 3.0, 3.5, 2.4, 3.1], pa.float32())}, schema=SCORES_SCHEMA)
    oof = pa.table({"teacher": TRUTH, "student": PRED, "gold": GOLD})
    curve = {p["threshold"]: p for p in tau_curve(samples, scores, oof, [2.0, 3.0])}
    # tau 3: a gains 5 (1 is a target, 9 was mentioned), b gains 7 -> 2 + 2 labels = 2x
    assert (curve[3.0]["added_labels"], curve[3.0]["ratio"]) == (2, 2.0)
    assert (curve[2.0]["added_labels"], curve[2.0]["ratio"]) == (3, 2.5)
    assert curve[3.0]["precision"] == 0.5 and curve[3.0]["judged_new_positives"] == 2
