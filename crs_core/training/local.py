"""One training stage in this process, without Ray Train: the same steps, seeds, validation and selection as a
one-worker TorchTrainer run (crs_core.training.loop.train_func), minus the worker start-up.

Why: with the frozen-encoder CPU profile an epoch takes about a second, while a TorchTrainer run spends most of
its minute starting its worker group. `train.runner: local` is for laptops and for benchmarks that train dozens
of models (benchmarks/quality.py); clusters, several workers and DeepSpeed use `train.runner: ray`.
The best epoch (by the selection metric) is saved as `<storage>/<name>/best/{model,progress.json}`, the layout
of a Ray checkpoint, so stage 2 starts from and distils towards it exactly as it does from a Ray checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from crs_core.artifacts import atomic_dir
from crs_core.models import Recommender, load_model
from crs_core.progress import EpochLines
from crs_core.training.data import TrainingData, labelled
from crs_core.training.loop import initial_model
from crs_core.training.steps import (
    MODEL_DIR,
    TrainableRecommender,
    build_optimizer,
    frozen_reference,
    linear_warmup_schedule,
    plain_step,
    run_epochs,
    seed_everything,
    stage_loss,
    validate,
    write_checkpoint,
)

BEST_DIR = "best"


def run_stage_locally(loop_config: dict[str, Any], data: TrainingData, run_path: Path,
                      selected_by: str) -> tuple[Recommender, Path, list[dict[str, float]]]:
    """Train one stage as rank 0 of a one-worker run would; returns (best model, its checkpoint dir, history)."""
    stage, seed, alpha, epochs, batch_size = (loop_config[k] for k in ("stage", "seed", "alpha", "epochs",
                                                                       "batch_size"))
    samples, columns = labelled(data.train, data.catalog)
    if not samples:
        raise ValueError("no training sample has a target in the catalog")
    steps = math.ceil(len(samples) / batch_size)
    init = Path(loop_config["init_checkpoint"]) if loop_config.get("init_checkpoint") else None
    seed_everything(seed)
    model, _ = initial_model(loop_config, data.catalog, None, init)
    assert isinstance(model, TrainableRecommender) and model.module is not None
    reference = frozen_reference(init / MODEL_DIR) if stage == "finetune" and alpha and init else None
    seed_everything(seed)
    optimizer = build_optimizer(model.module, loop_config["learning_rate"])
    step = plain_step(optimizer, linear_warmup_schedule(optimizer, steps, epochs * steps),
                      [p for p in model.module.parameters() if p.requires_grad])
    best_dir, best = run_path / BEST_DIR, {"value": -math.inf}
    epoch_lines = EpochLines(stage, epochs)

    def epoch_end(epoch: int, loss: float, seconds: float, seen: int) -> dict[str, float]:
        metrics = {"epoch": epoch, "train_loss": loss, "epoch_seconds": seconds,
                   "samples_per_s": seen / seconds} | validate(model, data)
        epoch_lines(epoch, metrics)
        if metrics[selected_by] > best["value"]:  # strictly better: the earliest of equal epochs is kept
            best["value"] = metrics[selected_by]
            with atomic_dir(best_dir) as out:
                write_checkpoint(out, model, epoch, metrics)
        return metrics

    history = run_epochs(model, model.module, samples, columns, loss_fn=stage_loss(stage, alpha, reference),
                         step=step, epochs=epochs, seed=seed, batch_size=batch_size, epoch_end=epoch_end)
    return load_model(best_dir / MODEL_DIR, catalog=data.catalog), best_dir, history
