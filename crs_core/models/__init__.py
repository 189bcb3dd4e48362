"""Recommenders behind one interface, looked up by the name used in configs and saved models."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

from crs_core.models.base import NotFittedError, Recommender, read_config
from crs_core.models.ease import EASE
from crs_core.models.popularity import Popularity
from crs_core.schema import Catalog

__all__ = ["EASE", "MODELS", "TRAINABLE", "NotFittedError", "Popularity", "Recommender", "build_model",
           "load_model", "model_class"]

# name -> "module:Class"; neural backbones are imported on first use, so the baselines never load torch.
MODELS: dict[str, str] = {
    "popularity": "crs_core.models.popularity:Popularity",
    "ease": "crs_core.models.ease:EASE",
    "minilm": "crs_core.models.minilm:MiniLMRecommender",
    "minilm-id": "crs_core.models.minilm:MiniLMIDRecommender",
    "barcor": "crs_core.models.barcor:BarcorRecommender",
    "llama": "crs_core.models.llama:LlamaRecommender",
    "unicrs": "crs_core.models.unicrs:UniCRSRecommender",
}

TRAINABLE = tuple(name for name in MODELS if name not in ("popularity", "ease"))  # what `train.backbone` may name


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(import_module(module), cls)


def build_model(name: str, **params: Any) -> Recommender:
    """An unfitted model of the registered class `name` with hyper-parameters `params`."""
    return model_class(name)(**params)


def load_model(directory: Path, catalog: Catalog | None = None) -> Recommender:
    """Load a saved model of whichever registered class `model.json` names (see Recommender.load)."""
    return model_class(read_config(Path(directory))["name"]).load(directory, catalog=catalog)
