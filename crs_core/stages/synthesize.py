"""Stage `synthesize`: the student's stored scores + a threshold tau -> multi-positive training targets.

Only stored scores are re-filtered (nothing is re-scored), so a sweep over tau costs seconds per value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crs_core import __version__
from crs_core.artifacts import RunDir, read_table, write_json, write_table
from crs_core.config import Config
from crs_core.figures import STUDENT_SCORES, plot_student_scores
from crs_core.schema import (
    SAMPLES_SCHEMA,
    SCORES_SCHEMA,
    SYNTHETIC_SCHEMA,
    Sample,
    table_to_samples,
)
from crs_core.stages.base import Stage, shown
from crs_core.student.feature_pipeline import OOF_FILE, OOF_SCHEMA

SYNTHETIC = "synthetic.parquet"
OOF = f"checkpoints/student/{OOF_FILE}"  # the feature student's out-of-fold predictions of the judged pairs
TAU_CURVE = "tau_curve.json"
TAU_PLOT = "tau_curve.png"


def synthesize(train_samples: Sequence[Sample], scores: pa.Table, threshold: float) -> list[dict]:
    """Per train sample: `targets` = its original targets, then every candidate scoring >= `threshold` that is
    neither already a target nor in its context_items (a movie the seeker already mentioned is not a new
    recommendation), by descending score, ties by item id; `synthetic` = the added items only.

    Scores are compared in float32, their stored precision, so a stored 3.5 passes tau = 3.5."""
    known = {s.sample_id for s in train_samples}
    unknown = set(pc.unique(scores["sample_id"]).to_pylist()) - known
    if unknown:
        raise ValueError(f"scores for {len(unknown)} samples that are not train samples, e.g. {sorted(unknown)[0]!r}")
    kept = scores.filter(pc.greater_equal(scores["score"], pa.scalar(threshold, pa.float32())))
    ranked: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for sid, item, score in zip(*(kept.column(c).to_pylist() for c in ("sample_id", "item_id", "score"))):
        ranked[sid].append((-score, item))
    rows = []
    for sample in train_samples:
        excluded = set(sample.targets) | set(sample.context_items)
        added = []
        for _, item in sorted(ranked.get(sample.sample_id, ())):
            if item not in excluded:
                added.append(item)
                excluded.add(item)
        rows.append({"sample_id": sample.sample_id, "targets": [*sample.targets, *added], "synthetic": added})
    return rows


def expansion(rows: Sequence[dict], threshold: float) -> dict:
    """Label counts before and after augmentation (the paper's "1,404 -> 15,891")."""
    added = sum(len(r["synthetic"]) for r in rows)
    total = sum(len(r["targets"]) for r in rows)
    original = total - added
    return {
        "threshold": threshold,
        "contexts": len(rows),
        "original_labels": original,
        "synthetic_labels": total,
        "added_labels": added,
        "ratio": total / original if original else None,
        "contexts_with_added": sum(1 for r in rows if r["synthetic"]),
    }


def tau_curve(samples: Sequence[Sample], scores: pa.Table, oof: pa.Table | None,
              thresholds: Sequence[float]) -> list[dict]:
    """Per tau: the expansion on all train contexts (stored scores) and, when the student left out-of-fold
    predictions, the synthetic-label precision: the share of judged non-gold pairs scoring >= tau out of
    fold that the teacher judged relevant (>= 3)."""
    from crs_core.student.feature_scorer import synthetic_precision

    curve = []
    for tau in thresholds:
        point = expansion(synthesize(samples, scores, tau), tau)
        precision, chosen = (None, 0) if oof is None else synthetic_precision(
            oof["teacher"].to_numpy(), oof["student"].to_numpy(), oof["gold"].to_numpy(), tau)
        curve.append(point | {"precision": precision, "judged_new_positives": chosen})
    return curve


def plot_tau_curve(curve: Sequence[dict], path: Path, title: str, chosen: float) -> None:
    """Expansion ratio (left axis) and synthetic-label precision (right axis) over tau, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = [p["threshold"] for p in curve]
    fig, left = plt.subplots(figsize=(7, 4.2))
    left.plot(taus, [p["ratio"] or 0 for p in curve], "o-", color="tab:blue", label="expansion (labels after / before)")
    left.set_xlabel("threshold tau on the student's calibrated 0-4 score")
    left.set_ylabel("expansion ratio", color="tab:blue")
    right = left.twinx()
    right.plot(taus, [np.nan if p["precision"] is None else p["precision"] for p in curve], "s--", color="tab:red",
               label="precision: share of new positives the LLM judged >= 3 (out of fold)")
    right.set_ylabel("synthetic-label precision", color="tab:red")
    right.set_ylim(0, 1)
    left.axvline(chosen, color="grey", linestyle=":", label=f"configured tau {chosen:g}")
    handles = [h for ax in (left, right) for h in ax.get_legend_handles_labels()[0]]
    left.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="upper right")
    left.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


class Synthesize(Stage):
    """Write synthetic.parquet (SYNTHETIC_SCHEMA), the tau curve and the score figure."""

    name = "synthesize"
    about = "candidates scored >= tau {config.synthesize.threshold:g} become synthetic positives"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        inputs = [run.path("scores.parquet"), run.path("samples", "train.parquet")]
        return inputs + [run.path(OOF)] if run.path(OOF).exists() else inputs

    def outputs(self, config: Config) -> list[str]:
        return [SYNTHETIC, TAU_CURVE, TAU_PLOT, STUDENT_SCORES]

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"threshold": config.synthesize.threshold, "curve": config.synthesize.curve_thresholds,
                "version": __version__}

    def work(self, config: Config, run: RunDir) -> dict:
        samples = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
        scores = read_table(run.path("scores.parquet"), SCORES_SCHEMA)
        tau = config.synthesize.threshold
        rows = synthesize(samples, scores, tau)
        write_table(run.path(SYNTHETIC), pa.Table.from_pylist(rows, schema=SYNTHETIC_SCHEMA), SYNTHETIC_SCHEMA)
        oof = read_table(run.path(OOF), OOF_SCHEMA) if run.path(OOF).exists() else None
        curve = tau_curve(samples, scores, oof, sorted({*config.synthesize.curve_thresholds, tau}))
        write_json(run.path(TAU_CURVE), {"dataset": config.dataset, "scored_pairs": scores.num_rows,
                                         "judged_pairs": None if oof is None else oof.num_rows, "curve": curve})
        judged = "no out-of-fold judgments" if oof is None else f"{oof.num_rows:,} judged pairs out of fold"
        plot_tau_curve(curve, run.path(TAU_PLOT),
                       f"{config.dataset_label()}: expansion over {scores.num_rows:,} scored pairs; "
                       f"precision over {judged}", tau)
        plot_student_scores(scores["score"].to_numpy(), run.path(STUDENT_SCORES), dataset=config.dataset_label(),
                            tau=tau, seed=config.seed,
                            judged=None if oof is None else (oof["student"].to_numpy(), oof["teacher"].to_numpy()))
        at_tau = next(p for p in curve if p["threshold"] == tau)
        return expansion(rows, tau) | {
            "precision": at_tau["precision"], "judged_new_positives": at_tau["judged_new_positives"], "curve": curve}

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        return format_expansion(figures, config).splitlines()


def format_expansion(summary: Mapping[str, Any], config: Config) -> str:
    """Our expansion next to the paper's when the dataset's registry entry has it (the paper used the full
    ReDial and a Gemma2-9b student)."""
    before, after = config.data.paper_train_labels, config.data.paper_augmented_labels
    ratio = f"{summary['ratio']:.1f}x" if summary["ratio"] else "-"
    paper = [f"{'paper':<6} {before:>9,} {after:>10,} {after / before:>5.1f}x {'-':>12}"] if before and after else []
    return "\n".join([
        f"label expansion, {config.dataset_label()}, tau = {summary['threshold']:g}",
        f"{'':<6} {'original':>9} {'augmented':>10} {'ratio':>6} {'contexts +1':>12}",
        f"{'ours':<6} {summary['original_labels']:>9,} {summary['synthetic_labels']:>10,} {ratio:>6} "
        f"{summary['contexts_with_added']:>6,}/{summary['contexts']:<5,}",
        *paper,
        *_curve_lines(summary),
        f"figures: {TAU_PLOT}, {STUDENT_SCORES} (the student's scores, tau marked)",
    ])


def _curve_lines(summary: Mapping[str, Any]) -> list[str]:
    """The tau curve: expansion and out-of-fold precision of the new positives at each tau."""
    curve = summary.get("curve") or []
    if not curve:
        return []
    lines = [f"tau curve (precision = share of judged non-gold pairs scoring >= tau out of fold that the LLM judged "
             f">= 3; {TAU_CURVE}, {TAU_PLOT}):",
             f"  {'tau':>5} {'ratio':>6} {'added':>7} {'precision':>9} {'judged':>6}"]
    for p in curve:
        ratio = f"{p['ratio']:.2f}x" if p["ratio"] else "-"
        precision = shown(p["precision"], ".3f")
        lines.append(f"  {p['threshold']:>5g} {ratio:>6} {p['added_labels']:>7,} {precision:>9} "
                     f"{p['judged_new_positives']:>6}")
    return lines


STAGE = Synthesize()
