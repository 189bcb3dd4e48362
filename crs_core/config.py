"""Typed configuration: dataclass defaults < YAML files (in order) < `--set key=value` overrides.

Unknown keys and wrong types are rejected with the key path and the file that set them, and the
resolved config is saved into the run directory, so every number can be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from crs_core.errors import ConfigError

DATASETS = ("inspired", "redial")
DATA_DIR_ENV = "CRS_DATA_DIR"


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:10001" for a cluster
    num_cpus: int | None = None
    object_store_memory: int | None = None


@dataclass
class DataConfig:
    redial_valid: str = "random"  # "random": CFCRS's 10% shuffle of our train pool; "cfcrs": their valid file
    valid_fraction: float = 0.1
    valid_seed: int = 42


@dataclass
class BaselineConfig:
    ease_l2: float = 500.0
    ease_use_kascrs: bool = True  # ReDial only: KASCRS item sequences (90% of train) as extra EASE rows


@dataclass
class EvaluationConfig:
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 25, 50])
    top_n: int = 100


@dataclass
class Config:
    dataset: str = "inspired"
    data_dir: str | None = None  # default: $CRS_DATA_DIR
    runs_dir: str = "runs"
    run_id: str = "default"
    seed: int = 42
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset: {self.dataset!r} is not one of {', '.join(DATASETS)}")
        if self.data.redial_valid not in ("random", "cfcrs"):
            raise ConfigError(f"data.redial_valid: {self.data.redial_valid!r} is not 'random' or 'cfcrs'")
        if not 0.0 < self.data.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction: {self.data.valid_fraction} must be in (0, 1)")
        if self.baselines.ease_l2 <= 0:
            raise ConfigError(f"baselines.ease_l2: {self.baselines.ease_l2} must be > 0")
        if not self.evaluation.ks or any(k < 1 or k > self.evaluation.top_n for k in self.evaluation.ks):
            raise ConfigError(f"evaluation.ks: {self.evaluation.ks} must be in [1, evaluation.top_n]")

    def resolved_data_dir(self) -> Path:
        value = self.data_dir or os.environ.get(DATA_DIR_ENV)
        if not value:
            raise ConfigError(f"no data directory: set {DATA_DIR_ENV} or data_dir (e.g. --set data_dir=../shared/data)")
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ConfigError(f"data_dir: {path} is not a directory")
        return path

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.dataset / self.run_id

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        return _check_type(value, next(a for a in args if a is not type(None)), key, source)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [_check_type(v, inner, key, source) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (hint in (int, float) and isinstance(value, bool)) or not isinstance(value, hint):
        raise ConfigError(f"{source}: {key}: expected {hint.__name__}, got {value!r}")
    return value


def _merge(target: Any, updates: dict, source: str, prefix: str = "") -> None:
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(target))
    fields = {f.name for f in dataclasses.fields(target)}
    for key, value in updates.items():
        path = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{path}' (known: {', '.join(sorted(fields))})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, source, f"{path}.")
        else:
            setattr(target, key, _check_type(value, hints[key], path, source))


def parse_override(text: str) -> dict:
    """`a.b=value` -> {"a": {"b": value}}, the value parsed as YAML (numbers, bools, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def load_config(files: list[Path] = (), overrides: list[str] = (), base: dict | None = None) -> Config:
    """Build a Config from defaults, then `base` (e.g. CLI flags), then YAML files, then `--set` overrides."""
    config = Config()
    if base:
        _merge(config, base, "command line")
    for path in files:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        _merge(config, data, str(path))
    for text in overrides:
        _merge(config, parse_override(text), f"--set {text}")
    config.validate()
    return config


def save_config(config: Config, path: Path) -> None:
    from crs_core.artifacts import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
