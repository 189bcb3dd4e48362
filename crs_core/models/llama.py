"""The FNSCRS Llama-2 backbone: a causal LM with LoRA (r=4, alpha 32, dropout 0.01 on q_proj/v_proj,
docs/training.md) and a linear item head on the hidden state of the last non-padding token.

Built as transformers' `AutoModelForSequenceClassification` (one label per catalog item; it pools the
rightmost non-pad token) wrapped by peft with task SEQ_CLS, which trains the head (`score`, kept in
`modules_to_save`) next to the adapters. Every row is `[bos] newest context tokens "\\nSystem:"`: the
head reads the state where the recommender's reply would begin, and an empty dialogue is still a row.

A checkpoint holds only what was trained (adapter + head, a few MB) and the tokenizer; the base is
re-read from `model_name_or_config` at load, never copied (a 7B base per checkpoint would be absurd).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from crs_core.llm_assets import smollm2_path
from crs_core.models import ADAPTER_ONLY
from crs_core.models.hf_backbone import HFItemClassifier, seeded

LORA_R = 4
LORA_ALPHA = 32
LORA_DROPOUT = 0.01
LORA_TARGETS = ("q_proj", "v_proj")
PROMPT_TAIL = "\nSystem:"


class LlamaRecommender(HFItemClassifier):
    """Causal LM + LoRA + item head, trainable in-process (`fit`) or under Ray Train.

    `model_name_or_config`: a str = an HF causal LM name or folder (meta-llama/Llama-2-7b-chat-hf on a
    cluster); None = the offline SmolLM2-135M-Instruct (real weights); a dict = config fields of a small
    randomly initialised model ("model_type" defaults to "llama") on the SmolLM2 tokenizer, for tests: its
    base is rebuilt from the config and `seed` at load. `trainable_layers` must be None: LoRA decides what
    trains. bfloat16 on a GPU, float32 on CPU.
    """

    name = "llama"

    def __init__(self, model_name_or_config: str | dict | None = None, max_length: int = 128,
                 trainable_layers: int | None = None, epochs: int = 3, learning_rate: float = 5e-5,
                 batch_size: int = 32, seed: int = 42):
        if trainable_layers is not None:
            raise ValueError(f"llama trains {ADAPTER_ONLY['llama']} only: trainable_layers must be None, "
                             f"got {trainable_layers}")
        super().__init__(model_name_or_config, max_length, trainable_layers, epochs, learning_rate, batch_size, seed)

    def _base(self, n_items: int) -> tuple[torch.nn.Module, Any]:
        """(frozen-to-be base model with a fresh `n_items` head, tokenizer with a pad token)."""
        source = self.model_name_or_config
        name = str(smollm2_path()) if source is None or isinstance(source, dict) else source
        local = Path(name).is_dir()
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        if tokenizer.pad_token is None:  # Llama-2 has none; padding is masked and never pooled anyway
            tokenizer.pad_token = tokenizer.eos_token
        ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
        with seeded(self.seed):
            if isinstance(source, dict):
                fields = {"vocab_size": len(tokenizer), **source, **ids, "num_labels": n_items}
                config = AutoConfig.for_model(fields.pop("model_type", "llama"), **fields)
                model = AutoModelForSequenceClassification.from_config(config)
            else:
                dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
                model = AutoModelForSequenceClassification.from_pretrained(
                    name, num_labels=n_items, pad_token_id=tokenizer.pad_token_id, dtype=dtype, local_files_only=local)
        return model, tokenizer

    def _build(self, n_items: int) -> tuple[torch.nn.Module, Any]:
        model, tokenizer = self._base(n_items)
        lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT,
                          target_modules=list(LORA_TARGETS))
        with seeded(self.seed):  # the adapters' random init
            return get_peft_model(model, lora), tokenizer

    def _frame(self, tokenizer: Any) -> tuple[list[int], list[int], int]:
        leading = tokenizer("x")["input_ids"][:1]
        head = leading if tokenizer.bos_token_id is not None and leading == [tokenizer.bos_token_id] else []
        tail = tokenizer(PROMPT_TAIL, add_special_tokens=False)["input_ids"]
        if tokenizer.pad_token_id in head + tail:
            raise ValueError("the pad token occurs in the prompt frame: the head would pool the wrong position")
        return head, tail, tokenizer.pad_token_id

    def _load_module(self, folder: Path, n_items: int) -> torch.nn.Module:
        base, _ = self._base(n_items)
        return PeftModel.from_pretrained(base, str(folder), is_trainable=True)
