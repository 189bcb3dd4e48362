"""The run's pictures, under `figures/` in the run directory: what a user looks at before trusting a number.

- `training_curves.png` (stage `train`): valid recall after every epoch of each training stage.
- `student_scores.png` (stage `synthesize`): the student's scores with the threshold tau that makes positives.
- `results.png` (`crs evaluate`, `crs run`): the test table's recall per model with bootstrap intervals.

Each function takes plain data and a path, writes one PNG atomically and returns the Figure (its
suptitle names the dataset, n, tau, the seed(s) and what the bars mean). Figures are drawn with the
`matplotlib.figure.Figure` API (Agg canvas, no pyplot state), so drawing is safe in any process; matplotlib
is imported when a figure is drawn, so importing the path constants costs nothing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from crs_core.artifacts import atomic_write_bytes
from crs_core.evaluation.paired import paired_bootstrap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURES_DIR = "figures"
TRAINING_CURVES = f"{FIGURES_DIR}/training_curves.png"
STUDENT_SCORES = f"{FIGURES_DIR}/student_scores.png"
RESULTS = f"{FIGURES_DIR}/results.png"
CURVE_METRICS = ("valid_recall@10", "valid_recall@50")
RESULT_KS = (1, 10, 50)
RELEVANT = 3  # an LLM score >= 3 is a relevant pair (the synthetic-label precision's rule)
SCORE_BINS = np.linspace(0.0, 4.0, 41)  # the student's calibrated 0-4 scale in 0.1-wide bins
DPI = 120


def save_png(fig: Figure, path: Path) -> Figure:
    """Render to memory, then replace `path` in one step: a reader never sees half a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return fig


def bootstrap_interval(hits: np.ndarray, draws: int = 10_000, seed: int = 0,
                       confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): a metric's mean over test pairs and its percentile bootstrap interval.

    `hits`: per-pair values in [0, 1] (a 0/1 hit, or a hit rate over tie orders), shape (pairs,) or (seeds,
    pairs). The bootstrap is `paired_bootstrap` against an all-zero model: the same resampling of pairs,
    so this interval and the paired ones in benchmarks/ are computed alike."""
    hits = np.atleast_2d(np.asarray(hits, dtype=float))
    result = paired_bootstrap(hits, np.zeros_like(hits), draws=draws, seed=seed, confidence=confidence)
    return result["difference"], result["low"], result["high"]


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: Path, *, dataset: str,
                         tau: float, seed: int, selected_by: str = "valid_recall@50") -> Figure:
    """One panel per valid metric (R@10, R@50), one line per training stage (its epochs from 1), the epoch
    each stage kept (highest `selected_by`) ringed. `histories`: {stage label: per-epoch reported metrics};
    a stage with no epochs this run (a Ray run reloaded whole) is left out."""
    from matplotlib.figure import Figure

    histories = {label: history for label, history in histories.items() if history}
    metrics = [m for m in CURVE_METRICS if all(m in epoch for h in histories.values() for epoch in h)]
    if not metrics or not histories:
        raise ValueError(f"no per-epoch {' or '.join(CURVE_METRICS)} in the training history")
    n_valid = next(int(epoch["valid_n"]) for h in histories.values() for epoch in h)
    fig = Figure(figsize=(5 * len(metrics) + 1, 4.8), layout="constrained")
    for axis, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for (label, history), style in zip(histories.items(), ("o-", "s--", "^-.", "d:")):
            epochs = [int(e["epoch"]) for e in history]
            values = [100 * e[metric] for e in history]
            line, = axis.plot(epochs, values, style, label=label)
            kept = max(range(len(history)), key=lambda i: (history[i][selected_by], -i))
            axis.plot(epochs[kept], values[kept], "o", markersize=13, fillstyle="none", color=line.get_color())
        axis.set_xlabel("epoch of the stage")
        axis.set_ylabel(f"valid Recall@{metric.rsplit('@', 1)[1]} (%)")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(alpha=0.3)
    fig.legend(*axis.get_legend_handles_labels(), loc="outside lower center", ncols=len(histories), fontsize=8)
    fig.suptitle(f"{dataset}: valid recall per epoch (n = {n_valid} valid pairs, tau = {tau:g}, seed {seed})\n"
                 f"points: one seed's value after each epoch, no error bars; ring: the epoch kept "
                 f"(highest {selected_by})", fontsize=9)
    return save_png(fig, path)


def plot_student_scores(scores: np.ndarray, path: Path, *, dataset: str, tau: float, seed: int,
                        judged: tuple[np.ndarray, np.ndarray] | None = None) -> Figure:
    """Histogram of the student's score over every scored (context, candidate) pair with tau marked; with
    `judged` = (out-of-fold student score, LLM score) of the judged pairs, a second panel overlays the
    out-of-fold scores of the pairs the LLM judged >= 3 and < 3."""
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=float)
    fig = Figure(figsize=(11 if judged is not None else 6.5, 4.6))
    axes = fig.subplots(1, 2 if judged is not None else 1, squeeze=False)[0]
    above = int((scores >= tau).sum())
    axes[0].hist(scores, bins=SCORE_BINS, color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_title(f"all {scores.size:,} scored pairs ({above:,} score >= tau)", fontsize=9)
    axes[0].set_ylabel("pairs per bin (log scale)")
    if judged is not None:
        student, teacher = (np.asarray(a, dtype=float) for a in judged)
        relevant = teacher >= RELEVANT
        axes[1].hist(student[~relevant], bins=SCORE_BINS, alpha=0.55, color="tab:grey",
                     label=f"LLM score < {RELEVANT} ({int((~relevant).sum()):,} pairs)")
        axes[1].hist(student[relevant], bins=SCORE_BINS, alpha=0.55, color="tab:orange",
                     label=f"LLM score >= {RELEVANT} ({int(relevant.sum()):,} pairs)")
        axes[1].set_title(f"{student.size:,} LLM-judged pairs: out-of-fold student score", fontsize=9)
        axes[1].set_ylabel("pairs per bin")
        axes[1].legend(fontsize=8, loc="upper right")
    for axis in axes:
        axis.axvline(tau, color="tab:red", linestyle="--", label=f"tau = {tau:g}")
        axis.set_xlabel("student score (calibrated expected LLM score, 0-4)")
        axis.set_xlim(0, 4)
    axes[0].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{dataset}: student scores, n = {scores.size:,} scored pairs, tau = {tau:g}, seed {seed}\n"
                 "bars: number of (context, candidate) pairs per 0.1-wide score bin; pairs scoring >= tau "
                 "(not already a target or mentioned) become synthetic positives", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def plot_results(intervals: Mapping[str, Mapping[int, tuple[float, float, float]]], path: Path, *, dataset: str,
                 n_pairs: int, tau: float, seeds: Sequence[int], split: str = "test", variant: str = "removed",
                 confidence: float = 0.95) -> Figure:
    """Grouped bars: Recall@k (%) per model, an error bar from each interval's low to high.
    `intervals`: {model: {k: (mean, low, high)}} in 0-1, as `bootstrap_interval` returns them."""
    from matplotlib.figure import Figure

    if not intervals:
        raise ValueError("no model to plot")
    ks = list(next(iter(intervals.values())))
    width = 0.8 / len(intervals)
    fig = Figure(figsize=(min(11.0, 2.0 + 0.6 * len(ks) * len(intervals)), 4.8))
    axis = fig.subplots()
    positions = np.arange(len(ks))
    for m, (model, by_k) in enumerate(intervals.items()):
        mean, low, high = (100 * np.array([by_k[k][j] for k in ks]) for j in range(3))
        x = positions + (m - (len(intervals) - 1) / 2) * width
        axis.bar(x, mean, width, yerr=[mean - low, high - mean], capsize=3, label=model)
        for xi, value, top in zip(x, mean, high):
            axis.annotate(f"{value:.1f}", (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                          fontsize=7)
    axis.set_xticks(positions, [f"Recall@{k}" for k in ks])
    axis.set_ylabel("recall (%)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    training = ("one seed: training noise not included" if len(seeds) == 1
                else f"per-pair hits averaged over {len(seeds)} seeds")
    fig.suptitle(f"{dataset} {split}, {variant} variant (n = {n_pairs} {split} pairs, tau = {tau:g}, {seed_text})\n"
                 f"bars: {confidence:.0%} bootstrap CI over {n_pairs} {split} pairs ({training})", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)
