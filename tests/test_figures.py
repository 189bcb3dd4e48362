"""The run's figures: each drawing function writes a PNG titled with dataset, n, tau, seed and what the bars mean;
the bootstrap interval and the per-pair hits behind the results figure; the training history the curves read."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from crs_core.evaluation import evaluate_scores
from crs_core.figures import bootstrap_interval, plot_results, plot_student_scores, plot_training_curves
from crs_core.schema import Catalog, Item, Sample
from crs_core.stages.evaluate import removed_pair_hits

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def epoch(n: int, r10: float, r50: float) -> dict:
    return {"epoch": n, "train_loss": 1.0 / n, "valid_recall@10": r10, "valid_recall@50": r50, "valid_n": 37}


def test_training_curves_png_and_title(tmp_path) -> None:
    histories = {"no augmentation": [epoch(1, 0.1, 0.3), epoch(2, 0.2, 0.4)],
                 "stage 1 (synthetic labels)": [epoch(1, 0.05, 0.2), epoch(2, 0.1, 0.25), epoch(3, 0.1, 0.25)],
                 "stage 2": [epoch(1, 0.15, 0.35)],
                 "reloaded stage": []}
    path = tmp_path / "figures" / "training_curves.png"
    fig = plot_training_curves(histories, path, dataset="INSPIRED", tau=3.5, seed=7)
    assert is_png(path)
    title = fig._suptitle.get_text()
    for text in ("INSPIRED", "n = 37 valid pairs", "tau = 3.5", "seed 7", "no error bars"):
        assert text in title
    left, right = fig.axes
    assert [len(axis.get_lines()) for axis in (left, right)] == [6, 6]  # 3 stages x (curve + kept-epoch ring)
    # the ring marks each stage's kept epoch: stage 1's R@50 ties at epochs 2 and 3, the earlier one is kept
    rings = right.get_lines()[1::2]
    assert [tuple(ring.get_xydata()[0]) for ring in rings] == [(2, 40.0), (2, 25.0), (1, 35.0)]
    with pytest.raises(ValueError, match="valid_recall"):
        plot_training_curves({"empty": []}, tmp_path / "none.png", dataset="x", tau=3, seed=1)


def test_no_training_curves_when_every_stage_was_only_reloaded(tmp_path) -> None:
    """A Ray run that was already complete reports no epoch: the train stage then draws nothing, and says so."""
    from crs_core.artifacts import RunDir
    from crs_core.config import Config
    from crs_core.stages.train import draw_training_curves

    reloaded = {"history": []}
    assert draw_training_curves(Config(), RunDir(tmp_path), reloaded, reloaded, reloaded) is None
    assert not (tmp_path / "figures").exists()


def test_student_scores_png_with_and_without_judged_pairs(tmp_path) -> None:
    scores = np.array([0.2, 1.4, 2.9, 3.0, 3.6, 3.95])
    alone = plot_student_scores(scores, tmp_path / "alone.png", dataset="INSPIRED", tau=3.0, seed=42)
    assert is_png(tmp_path / "alone.png") and len(alone.axes) == 1
    assert "all 6 scored pairs (3 score >= tau)" == alone.axes[0].get_title()
    judged = (np.array([0.5, 3.2, 3.7, 2.0]), np.array([0.0, 4.0, 3.0, 2.0]))
    fig = plot_student_scores(scores, tmp_path / "judged.png", dataset="INSPIRED", tau=3.0, seed=42, judged=judged)
    assert is_png(tmp_path / "judged.png") and len(fig.axes) == 2
    title = fig._suptitle.get_text()
    for text in ("INSPIRED", "n = 6 scored pairs", "tau = 3", "seed 42", "bars: number of (context, candidate) pairs"):
        assert text in title
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert "LLM score >= 3 (2 pairs)" in legend and "LLM score < 3 (2 pairs)" in legend


def test_results_png_bars_and_title(tmp_path) -> None:
    intervals = {"minilm": {1: (0.01, 0.0, 0.03), 10: (0.2, 0.15, 0.26), 50: (0.4, 0.33, 0.47)},
                 "ease": {1: (0.04, 0.01, 0.07), 10: (0.11, 0.06, 0.16), 50: (0.3, 0.23, 0.37)}}
    path = tmp_path / "results.png"
    fig = plot_results(intervals, path, dataset="INSPIRED", n_pairs=161, tau=3.0, seeds=[42])
    assert is_png(path)
    title = fig._suptitle.get_text()
    for text in ("INSPIRED test", "removed variant", "n = 161 test pairs", "tau = 3", "seed 42",
                 "bars: 95% bootstrap CI over 161 test pairs", "one seed"):
        assert text in title
    bars = fig.axes[0].patches
    assert [round(b.get_height(), 6) for b in bars] == [1.0, 20.0, 40.0, 4.0, 11.0, 30.0]
    several = plot_results(intervals, path, dataset="INSPIRED", n_pairs=161, tau=3.0, seeds=[1, 2, 3])
    assert "seeds 1, 2, 3" in several._suptitle.get_text() and "averaged over 3 seeds" in several._suptitle.get_text()


def test_bootstrap_interval_by_hand() -> None:
    assert bootstrap_interval(np.ones(20)) == (1.0, 1.0, 1.0)
    assert bootstrap_interval(np.zeros(20)) == (0.0, 0.0, 0.0)
    # Two pairs, hits (1, 0): a draw's mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4, so the 2.5th and
    # 97.5th percentiles over 10,000 draws are 0 and 1 and the mean is 1/2.
    assert bootstrap_interval(np.array([1.0, 0.0])) == (0.5, 0.0, 1.0)
    mean, low, high = bootstrap_interval(np.r_[np.ones(30), np.zeros(70)])
    # normal approximation: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = 0.3 +- 0.0898
    assert mean == pytest.approx(0.3) and low == pytest.approx(0.21, abs=0.02) and high == pytest.approx(0.39, abs=0.02)


CATALOG = Catalog([Item(i, f"Film {i}", "") for i in (10, 11, 12, 13)])
SAMPLES = [Sample("s1", "d1", 1, ("hi",), ("seeker",), (10,), targets=(10, 12)),
           Sample("s2", "d2", 1, ("hi",), ("seeker",), (), targets=(13,)),
           Sample("s3", "d3", 1, ("hi",), ("seeker",), (), targets=(11,)),
           Sample("s4", "d4", 1, ("hi",), ("seeker",), (), targets=())]
SCORES = np.array([[4, 3, 2, 1], [3, 2, 1, 5], [1, 1, 0, -1], [1, 2, 3, 4]], dtype=float)


def test_removed_pair_hits_by_hand_and_equal_to_the_table() -> None:
    """s1: 10 is mentioned, so the ranking is (11, 12, 13) and only target 12 counts: rank 2. s2: 13 first.
    s3: 10 and 11 tie at the top: 11 is first in some tie orders, always in the top 2. s4: no target, no pair."""
    hits = removed_pair_hits(SCORES, SAMPLES, CATALOG, (1, 2), top_n=4)
    assert hits.shape == (3, 2)
    np.testing.assert_array_equal(hits[:2], [[0, 1], [1, 1]])
    assert 0 < hits[2, 0] < 1 and hits[2, 1] == 1
    table = evaluate_scores(SCORES, SAMPLES, CATALOG, ks=(1, 2), top_n=4)["removed"]
    assert table["n"] == 3
    assert hits.mean(axis=0).tolist() == pytest.approx([table["recall@1"], table["recall@2"]], abs=1e-12)


@pytest.mark.slow
def test_training_keeps_every_epochs_valid_metrics_and_draws_the_curves(tmp_path) -> None:
    """Two-stage training on the tiny data (local runner, frozen MiniLM): the train summary keeps each stage's
    per-epoch valid recall, and figures/training_curves.png is drawn from it."""
    from tiny_data import make_inspired

    from crs_core.artifacts import RunDir, read_table, write_table
    from crs_core.config import load_config
    from crs_core.figures import TRAINING_CURVES
    from crs_core.schema import SAMPLES_SCHEMA, SCORES_SCHEMA, SYNTHETIC_SCHEMA, table_to_samples
    from crs_core.stages import run_stage
    from crs_core.stages.synthesize import synthesize
    from crs_core.stages.train import STAGE as TRAIN

    data = make_inspired(tmp_path / "data")
    config = load_config(overrides=["train.runner=local", "train.num_workers=1", "train.epochs_stage1=2",
                                    "train.epochs_stage2=3", "train.trainable_layers=0", "train.max_length=32",
                                    "train.batch_size=4"],
                         base={"dataset": "inspired", "data_dir": str(data), "runs_dir": str(tmp_path / "runs")})
    run_stage("prepare", config)
    run = RunDir(config.run_dir())
    train = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
    rows = synthesize(train, SCORES_SCHEMA.empty_table(), 3.0)  # no scores: stage 1 on the original labels
    write_table(run.path("synthetic.parquet"), pa.Table.from_pylist(rows, schema=SYNTHETIC_SCHEMA), SYNTHETIC_SCHEMA)

    summary = TRAIN.run(config, run)
    saved = json.loads(run.stage_record("train").read_text())["summary"]
    for key, epochs in (("baseline", 3), ("stage1", 2), ("stage2", 3)):
        history = saved[key]["history"]
        assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
        assert all({"valid_recall@10", "valid_recall@50", "valid_n"} <= h.keys() for h in history)
        best = max(history, key=lambda h: h["valid_recall@50"])["valid_recall@50"]
        assert saved[key]["valid"]["valid_recall@50"] == best
    assert summary["figure"] == TRAINING_CURVES and run.path(TRAINING_CURVES).read_bytes()[:8] == PNG_SIGNATURE
