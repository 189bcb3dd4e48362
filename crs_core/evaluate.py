"""Stage `evaluate`: saved models and outside prediction files under one exact protocol -> metrics.json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crs_core.artifacts import RunDir, write_json
from crs_core.config import Config
from crs_core.errors import CRSError
from crs_core.evaluation import (
    TIE_ORDERS,
    evaluate_rankings,
    evaluate_scores,
    rank_catalog,
    read_predictions,
    tied_rows,
)
from crs_core.evaluation.paired import pair_hits
from crs_core.models import load_model
from crs_core.prepare import PreparedData, load_prepared
from crs_core.schema import Catalog, Sample

METRICS_FILE = "metrics.json"


def saved_models(run: RunDir) -> list[str]:
    models_dir = run.path("models")
    return sorted(p.parent.name for p in models_dir.glob("*/model.json")) if models_dir.exists() else []


def saved_model_scores(run: RunDir, name: str, data: PreparedData, split: str) -> np.ndarray:
    directory = run.path("models", name)
    if not (directory / "model.json").exists():
        known = ", ".join(saved_models(run)) or "none"
        raise CRSError(f"no saved model '{name}' in {run.path('models')} (saved: {known}); run `crs baselines` first")
    return load_model(directory, catalog=data.catalog).score(data.samples[split])


def removed_pair_hits(scores: np.ndarray, samples: Sequence[Sample], catalog: Catalog, ks: tuple[int, ...],
                      top_n: int) -> np.ndarray:
    """(pairs, len(ks)): each "removed" test pair's hit at each k, averaged over `evaluate_scores`'s tie orders
    when ties decide its row, so a column's mean is the table's recall@k and a bootstrap can resample the pairs."""
    rankings = rank_catalog(scores, catalog, top_n)
    tied = tied_rows(scores, top_n)
    orders = [rankings]
    if tied.any():
        orders = [rankings.copy() for _ in range(TIE_ORDERS)]
        for seed, shuffled in enumerate(orders):
            shuffled[tied] = rank_catalog(np.asarray(scores)[tied], catalog, top_n, tie_seed=seed)
    return np.mean([pair_hits(r, samples, ks, top_n)["removed"]["hits"] for r in orders], axis=0)


def results_figure(split: str) -> str:
    """Where `run_evaluate(figure=True)` draws: figures/results.png for test, figures/results_<split>.png else."""
    from crs_core.figures import RESULTS

    return RESULTS if split == "test" else RESULTS.replace(".png", f"_{split}.png")


def draw_results_figure(config: Config, run: RunDir, hits: dict[str, np.ndarray], split: str) -> Path:
    """Recall@1/10/50 per model with 95% bootstrap intervals over the split's "removed" pairs."""
    from crs_core.figures import RESULT_KS, bootstrap_interval, plot_results
    from crs_core.two_stage import training_seed

    intervals = {name: {k: bootstrap_interval(h[:, j]) for j, k in enumerate(RESULT_KS)} for name, h in hits.items()}
    path = run.path(results_figure(split))
    plot_results(intervals, path, dataset=config.dataset_label(), n_pairs=len(next(iter(hits.values()))),
                 tau=config.synthesize.threshold, seeds=[training_seed(config)], split=split)
    return path


def record_metrics(run: RunDir, split: str, results: dict[str, dict], provenance: dict[str, str]) -> dict:
    """Merge results into metrics.json ({split: {model: result}}) without dropping earlier rows."""
    path = run.path(METRICS_FILE)
    metrics = json.loads(path.read_text()) if path.exists() else {}
    for name, result in results.items():
        metrics.setdefault(split, {})[name] = result | {"source": provenance[name]}
    write_json(path, metrics)
    return metrics


def run_evaluate(config: Config, models: list[str] | None = None, predictions: dict[str, Path] | None = None,
                 split: str = "test", figure: bool = False) -> dict[str, dict]:
    """Evaluate the named saved models (default: all saved) and prediction files {name: path}; with `figure`,
    also draw their recall with bootstrap intervals (`draw_results_figure`)."""
    from crs_core.figures import RESULT_KS

    run = RunDir(config.run_dir())
    data = load_prepared(run.root)
    samples, ks, top_n = data.samples[split], config.evaluation.ks, config.evaluation.top_n
    names = saved_models(run) if models is None else models
    results, provenance, hits = {}, {}, {}
    for name in names:
        scores = saved_model_scores(run, name, data, split)
        results[name] = evaluate_scores(scores, samples, data.catalog, ks=ks, top_n=top_n)
        provenance[name] = f"models/{name}"
        if figure:
            hits[name] = removed_pair_hits(scores, samples, data.catalog, RESULT_KS, top_n)
    for name, path in (predictions or {}).items():
        rankings = read_predictions(Path(path), samples, data.catalog, top_n=top_n)
        results[name] = evaluate_rankings(rankings, samples, ks=ks, top_n=top_n)
        provenance[name] = f"predictions file {Path(path).name}"
        if figure:
            hits[name] = pair_hits(rankings, samples, RESULT_KS, top_n)["removed"]["hits"].astype(float)
    if not results:
        raise CRSError(f"nothing to evaluate in {run.root}: no saved models and no --predictions file")
    record_metrics(run, split, results, provenance)
    if figure:
        draw_results_figure(config, run, hits, split)
    return results
