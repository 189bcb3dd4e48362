"""Cluster student (the paper's Gemma2-9b + LoRA): a causal LM reads a prompt ending in "Score:" and its
NEXT-TOKEN probabilities of "0".."4", renormalised over those five, are the relevance distribution.

No text is generated: one forward pass per pair gives the whole distribution, and training is plain
cross-entropy on the same five logits. Only LoRA adapters on the attention projections are trained, so a
checkpoint is the adapter (megabytes) plus the base model's name.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crs_core.student import NUM_LEVELS, StudentScorer, device, fit_pair, read_meta, write_meta

DIGITS = ("0", "1", "2", "3", "4")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections (Llama, Gemma, Mistral, Qwen)
LORA_DROPOUT = 0.05
PROMPT_HEAD = ("Rate how well the candidate movie fits what the user wants in this conversation, from 0 "
               "(irrelevant) to 4 (a perfect recommendation).\n\nConversation:\n")
PROMPT_ITEM = "\n\nCandidate movie: "
PROMPT_TAIL = "\n\nScore:"


def digit_token_ids(tokenizer) -> list[int]:
    """Vocabulary ids of the single tokens "0".."4"; fails loudly when a digit is not one token, since the
    readout would then silently compare unrelated tokens."""
    ids = []
    for digit in DIGITS:
        token_id = tokenizer.convert_tokens_to_ids(digit)
        if token_id is None or token_id == tokenizer.unk_token_id or tokenizer.decode([token_id]).strip() != digit:
            raise ValueError(f"tokenizer has no single token for {digit!r}: the 0-4 readout needs one per digit")
        ids.append(token_id)
    return ids


def digit_logits(next_token_logits: torch.Tensor, digit_ids: Sequence[int]) -> torch.Tensor:
    """(n, vocab) next-token logits -> (n, 5) logits of "0".."4"; their softmax is the renormalised
    distribution p(k) / sum_j p(j), whatever mass the other tokens had."""
    return next_token_logits[:, list(digit_ids)]


class PromptTokens:
    """The scoring prompt as token ids: [bos] head context | item-label item tail, the context losing its oldest
    tokens and the item its last ones to fit `max_length` (`fit_pair`). The part before "|" does not depend on
    the item, so a context's candidates share it (the HF scorer computes it once; vLLM gets whole rows)."""

    def __init__(self, tokenizer, max_length: int):
        head, item, tail = tokenizer([PROMPT_HEAD, PROMPT_ITEM, PROMPT_TAIL], add_special_tokens=False)["input_ids"]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.head_ids, self.item_ids, self.tail_ids = bos + head, item, tail
        self.budget = max_length - len(self.head_ids) - len(self.item_ids) - len(self.tail_ids)

    def pairs(self, contexts: Sequence[str], item_texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(prefix, suffix) token ids per pair; each distinct context and item text is tokenized once."""
        if self.budget < 2:
            raise ValueError(f"student.max_length {self.max_length} leaves no room after the prompt template")
        unique_c, unique_i = list(dict.fromkeys(contexts)), list(dict.fromkeys(item_texts))
        c_ids = dict(zip(unique_c, self.tokenizer(unique_c, add_special_tokens=False, verbose=False)["input_ids"]))
        i_ids = dict(zip(unique_i, self.tokenizer(unique_i, add_special_tokens=False, verbose=False)["input_ids"]))
        out = []
        for context, item in zip(contexts, item_texts):
            c, i = fit_pair(c_ids[context], i_ids[item], self.budget)
            out.append(([*self.head_ids, *c], [*self.item_ids, *i, *self.tail_ids]))
        return out

    def rows(self, contexts: Sequence[str], item_texts: Sequence[str]) -> list[list[int]]:
        """One whole prompt per pair."""
        return [prefix + suffix for prefix, suffix in self.pairs(contexts, item_texts)]


class LLMScorer(StudentScorer):
    kind = "llm"

    def __init__(self, model: torch.nn.Module, tokenizer, base_model: str, max_length: int):
        self.device = device()
        self.model = model.to(self.device)
        self.tokenizer = tokenizer
        self.base_model = base_model
        self.max_length = max_length
        self.digit_ids = digit_token_ids(tokenizer)
        self.pad_id = next(i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None)
        self.prompts = PromptTokens(tokenizer, max_length)

    @staticmethod
    def _load_base(name: str):
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        local = Path(name).is_dir()
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=local)
        return model, local

    @classmethod
    def from_pretrained(cls, base_model: str, max_length: int = 256, lora_r: int = 8,
                        lora_alpha: int = 16) -> LLMScorer:
        """Base LM by HF name or local folder, with fresh LoRA adapters (the only trainable weights)."""
        from peft import LoraConfig, get_peft_model

        base, local = cls._load_base(base_model)
        tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=local)
        lora = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=LORA_DROPOUT,
                          target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
        return cls(get_peft_model(base, lora), tokenizer, base_model, max_length)

    @classmethod
    def load(cls, path: Path) -> LLMScorer:
        from peft import PeftModel

        meta = read_meta(path)
        base, _ = cls._load_base(meta["base_model"])
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(PeftModel.from_pretrained(base, str(path)), tokenizer, meta["base_model"], meta["max_length"])

    def save(self, path: Path) -> None:
        """The LoRA adapter and tokenizer; the base model is referenced by name, never copied."""
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        write_meta(path, {"kind": self.kind, "base_model": self.base_model, "max_length": self.max_length})

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def pair_tokens(self, contexts: Sequence[str], item_texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(prefix, suffix) token ids per pair (`PromptTokens.pairs`)."""
        return self.prompts.pairs(contexts, item_texts)

    def _left_padded(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for n, r in enumerate(rows):
            input_ids[n, width - len(r):] = torch.tensor(r)
            attention_mask[n, width - len(r):] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def encode(self, contexts: Sequence[str], item_texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """LEFT-padded prompts, so the last position is every row's "Score:" token; position ids skip the
        padding, so a pair scores the same alone or in a batch."""
        input_ids, attention_mask = self._left_padded([p + s for p, s in self.pair_tokens(contexts, item_texts)])
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    def logits(self, contexts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        out = self.model(**self.encode(contexts, item_texts), logits_to_keep=1)
        return digit_logits(out.logits[:, -1, :].float(), self.digit_ids)

    def predict_proba(self, contexts: Sequence[str], item_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Scoring with each context's prefix computed ONCE: consecutive pairs of one context (a row of the
        score stage holds a context's ~50 candidates) reuse the key/values of head + context, and only the
        candidates' item + tail tokens go through the model, `batch_size` at a time. Same probabilities as
        one full prompt per pair (tested); training keeps the full prompts of `logits`."""
        if len(contexts) != len(item_texts):
            raise ValueError(f"{len(contexts)} contexts but {len(item_texts)} item texts")
        self.train(False)
        pairs = self.pair_tokens(contexts, item_texts)
        out = np.zeros((len(pairs), NUM_LEVELS))
        with torch.inference_mode():
            for _, group in groupby(range(len(pairs)), key=lambda n: contexts[n]):
                rows = list(group)
                prefix = torch.tensor([pairs[rows[0]][0]], device=self.device)
                cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start:start + batch_size]
                    logits = self._suffix_logits(cache, prefix.shape[1], [pairs[n][1] for n in chunk])
                    out[chunk] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out

    def _suffix_logits(self, prefix_cache, prefix_len: int, suffixes: Sequence[list[int]]) -> torch.Tensor:
        """Digit logits of `suffixes` continuing one cached prefix: the suffixes are left-padded, the padding
        masked out between prefix and suffix and skipped by the position ids."""
        cache = copy.deepcopy(prefix_cache)  # the forward pass appends to the cache it is given
        cache.batch_repeat_interleave(len(suffixes))
        input_ids, suffix_mask = self._left_padded(suffixes)
        prefix_mask = torch.ones((len(suffixes), prefix_len), dtype=torch.long, device=self.device)
        position_ids = prefix_len + (suffix_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=torch.cat([prefix_mask, suffix_mask], dim=1),
                         position_ids=position_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return digit_logits(out.logits[:, -1, :].float(), self.digit_ids)
