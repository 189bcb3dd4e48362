"""Rank-band report against judgments, the lexical/KG evidence and hybrid fusion, by hand-worked numbers."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from crs_core.config import LexicalConfig, RetrievalConfig
from crs_core.errors import DataError
from crs_core.lexical import LexicalIndex, genre_mentions, turn_weights
from crs_core.retrieval_report import JUDGMENTS_SCHEMA, rank_band_report, read_judgments, top_band_lift
from crs_core.schema import CANDIDATES_SCHEMA, Item, Sample
from crs_core.stages.retrieve import (
    candidates_table,
    hybrid_scores,
    mask_mentioned,
    retrieve,
    top_k_rows,
)

# --- rank-band report ------------------------------------------------------------------------------

SAMPLES = [Sample("s1", "d1", 3, (), (), (), targets=(10,)), Sample("s2", "d2", 3, (), (), (), targets=(20,))]
CANDIDATES = pa.Table.from_pylist([
    {"sample_id": "s1", "item_id": 10, "rank": 0, "similarity": 0.9},
    {"sample_id": "s1", "item_id": 11, "rank": 1, "similarity": 0.8},
    {"sample_id": "s1", "item_id": 12, "rank": 12, "similarity": 0.5},
    {"sample_id": "s1", "item_id": 13, "rank": 30, "similarity": 0.3},
    {"sample_id": "s2", "item_id": 21, "rank": 0, "similarity": 0.7},
    {"sample_id": "s2", "item_id": 22, "rank": 60, "similarity": 0.1},
], schema=CANDIDATES_SCHEMA)
JUDGMENTS = pa.Table.from_pylist([
    {"sample_id": "s1", "item_id": 10, "score": 4.0},  # gold: in Spearman, not in the bands
    {"sample_id": "s1", "item_id": 11, "score": 3.0},
    {"sample_id": "s1", "item_id": 12, "score": 2.0},
    {"sample_id": "s1", "item_id": 13, "score": 0.0},
    {"sample_id": "s1", "item_id": 14, "score": 1.0},  # not retrieved at all
    {"sample_id": "s2", "item_id": 21, "score": 2.0},
    {"sample_id": "s2", "item_id": 22, "score": 1.0},  # rank 61: beyond the top-50
    {"sample_id": "s2", "item_id": 20, "score": 3.0},  # gold, not retrieved
    {"sample_id": "s9", "item_id": 1, "score": 4.0},  # a sample not passed: ignored
], schema=JUDGMENTS_SCHEMA)


def test_rank_band_means_by_hand() -> None:
    report = rank_band_report(CANDIDATES, JUDGMENTS, SAMPLES)
    # Non-gold: ranks 1-10 -> 3 (s1/11), 2 (s2/21); 11-25 -> 2; 26-50 -> 0; beyond/absent -> 1 (s1/14), 1 (s2/22).
    assert report["bands"] == {"1-10": {"mean": 2.5, "n": 2}, "11-25": {"mean": 2.0, "n": 1},
                               "26-50": {"mean": 0.0, "n": 1}, "not in top-50": {"mean": 1.0, "n": 2}}
    assert top_band_lift(report) == 2.5


def test_spearman_over_judged_pairs_with_a_similarity_by_hand() -> None:
    # Pairs with a similarity: sims .9 .8 .5 .3 .7 .1 -> ranks 6 5 3 2 4 1; scores 4 3 2 0 2 1 -> 6 5 3.5 1 3.5 2.
    # Centred: dx = 2.5 1.5 -.5 -1.5 .5 -2.5, dy = 2.5 1.5 0 -2.5 0 -1.5; sum dx*dy = 16, sum dx^2 = 17.5, dy^2 = 17.
    report = rank_band_report(CANDIDATES, JUDGMENTS, SAMPLES)
    assert report["spearman_n"] == 6
    assert report["spearman"] == pytest.approx(16 / np.sqrt(17.5 * 17))


def test_empty_band_and_too_few_pairs_give_none() -> None:
    report = rank_band_report(CANDIDATES.slice(0, 2), JUDGMENTS.slice(0, 2), SAMPLES)
    assert report["bands"]["26-50"] == {"mean": None, "n": 0} and report["spearman"] is None
    assert top_band_lift(report) is None


def test_read_judgments_jsonl_gz_and_a_bad_line(tmp_path) -> None:
    rows = [{"sample_id": "s1", "item_id": 11, "score": 3, "rationale": "fits"},
            {"sample_id": "s1", "item_id": 12, "score": 0}]
    path = tmp_path / "j.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    table = read_judgments(path)
    assert table.to_pylist() == [{"sample_id": "s1", "item_id": 11, "score": 3.0},
                                 {"sample_id": "s1", "item_id": 12, "score": 0.0}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"sample_id": "s1", "item_id": "x", "score": 1}) + "\n")
    with pytest.raises(DataError, match=r"line 2, field 'item_id'"):
        read_judgments(bad)


# --- lexical evidence ------------------------------------------------------------------------------

def test_genre_mentions_with_negation_synonyms_and_two_genre_cues() -> None:
    assert genre_mentions("I love horror, but no musicals please") == {"horror": 1, "musical": -1}
    assert genre_mentions("Nothing too scary. Something funny?") == {"horror": -1, "comedy": 1}
    assert genre_mentions("I don't mind horror") == {"horror": 1}
    assert genre_mentions("a rom-com or Star Wars") == {"comedy": 1, "romance": 1}  # "wars" is not the genre
    assert genre_mentions("I hate horror. I love horror") == {"horror": -1}  # a refusal wins within one turn


def test_turn_weights_newest_seeker_turn_first() -> None:
    # decay 0.5: seeker turns 1.0 (newest), 0.5; a recommender turn 0.3 x the seeker turn that answers it.
    roles = ("recommender", "seeker", "recommender", "seeker", "recommender")
    np.testing.assert_allclose(turn_weights(roles, 0.5, 0.3), [0.15, 0.5, 0.3, 1.0, 0.3])


CATALOG = [
    Item(1, "Dark House (2001)", "", genres=("horror",), directors=("Ann Lee",), stars=("Bob Stone",)),
    Item(2, "Paris Love (2003)", "", genres=("comedy", "romance"), stars=("Cara Diaz",)),
    Item(3, "Scary Laughs (2005)", "", genres=("horror", "comedy"), directors=("Ann Lee",)),
    Item(4, "Sing Along (2007)", "", genres=("musical",)),
]
ASKS = Sample("a#2", "a", 2, ("What do you like?", "Horror, but no musicals. Anything by ann lee?"),
              ("recommender", "seeker"), ())
CITES = Sample("c#2", "c", 2, ("Any film you liked?", "I liked Dark House"), ("recommender", "seeker"), (1,))


def test_lexical_scores_genres_negation_people_and_cited_films() -> None:
    index = LexicalIndex(CATALOG, LexicalConfig(decay=0.5, recommender_turns=0.3, genre=1.0, person=1.0,
                                                cited_person=0.5, cited_genre=0.3))
    prefs = index.preferences(ASKS)
    assert prefs.genres == {"horror": 1.0, "musical": -1.0} and prefs.people == {("ann", "lee"): 1.0}
    scores = index.scores([ASKS, CITES])
    # ASKS: item 1 horror share 1 + Ann Lee 1; item 3 horror share 0.5 + Ann Lee 1; item 4 musical -1.
    np.testing.assert_allclose(scores[0], [2.0, 0.0, 1.5, -1.0])
    # CITES (item 1 cited, weight 1): shared people x0.5 (item 1: Ann Lee + Bob Stone; item 3: Ann Lee),
    # genre share with item 1 x0.3 (item 1: 1 x 1; item 3: 0.5 x 1).
    np.testing.assert_allclose(scores[1], [1.0 + 0.3, 0.0, 0.5 + 0.15, 0.0])


# --- fusion and ranking ----------------------------------------------------------------------------

def test_hybrid_scores_sum_row_z_scores() -> None:
    # z([1, 0, -1]) = [1.2247, 0, -1.2247]; z([0, 0, 3]) = [-0.7071, -0.7071, 1.4142]; a constant row -> 0.
    fused = hybrid_scores(np.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]),
                          np.array([[0.0, 0.0, 3.0], [2.0, 2.0, 2.0]]), 1.0)
    np.testing.assert_allclose(fused, [[1.5 ** 0.5 - 0.5 ** 0.5, -0.5 ** 0.5, -1.5 ** 0.5 + 2 ** 0.5],
                                       [1.5 ** 0.5, 0.0, -1.5 ** 0.5]], atol=1e-6)


def test_top_k_rows_masking_and_table_drop_excluded() -> None:
    scores, indices = top_k_rows(np.array([[1.0, 3.0, 3.0, 0.5]]), 3)
    assert indices.tolist() == [[1, 2, 0]] and scores.tolist() == [[3.0, 3.0, 1.0]]
    sample = Sample("s", "d", 1, (), (), (7,))
    masked = mask_mentioned(np.array([[3.0, 2.0, 1.0]]), np.array([[0, 1, 2]]), np.array([5, 7, 9]), [sample])
    assert masked.tolist() == [[3.0, -np.inf, 1.0]]
    top_scores, top = top_k_rows(masked, 3)
    table = candidates_table(["s"], np.array([5, 7, 9]), top_scores, top)
    assert table.column("item_id").to_pylist() == [5, 9] and table.column("rank").to_pylist() == [0, 1]


def test_retrieve_dense_and_hybrid_exclude_mentioned_films() -> None:
    items = np.eye(4, dtype=np.float32)
    query = np.array([[0.9, 0.1, 0.0, 0.5]], dtype=np.float32)  # dense order: 1, 4, 2, 3
    sample = Sample("s", "d", 2, ("hi", "Horror please, by Ann Lee"), ("recommender", "seeker"), (1,))
    dense = RetrievalConfig(method="dense", top_k=3, exclude_mentioned=False)
    _, indices = retrieve(query, items, CATALOG, [sample], dense)
    assert indices.tolist() == [[0, 3, 1]]
    _, indices = retrieve(query, items, CATALOG, [sample], RetrievalConfig(method="dense", top_k=3))
    assert indices.tolist() == [[3, 1, 2]]  # item 1 was mentioned
    # Hybrid: item 3 (horror + Ann Lee + shares Ann Lee with the cited item 1) overtakes items 4 and 2.
    scores, indices = retrieve(query, items, CATALOG, [sample], RetrievalConfig(method="hybrid", top_k=3))
    assert indices[0, 0] == 2 and 0 not in indices[0, :2].tolist() and np.isfinite(scores[0, :2]).all()
