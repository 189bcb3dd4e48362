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
import time
from pathlib import Path
from typing import Any

from crs_core.artifacts import atomic_dir, write_json
from crs_core.models import Recommender, load_model
from crs_core.progress import EpochLines
from crs_core.training.data import TrainingData, epoch_indices, iter_batches, labelled
from crs_core.training.loop import MODEL_DIR, PROGRESS_FILE, initial_model
from crs_core.training.steps import (
    TrainableRecommender,
    build_optimizer,
    epoch_seed,
    frozen_reference,
    linear_warmup_schedule,
    plain_step,
    seed_everything,
    stage_loss,
    train_epoch,
    validate,
)

BEST_DIR = "best"


def run_stage_locally(loop_config: dict[str, Any], data: TrainingData, run_path: Path,
                      selected_by: str) -> tuple[Recommender, Path, list[dict[str, float]]]:
    """Train one stage as rank 0 of a one-worker run would; returns (best model, its checkpoint dir, history)."""
    import torch

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
    loss_fn = stage_loss(stage, alpha, reference)
    best_dir, best_value, history = run_path / BEST_DIR, -math.inf, []
    epoch_lines = EpochLines(stage, epochs)
    for epoch in range(epochs):
        torch.manual_seed(epoch_seed(seed, epoch))
        order = epoch_indices(len(samples), epoch, seed, 0, 1)
        started = time.perf_counter()
        loss = train_epoch(model.module, iter_batches(model.tokenize, samples, columns, order, batch_size),
                           loss_fn, step)
        seconds = time.perf_counter() - started
        metrics = {"epoch": epoch + 1, "train_loss": loss, "epoch_seconds": seconds,
                   "samples_per_s": len(order) / seconds} | validate(model, data)
        epoch_lines(epoch + 1, metrics)
        if metrics[selected_by] > best_value:  # strictly better: the earliest of equal epochs is kept
            best_value = metrics[selected_by]
            with atomic_dir(best_dir) as out:
                model.save(out / MODEL_DIR)
                write_json(out / PROGRESS_FILE, {"epoch": epoch + 1, "metrics": metrics})
        history.append(metrics)
    return load_model(best_dir / MODEL_DIR, catalog=data.catalog), best_dir, history
