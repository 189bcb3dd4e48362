"""UniCRS (Wang et al., KDD 2022), recommendation part, behind the Recommender interface.

As in the reference code (RUCAIBox/UniCRS, read from the author's copy wxl1999/UniCRS: `src/model_prompt.py`
KGPrompt, `src/model_gpt2.py` PromptGPT2forCRS, `src/train_rec.py`): an RGCN embeds the KG entities
(`crs_core.models.rgcn`); the context's mentioned entities (genres, people, items) are looked up; a frozen
text encoder reads the context; the prompt encoder fuses both (cross-attention of the entities over the
tokens, `output_entity`), prepends `n_prefix` learned task vectors and projects every position to a key
and a value for every layer of a FROZEN PLM (prefix tuning); the PLM reads the context after those
prompts and its final hidden state is scored against the items' entity embeddings by inner product. Only
the RGCN, node embeddings and prompt encoder train.

Simplified or changed, and why:
- No prompt pre-training stage (`train_pre.py`, response prediction) and no conversation task: this
  backbone is only a recommender here; `initialise` starts the prompt encoder from scratch.
- Padded entity slots and tokens are masked (in the cross-attention softmax and in the PLM's attention);
  the reference attends to its pad entity. Needed anyway so a score never depends on the padding.
- The PLM keeps its tokenizer unchanged (no added special tokens): a missing pad token is the EOS token
  and the scored position is found from the attention mask, so the frozen weights never need resizing.
- Dialogue entities: the sample's `context_entities` then `context_items` (the reference interleaves them
  in mention order, which samples do not keep), the last `max_entities` kept.
- Offline defaults: text encoder all-MiniLM-L6-v2 (RoBERTa on a cluster), PLM `OFFLINE_PLM`, a small GPT-2
  with seeded random frozen weights (DialoGPT-small on a cluster: pass its name); SmolLM2-135M works too
  (pass `str(smollm2_path())`) but costs 11x more on CPU (a training batch of 32 INSPIRED contexts at 128
  tokens: 2.2 vs 25 CPU-seconds).

Saved as the base layout with the trained weights (`trained.<param>.npy`) and the entity graph
(`graph_*.npy`). The frozen encoder and PLM are rebuilt from `model_name_or_config` / `text_encoder` and
`seed` on load, never saved: they never change, and a PLM checkpoint per epoch would dwarf the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs_core.encoders import minilm_path
from crs_core.models import ADAPTER_ONLY
from crs_core.models.hf_backbone import seeded
from crs_core.models.rgcn import EntityEncoder, EntityGraph
from crs_core.models.torch_recommender import TorchRecommender
from crs_core.schema import Catalog, Sample
from crs_core.text import render_turns

OFFLINE_PLM = {"model_type": "gpt2", "n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 512}
TRAINED = ("entity_encoder", "prompt_encoder")  # the submodules that train and are saved
WEIGHTS_PREFIX = "trained."


def _bottleneck(dim: int) -> torch.nn.Sequential:
    """The reference's residual MLP block (dim -> dim/2 -> dim), added to its input by the caller."""
    return torch.nn.Sequential(torch.nn.Linear(dim, dim // 2), torch.nn.ReLU(), torch.nn.Linear(dim // 2, dim))


class PromptEncoder(torch.nn.Module):
    """KGPrompt's fusion and projection: (entities, tokens) -> a key and a value per layer and position."""

    def __init__(self, token_dim: int, hidden: int, n_layer: int, kv_heads: int, head_dim: int, n_prefix: int):
        super().__init__()
        self.hidden = hidden
        self.kv_shape = (n_layer, 2, kv_heads, head_dim)
        self.token_proj1 = _bottleneck(token_dim)
        self.token_proj2 = torch.nn.Linear(token_dim, hidden)
        self.cross_attn = torch.nn.Linear(hidden, hidden, bias=False)
        self.prefix_embeds = torch.nn.Parameter(torch.empty(n_prefix, hidden).normal_())
        self.prefix_proj = _bottleneck(hidden)
        self.prompt_proj1 = _bottleneck(hidden)
        self.prompt_proj2 = torch.nn.Linear(hidden, n_layer * 2 * kv_heads * head_dim)

    def forward(self, entities: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """entities (B, E, hidden), tokens (B, T, token_dim) -> (n_layer, 2, B, kv_heads, n_prefix + E, head_dim).

        Each entity attends over the context's tokens (softmax over the tokens, scores divided by the
        width as in the reference) and adds what it read to its own embedding.
        """
        tokens = self.token_proj2(self.token_proj1(tokens) + tokens)
        scores = self.cross_attn(tokens) @ entities.transpose(1, 2) / self.hidden  # (B, T, E)
        scores = scores.masked_fill(~token_mask.bool()[:, :, None], torch.finfo(scores.dtype).min)
        prompt = scores.softmax(dim=1).transpose(1, 2) @ tokens + entities
        batch = prompt.shape[0]
        prefix = (self.prefix_proj(self.prefix_embeds) + self.prefix_embeds).expand(batch, -1, -1)
        prompt = torch.cat([prefix, prompt], dim=1)
        prompt = self.prompt_proj2(self.prompt_proj1(prompt) + prompt)
        n_layer, pair, kv_heads, head_dim = self.kv_shape
        return prompt.view(batch, prompt.shape[1], n_layer, pair, kv_heads, head_dim).permute(2, 3, 0, 4, 1, 5)


class UniCRSModule(torch.nn.Module):
    """Tokenized contexts and mentioned entities -> (batch, n_items) logits; the encoders stay frozen."""

    def __init__(self, text_encoder: torch.nn.Module, plm: torch.nn.Module, entity_encoder: EntityEncoder,
                 prompt_encoder: PromptEncoder, n_items: int):
        super().__init__()
        self.text_encoder = text_encoder.float().requires_grad_(False).eval()
        self.plm = plm.float().requires_grad_(False).eval()
        self.entity_encoder = entity_encoder
        self.prompt_encoder = prompt_encoder
        self.n_items = n_items

    def train(self, mode: bool = True) -> UniCRSModule:
        """Frozen parts stay in eval mode (no dropout), as the reference never trains them."""
        super().train(mode)
        self.text_encoder.eval()
        self.plm.eval()
        return self

    def forward(self, text_input_ids: torch.Tensor, text_attention_mask: torch.Tensor, plm_input_ids: torch.Tensor,
                plm_attention_mask: torch.Tensor, entity_ids: torch.Tensor, entity_mask: torch.Tensor) -> torch.Tensor:
        from transformers import DynamicCache

        with torch.no_grad():
            tokens = self.text_encoder(input_ids=text_input_ids, attention_mask=text_attention_mask).last_hidden_state
        nodes = self.entity_encoder()
        prompts = self.prompt_encoder(nodes[entity_ids], tokens.float(), text_attention_mask)
        batch, length = plm_input_ids.shape
        n_prefix = prompts.shape[-2] - entity_ids.shape[1]
        mask = torch.cat([entity_mask.new_ones(batch, n_prefix), entity_mask, plm_attention_mask], dim=1)
        positions = torch.arange(length, device=plm_input_ids.device).expand(batch, length)
        hidden = self.plm(input_ids=plm_input_ids, attention_mask=mask, position_ids=positions,
                          past_key_values=DynamicCache([(layer[0], layer[1]) for layer in prompts]),
                          use_cache=False).last_hidden_state
        last = hidden[torch.arange(batch, device=hidden.device), plm_attention_mask.sum(dim=1) - 1]
        return last @ nodes[: self.n_items].T


def _frozen_pretrained(source: str | dict | None, default: str | dict, seed: int) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer): a name or folder loads its weights; a dict is an HF config built with seeded random
    weights and the MiniLM tokenizer (vocab_size defaults to the tokenizer's)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = default if source is None else source
    if isinstance(source, dict):
        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        config = dict(source)
        config.setdefault("vocab_size", len(tokenizer))
        for key, token_id in (("bos_token_id", tokenizer.cls_token_id), ("eos_token_id", tokenizer.sep_token_id),
                              ("pad_token_id", tokenizer.pad_token_id)):
            config.setdefault(key, token_id)
        config = AutoConfig.for_model(config.pop("model_type"), **config)
        with seeded(seed):
            return AutoModel.from_config(config), tokenizer
    local = Path(source).is_dir()
    return (AutoModel.from_pretrained(source, local_files_only=local),
            AutoTokenizer.from_pretrained(source, local_files_only=local))


class UniCRSRecommender(TorchRecommender):
    """UniCRS recommender trainable in-process (`fit`) or under Ray Train (crs_core.training.loop).

    `model_name_or_config`: the frozen PLM (None: `OFFLINE_PLM`; an HF name or folder such as
    "microsoft/DialoGPT-small"; or an HF config dict). `text_encoder`: the frozen context encoder (None: the
    packaged all-MiniLM-L6-v2; "roberta-base" on a cluster; or a config dict). `kg_dir`: the dataset's KG
    folder (`$CRS_DATA_DIR/<dataset>/kg`, absolute: Ray workers run elsewhere); None builds the graph from
    the catalog's metadata. `n_prefix`, `max_entities`, `num_bases`: the reference's n_prefix_rec,
    entity_max_length and num_bases.
    `trainable_layers` must stay None: nothing but the prompt encoder and RGCN trains.
    """

    name = "unicrs"

    def __init__(self, model_name_or_config: str | dict | None = None, max_length: int = 128,
                 trainable_layers: int | None = None, epochs: int = 3, learning_rate: float = 1e-4,
                 batch_size: int = 32, seed: int = 42, text_encoder: str | dict | None = None,
                 kg_dir: str | None = None, n_prefix: int = 10, max_entities: int = 32, num_bases: int = 8):
        if trainable_layers is not None:
            raise ValueError(f"unicrs keeps its text encoder and PLM frozen (only {ADAPTER_ONLY['unicrs']} "
                             f"train): trainable_layers must be None, got {trainable_layers}")
        if n_prefix < 0 or max_entities < 1 or num_bases < 1:
            raise ValueError(f"need n_prefix >= 0, max_entities >= 1, num_bases >= 1; got {n_prefix}, "
                             f"{max_entities}, {num_bases}")
        super().__init__(model_name_or_config, max_length, trainable_layers, epochs, learning_rate, batch_size, seed)
        self.text_encoder = text_encoder
        self.kg_dir = None if kg_dir is None else str(kg_dir)
        self.n_prefix = n_prefix
        self.max_entities = max_entities
        self.num_bases = num_bases
        self.module: UniCRSModule | None = None
        self.graph: EntityGraph | None = None
        self.text_tokenizer: Any = None
        self.plm_tokenizer: Any = None
        self._saved: dict[str, np.ndarray] | None = None  # set by _set_state before `load` builds the module

    def params(self) -> dict[str, Any]:
        return super().params() | {"text_encoder": self.text_encoder, "kg_dir": self.kg_dir, "n_prefix": self.n_prefix,
                                   "max_entities": self.max_entities, "num_bases": self.num_bases}

    # --- building -------------------------------------------------------------------------------

    def _build(self, graph: EntityGraph, trained: dict[str, np.ndarray] | None = None) -> None:
        """Frozen encoder and PLM from their sources; fresh (seeded) or `trained` prompt encoder and RGCN."""
        text_encoder, self.text_tokenizer = _frozen_pretrained(self.text_encoder, minilm_path(), self.seed)
        plm, self.plm_tokenizer = _frozen_pretrained(self.model_name_or_config, OFFLINE_PLM, self.seed + 1)
        self.text_tokenizer.truncation_side = "left"  # keep the newest turns
        self.plm_tokenizer.truncation_side = "left"
        self.plm_tokenizer.padding_side = "right"  # the scored position is the last attended token
        if self.plm_tokenizer.pad_token is None:
            self.plm_tokenizer.pad_token = self.plm_tokenizer.eos_token
        config = plm.config
        hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
        with seeded(self.seed):
            entity_encoder = EntityEncoder(graph, hidden // 2, hidden, self.num_bases)
            prompt_encoder = PromptEncoder(int(text_encoder.config.hidden_size), hidden,
                                           int(config.num_hidden_layers), kv_heads, head_dim, self.n_prefix)
        self.graph = graph
        self.module = UniCRSModule(text_encoder, plm, entity_encoder, prompt_encoder, graph.n_items)
        if trained is not None:
            for part in TRAINED:
                prefix = f"{WEIGHTS_PREFIX}{part}."
                state = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in trained.items()
                         if k.startswith(prefix)}
                getattr(self.module, part).load_state_dict(state, strict=True)

    def initialise(self, catalog: Catalog) -> None:
        """Fresh weights for `catalog`: its entity graph, the frozen pretrained parts, a new prompt encoder."""
        graph = EntityGraph.from_kg(Path(self.kg_dir), catalog) if self.kg_dir else EntityGraph.from_catalog(catalog)
        self._bind_catalog(catalog)
        self._build(graph)

    # --- training and scoring -------------------------------------------------------------------

    def tokenize(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Both encoders' inputs (newest turns kept, padded to `max_length`) and the mentioned entity nodes
        (padded to `max_entities`), on the module's device."""
        assert self.module is not None and self.graph is not None
        turns = [render_turns(s) for s in samples]
        text_sep = self.text_tokenizer.sep_token or self.text_tokenizer.eos_token
        text = self.text_tokenizer([text_sep.join(t) for t in turns], padding="max_length", truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
        turn_end = self.plm_tokenizer.eos_token or self.plm_tokenizer.sep_token
        plm = self.plm_tokenizer(["".join(turn + turn_end for turn in t) or turn_end for t in turns],
                                 padding="max_length", truncation=True, max_length=self.max_length,
                                 add_special_tokens=False, return_tensors="pt")
        entity_ids = torch.zeros(len(samples), self.max_entities, dtype=torch.long)
        entity_mask = torch.zeros(len(samples), self.max_entities, dtype=torch.long)
        for row, sample in enumerate(samples):
            nodes = self.graph.entity_nodes(sample, self._columns, self.max_entities)
            entity_ids[row, : len(nodes)] = torch.tensor(nodes, dtype=torch.long)
            entity_mask[row, : len(nodes)] = 1
        device = self.module.entity_encoder.node_embeds.device
        batch = {"text_input_ids": text["input_ids"], "text_attention_mask": text["attention_mask"],
                 "plm_input_ids": plm["input_ids"], "plm_attention_mask": plm["attention_mask"],
                 "entity_ids": entity_ids, "entity_mask": entity_mask}
        return {k: v.to(device) for k, v in batch.items()}

    # --- persistence ----------------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        assert self.module is not None and self.graph is not None
        weights = {f"{WEIGHTS_PREFIX}{part}.{key}": value.detach().cpu().float().numpy().copy()
                   for part in TRAINED for key, value in getattr(self.module, part).state_dict().items()}
        return {**self.graph.to_arrays(), **weights}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._saved = dict(state)

    @classmethod
    def load(cls, directory: Path, catalog: Catalog | None = None) -> UniCRSRecommender:
        model = super().load(directory, catalog=catalog)
        assert isinstance(model, UniCRSRecommender) and model._saved is not None
        model._build(EntityGraph.from_arrays(model._saved), trained=model._saved)
        model._saved = None
        return model
