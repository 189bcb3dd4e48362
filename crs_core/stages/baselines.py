"""Stage `baselines`: fit Popularity and EASE on the training samples and save them under models/."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crs_core.artifacts import RunDir
from crs_core.config import Config
from crs_core.data.prepared import PreparedData, load_prepared
from crs_core.models import EASE, Popularity, Recommender
from crs_core.stages.base import Stage

BASELINES = ("popularity", "ease")


def build_baselines(config: Config) -> dict[str, Recommender]:
    return {"popularity": Popularity(), "ease": EASE(l2=config.baselines.ease_l2)}


def fit_baselines(config: Config, data: PreparedData) -> dict[str, Recommender]:
    """Fit every baseline; EASE also learns from the extra item sets (ReDial: KASCRS sequences)."""
    models = build_baselines(config)
    models["popularity"].fit(data.samples["train"], data.catalog)
    models["ease"].fit(data.samples["train"], data.catalog, extra_rows=data.item_sets)
    return models


class Baselines(Stage):
    """Fit and save the baselines (collaborative: they learn from the training labels only)."""

    name = "baselines"
    about = "Popularity and EASE"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return [run.path("items.parquet"), run.path("samples", "train.parquet"), run.path("item_sets.parquet")]

    def outputs(self, config: Config) -> list[str]:
        return [f"models/{name}/model.json" for name in BASELINES]

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"baselines": config.baselines.__dict__}

    def work(self, config: Config, run: RunDir) -> dict:
        for name, model in fit_baselines(config, load_prepared(run.root)).items():
            model.save(run.path("models", name))
        return {"models": list(BASELINES)}

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        return [f"saved models: {', '.join(figures['models'])} in {config.run_dir() / 'models'}"]


STAGE = Baselines()
