"""Typed configuration: dataclass defaults < YAML files (in order) < `--set key=value` overrides.

Unknown keys and wrong types are rejected with the key path and the file that set them, and the
resolved config is saved into the run directory, so every number can be traced to its settings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from crs_core.config_sections import (
    DATA_DIR_ENV,
    DATA_FORMATS,
    ActorPoolConfig,
    BaselineConfig,
    ChatSectionConfig,
    DataConfig,
    EncoderConfig,
    EvaluationConfig,
    FeatureTreesConfig,
    LexicalConfig,
    RayConfig,
    RetrievalConfig,
    SimulateConfig,
    StudentConfig,
    SweepConfig,
    SynthesizeConfig,
    TeacherConfig,
    TrainConfig,
    ZeroShotConfig,
)
from crs_core.data.fetch import default_data_dir
from crs_core.errors import ConfigError
from crs_core.registry import DATASET_NAME

# Settings that name Hugging Face weights: a hub name ("org/name") or a local folder saved by save_pretrained.
MODEL_SETTINGS = ("encoder.model", "student.model", "train.model")
_HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

__all__ = [
    "DATA_DIR_ENV",
    "DATA_FORMATS",
    "ActorPoolConfig",
    "BaselineConfig",
    "ChatSectionConfig",
    "Config",
    "DataConfig",
    "EncoderConfig",
    "EvaluationConfig",
    "FeatureTreesConfig",
    "LexicalConfig",
    "RayConfig",
    "RetrievalConfig",
    "SimulateConfig",
    "StudentConfig",
    "SweepConfig",
    "SynthesizeConfig",
    "TeacherConfig",
    "TrainConfig",
    "ZeroShotConfig",
    "load_config",
    "parse_override",
    "save_config",
]


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
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    synthesize: SynthesizeConfig = field(default_factory=SynthesizeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: SweepConfig = field(default_factory=SweepConfig)
    zero_shot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    simulate: SimulateConfig = field(default_factory=SimulateConfig)

    def validate(self) -> None:
        """Every setting checked when the config is loaded: a mistake is one ConfigError naming the key."""
        self._validate_data_and_teacher()
        self._validate_student_and_train()
        self._validate_tune_retrieval_evaluation()
        self._validate_chat_sections()
        self._validate_model_paths()

    def _validate_data_and_teacher(self) -> None:
        if not DATASET_NAME.match(self.dataset):
            raise ConfigError(f"dataset: {self.dataset!r} is not a valid name (lower-case letters, digits, '_-.')")
        if self.data.format is not None and self.data.format not in DATA_FORMATS:
            raise ConfigError(f"data.format: {self.data.format!r} is not one of {', '.join(DATA_FORMATS)}")
        if not 0.0 < self.data.valid_fraction + self.data.test_fraction < 1.0 or self.data.test_fraction < 0:
            raise ConfigError("data: valid_fraction + test_fraction must be in (0, 1), test_fraction >= 0")
        if self.data.redial_valid not in ("random", "cfcrs"):
            raise ConfigError(f"data.redial_valid: {self.data.redial_valid!r} is not 'random' or 'cfcrs'")
        if not 0.0 < self.data.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction: {self.data.valid_fraction} must be in (0, 1)")
        if self.baselines.ease_l2 <= 0:
            raise ConfigError(f"baselines.ease_l2: {self.baselines.ease_l2} must be > 0")
        if not 0.0 <= self.synthesize.threshold <= 4.0:
            raise ConfigError(f"synthesize.threshold: {self.synthesize.threshold} must be in [0, 4]")
        if self.encoder.kind not in ("minilm", "hf"):
            raise ConfigError(f"encoder.kind: {self.encoder.kind!r} is not 'minilm' or 'hf'")
        if self.teacher.kind not in ("kg", "openai", "recorded"):
            raise ConfigError(f"teacher.kind: {self.teacher.kind!r} is not 'kg', 'openai' or 'recorded'")
        if self.teacher.kind == "recorded" and not self.teacher.files:
            raise ConfigError("teacher.files: kind 'recorded' needs at least one judgment file or glob")
        if not 0.0 <= self.teacher.max_failure_share <= 1.0:
            raise ConfigError(f"teacher.max_failure_share: {self.teacher.max_failure_share} must be in [0, 1]")

    def _validate_student_and_train(self) -> None:
        if self.student.kind not in ("cross_encoder", "llm", "features"):
            raise ConfigError(f"student.kind: {self.student.kind!r} is not 'cross_encoder', 'llm' or 'features'")
        if self.student.candidates not in ("retrieved", "catalog"):
            raise ConfigError(f"student.candidates: {self.student.candidates!r} is not 'retrieved' or 'catalog'")
        if self.student.folds < 2:
            raise ConfigError(f"student.folds: {self.student.folds} must be >= 2")
        if self.student.engine not in ("hf", "vllm"):
            raise ConfigError(f"student.engine: {self.student.engine!r} is not 'hf' or 'vllm'")
        if self.student.engine == "vllm" and self.student.kind != "llm":
            raise ConfigError(f"student.engine: 'vllm' scores only student.kind 'llm', not {self.student.kind!r}")
        if self.student.max_candidates is not None and self.student.max_candidates < 1:
            raise ConfigError(f"student.max_candidates: {self.student.max_candidates} must be >= 1 or null")
        if self.student.kind == "llm" and not self.student.model:
            raise ConfigError("student.model: student.kind 'llm' needs an HF causal LM name or local folder "
                              "(e.g. google/gemma-2-9b-it)")
        for name, pool in (("encoder.pool", self.encoder.pool), ("student.pool", self.student.pool)):
            if pool.actors < 1 or pool.batch_size < 1 or pool.num_cpus <= 0 or pool.num_gpus < 0:
                raise ConfigError(f"{name}: actors ({pool.actors}) and batch_size ({pool.batch_size}) must be >= 1, "
                                  f"num_cpus ({pool.num_cpus}) > 0 and num_gpus ({pool.num_gpus}) >= 0")
        if self.train.alpha < 0:
            raise ConfigError(f"train.alpha: {self.train.alpha} must be >= 0 (0 = no KL term)")
        from crs_core.models import ADAPTER_ONLY, TRAINABLE  # the registry of backbones (no torch import)

        self.train.check(TRAINABLE, ADAPTER_ONLY)
        if self.train.backbone_params:
            from crs_core.models import check_backbone_params

            check_backbone_params(self.train.backbone, self.train.backbone_params)

    def _validate_tune_retrieval_evaluation(self) -> None:
        if not self.tune.alphas or any(a < 0 for a in self.tune.alphas):
            raise ConfigError(f"tune.alphas: {self.tune.alphas} must be a non-empty list of values >= 0")
        if not self.tune.thresholds or any(not 0.0 <= t <= 4.0 for t in self.tune.thresholds):
            raise ConfigError(f"tune.thresholds: {self.tune.thresholds} must be a non-empty list of values in [0, 4]")
        if any(lr <= 0 for lr in self.tune.learning_rates):
            raise ConfigError(f"tune.learning_rates: {self.tune.learning_rates} must all be > 0")
        if self.tune.grace_period < 1 or self.tune.reduction_factor < 2 or self.tune.cpus_per_trial <= 0:
            raise ConfigError("tune: grace_period >= 1, reduction_factor >= 2 and cpus_per_trial > 0 are required")
        if self.encoder.query_seeker_turns is not None and self.encoder.query_seeker_turns < 1:
            raise ConfigError(f"encoder.query_seeker_turns: {self.encoder.query_seeker_turns} must be >= 1 or null")
        if self.retrieval.top_k < 1:
            raise ConfigError(f"retrieval.top_k: {self.retrieval.top_k} must be >= 1")
        if self.retrieval.method not in ("dense", "hybrid"):
            raise ConfigError(f"retrieval.method: {self.retrieval.method!r} is not 'dense' or 'hybrid'")
        if self.retrieval.lexical_weight < 0 or not 0.0 <= self.retrieval.lexical.decay <= 1.0:
            raise ConfigError("retrieval: lexical_weight must be >= 0 and lexical.decay in [0, 1]")
        if not self.evaluation.ks or any(k < 1 or k > self.evaluation.top_n for k in self.evaluation.ks):
            raise ConfigError(f"evaluation.ks: {self.evaluation.ks} must be in [1, evaluation.top_n]")

    def _validate_model_paths(self) -> None:
        """A model setting that is a path must be a folder with a saved Hugging Face model (config.json);
        anything else must look like a hub name. Checked now, not when a Ray worker first loads it."""
        for key in MODEL_SETTINGS:
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if not value:
                continue
            path = Path(value).expanduser()
            if path.is_dir():
                if not (path / "config.json").is_file():
                    raise ConfigError(f"{key}: {path} holds no config.json: not a saved Hugging Face model")
            elif path.exists() or path.is_absolute() or value.startswith((".", "~")) or not _HUB_NAME.match(value):
                raise ConfigError(f"{key}: {path} is not a model folder (expected a saved Hugging Face model "
                                  "folder or a hub name like org/name)")

    def _validate_chat_sections(self) -> None:
        minimums = {"zero_shot": {"concurrency": 1, "max_tokens": 1, "titles": 1},
                    "simulate": {"concurrency": 1, "max_tokens": 1, "turns": 0, "dialogues": 1, "leak_retries": 0}}
        for name, fields in minimums.items():
            section = getattr(self, name)
            for key, minimum in fields.items():
                if getattr(section, key) < minimum:
                    raise ConfigError(f"{name}.{key}: {getattr(section, key)} must be >= {minimum}")
            if section.temperature < 0:
                raise ConfigError(f"{name}.temperature: {section.temperature} must be >= 0")
            if section.enabled and not (section.base_url or self.teacher.base_url):
                raise ConfigError(f"{name}.enabled: true needs an LLM endpoint: set {name}.base_url (or "
                                  f"teacher.base_url), e.g. --set {name}.base_url=http://127.0.0.1:8000/v1")
        if not 0.0 < self.zero_shot.fuzzy_cutoff <= 1.0:
            raise ConfigError(f"zero_shot.fuzzy_cutoff: {self.zero_shot.fuzzy_cutoff} must be in (0, 1]")

    def resolved_data_dir(self) -> Path:
        value = self.data_dir or os.environ.get(DATA_DIR_ENV)
        if not value:
            fetched = default_data_dir()
            if fetched.is_dir():
                return fetched
            fetch = (f"run `crs data fetch {self.dataset}` (stores it in {fetched}), or "
                     if self.data.resolved_format(self.dataset) != "jsonl" else "")
            raise ConfigError(f"no data directory: {fetch}set {DATA_DIR_ENV} or data_dir "
                              "(e.g. --set data_dir=../shared/data; your own datasets: docs/data.md)")
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ConfigError(f"data_dir: {path} is not a directory")
        return path

    def dataset_label(self) -> str:
        """The dataset's name in tables and figures, with its note (e.g. what part of it is missing)."""
        label = self.data.label or self.dataset
        return f"{label} ({self.data.note})" if self.data.note else label

    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.dataset / self.run_id

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    """`value` of the config key `key` as the type `hint` asks for (int -> float allowed), else a ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        return check_type(value, next(a for a in args if a is not type(None)), key, source)
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: {key}: expected a mapping with string keys, got {value!r}")
        return {k: check_type(v, typing.get_args(hint)[1], f"{key}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)
        return [check_type(v, inner, key, source) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string; a float field means the number
            return float(value)
        except ValueError:
            pass
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
        elif isinstance(current, dict):  # a mapping setting: a later layer adds or replaces keys
            setattr(target, key, {**current, **check_type(value, hints[key], path, source)})
        else:
            setattr(target, key, check_type(value, hints[key], path, source))


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


def load_config(files: list[Path | Traversable] = (), overrides: list[str] = (), base: dict | None = None,
                flags: dict | None = None) -> Config:
    """Build a Config from defaults, then `base`, then YAML files, then `flags` (the command line's own options,
    which beat any file), then `--set` overrides."""
    config = Config()
    if base:
        _merge(config, base, "command line")
    for path in files:
        path = Path(path) if isinstance(path, str) else path
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        _merge(config, data, str(path))
    if flags:
        _merge(config, flags, "command line")
    for text in overrides:
        _merge(config, parse_override(text), f"--set {text}")
    config.validate()
    return config


def save_config(config: Config, path: Path) -> None:
    from crs_core.artifacts import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
