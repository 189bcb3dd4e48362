"""FNSCRS final_evaluation protocol: every expected number is worked out by hand in a comment."""

from __future__ import annotations

import gzip
import os
from collections import Counter

import numpy as np
import pytest

from crs_core.errors import DataError
from crs_core.evaluation import (
    DEFAULT_KS,
    entropy,
    evaluate_rankings,
    evaluate_scores,
    format_table,
    protocol,
    rank_catalog,
    read_predictions,
    selection_key,
    selection_rankings,
    selection_scores,
    tied_rows,
    write_predictions,
)
from crs_core.schema import Catalog, Item, Sample

# Items 10..19; column j of a score matrix is item 10 + j.
CATALOG = Catalog([Item(item_id=i, title=f"m{i}", description="") for i in range(10, 20)])
# A full ranking used by several tests: 11, 12, 13, ... with 10 last.
RANKING = [11, 12, 13, 14, 15, 16, 17, 18, 19, 10]


def sample(sid: str, targets: tuple[int, ...], context_items: tuple[int, ...] = ()) -> Sample:
    return Sample(
        sample_id=sid,
        dialog_id="d",
        turn_id=0,
        context=(),
        context_roles=(),
        context_items=context_items,
        targets=targets,
    )


def scores_for(order: list[int]) -> np.ndarray:
    """One score row where `order` (item ids) gets strictly decreasing scores, the rest 0."""
    row = np.zeros(len(CATALOG))
    for rank, item in enumerate(order):
        row[item - 10] = 100.0 - rank
    return row


# 1. single target ----------------------------------------------------------------------------


def test_single_target_at_rank_three() -> None:
    # Scores put 11, 12, 13 first: target 13 is at 0-based rank 2.
    result = evaluate_scores(scores_for([11, 12, 13])[None, :], [sample("a", (13,))], CATALOG)
    for variant in ("removed", "not_removed"):
        r = result[variant]
        assert r["n"] == 1
        assert r["recall@1"] == 0.0  # rank 2 is not < 1
        assert r["ndcg@1"] == 0.0 and r["mrr@1"] == 0.0
        assert r["recall@5"] == 1.0  # rank 2 < 5
        assert r["ndcg@5"] == pytest.approx(0.5)  # 1/log2(2+2) = 1/2
        assert r["mrr@5"] == pytest.approx(1 / 3)  # 1/(2+1)
        assert r["recall@50"] == 1.0
    assert set(result["removed"]) == {"n"} | {
        f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "coverage", "entropy") for k in DEFAULT_KS
    }
    assert "coverage@1" not in result["not_removed"] and "entropy@1" not in result["not_removed"]
    # the zero scores of items 10, 14..19 tie, so the result is a mean over tie orders (same here: 13 is untied)
    assert result["ties"].startswith(f"mean over {protocol.TIE_ORDERS} random tie orders")


# 2. repeated items ---------------------------------------------------------------------------


def test_repeated_items_removed_vs_not_removed() -> None:
    # Context mentions 12 and 15; targets 13 (new) and 15 (repeated).
    s = sample("a", targets=(13, 15), context_items=(12, 15))
    result = evaluate_rankings([RANKING], [s])

    nr = result["not_removed"]
    # Raw list 11, 12, 13, 14, 15: 13 at rank 2, 15 at rank 4, both counted.
    assert nr["n"] == 2
    assert nr["recall@1"] == 0.0
    assert nr["recall@5"] == 1.0  # (1 + 1) / 2
    # (1/log2(4) + 1/log2(6)) / 2 = (0.5 + 0.3868528072) / 2
    assert nr["ndcg@5"] == pytest.approx(0.4434264036)
    assert nr["mrr@5"] == pytest.approx(0.2666666667)  # (1/3 + 1/5) / 2 = 4/15

    rm = result["removed"]
    # 15 is skipped (mentioned); filtered list 11, 13, 14, 16, 17, 18, 19, 10: 13 moves up to rank 1.
    assert rm["n"] == 1
    assert rm["recall@1"] == 0.0
    assert rm["recall@5"] == 1.0
    assert rm["ndcg@5"] == pytest.approx(0.6309297536)  # 1/log2(1+2) = 1/1.5849625007
    assert rm["mrr@5"] == pytest.approx(0.5)  # 1/(1+1)
    # Coverage: distinct items in the filtered top-k lists.
    assert rm["coverage@1"] == 1  # {11}
    assert rm["coverage@5"] == 5  # {11, 13, 14, 16, 17}
    assert rm["coverage@10"] == 8  # filtered list has only 10 - 2 = 8 items


# 3. several targets in one turn --------------------------------------------------------------


def test_several_targets_counted_separately() -> None:
    # Ranking 11, 12, 13: target 11 at rank 0, target 15 absent.
    result = evaluate_rankings([[11, 12, 13]], [sample("a", (11, 15))])
    for variant in ("removed", "not_removed"):
        r = result[variant]
        assert r["n"] == 2
        assert r["recall@1"] == 0.5  # (1 + 0) / 2
        assert r["recall@50"] == 0.5  # 15 is never in the list
        assert r["ndcg@5"] == pytest.approx(0.5)  # (1/log2(2) + 0) / 2 = 1/2
        assert r["mrr@5"] == pytest.approx(0.5)  # (1/1 + 0) / 2


def test_target_listed_twice_counts_twice() -> None:
    # Targets (12, 12, 19): 12 at rank 1 is hit twice, 19 (rank 8) missed at k=5.
    result = evaluate_rankings([RANKING], [sample("a", (12, 12, 19))])
    r = result["not_removed"]
    assert r["n"] == 3
    assert r["recall@5"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3
    assert r["mrr@5"] == pytest.approx(1 / 3)  # (1/2 + 1/2 + 0) / 3


# 4. target outside the catalog ---------------------------------------------------------------


def test_target_outside_catalog_counts_but_never_hits() -> None:
    # 12 is ranked first; 99 is not a catalog item, so it cannot appear in any ranking.
    result = evaluate_scores(scores_for([12])[None, :], [sample("a", (12, 99))], CATALOG)
    for variant in ("removed", "not_removed"):
        r = result[variant]
        assert r["n"] == 2
        assert r["recall@1"] == 0.5  # (1 + 0) / 2
        assert r["recall@50"] == 0.5  # 99 is missed at every k


# 5. ties -------------------------------------------------------------------------------------


def test_ties_broken_by_catalog_order() -> None:
    # Columns 0..9 = items 10..19.
    row = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.5, 0.0, 0.0, 0.0, 0.0])
    # 0.9: cols 1, 3 -> 11, 13; 0.5: cols 0, 2, 5 -> 10, 12, 15; 0.1: col 4 -> 14; 0.0: 16..19.
    expected = [11, 13, 10, 12, 15, 14, 16, 17, 18, 19]
    assert rank_catalog(row[None, :], CATALOG).tolist() == [expected]
    # Cutting inside the 0.5 tie keeps the earlier columns (10, 12), not 15.
    assert rank_catalog(row[None, :], CATALOG, top_n=4).tolist() == [[11, 13, 10, 12]]
    # All-equal scores give plain catalog order.
    assert rank_catalog(np.ones((1, 10)), CATALOG, top_n=3).tolist() == [[10, 11, 12]]


def test_rank_catalog_across_row_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "_ROW_CHUNK", 2)  # 3 rows -> blocks of 2 and 1
    scores = np.stack([scores_for([19]), scores_for([10, 11]), np.ones(10)])
    # Row 0: 19 then ties 10..18 in order; row 1: 10, 11, then 12..; row 2: all tied -> 10, 11.
    assert rank_catalog(scores, CATALOG, top_n=2).tolist() == [[19, 10], [10, 11], [10, 11]]


def test_rank_catalog_uses_catalog_item_ids_not_columns() -> None:
    catalog = Catalog([Item(item_id=i, title="", description="") for i in (500, 7, 42)])
    # Scores 1, 3, 2 on columns 0, 1, 2 -> items 7, 42, 500; int scores are fine too.
    ranking = rank_catalog(np.array([[1, 3, 2]]), catalog)
    assert ranking.dtype == np.int64
    assert ranking.tolist() == [[7, 42, 500]]


# 6. empty targets and n == 0 -----------------------------------------------------------------


def test_samples_without_targets_are_skipped() -> None:
    with_empty = evaluate_rankings([[10], [11, 12, 13]], [sample("e", ()), sample("a", (13,))])
    alone = evaluate_rankings([[11, 12, 13]], [sample("a", (13,))])
    assert with_empty == alone
    assert with_empty["removed"]["n"] == 1
    assert with_empty["removed"]["coverage@1"] == 1  # {11}: the skipped sample's list is not covered


def test_zero_counted_targets_give_zeros() -> None:
    # The only target is mentioned in the context: removed has nothing to count.
    result = evaluate_rankings([RANKING], [sample("a", (12,), context_items=(12,))])
    removed = result["removed"]
    assert removed["n"] == 0
    assert all(value == 0 for value in removed.values())
    assert result["not_removed"]["n"] == 1
    assert result["not_removed"]["recall@5"] == 1.0  # 12 at raw rank 1

    empty = evaluate_rankings([], [])
    assert empty["not_removed"]["n"] == 0 and empty["not_removed"]["recall@50"] == 0.0


# 7. input validation -------------------------------------------------------------------------


def test_rank_catalog_rejects_wrong_shape_and_nan() -> None:
    with pytest.raises(ValueError, match=r"\(n_samples, 10\)"):
        rank_catalog(np.zeros((2, 9)), CATALOG)
    with pytest.raises(ValueError, match=r"\(n_samples, 10\)"):
        rank_catalog(np.zeros(10), CATALOG)
    bad = np.zeros((2, 10))
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rank_catalog(bad, CATALOG)
    with pytest.raises(ValueError, match="top_n"):
        rank_catalog(np.zeros((1, 10)), CATALOG, top_n=0)


def test_top_n_larger_than_catalog() -> None:
    ranking = rank_catalog(np.zeros((3, 10)), CATALOG, top_n=100)
    assert ranking.shape == (3, 10)  # min(100, 10)


def test_evaluate_rejects_misaligned_inputs_and_bad_ks() -> None:
    with pytest.raises(ValueError, match="aligned"):
        evaluate_rankings([RANKING], [sample("a", (11,)), sample("b", (11,))])
    with pytest.raises(ValueError, match="aligned"):
        evaluate_scores(np.zeros((1, 10)), [sample("a", (11,)), sample("b", (11,))], CATALOG)
    with pytest.raises(ValueError, match="ks"):
        evaluate_rankings([RANKING], [sample("a", (11,))], ks=(0, 5))


def test_rankings_cut_to_top_n_before_removal() -> None:
    # top_n=3 keeps 11, 12, 13; removing context item 12 leaves 11, 13 -- 14 is NOT pulled in.
    s = sample("a", (14,), context_items=(12,))
    assert evaluate_rankings([RANKING], [s], top_n=3)["removed"]["recall@50"] == 0.0
    # With the full list, 14 sits at filtered rank 2: 1/(2+1).
    assert evaluate_rankings([RANKING], [s])["removed"]["mrr@5"] == pytest.approx(1 / 3)


# 8. micro vs macro ---------------------------------------------------------------------------


def test_micro_average_over_targets() -> None:
    a = sample("a", (11, 12, 13))  # ranking 14, 11, 12, 13: ranks 1, 2, 3
    b = sample("b", (11,))  # ranking 11, ...: rank 0
    result = evaluate_rankings([[14, 11, 12, 13], [11, 12]], [a, b])["not_removed"]
    assert result["n"] == 4
    # micro: (0 + 0 + 0 + 1) / 4 = 0.25; macro would be (0/3 + 1/1) / 2 = 0.5.
    assert result["recall@1"] == 0.25
    # micro mrr@5: (1/2 + 1/3 + 1/4 + 1/1) / 4 = 2.0833333 / 4 = 0.5208333333
    assert result["mrr@5"] == pytest.approx(0.5208333333)
    # micro ndcg@5: (1/log2(3) + 1/log2(4) + 1/log2(5) + 1/log2(2)) / 4
    #             = (0.6309297536 + 0.5 + 0.4306765581 + 1) / 4 = 2.5616063117 / 4 = 0.6404015779
    assert result["ndcg@5"] == pytest.approx(0.6404015779)


# 9. predictions files ------------------------------------------------------------------------

SAMPLES = [sample("s1", (11,)), sample("s2", (12, 13)), sample("s3", ())]


def write_lines(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.mark.parametrize("name", ["preds.jsonl", "preds.jsonl.gz"])
def test_predictions_round_trip(tmp_path, name: str) -> None:
    path = tmp_path / name
    # File order differs from sample order; s3 (no targets) is absent; numpy ints are accepted.
    write_predictions(path, ["s2", "s1"], [np.array([12, 13, 14]), [11, 10]])
    assert read_predictions(path, SAMPLES, CATALOG) == [[11, 10], [12, 13, 14], []]
    assert read_predictions(path, SAMPLES, CATALOG, top_n=1) == [[11], [12], []]
    assert os.listdir(tmp_path) == [name]  # no temp file left behind
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as handle:
            assert handle.readline().startswith('{"sample_id": "s2"')


def test_write_predictions_failure_keeps_old_file(tmp_path) -> None:
    path = tmp_path / "preds.jsonl"
    write_predictions(path, ["s1"], [[11]])
    with pytest.raises(TypeError):
        write_predictions(path, ["s1", "s2"], [[11], [1.5]])  # a float id is refused mid-write
    assert os.listdir(tmp_path) == ["preds.jsonl"]
    assert path.read_text() == '{"sample_id": "s1", "ranking": [11]}\n'
    with pytest.raises(ValueError, match="duplicates"):
        write_predictions(path, ["s1", "s1"], [[11], [12]])


def test_predictions_blank_lines_are_skipped(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    write_lines(path, ['{"sample_id": "s1", "ranking": [11]}', "", '{"sample_id": "s2", "ranking": [12]}'])
    assert read_predictions(path, SAMPLES, CATALOG) == [[11], [12], []]


@pytest.mark.parametrize(
    ("second_line", "expected"),
    [
        ('{"sample_id": "s2", "ranking": [12', r"p\.jsonl, line 2: not valid JSON"),
        ("[1, 2]", r"line 2: expected a JSON object"),
        ('{"sample_id": "s2"}', r"line 2, field 'ranking': missing"),
        ('{"ranking": [12]}', r"line 2, field 'sample_id': missing"),
        ('{"sample_id": 2, "ranking": [12]}', r"line 2, field 'sample_id': must be a string"),
        ('{"sample_id": "s2", "ranking": "12"}', r"line 2, field 'ranking': must be a list"),
        ('{"sample_id": "s2", "ranking": [12, 1.5]}', r"line 2, field 'ranking': .*integers, got 1\.5"),
        ('{"sample_id": "s2", "ranking": [true]}', r"line 2, field 'ranking': .*integers, got True"),
        ('{"sample_id": "zz", "ranking": [12]}', r"line 2, field 'sample_id': unknown sample 'zz'"),
        ('{"sample_id": "s1", "ranking": [12]}', r"line 2, field 'sample_id': .*already ranked on line 1"),
        ('{"sample_id": "s2", "ranking": [12, 99]}', r"line 2, field 'ranking': item id 99 is not in the catalog"),
        ('{"sample_id": "s2", "ranking": [12, 13, 12]}', r"line 2, field 'ranking': item id 12 appears twice"),
    ],
)
def test_predictions_bad_line(tmp_path, second_line: str, expected: str) -> None:
    path = tmp_path / "p.jsonl"
    write_lines(path, ['{"sample_id": "s1", "ranking": [11]}', second_line])
    with pytest.raises(DataError, match=expected) as info:
        read_predictions(path, SAMPLES, CATALOG)
    assert info.value.line == 2


def test_predictions_missing_samples(tmp_path) -> None:
    path = tmp_path / "p.jsonl"
    write_lines(path, ['{"sample_id": "s3", "ranking": [11]}'])
    # s1 and s2 have targets and no line: 2 missing; s3 has no targets and is allowed either way.
    with pytest.raises(DataError, match=r"2 samples with targets have no ranking \(first: 's1', 's2'\)"):
        read_predictions(path, SAMPLES, CATALOG)


def test_predictions_not_gzip(tmp_path) -> None:
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(DataError, match="gzip"):
        read_predictions(path, SAMPLES, CATALOG)


# 10. table -----------------------------------------------------------------------------------


def test_format_table() -> None:
    # Target 13 at rank 2: R@1 = 0, R@10 = R@50 = 1, NDCG@10 = 1/log2(4) = 0.5, MRR@10 = 1/3.
    result = evaluate_rankings([RANKING], [sample("a", (13,))])
    table = format_table([("barcor-aug", result)])
    lines = table.splitlines()
    assert lines[0].split() == ["model", "variant", "n", "R@1", "R@10", "R@50", "NDCG@10", "MRR@10"]
    assert lines[2].split() == ["barcor-aug", "removed", "1", "0.00", "100.00", "100.00", "50.00", "33.33"]
    assert lines[3].split() == ["barcor-aug", "not_removed", "1", "0.00", "100.00", "100.00", "50.00", "33.33"]
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # fixed width
    with pytest.raises(ValueError, match="recall@50"):
        format_table([("m", evaluate_rankings([RANKING], [sample("a", (13,))], ks=(1, 10)))], ks_shown=(1, 10, 50))
    small = format_table([("m", evaluate_rankings([RANKING], [sample("a", (13,))], ks=(1, 5)))]).splitlines()
    assert small[0].split() == ["model", "variant", "n", "R@1", "NDCG@5", "MRR@5"]  # the evaluated ks only
    assert small[2].split() == ["m", "removed", "1", "0.00", "50.00", "33.33"]


# 11. entropy@k, repeated labels, the selection metric, tie orders -----------------------------


def test_entropy_weights_each_counted_label_like_the_reference() -> None:
    # a: label 11 listed twice, ranking 11, 12, ...; b: label 14, ranking 12, 14, 11. No context.
    result = evaluate_rankings([RANKING, [12, 14, 11]], [sample("a", (11, 11)), sample("b", (14,))], ks=(1, 2))
    rm = result["removed"]
    assert rm["n"] == 3 and rm["recall@1"] == pytest.approx(2 / 3)  # 11 hit twice, 14 at rank 1
    # top-1 lists, once per counted label: 11, 11 (a twice), 12 (b) -> shares 2/3, 1/3
    # H = -(2/3 log2 2/3 + 1/3 log2 1/3) = 0.3899750 + 0.5283208 = 0.9182958
    assert rm["coverage@1"] == 2
    assert rm["entropy@1"] == pytest.approx(0.9182958341)
    # top-2 lists: {11, 12} twice, {12, 14} once -> 11: 2, 12: 3, 14: 1 of 6
    # H = 1/3 log2 3 + 1/2 log2 2 + 1/6 log2 6 = 0.5283208 + 0.5 + 0.4308271 = 1.4591479
    assert rm["coverage@2"] == 3
    assert rm["entropy@2"] == pytest.approx(1.4591479170)
    assert entropy(Counter({7: 5, 8: 5})) == 1.0 and entropy(Counter()) == 0.0


def test_repeated_label_counts_per_entry_in_both_variants() -> None:
    # Labels (13, 13, 15), context mentions 15: not_removed counts 3 pairs, removed skips 15 -> 2 pairs.
    result = evaluate_rankings([RANKING], [sample("a", (13, 13, 15), context_items=(15,))])
    assert result["not_removed"]["n"] == 3
    assert result["not_removed"]["recall@5"] == 1.0  # 13 (rank 2) twice, 15 (rank 4) once
    assert result["removed"]["n"] == 2
    assert result["removed"]["mrr@5"] == pytest.approx(1 / 3)  # 13 stays at rank 2 (11, 12, 13 ...)


def test_selection_metric_scores_the_unfiltered_top_50_without_mentioned_labels() -> None:
    # Ranking of 60 items 100..159; the context mentions the first five (100..104) and label 100;
    # label 152 sits at raw rank 52.
    ranking = list(range(100, 160))
    s = sample("a", (100, 152), context_items=(100, 101, 102, 103, 104))
    selection = selection_rankings([ranking], [s])
    assert selection["n"] == 1  # 100 was mentioned: left out, as DatasetForRec(repeated_item_removed)
    assert selection["recall@50"] == 0.0  # raw rank 52 is outside the unfiltered top 50
    # final_evaluation's "removed" variant filters the ranking first: 152 moves up to rank 47 < 50.
    final = evaluate_rankings([ranking], [s])["removed"]
    assert final["n"] == 1 and final["recall@50"] == 1.0
    # without context the labels 101 (rank 1) and 102 (rank 2) both count: MRR@10 = (1/2 + 1/3) / 2
    assert selection_rankings([ranking], [sample("b", (101, 102))])["mrr@10"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert selection_key("unicrs") == "valid_recall@25"
    assert selection_key("minilm") == selection_key("barcor") == "valid_recall@50"
    # the score-matrix entry point ranks the catalog: 13 first, label 13 -> recall@1 = 1
    assert selection_scores(scores_for([13])[None, :], [sample("c", (13,))], CATALOG)["recall@1"] == 1.0
    with pytest.raises(ValueError, match="<= 50"):
        selection_rankings([ranking], [s], ks=(100,))


def test_tied_rows_only_when_equal_scores_decide_the_top_n() -> None:
    row = np.array([[3.0, 2.0, 2.0, 1.0]])
    assert not tied_rows(row, top_n=1).any()  # top 1 is 3.0 alone; the 2.0 tie is below the cut
    assert tied_rows(row, top_n=2).all()  # who takes place 2 depends on the tie order
    assert not tied_rows(np.array([[4.0, 3.0, 2.0, 1.0]]), top_n=100).any()


def test_tied_scores_give_the_mean_over_seeded_tie_orders() -> None:
    # Items 11 and 12 share the top score; the rest are strictly ordered below them. Label 12.
    row = np.array([0.0, 5.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3])
    samples = [sample("a", (12,))]
    result = evaluate_scores(row[None, :], samples, CATALOG, tie_orders=40)
    draws = [rank_catalog(row[None, :], CATALOG, tie_seed=seed)[0] for seed in range(40)]
    first = sum(int(d[0] == 12) for d in draws)
    assert all(sorted(d[:2]) == [11, 12] and list(d[2:]) == [13, 14, 15, 16, 17, 18, 19, 10] for d in draws)
    # recall@1 is 1 when 12 is drawn first, else 0; recall@5 is 1 in every order
    assert result["not_removed"]["recall@1"] == pytest.approx(first / 40)
    assert 0 < first < 40  # both orders occur, so the catalog-order ranking (11 first) is not what is reported
    assert result["not_removed"]["recall@5"] == 1.0
    # MRR@5 mixes 1/1 and 1/2 in the same proportion
    assert result["not_removed"]["mrr@5"] == pytest.approx((first + (40 - first) / 2) / 40)
    assert result["ties"] == "mean over 40 random tie orders (1 of 1 rows tied)"
    strict = evaluate_scores(np.array([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]]), samples, CATALOG)
    assert strict["ties"] == "none" and strict["not_removed"]["recall@1"] == 0.0  # 12 is second
    table = format_table([("popularity", result), ("model", strict)]).splitlines()
    assert table[-2] == "ties in popularity's scores: mean over 40 random tie orders (1 of 1 rows tied)"
    assert table[-1] == "other models: no ties, one ranking"
    with pytest.raises(ValueError, match="tie_orders"):
        evaluate_scores(row[None, :], samples, CATALOG, tie_orders=0)


@pytest.mark.parametrize("tie_seed", [None, 0, 5])
def test_top_n_equals_the_first_n_of_a_full_sort(tie_seed):
    """rank_catalog sorts only the columns that can reach the top n; that is the first n of a full sort, with
    the same random tie order, including rows where whole blocks of scores are tied."""
    rng = np.random.default_rng(3)
    catalog = Catalog([Item(500 + i, f"m{i}", "") for i in range(300)])
    scores = rng.integers(0, 4, (40, 300)).astype(np.float32)
    scores[:5] = 0.0  # every column tied
    block = -scores.astype(np.float64)
    keys = np.random.default_rng(tie_seed).random(block.shape) if tie_seed is not None else None
    full = (np.argsort(block, axis=1, kind="stable") if keys is None else np.lexsort((keys, block), axis=1))
    expected = catalog.item_ids[full[:, :100]]
    np.testing.assert_array_equal(rank_catalog(scores, catalog, 100, tie_seed=tie_seed), expected)
