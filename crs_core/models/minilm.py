"""Offline default backbone: the MiniLM context encoder with an item head built from the catalog.

score(context, item) = scale * <normalise(mean_pool(encoder(context))), item_matrix[item]> + item_bias[item].
The item matrix starts as the normalised embeddings of the item descriptions by the same encoder, so
before any training the model already ranks items by semantic similarity (scale and bias start at 20
and 0); training then moves both the encoder and the item vectors. Contexts are cut from the LEFT
(newest turns kept), padded to `max_length` and scored in fixed-size batches, so a row's score never
depends on the other rows scored with it.

With `trainable_layers=0` the encoder is a fixed feature extractor: each distinct context is encoded once
(eval mode, so without dropout) and its vector cached, and training and scoring then cost a matrix product
per batch. That is the CPU profile's setting (configs/inspired.yaml): it makes the two stages minutes, not
hours, on 2 cores; a GPU cluster trains the whole encoder (`trainable_layers: null`).

`minilm-id` (MiniLMIDRecommender) is the same model with an ID item head: the item matrix starts as seeded
random unit vectors instead of description embeddings, like BARCOR's item classifier, so everything the head
knows about an item comes from the training labels.

Saved as the base layout (model.json, item_ids.npy, item_matrix/item_bias/log_scale .npy) plus
`encoder/` (HF `save_pretrained` safetensors and tokenizer), all renamed into place at once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs_core.encoders import mean_pool, minilm_path
from crs_core.models.torch_recommender import SCORE_BATCH, TorchRecommender
from crs_core.schema import Catalog, Sample
from crs_core.text import item_text, render_context
from crs_core.vector_cache import VectorCache

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"
HEAD_KEYS = ("item_matrix", "item_bias", "log_scale")
INIT_SCALE = 20.0  # cosine in [-1, 1] times 20: a softmax over the catalog that is neither flat nor one-hot


def encoder_identity(encoder: torch.nn.Module, tokenizer: Any, max_length: int) -> str:
    """What decides an encoded vector: the encoder's weights (hashed), the tokenizer and max_length."""
    digest = hashlib.sha256(f"{type(tokenizer).__name__}:{len(tokenizer)}:{max_length}".encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()[:24]


class ContextItemModule(torch.nn.Module):
    """Encoder + item head: maps tokenized contexts to (batch, n_items) logits."""

    def __init__(self, encoder: torch.nn.Module, item_matrix: torch.Tensor, item_bias: torch.Tensor | None = None,
                 log_scale: torch.Tensor | None = None):
        super().__init__()
        self.encoder = encoder
        self.item_matrix = torch.nn.Parameter(item_matrix.detach().clone().float())
        n = item_matrix.shape[0]
        self.item_bias = torch.nn.Parameter(torch.zeros(n) if item_bias is None else item_bias.detach().clone().float())
        scale = torch.tensor([np.log(INIT_SCALE)]) if log_scale is None else log_scale.detach().clone()
        self.log_scale = torch.nn.Parameter(scale.float().reshape(1))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return torch.nn.functional.normalize(mean_pool(hidden.float(), attention_mask), dim=-1)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None,
                context_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from tokens, or from `context_vectors` already encoded by the (frozen) encoder."""
        vec = self.embed(input_ids, attention_mask, token_type_ids) if context_vectors is None else context_vectors
        return vec @ self.item_matrix.T * self.log_scale.exp() + self.item_bias


def _drop_pooler(encoder: torch.nn.Module) -> torch.nn.Module:
    """Mean pooling never uses BERT's pooler; an unused parameter would also make DDP fail."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def _load_saved_encoder(folder: Path) -> torch.nn.Module:
    """An encoder this class saved: it has no pooler (dropped above), which transformers would report as MISSING
    in an eight-line table on every load. That report is replaced by a check that nothing else is missing."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        encoder, info = AutoModel.from_pretrained(str(folder), local_files_only=True, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(previous)
    other = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    other += [*info["unexpected_keys"], *(str(k) for k in info.get("mismatched_keys", []))]
    if other:
        log.warning("%s: encoder weights missing, unexpected or mismatched: %s", folder, ", ".join(sorted(other)))
    return _drop_pooler(encoder)


class MiniLMRecommender(TorchRecommender):
    """Bi-encoder recommender trainable in-process (`fit`) or under Ray Train (crs_core.training.loop).

    `model_name_or_config`: None = the packaged all-MiniLM-L6-v2; a str = an HF encoder name or folder;
    a dict = an HF config (e.g. {"model_type": "bert", "hidden_size": 32, ...}) built with seeded random
    weights and the MiniLM tokenizer, for fast tests. `trainable_layers`: train only the top k encoder
    layers (0 = the item head only; None = everything). `epochs`, `learning_rate`, `batch_size` and `seed`
    drive `fit`; under Ray Train the TrainConfig's values are used.
    """

    name = "minilm"

    def __init__(self, model_name_or_config: str | dict | None = None, max_length: int = 128,
                 trainable_layers: int | None = None, epochs: int = 3, learning_rate: float = 5e-5,
                 batch_size: int = 32, seed: int = 42):
        super().__init__(model_name_or_config, max_length, trainable_layers, epochs, learning_rate, batch_size, seed)
        self.module: ContextItemModule | None = None
        self.tokenizer: Any = None
        self._head: dict[str, np.ndarray] | None = None  # set by _set_state before `load` builds the module
        self._vectors: dict[str, torch.Tensor] = {}  # context text -> frozen encoder vector (trainable_layers=0)
        self._identity: str | None = None  # the frozen encoder's identity, hashed once (not once per batch)

    # --- building -------------------------------------------------------------------------------

    def _pretrained(self) -> tuple[torch.nn.Module, Any]:
        """(encoder, tokenizer) from `model_name_or_config`, before any catalog-specific training."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = self.model_name_or_config
        if isinstance(source, dict):
            config = dict(source)
            config = AutoConfig.for_model(config.pop("model_type", "bert"), **config)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                encoder = AutoModel.from_config(config)
            return _drop_pooler(encoder), AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        name = source or minilm_path()
        local = Path(name).is_dir()
        encoder = AutoModel.from_pretrained(name, local_files_only=local)
        return _drop_pooler(encoder), AutoTokenizer.from_pretrained(name, local_files_only=local)

    def _attach(self, encoder: torch.nn.Module, tokenizer: Any, item_matrix: torch.Tensor,
                head: dict[str, np.ndarray] | None = None) -> None:
        tokenizer.truncation_side = "left"  # keep the newest turns
        self.tokenizer = tokenizer
        self._vectors, self._identity = {}, None  # vectors of another encoder are stale
        tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in (head or {}).items()}
        self.module = ContextItemModule(encoder.float(), tensors.get("item_matrix", item_matrix),
                                        tensors.get("item_bias"), tensors.get("log_scale"))
        self._apply_trainable_layers()

    def _apply_trainable_layers(self) -> None:
        assert self.module is not None
        self.module.requires_grad_(True)
        if self.trainable_layers is None:
            return
        encoder = self.module.encoder
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError("trainable_layers needs a BERT-style encoder (encoder.layer); "
                             f"got {type(encoder).__name__}")
        encoder.requires_grad_(False)
        for layer in list(layers)[len(layers) - self.trainable_layers:] if self.trainable_layers else []:
            layer.requires_grad_(True)

    def initialise(self, catalog: Catalog) -> None:
        """Fresh weights for `catalog`: the pretrained encoder and a new item head (`_initial_item_matrix`)."""
        encoder, tokenizer = self._pretrained()
        self._bind_catalog(catalog)
        self._attach(encoder, tokenizer, self._initial_item_matrix(encoder, tokenizer, catalog))

    def _initial_item_matrix(self, encoder: torch.nn.Module, tokenizer: Any, catalog: Catalog) -> torch.Tensor:
        """(n_items, hidden) rows: the normalised encoder embeddings of the item descriptions. With a frozen
        encoder they are computed once per (encoder, catalog) on this machine and then read from the VectorCache,
        like the context vectors: every later model of a run, seed or trial starts from that same matrix."""
        texts = [item_text(item) for item in catalog.items]
        if self.trainable_layers != 0:
            return self._encode_items(encoder, tokenizer, texts)
        store = VectorCache(f"{encoder_identity(encoder, tokenizer, self.max_length)}-items")
        catalog_key = "\x1e".join(texts)  # the whole catalog in order: rows were encoded in batches of it
        cached = store.get_many([catalog_key]).get(catalog_key)
        if cached is not None:
            return torch.from_numpy(cached.reshape(len(texts), -1))
        matrix = self._encode_items(encoder, tokenizer, texts)
        store.put_many({catalog_key: matrix.numpy()})
        return matrix

    def _encode_items(self, encoder: torch.nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
        encoder.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, len(texts), SCORE_BATCH):
                tokenizer.truncation_side = "right"  # item descriptions: title and genres come first
                batch = tokenizer(texts[start:start + SCORE_BATCH], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = encoder(**batch).last_hidden_state
                rows.append(torch.nn.functional.normalize(mean_pool(hidden.float(), batch["attention_mask"]), dim=-1))
        return torch.cat(rows) if rows else torch.zeros(0, int(encoder.config.hidden_size))

    # --- training and scoring -------------------------------------------------------------------

    def tokenize(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Model inputs for `samples`' contexts, on the module's device: tokens padded to `max_length`, or the
        cached context vectors when the encoder is frozen."""
        assert self.module is not None and self.tokenizer is not None
        texts = [render_context(s) for s in samples]
        device = self.module.item_matrix.device
        if self.trainable_layers == 0:
            return {"context_vectors": self._context_vectors(texts).to(device)}
        return {k: v.to(device) for k, v in self._tokens(texts).items()}

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def _context_vectors(self, texts: list[str]) -> torch.Tensor:
        """Frozen-encoder vectors of `texts`: from memory, else from the on-disk VectorCache shared by the
        other stages' workers, else encoded in full SCORE_BATCH batches (like `score`, so a vector never
        depends on the texts encoded with it) and stored in both."""
        assert self.module is not None
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            store = VectorCache(self._encoder_identity())
            self._vectors.update((t, torch.from_numpy(v)) for t, v in store.get_many(missing).items())
            missing = [t for t in missing if t not in self._vectors]
        if missing:
            encoder, device = self.module.encoder, self.module.item_matrix.device
            was_training = encoder.training
            encoder.eval()
            with torch.no_grad():
                for start in range(0, len(missing), SCORE_BATCH):
                    chunk = missing[start:start + SCORE_BATCH]
                    padded = chunk + chunk[-1:] * (SCORE_BATCH - len(chunk))
                    inputs = {k: v.to(device) for k, v in self._tokens(padded).items()}
                    vectors = self.module.embed(**inputs)[: len(chunk)].cpu()
                    self._vectors.update(zip(chunk, vectors))
            encoder.train(was_training)
            store.put_many({t: self._vectors[t].numpy() for t in missing})
        return torch.stack([self._vectors[t] for t in texts])

    def _encoder_identity(self) -> str:
        """Hashed on first use after `_attach`: only a frozen encoder's vectors are cached, and it never changes."""
        assert self.module is not None
        if self._identity is None:
            self._identity = encoder_identity(self.module.encoder, self.tokenizer, self.max_length)
        return self._identity

    # --- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        assert self.module is not None
        return {key: getattr(self.module, key).detach().cpu().float().numpy().copy() for key in HEAD_KEYS}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._head = {key: state[key] for key in HEAD_KEYS}

    def _write_extra(self, directory: Path) -> None:
        """The fine-tuned encoder and its tokenizer under `encoder/`, next to the base files."""
        assert self.module is not None
        self.module.encoder.save_pretrained(directory / ENCODER_DIR)
        self.tokenizer.save_pretrained(directory / ENCODER_DIR)

    @classmethod
    def load(cls, directory: Path, catalog: Catalog | None = None) -> MiniLMRecommender:
        from transformers import AutoTokenizer

        directory = Path(directory)
        model = super().load(directory, catalog=catalog)
        assert isinstance(model, MiniLMRecommender) and model._head is not None
        encoder = _load_saved_encoder(directory / ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(str(directory / ENCODER_DIR), local_files_only=True)
        model._attach(encoder, tokenizer, torch.from_numpy(model._head["item_matrix"]), model._head)
        model._head = None
        return model


class MiniLMIDRecommender(MiniLMRecommender):
    """The same context encoder with an ID item head, as BARCOR's: the item vectors start as seeded random
    unit vectors, so the head knows nothing about item text and learns each item from its labels alone.
    This is the setting where extra positive labels should matter most (a text head already ranks by
    description similarity before training)."""

    name = "minilm-id"

    def _initial_item_matrix(self, encoder: torch.nn.Module, tokenizer: Any, catalog: Catalog) -> torch.Tensor:
        """(n_items, hidden) independent N(0, 1) rows drawn from `seed`, normalised like the text head's rows."""
        generator = torch.Generator().manual_seed(self.seed)
        rows = torch.randn(len(catalog), int(encoder.config.hidden_size), generator=generator)
        return torch.nn.functional.normalize(rows, dim=-1)
