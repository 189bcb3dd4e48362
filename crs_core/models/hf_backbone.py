"""Shared plumbing of the backbones that are one Hugging Face model with an item-classification head
(BARCOR's BART, Llama + LoRA): the catalog items are the labels, so the HF logits ARE the item scores.

What is shared, so each backbone only says how to build, frame, save and reload its HF model:
- tokenize: the rendered dialogue is tokenized WITHOUT special tokens (and with `split_special_tokens`,
  so dialogue text can never smuggle in an EOS/pad token), cut from the LEFT to leave room for the
  backbone's fixed head and tail ids (newest turns kept), then right-padded to `max_length`;
- score: fixed-size batches (the last chunk repeats its last sample), so a row's score never depends on
  the rows scored with it;
- fit: the same epoch function as the Ray Train loop (`train_in_process`);
- save/load: the base layout (model.json, item_ids.npy) plus the HF module and tokenizer under `backbone/`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer

from crs_core.models.torch_recommender import TorchRecommender
from crs_core.schema import Catalog, Sample
from crs_core.text import render_context

MODULE_DIR = "backbone"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Random initialisation under `seed` without touching the caller's RNG: every Ray worker builds the
    same fresh weights, and two fits with the same seed are identical."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class ItemLogits(torch.nn.Module):
    """An HF sequence-classification model seen as the training loop wants it: inputs -> (batch, n_items)
    float logits (the HF output object and its key/value cache are dropped)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits.float()


class HFItemClassifier(TorchRecommender):
    """Base of backbones whose module is `ItemLogits(<HF model with num_labels = catalog size>)`.

    The constructor takes the keyword arguments the training loop passes (see MiniLMRecommender); a
    subclass implements `_build`, `_frame` and `_load_module`.
    """

    def __init__(self, model_name_or_config: str | dict | None = None, max_length: int = 128,
                 trainable_layers: int | None = None, epochs: int = 3, learning_rate: float = 5e-5,
                 batch_size: int = 32, seed: int = 42):
        super().__init__(model_name_or_config, max_length, trainable_layers, epochs, learning_rate, batch_size, seed)
        self.module: ItemLogits | None = None
        self.tokenizer: Any = None
        self._head_ids: list[int] = []
        self._tail_ids: list[int] = []
        self._pad_id = 0

    # --- what a backbone provides ---------------------------------------------------------------

    @abc.abstractmethod
    def _build(self, n_items: int) -> tuple[torch.nn.Module, Any]:
        """(HF model with `n_items` labels and its trainable parameters marked, tokenizer), fresh weights."""

    @abc.abstractmethod
    def _frame(self, tokenizer: Any) -> tuple[list[int], list[int], int]:
        """(ids before the context, ids after it, pad id): what every row looks like around the dialogue."""

    @abc.abstractmethod
    def _load_module(self, folder: Path, n_items: int) -> torch.nn.Module:
        """The trained HF model from its `save_pretrained` folder (trainable parameters marked, as after `_build`)."""

    # --- building -------------------------------------------------------------------------------

    def _attach(self, model: torch.nn.Module, tokenizer: Any) -> None:
        head, tail, pad = self._frame(tokenizer)
        if self.max_length - len(head) - len(tail) < 1:
            raise ValueError(f"max_length {self.max_length} leaves no room for the context after "
                             f"{len(head) + len(tail)} framing tokens")
        self.tokenizer = tokenizer
        self._head_ids, self._tail_ids, self._pad_id = list(head), list(tail), int(pad)
        self.module = ItemLogits(model)

    def initialise(self, catalog: Catalog) -> None:
        """Fresh weights for `catalog`: the backbone with a new head of one label per catalog item."""
        self._bind_catalog(catalog)
        model, tokenizer = self._build(len(catalog))
        self._attach(model, tokenizer)

    # --- training and scoring -------------------------------------------------------------------

    def tokenize(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """`head + newest context tokens + tail`, right-padded to `max_length`, on the module's device."""
        assert self.module is not None and self.tokenizer is not None
        budget = self.max_length - len(self._head_ids) - len(self._tail_ids)
        texts = [render_context(s) for s in samples]
        contexts = (self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                    if texts else [])
        input_ids = torch.full((len(samples), self.max_length), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), self.max_length), dtype=torch.long)
        for row, context in enumerate(contexts):
            ids = [*self._head_ids, *context[max(0, len(context) - budget):], *self._tail_ids]
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        device = next(self.module.parameters()).device
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

    # --- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        return {}  # everything lives in the HF folder written by `_write_extra`

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        pass

    def _write_extra(self, directory: Path) -> None:
        """`save_pretrained` of the HF model (a peft model writes only its adapter and `modules_to_save`)."""
        assert self.module is not None
        self.module.model.save_pretrained(directory / MODULE_DIR)
        self.tokenizer.save_pretrained(directory / MODULE_DIR)

    @classmethod
    def load(cls, directory: Path, catalog: Catalog | None = None) -> HFItemClassifier:

        directory = Path(directory)
        model = super().load(directory, catalog=catalog)
        assert isinstance(model, HFItemClassifier) and model._item_ids is not None
        folder = directory / MODULE_DIR
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model._attach(model._load_module(folder, len(model._item_ids)), tokenizer)
        return model
