"""Shared fixtures: the real data directory and one small local Ray runtime for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Read when `ray` is imported: a local Ray then keeps every port on loopback (see rayjobs.common.init_ray).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def data_dir() -> Path | None:
    value = os.environ.get("CRS_DATA_DIR")
    if value and Path(value).is_dir():
        return Path(value)
    sibling = REPO.parent / "shared" / "data"
    return sibling if sibling.is_dir() else None


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    path = data_dir()
    if path is None:
        pytest.skip("real CRS data not found: set CRS_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def ray_local():
    """One Ray runtime per test session: 2 CPUs, capped object store, bound to loopback, no dashboard."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=300 * 1024 * 1024,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    """A random 2-layer Llama saved as a local "base model", with the MiniLM tokenizer (digits are single tokens;
    no BOS token, WordPiece): the LLM student's tests run on it in seconds."""
    pytest.importorskip("peft")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from crs_core.encoders import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    config = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
