"""Two-stage backbone training (docs/training.md) as one Ray Train loop.

`train_epoch` (crs_core.training.steps) is the only training loop: `MiniLMRecommender.fit` runs it
in-process and every Ray Train worker runs it under DDP (`ray.train.torch.prepare_model`, gloo on CPU) or
DeepSpeed ZeRO. Stage 1 ("pretrain") is grouped CE on the synthetic targets; stage 2 ("finetune") starts
from the best stage-1 checkpoint and adds alpha * KL(P_stage1 || P_model), the stage-1 model being a
SEPARATELY LOADED frozen copy (the reference code's Llama2 variant shared its weights with the trained model:
a bug). alpha = 0 without stage 1 is the no-augmentation baseline.

Checkpoint per epoch (Ray storage `<storage>/<run name>/epoch_NNN/`): `model/` (a saved Recommender),
`progress.json` (epoch and metrics), `train_state.pt` (DDP: optimizer + schedule) or `deepspeed/` (every
rank's ZeRO shard). Ray keeps the best by FNSCRS's selection metric (valid Recall@50, UniCRS Recall@25;
crs_core.evaluation.selection), recorded as "selected_by" in the stage metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import torch

from crs_core.artifacts import fingerprint, write_json
from crs_core.config import TrainConfig
from crs_core.errors import ConfigError
from crs_core.evaluation import selection_key, selection_rule
from crs_core.models import ADAPTER_ONLY, TRAINABLE, Recommender, build_model, load_model
from crs_core.progress import LOG_LEVEL_ENV, EpochLines
from crs_core.registry import packaged_file
from crs_core.schema import Catalog
from crs_core.training.data import (
    STAGES,
    TrainingData,
    labelled,
    shard_size,
)
from crs_core.training.steps import (
    MAX_GRAD_NORM,
    METRIC as METRIC,  # re-exported: the default selection key (crs_core.evaluation.selection_key)
    MODEL_DIR,
    ScheduleFn,
    TrainableRecommender,
    build_optimizer,
    checkpoint_progress,
    frozen_reference,
    linear_warmup_schedule,
    load_optimizer,
    plain_step,
    run_epochs,
    save_optimizer,
    seed_everything,
    stage_loss,
    validate,
    write_checkpoint,
)

DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"
CHECKPOINTS_KEPT = 2  # the best one and the runner-up; Ray also never deletes the latest (for resuming)
STAGE_DIRS = {"pretrain": "stage1", "finetune": "stage2"}


# --- the Ray Train worker ---------------------------------------------------------------------------

def initial_model(config: dict[str, Any], catalog: Catalog, resume: Path | None,
                  init: Path | None) -> tuple[TrainableRecommender, int]:
    """(model, first epoch): a resumed checkpoint, else the stage-1 checkpoint, else fresh weights."""
    if resume is not None:
        model = load_model(resume / MODEL_DIR, catalog=catalog)
        start = checkpoint_progress(resume)["epoch"]
    elif init is not None:
        model, start = load_model(init / MODEL_DIR, catalog=catalog), 0
    else:
        model, start = build_model(config["backbone"], **config["backbone_params"]), 0
    if not isinstance(model, TrainableRecommender):
        raise TypeError(f"backbone {model.name!r} is not trainable by the Ray Train loop")
    if resume is None and init is None:
        model.initialise(catalog)
    return model, start


def _local_dir(checkpoint: Any, stack: ExitStack) -> Path | None:
    return None if checkpoint is None else Path(stack.enter_context(checkpoint.as_directory()))


def _max_over_workers(value: float, world_size: int) -> float:
    if world_size > 1 and torch.distributed.is_initialized():
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor.item())
    return value


def _mean_over_workers(value: float, world_size: int) -> float:
    if world_size > 1 and torch.distributed.is_initialized():
        tensor = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return float(tensor.item()) / world_size
    return value


StepFn = Callable[[torch.Tensor], None]
SaveFn = Callable[[Path, int], None]  # (checkpoint folder, rank): write this rank's optimizer state


def ddp_strategy(module: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: ScheduleFn,
                 resume: Path | None) -> tuple[torch.nn.Module, StepFn, SaveFn]:
    """DDP via Ray (gloo on CPU; a plain module with one worker); rank 0 saves the optimizer state."""
    import ray.train.torch

    forward = ray.train.torch.prepare_model(module)
    scheduler = schedule(optimizer)
    if resume is not None:
        load_optimizer(resume, optimizer, scheduler)

    def save(out: Path, rank: int) -> None:
        if rank == 0:
            save_optimizer(out, optimizer, scheduler)

    return forward, plain_step(optimizer, scheduler, [p for p in module.parameters() if p.requires_grad]), save


def deepspeed_strategy(module: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: ScheduleFn,
                       ds_config: dict[str, Any], batch_size: int,
                       resume: Path | None) -> tuple[torch.nn.Module, StepFn, SaveFn]:
    """DeepSpeed (ZeRO per the config file) on Ray's process group; every rank saves its own shard."""
    import deepspeed

    ds_config = {**ds_config, "train_micro_batch_size_per_gpu": batch_size, "gradient_accumulation_steps": 1}
    ds_config.setdefault("gradient_clipping", MAX_GRAD_NORM)
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule,
                                           config=ds_config, dist_init_required=False)
    if resume is not None:
        engine.load_checkpoint(str(resume / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)

    def step(loss: torch.Tensor) -> None:
        engine.backward(loss)
        engine.step()

    def save(out: Path, rank: int) -> None:
        engine.save_checkpoint(str(out / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)  # a collective: all ranks

    return engine, step, save


def train_func(config: dict[str, Any]) -> list[dict[str, float]]:
    """Ray Train worker loop (TorchTrainer): returns the per-epoch metrics it reported (rank 0's)."""
    import ray
    import ray.train
    import ray.train.torch

    quiet_worker_logs()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    data = config["data"]
    data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
    stage, seed, alpha, epochs, batch_size = (config[k] for k in ("stage", "seed", "alpha", "epochs", "batch_size"))
    samples, columns = labelled(data.train, data.catalog)
    if not samples:
        raise ValueError("no training sample has a target in the catalog")
    steps = math.ceil(shard_size(len(samples), world) / batch_size)
    seed_everything(seed)  # identical fresh weights on every rank
    with ExitStack() as stack:
        resume = _local_dir(ray.train.get_checkpoint(), stack)
        init = _local_dir(config.get("init_checkpoint"), stack)
        model, start_epoch = initial_model(config, data.catalog, resume, init)
        assert model.module is not None
        reference = frozen_reference(init / MODEL_DIR) if stage == "finetune" and alpha and init else None
        if reference is not None:
            reference.to(ray.train.torch.get_device())
        seed_everything(seed + rank)
        optimizer = build_optimizer(model.module, config["learning_rate"])

        def schedule(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
            return linear_warmup_schedule(opt, steps, epochs * steps)

        if config["strategy"] == "deepspeed":
            forward, step, save_state = deepspeed_strategy(model.module, optimizer, schedule,
                                                           config["deepspeed_config"], batch_size, resume)
        else:
            forward, step, save_state = ddp_strategy(model.module, optimizer, schedule, resume)
        epoch_lines = EpochLines(stage, epochs)

        def epoch_end(epoch: int, loss: float, seconds: float, seen: int) -> dict[str, float]:
            seconds = _max_over_workers(seconds, world)  # the slowest rank sets the pace
            metrics = {"epoch": epoch, "train_loss": _mean_over_workers(loss, world), "epoch_seconds": seconds,
                       "samples_per_s": seen * world / seconds}
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                if rank == 0:
                    metrics |= validate(model, data)
                    write_checkpoint(out, model, epoch, metrics)
                    epoch_lines(epoch, metrics)
                save_state(out, rank)
                checkpoint = ray.train.Checkpoint.from_directory(tmp) if any(out.iterdir()) else None
                ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{epoch:03d}")
            return metrics

        return run_epochs(model, forward, samples, columns, loss_fn=stage_loss(stage, alpha, reference), step=step,
                          epochs=epochs, start=start_epoch, seed=seed, batch_size=batch_size, rank=rank, world=world,
                          epoch_end=epoch_end)


# --- the driver side --------------------------------------------------------------------------------

def ray_log_level() -> str:
    """Ray Train's console level follows Ray's own (`RAY_LOGGER_LEVEL`, which `crs --log-level` sets), so its
    per-checkpoint and worker-group INFO lines stay out of a stage's output unless asked for."""
    return os.environ.get("RAY_LOGGER_LEVEL", "INFO").upper()


def quiet_worker_logs() -> None:
    """A Ray Train worker's root logger is at INFO, so every report and checkpoint of Ray's would reach the
    driver's console: the worker keeps Ray's level there, and our own loggers at `crs --log-level`."""
    logging.getLogger().setLevel(ray_log_level())
    logging.getLogger("crs_core").setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO").upper())


def read_deepspeed_config(path: str) -> dict[str, Any]:
    """The ZeRO config file: a path, or the name of a packaged config (crs_core/configs/). It must not
    set "optimizer" or "scheduler": the loop owns both, so DDP and DeepSpeed runs optimise identically."""
    found = Path(path).expanduser()
    if not found.is_file():
        if Path(path).name != path:
            raise ConfigError(f"train.deepspeed_config: {path} not found")
        found = packaged_file(path)
    config = json.loads(found.read_text())
    owned = sorted({"optimizer", "scheduler"} & config.keys())
    if owned:
        raise ConfigError(f"{found}: remove {owned}; the training loop sets AdamW and the linear schedule")
    return config


def train_stage(train_config: TrainConfig, data: TrainingData, stage: str, *, run_dir: Path | None = None,
                init_checkpoint: Any = None, seed: int = 42, name: str | None = None,
                backbone_params: dict[str, Any] | None = None) -> tuple[Recommender, dict[str, Any]]:
    """Run one stage under a TorchTrainer and load its best checkpoint (by `selection_key(backbone)`) back.

    `init_checkpoint` (a ray.train.Checkpoint or a local path; stage 2 only) is the stage-1 checkpoint to
    start from and to distil from. The Ray run is named `<stage dir>-<fingerprint of config, data and
    init>` unless `name` is given: rerunning the same stage resumes (or just reloads) that run, a changed
    config starts a new one. With `run_dir`, the best model is saved to `checkpoints/stage{1,2}/` and the
    metrics to `checkpoints/stage{1,2}.json`.
    """
    from ray.train import Checkpoint

    train_config.check(TRAINABLE, ADAPTER_ONLY)
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    alpha = train_config.alpha if stage == "finetune" else 0.0
    if stage == "pretrain" and init_checkpoint is not None:
        raise ValueError("stage 1 starts from the pretrained encoder, not from a checkpoint")
    if alpha > 0 and init_checkpoint is None:
        raise ValueError("stage 2 with alpha > 0 needs the stage-1 checkpoint (use alpha=0 for the baseline)")
    if isinstance(init_checkpoint, (str, Path)):
        init_checkpoint = Checkpoint.from_directory(str(Path(init_checkpoint).resolve()))
    storage = train_config.storage_path or (Path(run_dir) / "ray_results" if run_dir is not None else None)
    if storage is None:
        raise ValueError("no storage for Ray Train results: set train.storage_path or pass run_dir")
    loop_config = _loop_config(train_config, stage, seed, alpha, backbone_params or {})
    identity = {**loop_config, "num_workers": train_config.num_workers, "data": data.digest(),
                "init": init_checkpoint.path if init_checkpoint is not None else None}
    name = name or f"{STAGE_DIRS[stage]}-{fingerprint(identity)}"
    epochs = train_config.epochs_stage1 if stage == "pretrain" else train_config.epochs_stage2
    loop_config["epochs"] = epochs
    run_path = Path(storage).resolve() / name
    run = _run_locally if train_config.runner == "local" else partial(_run_on_ray, train_config=train_config)
    return _finish_stage(*run(loop_config, data, run_path, selection_key(train_config.backbone), init_checkpoint),
                         train_config, stage, name, epochs, run_dir)


def _loop_config(train_config: TrainConfig, stage: str, seed: int, alpha: float,
                 backbone_params: dict[str, Any]) -> dict[str, Any]:
    """What every worker of the stage is given (and what names the Ray run, with the data and the init)."""
    return {
        "stage": stage, "seed": seed, "alpha": alpha, "learning_rate": train_config.learning_rate,
        "batch_size": train_config.batch_size, "backbone": train_config.backbone, "strategy": train_config.strategy,
        "backbone_params": {"model_name_or_config": train_config.model,
                            "max_length": train_config.max_length, "trainable_layers": train_config.trainable_layers,
                            "learning_rate": train_config.learning_rate, "batch_size": train_config.batch_size,
                            "seed": seed, **backbone_params},
        "deepspeed_config": (read_deepspeed_config(train_config.deepspeed_config)
                             if train_config.strategy == "deepspeed" else None),
    }


def _run_on_ray(loop_config: dict[str, Any], data: TrainingData, run_path: Path, selected_by: str,
                init_checkpoint: Any, *, train_config: TrainConfig
                ) -> tuple[Recommender, str, str, dict[str, Any], list[dict[str, float]]]:
    """`train.runner: ray`: a TorchTrainer over `train.num_workers` workers; its best checkpoint loaded back."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        train_func,
        train_loop_config=loop_config | {"init_checkpoint": init_checkpoint, "data": ray.put(data)},
        scaling_config=ScalingConfig(num_workers=train_config.num_workers, use_gpu=train_config.use_gpu,
                                     resources_per_worker={"CPU": train_config.cpus_per_worker}),
        run_config=RunConfig(storage_path=str(run_path.parent), name=run_path.name,
                             failure_config=FailureConfig(max_failures=train_config.max_failures),
                             logging_config=LoggingConfig(log_level=ray_log_level()),
                             checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT,
                                                                checkpoint_score_attribute=selected_by,
                                                                checkpoint_score_order="max")),
    )
    result = trainer.fit()
    best = result.get_best_checkpoint(metric=selected_by, mode="max")
    if best is None:
        raise RuntimeError(f"Ray Train run {run_path.name} reported no checkpoint")
    with best.as_directory() as directory:
        model = load_model(Path(directory) / MODEL_DIR, catalog=data.catalog)
        progress = checkpoint_progress(Path(directory))
    return model, result.path, best.path, progress, result.return_value or []


def _run_locally(loop_config: dict[str, Any], data: TrainingData, run_path: Path, selected_by: str,
                 init_checkpoint: Any) -> tuple[Recommender, str, str, dict[str, Any], list[dict[str, float]]]:
    """`train.runner: local`: the stage in this process (crs_core.training.local), no Ray Train worker group."""
    from crs_core.training.local import run_stage_locally

    init_dir = None if init_checkpoint is None else Path(init_checkpoint.path)
    model, best_dir, history = run_stage_locally(loop_config | {"init_checkpoint": init_dir}, data, run_path,
                                                 selected_by)
    progress = checkpoint_progress(best_dir)
    return model, str(run_path), str(best_dir), progress, history


def _finish_stage(model: Recommender, run_path: str, best_path: str, progress: dict[str, Any],
                  history: list[dict[str, float]], train_config: TrainConfig, stage: str, name: str, epochs: int,
                  run_dir: Path | None) -> tuple[Recommender, dict[str, Any]]:
    """The stage's metrics (and, with `run_dir`, its best model under checkpoints/), whichever runner trained it."""
    stage_dir = STAGE_DIRS[stage]
    metrics = {"stage": stage, "run_name": name, "run_path": run_path, "best_checkpoint": best_path,
               "best_epoch": progress["epoch"], "best": progress["metrics"], "epochs": epochs,
               "selected_by": selection_rule(train_config.backbone), "history": history}
    if run_dir is not None:
        model.save(Path(run_dir) / "checkpoints" / stage_dir)
        write_json(Path(run_dir) / "checkpoints" / f"{stage_dir}.json", metrics)
    return model, metrics
