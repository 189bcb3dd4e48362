"""Stage `baselines`: fit Popularity and EASE on the training samples and save them under models/."""

from __future__ import annotations

from crs_core.artifacts import RunDir, fingerprint
from crs_core.config import Config
from crs_core.models import EASE, Popularity, Recommender
from crs_core.prepare import PreparedData, load_prepared

BASELINES = ("popularity", "ease")


def build_baselines(config: Config) -> dict[str, Recommender]:
    return {"popularity": Popularity(), "ease": EASE(l2=config.baselines.ease_l2)}


def fit_baselines(config: Config, data: PreparedData) -> dict[str, Recommender]:
    """Fit every baseline; EASE also learns from the extra item sets (ReDial: KASCRS sequences)."""
    models = build_baselines(config)
    models["popularity"].fit(data.samples["train"], data.catalog)
    models["ease"].fit(data.samples["train"], data.catalog, extra_rows=data.item_sets)
    return models


def run_baselines(config: Config, force: bool = False) -> list[str]:
    """Fit and save the baselines unless saved ones match the current data and settings."""
    run = RunDir(config.run_dir())
    outputs = [f"models/{name}/model.json" for name in BASELINES]
    inputs = [run.path("items.parquet"), run.path("samples", "train.parquet"), run.path("item_sets.parquet")]
    fp = fingerprint({"baselines": config.baselines.__dict__}, inputs)
    if force or not run.is_current("baselines", fp, outputs):
        for name, model in fit_baselines(config, load_prepared(run.root)).items():
            model.save(run.path("models", name))
        run.mark_done("baselines", fp, outputs, {"models": list(BASELINES)})
    return list(BASELINES)
