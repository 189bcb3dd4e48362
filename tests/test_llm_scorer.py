"""The LLM student (the paper's kind: a causal LM with LoRA reading the 0-4 digits' next-token probabilities) on a
random 2-layer Llama: the readout by hand, LoRA-only training, and scoring with a shared context prefix."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from student_world import student_config, triplets as make_triplets
from transformers import DynamicCache

from crs_core.student import StudentScorer, fit_pair, load_scorer
from crs_core.student.train import save_student, train_student


class _FixedLM(torch.nn.Module):
    """Stands in for the causal LM: the same next-token logits for every prompt."""

    def __init__(self, next_token: torch.Tensor):
        super().__init__()
        self.next_token = next_token

    def forward(self, input_ids, logits_to_keep=0, **_):
        return SimpleNamespace(logits=self.next_token.expand(input_ids.shape[0], 1, -1), past_key_values=DynamicCache())


def test_llm_digit_readout_by_hand(tiny_llm: Path) -> None:
    """p(k) = softmax over ONLY the five digit logits: huge logits on other tokens change nothing."""
    from crs_core.student.llm_scorer import LLMScorer, digit_logits, digit_token_ids

    scorer = LLMScorer.from_pretrained(str(tiny_llm), max_length=64, lora_r=2, lora_alpha=4)
    ids = digit_token_ids(scorer.tokenizer)
    assert len(set(ids)) == 5 and [scorer.tokenizer.decode([i]) for i in ids] == ["0", "1", "2", "3", "4"]
    logits = torch.full((1, len(scorer.tokenizer)), 50.0)  # every non-digit token far likelier
    logits[0, ids] = torch.tensor([0.0, math.log(2), math.log(3), 0.0, 0.0])  # weights 1:2:3:1:1
    probs = torch.softmax(digit_logits(logits, ids), -1).numpy()
    np.testing.assert_allclose(probs, [[1 / 8, 2 / 8, 3 / 8, 1 / 8, 1 / 8]], rtol=1e-6)
    scorer.model = _FixedLM(logits.unsqueeze(1))
    np.testing.assert_allclose(scorer.score_pairs(["a", "b"], ["x", "y"]), [(0 + 2 + 6 + 3 + 4) / 8] * 2, rtol=1e-6)


def test_llm_scorer_trains_only_lora(tiny_llm: Path, tmp_path: Path) -> None:
    from crs_core.student import build_scorer

    triplets = make_triplets()
    scorer = build_scorer(student_config(kind="llm", model=str(tiny_llm), lora_r=4, lora_alpha=8), seed=0)
    trainable = [n for n, p in scorer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(n.endswith("q_proj.lora_A.default.weight") for n in trainable)
    logits = scorer.logits([t.context for t in triplets[:4]], [t.item_text for t in triplets[:4]])
    assert logits.shape == (4, 5)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in scorer.trainable_parameters())
    train_student(scorer, triplets, student_config(learning_rate=1e-2, holdout_fraction=0.0), seed=0)
    contexts, items = [t.context for t in triplets[:12]], [t.item_text for t in triplets[:12]]
    batched = scorer.score_pairs(contexts, items)
    one_by_one = [scorer.score_pairs([c], [i])[0] for c, i in zip(contexts, items)]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)  # left padding does not change a score
    save_student(scorer, tmp_path / "student")
    assert (tmp_path / "student" / "adapter_model.safetensors").exists()
    np.testing.assert_allclose(load_scorer(tmp_path / "student").score_pairs(contexts, items), batched, atol=1e-6)


def test_fit_pair_gives_every_candidate_the_same_context_cut() -> None:
    context = list(range(100, 120))
    for item in (list(range(3)), list(range(10)), list(range(40))):
        c, i = fit_pair(context, item, 15)  # the context keeps 15 - 15 // 3 = 10 tokens whatever the item
        assert c == context[-10:] and i == item[:5]
    c, i = fit_pair([1, 2], list(range(10)), 9)  # short context: the item may use the room it leaves
    assert c == [1, 2] and i == list(range(7))


def _lora_scorer(tiny_llm: Path, max_length: int):
    """A tiny LLM student whose LoRA B matrices are non-zero, so the adapters change every score."""
    from crs_core.student.llm_scorer import LLMScorer

    torch.manual_seed(1)
    scorer = LLMScorer.from_pretrained(str(tiny_llm), max_length=max_length, lora_r=2, lora_alpha=4)
    for name, weight in scorer.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.5)
    return scorer


def test_shared_prefix_scoring_equals_one_full_prompt_per_pair(tiny_llm: Path) -> None:
    """Scoring reuses each context's cached prefix; the probabilities must be those of the full prompts, for
    long contexts (cut), short ones, items of different lengths and candidate groups split across batches."""
    scorer = _lora_scorer(tiny_llm, max_length=64)
    contexts = ["User: I want a space movie " + "with aliens and starships " * 12, "User: a romcom please"]
    items = [f"Movie {n}. " + "A plot about love and ships. " * n for n in range(1, 8)]
    pair_contexts = [c for c in contexts for _ in items]
    pair_items = items * len(contexts)
    shared = scorer.predict_proba(pair_contexts, pair_items, batch_size=3)
    full = StudentScorer.predict_proba(scorer, pair_contexts, pair_items, batch_size=1)
    np.testing.assert_allclose(shared, full, atol=1e-5)
    assert np.abs(full[0] - full[len(items)]).max() > 1e-3  # the two contexts do score differently
    prefixes = {tuple(prefix) for prefix, _ in scorer.pair_tokens(pair_contexts[:len(items)], items)}
    assert len(prefixes) == 1


def test_shared_prefix_scoring_handles_interleaved_contexts(tiny_llm: Path) -> None:
    scorer = _lora_scorer(tiny_llm, max_length=48)
    pair_contexts = ["User: sci-fi", "User: romance", "User: sci-fi", "User: sci-fi"]
    pair_items = ["Alien ships.", "Paris kiss.", "Paris kiss.", "Alien ships."]
    shared = scorer.predict_proba(pair_contexts, pair_items, batch_size=2)
    full = StudentScorer.predict_proba(scorer, pair_contexts, pair_items, batch_size=4)
    np.testing.assert_allclose(shared, full, atol=1e-5)
    np.testing.assert_allclose(shared[0], shared[3], atol=1e-6)
