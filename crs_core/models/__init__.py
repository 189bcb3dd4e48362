"""Recommenders behind one interface, looked up by the name used in configs and saved models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crs_core.models.base import NotFittedError, Recommender, read_config
from crs_core.models.ease import EASE
from crs_core.models.minilm import MiniLMRecommender
from crs_core.models.popularity import Popularity
from crs_core.schema import Catalog

__all__ = ["EASE", "MODELS", "NotFittedError", "Popularity", "Recommender", "build_model", "load_model"]

MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (Popularity, EASE, MiniLMRecommender)}


def _model_class(name: str) -> type[Recommender]:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def build_model(name: str, **params: Any) -> Recommender:
    """An unfitted model of the registered class `name` with hyper-parameters `params`."""
    return _model_class(name)(**params)


def load_model(directory: Path, catalog: Catalog | None = None) -> Recommender:
    """Load a saved model of whichever registered class `model.json` names (see Recommender.load)."""
    return _model_class(read_config(Path(directory))["name"]).load(directory, catalog=catalog)
