"""Recommenders behind one interface, looked up by the name used in configs and saved models."""

from __future__ import annotations

import inspect
import typing
from importlib import import_module
from pathlib import Path
from typing import Any

from crs_core.models.base import NotFittedError, Recommender, read_config
from crs_core.models.ease import EASE
from crs_core.models.popularity import Popularity
from crs_core.schema import Catalog

__all__ = ["ADAPTER_ONLY", "EASE", "MODELS", "TRAINABLE", "NotFittedError", "Popularity", "Recommender", "build_model",
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
# Backbones whose encoder stays frozen, with what trains instead: `train.trainable_layers` must stay null.
ADAPTER_ONLY = {"llama": "LoRA adapters and the item head", "unicrs": "the prompt encoder and RGCN"}


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(import_module(module), cls)


SET_BY_TRAINING = ("model_name_or_config", "max_length", "trainable_layers", "epochs", "learning_rate", "batch_size",
                   "seed")  # constructor arguments the training stage fills from train.*


def check_backbone_params(name: str, params: dict[str, Any]) -> None:
    """`train.backbone_params` against the constructor of backbone `name`: known argument names, values of the
    annotated types; a ConfigError naming the key otherwise (imports the backbone, so only when params are set)."""
    from crs_core.config import check_type
    from crs_core.errors import ConfigError

    cls = model_class(name)
    hints = typing.get_type_hints(cls.__init__)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self" and p not in SET_BY_TRAINING]
    for key, value in params.items():
        if key in SET_BY_TRAINING:
            setting = "train.model" if key == "model_name_or_config" else f"train.{key}"
            raise ConfigError(f"train.backbone_params.{key}: set {setting} instead")
        if key not in accepted:
            raise ConfigError(f"train.backbone_params.{key}: {name} takes no such argument "
                              f"(its own: {', '.join(accepted) or 'none'})")
        if key in hints:
            check_type(value, hints[key], f"train.backbone_params.{key}", "config")
    try:  # the constructor's own range checks (it only stores its arguments: no weights are loaded)
        cls(**params)
    except ValueError as exc:
        raise ConfigError(f"train.backbone_params: {name} refuses {params}: {exc}") from exc


def build_model(name: str, **params: Any) -> Recommender:
    """An unfitted model of the registered class `name` with hyper-parameters `params`."""
    return model_class(name)(**params)


def load_model(directory: Path, catalog: Catalog | None = None) -> Recommender:
    """Load a saved model of whichever registered class `model.json` names (see Recommender.load)."""
    return model_class(read_config(Path(directory))["name"]).load(directory, catalog=catalog)
