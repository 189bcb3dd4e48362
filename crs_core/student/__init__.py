"""Student scorers: rate (dialogue context, item) pairs 0..4 so EVERY retrieved candidate gets a score.

The teacher LLM labels only a sample of pairs; a student fine-tuned on those labels scores the rest.
Every student predicts a distribution over the five relevance levels and reports its expected value,
so a threshold such as 3.5 means "confidently between relevant and perfect", not one arg-max level.

Kinds: `cross_encoder` (`CrossEncoderScorer`) and `llm` (cluster path, `LLMScorer`) read text pairs; `features`
(`feature_scorer.FeatureScorer`, the offline default) reads content features of whole contexts x items, so it is
built, trained and scored by `feature_pipeline`, not through `build_scorer`/`load_scorer`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from crs_core.config import StudentConfig

NUM_LEVELS = 5  # relevance 0..4
LEVELS = np.arange(NUM_LEVELS, dtype=np.float64)
META_FILE = "student.json"


def expected_score(probs: np.ndarray) -> np.ndarray:
    """Expected relevance sum_k k * p(k) of (n, 5) probabilities: a score in [0, 4]."""
    return np.asarray(probs, dtype=np.float64) @ LEVELS


def soft_targets(scores: Sequence[float]) -> np.ndarray:
    """Teacher scores -> (n, 5) target distributions: an integer score is one-hot, a fractional one
    splits its mass between the two neighbouring levels so that its expected value is the score."""
    s = np.asarray(scores, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s < 0) or np.any(s > NUM_LEVELS - 1):
        raise ValueError("teacher scores must be finite and in [0, 4]")
    low = np.floor(s).astype(int)
    high = np.minimum(low + 1, NUM_LEVELS - 1)
    frac = s - low
    out = np.zeros((len(s), NUM_LEVELS))
    rows = np.arange(len(s))
    out[rows, low] += 1.0 - frac
    out[rows, high] += frac
    return out


def fit_pair(context_ids: list[int], item_ids: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Cut a (context, item) token pair to `budget` tokens: the context loses its OLDEST tokens (the newest
    turns hold the request), the item its LAST ones (title and genres come first).

    The context keeps at most budget - budget // 3 tokens whatever the item, so the ~50 candidates of one
    context share one token prefix (computed once by the LLM student and by vLLM's prefix cache); the item
    gets the rest, more than a third when the context is short."""
    if budget < 2:
        raise ValueError(f"token budget {budget} too small for a (context, item) pair")
    context_len = min(len(context_ids), budget - budget // 3)
    return context_ids[len(context_ids) - context_len:], item_ids[:budget - context_len]


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class StudentScorer(ABC):
    """A model that maps (context, item text) pairs to logits over the five relevance levels."""

    kind: str

    @abstractmethod
    def logits(self, contexts: Sequence[str], item_texts: Sequence[str]) -> torch.Tensor:
        """(n, 5) logits, differentiable (training calls this directly)."""

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        ...

    @abstractmethod
    def train(self, mode: bool = True) -> None:
        """Switch dropout on (training) or off (scoring)."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the fine-tuned student into the directory `path` (see `train.save_student` for atomicity)."""

    def predict_proba(self, contexts: Sequence[str], item_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, 5) relevance probabilities; `batch_size` pairs go through the model per forward pass."""
        if len(contexts) != len(item_texts):
            raise ValueError(f"{len(contexts)} contexts but {len(item_texts)} item texts")
        self.train(False)
        out = [np.zeros((0, NUM_LEVELS))]
        with torch.inference_mode():
            for start in range(0, len(contexts), batch_size):
                logits = self.logits(contexts[start:start + batch_size], item_texts[start:start + batch_size])
                out.append(torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def score_pairs(self, contexts: Sequence[str], item_texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Expected relevance in [0, 4] of each pair."""
        return expected_score(self.predict_proba(contexts, item_texts, batch_size))


def write_meta(path: Path, meta: dict) -> None:
    (Path(path) / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_meta(path: Path) -> dict:
    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no saved student here")
    return json.loads(meta_path.read_text())


def build_scorer(config: StudentConfig, seed: int) -> StudentScorer:
    """A fresh (not fine-tuned) student of `config.kind`; the new head / LoRA weights are seeded."""
    torch.manual_seed(seed)
    if config.kind == "cross_encoder":
        from crs_core.student.cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer.from_pretrained(config.model, max_length=config.max_length)
    if config.kind == "llm":
        from crs_core.student.llm_scorer import LLMScorer

        if not config.model:
            raise ValueError("student.kind=llm needs student.model (an HF causal LM name or local path)")
        return LLMScorer.from_pretrained(config.model, max_length=config.max_length, lora_r=config.lora_r,
                                         lora_alpha=config.lora_alpha)
    if config.kind == "features":
        raise ValueError("student.kind=features scores features, not text pairs: use "
                         "crs_core.student.feature_pipeline.train_feature_student")
    raise ValueError(f"unknown student kind {config.kind!r}")


def load_scorer(path: Path) -> StudentScorer:
    """A saved student, of whichever kind its `student.json` names."""
    kind = read_meta(path)["kind"]
    if kind == "cross_encoder":
        from crs_core.student.cross_encoder import CrossEncoderScorer

        return CrossEncoderScorer.load(path)
    if kind == "llm":
        from crs_core.student.llm_scorer import LLMScorer

        return LLMScorer.load(path)
    if kind == "features":
        raise ValueError(f"{Path(path) / META_FILE}: a feature student; load it with FeatureScorer.load")
    raise ValueError(f"{Path(path) / META_FILE}: unknown student kind {kind!r}")
