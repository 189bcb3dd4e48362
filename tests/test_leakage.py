"""Leakage: a sample's model input holds the dialogue BEFORE the recommending turn and nothing else.

Checked against the raw CFCRS INSPIRED files that valid/test are built from (read here with plain json, not
through the loader): the utterances a
model reads for a valid/test sample are exactly the first k raw utterances of its dialogue, raw utterance k is
the recommender's turn naming the target, and no target title appears in the input unless the dialogue had
said it before. The backbone's tokenized input and the student's pair text are checked to add nothing more.
"""

from __future__ import annotations

import json
import re

import pytest

from crs_core.config import load_config
from crs_core.data.prepared import load_prepared
from crs_core.stages import run_stage
from crs_core.text import SPEAKER_TAGS, item_text, render_context, render_turns

SPLIT_FILES = {"valid": "cfcrs/valid_data.jsonl", "test": "cfcrs/test_data.jsonl"}
TAG = re.compile(rf"^({'|'.join(SPEAKER_TAGS.values())}): ")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).lower()


def _title_words(title: str) -> str:
    """`Frozen II (2019)` -> `frozen ii`: how a dialogue names a movie."""
    return re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip().lower()


@pytest.fixture(scope="module")
def inspired(real_data_dir, tmp_path_factory):
    config = load_config(base={"dataset": "inspired", "data_dir": str(real_data_dir),
                               "runs_dir": str(tmp_path_factory.mktemp("runs"))})
    run_stage("prepare", config)
    raw = {}
    for split, name in SPLIT_FILES.items():
        records = [json.loads(line) for line in (real_data_dir / "inspired" / name).read_text().splitlines()]
        raw[split] = {record["dialog_id"]: record["dialog"] for record in records}
    return load_prepared(config.run_dir()), raw


@pytest.mark.parametrize("split", ["valid", "test"])
def test_model_input_is_exactly_the_dialogue_before_the_recommending_turn(inspired, split):
    data, raw = inspired
    samples = data.samples[split]
    assert len(samples) > 150
    for sample in samples:
        turns = raw[split][sample.dialog_id]
        seen = _squash("".join(TAG.sub("", turn) for turn in render_turns(sample)))
        # the longest prefix of raw utterances whose text equals what the model reads
        prefix, k = "", 0
        while k < len(turns) and len(prefix) < len(seen):
            prefix += _squash(turns[k]["text"])
            k += 1
        assert prefix == seen, f"{sample.sample_id}: model input is not a prefix of the raw dialogue"
        # the next raw utterances (same speaker, merged) are the recommender's, and one of them names a target
        following = []
        while k < len(turns) and turns[k]["role"] == "RECOMMENDER":
            following.append(turns[k])
            k += 1
        named = {_title_words(t) for turn in following for t in turn["movie"]}
        targets = {_title_words(data.catalog.get(t).title) for t in sample.targets if t in data.catalog}
        # (a sample whose only label is the empty movie name, a non-item FNSCRS counts, has no title to check)
        assert named & targets or (not targets and "" in named), f"{sample.sample_id}: no target named next"
        before = _squash(" ".join(turn["text"] for turn in turns[: k - len(following)]))
        model_text = _squash(render_context(sample))
        for title in targets:
            if _squash(title) in model_text:
                assert _squash(title) in before, f"{sample.sample_id}: target {title!r} leaked into the input"


def test_backbone_and_student_inputs_add_nothing_beyond_the_context(inspired):
    from transformers import AutoTokenizer

    from crs_core.encoders import minilm_path

    data, _ = inspired
    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    tokenizer.truncation_side = "left"  # as the MiniLM backbone tokenizes: newest turns kept
    for sample in data.samples["test"][:40]:
        context = render_context(sample)
        ids = tokenizer(context, truncation=True, max_length=128)["input_ids"]
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        assert _squash(decoded) in _squash(tokenizer.decode(tokenizer(context)["input_ids"], skip_special_tokens=True))
        # the student reads (context, one candidate): for a target candidate, the turn's OTHER targets stay out
        others = [data.catalog.get(t) for t in dict.fromkeys(sample.targets)
                  if t in data.catalog and t != sample.targets[0]]
        pair_text = context + "\n" + item_text(data.catalog.get(sample.targets[0]))
        for other in others:
            if _title_words(other.title) not in _squash(context):
                assert other.description not in pair_text
