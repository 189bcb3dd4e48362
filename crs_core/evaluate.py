"""Stage `evaluate`: saved models and outside prediction files under one exact protocol -> metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from crs_core.artifacts import RunDir, write_json
from crs_core.config import Config
from crs_core.errors import CRSError
from crs_core.evaluation import evaluate_rankings, evaluate_scores, read_predictions
from crs_core.models import load_model
from crs_core.prepare import PreparedData, load_prepared

METRICS_FILE = "metrics.json"


def saved_models(run: RunDir) -> list[str]:
    models_dir = run.path("models")
    return sorted(p.parent.name for p in models_dir.glob("*/model.json")) if models_dir.exists() else []


def evaluate_saved_model(run: RunDir, name: str, data: PreparedData, split: str, config: Config) -> dict:
    directory = run.path("models", name)
    if not (directory / "model.json").exists():
        known = ", ".join(saved_models(run)) or "none"
        raise CRSError(f"no saved model '{name}' in {run.path('models')} (saved: {known}); run `crs baselines` first")
    model = load_model(directory, catalog=data.catalog)
    scores = model.score(data.samples[split])
    return evaluate_scores(scores, data.samples[split], data.catalog,
                           ks=config.evaluation.ks, top_n=config.evaluation.top_n)


def evaluate_prediction_file(path: Path, data: PreparedData, split: str, config: Config) -> dict:
    rankings = read_predictions(path, data.samples[split], data.catalog, top_n=config.evaluation.top_n)
    return evaluate_rankings(rankings, data.samples[split], ks=config.evaluation.ks, top_n=config.evaluation.top_n)


def record_metrics(run: RunDir, split: str, results: dict[str, dict], provenance: dict[str, str]) -> dict:
    """Merge results into metrics.json ({split: {model: result}}) without dropping earlier rows."""
    path = run.path(METRICS_FILE)
    metrics = json.loads(path.read_text()) if path.exists() else {}
    for name, result in results.items():
        metrics.setdefault(split, {})[name] = result | {"source": provenance[name]}
    write_json(path, metrics)
    return metrics


def run_evaluate(config: Config, models: list[str] | None = None, predictions: dict[str, Path] | None = None,
                 split: str = "test") -> dict[str, dict]:
    """Evaluate the named saved models (default: all saved) and prediction files {name: path}."""
    run = RunDir(config.run_dir())
    data = load_prepared(run.root)
    names = saved_models(run) if models is None else models
    results, provenance = {}, {}
    for name in names:
        results[name] = evaluate_saved_model(run, name, data, split, config)
        provenance[name] = f"models/{name}"
    for name, path in (predictions or {}).items():
        results[name] = evaluate_prediction_file(Path(path), data, split, config)
        provenance[name] = f"predictions file {Path(path).name}"
    if not results:
        raise CRSError(f"nothing to evaluate in {run.root}: no saved models and no --predictions file")
    record_metrics(run, split, results, provenance)
    return results
