"""Stage `evaluate`: saved models and outside prediction files under one exact protocol -> metrics.json."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crs_core.artifacts import RunDir, write_json
from crs_core.config import Config
from crs_core.data.prepared import PreparedData, load_prepared
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
from crs_core.schema import Catalog, Sample
from crs_core.stages.base import Stage

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
    from crs_core.stages.train import training_seed

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


class Evaluate(Stage):
    """Evaluate saved models and prediction files {name: path} on `split` (metrics.json); with `figure`, also
    draw their recall with bootstrap intervals. `models` None: the models the pipeline trains (the backbone
    with and without augmentation, and the baselines). No fingerprint: it reads every model again (seconds)."""

    name = "evaluate"
    about = "saved models on the {stage.split} split, FNSCRS protocol"

    def __init__(self, models: Sequence[str] | None = None, predictions: Mapping[str, Path] | None = None,
                 split: str = "test", figure: bool = True):
        self.models, self.predictions, self.split, self.figure = models, dict(predictions or {}), split, figure

    def outputs(self, config: Config) -> list[str]:
        return [METRICS_FILE, results_figure(self.split)] if self.figure else [METRICS_FILE]

    def model_names(self, config: Config) -> list[str]:
        from crs_core.stages.baselines import BASELINES
        from crs_core.stages.train import model_names

        return list(self.models) if self.models is not None else [*model_names(config), *BASELINES]

    def work(self, config: Config, run: RunDir) -> dict:
        return {"split": self.split,
                "results": evaluate_models(config, run, self.model_names(config), self.predictions, self.split,
                                           self.figure)}

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        split = figures["split"]
        lines = [f"{', '.join(figures['results'])} on {split}: {config.run_dir() / METRICS_FILE}"]
        if self.figure:
            lines.append(f"figure: {config.run_dir() / results_figure(split)} (removed variant, 95% bootstrap CI "
                         f"over {split} pairs)")
        return lines


def evaluate_models(config: Config, run: RunDir, names: Sequence[str], predictions: Mapping[str, Path],
                    split: str, figure: bool) -> dict[str, dict]:
    """{model: protocol result} for saved models and prediction files, recorded in metrics.json."""
    from crs_core.figures import RESULT_KS

    data = load_prepared(run.root)
    samples, ks, top_n = data.samples[split], config.evaluation.ks, config.evaluation.top_n
    results, provenance, hits = {}, {}, {}
    for name in names:
        scores = saved_model_scores(run, name, data, split)
        results[name] = evaluate_scores(scores, samples, data.catalog, ks=ks, top_n=top_n)
        provenance[name] = f"models/{name}"
        if figure:
            hits[name] = removed_pair_hits(scores, samples, data.catalog, RESULT_KS, top_n)
    for name, path in predictions.items():
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


STAGE = Evaluate()
