"""What every trainable backbone shares: `fit` through the training loop's own epoch function, and scoring
in fixed-size batches.

Scoring always runs full SCORE_BATCH batches (the last chunk repeats its last sample): BLAS picks other
kernels for other shapes (a 3-row matmul differs in the last bits), and a score must not depend on which
other samples were scored with it.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from crs_core.config_sections import MIN_CONTEXT_TOKENS
from crs_core.models.base import Recommender
from crs_core.schema import Catalog, Sample

SCORE_BATCH = 32  # contexts per scoring forward pass


class TorchRecommender(Recommender):
    """Subclasses set `module` (the dict from `tokenize(samples)` -> (batch, n_items) logits), implement
    `initialise(catalog)` and `tokenize(samples)`, and keep `epochs`, `learning_rate`, `batch_size`, `seed`."""

    module: torch.nn.Module | None

    def __init__(self, model_name_or_config: str | dict | None, max_length: int, trainable_layers: int | None,
                 epochs: int, learning_rate: float, batch_size: int, seed: int):
        """The keyword arguments the training loop passes to every backbone, checked once here."""
        super().__init__()
        if max_length < MIN_CONTEXT_TOKENS:
            raise ValueError(f"max_length {max_length} is too short for a dialogue context")
        if trainable_layers is not None and trainable_layers < 0:
            raise ValueError(f"trainable_layers must be >= 0 or None, got {trainable_layers}")
        self.model_name_or_config = model_name_or_config
        self.max_length = max_length
        self.trainable_layers = trainable_layers
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.seed = seed

    def params(self) -> dict[str, Any]:
        """The constructor arguments every backbone shares; a backbone with more adds its own to these."""
        return {"model_name_or_config": self.model_name_or_config, "max_length": self.max_length,
                "trainable_layers": self.trainable_layers, "epochs": self.epochs,
                "learning_rate": self.learning_rate, "batch_size": self.batch_size, "seed": self.seed}

    @abc.abstractmethod
    def initialise(self, catalog: Catalog) -> None:
        """Fresh weights for `catalog` (pretrained parts loaded, item head sized to the catalog)."""

    @abc.abstractmethod
    def tokenize(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """`module`'s inputs for `samples`, on its device."""

    def fit(self, train: Sequence[Sample], catalog: Catalog) -> TorchRecommender:
        """Plain CE on `train` targets with the same epoch function as the Ray Train loop."""
        from crs_core.training.steps import train_in_process

        self.initialise(catalog)
        train_in_process(self, train, catalog, epochs=self.epochs, learning_rate=self.learning_rate,
                         batch_size=self.batch_size, seed=self.seed)
        return self

    def score(self, samples: Sequence[Sample]) -> np.ndarray:
        self._require_fitted()
        assert self.module is not None and self._item_ids is not None
        out = [np.zeros((0, len(self._item_ids)), dtype=np.float32)]
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():
            for start in range(0, len(samples), SCORE_BATCH):
                chunk = list(samples[start:start + SCORE_BATCH])
                padded = chunk + chunk[-1:] * (SCORE_BATCH - len(chunk))
                out.append(self.module(**self.tokenize(padded))[: len(chunk)].float().cpu().numpy())
        self.module.train(was_training)
        return np.concatenate(out).astype(np.float32)
