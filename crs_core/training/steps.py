"""The training steps every loop shares: the in-process `fit`, each Ray Train worker (crs_core.training.loop),
the local runner (crs_core.training.local) and each Ray Tune trial (crs_core.stages.tune) run their epochs with
`run_epochs` and write and resume checkpoints with the helpers below, so their numbers compare.

AdamW (weight decay 0.01 on matrices), linear warmup over one epoch then linear decay, gradient clipping at
1.0, grouped CE for stage 1 and CE + alpha * KL(P_ref || P_model) for stage 2 (docs/training.md); every epoch's
dropout is seeded by (worker seed, epoch) so a resumed run replays exactly the epochs it missed.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from crs_core.artifacts import write_json
from crs_core.evaluation import selection_key, selection_scores
from crs_core.models import Recommender, load_model
from crs_core.schema import Catalog, Sample
from crs_core.training.data import (
    Batch,
    TrainingData,
    epoch_indices,
    iter_batches,
    labelled,
)
from crs_core.training.losses import grouped_cross_entropy, stage2_loss

MODEL_DIR = "model"  # a checkpoint: the model, the epoch it ends and its metrics, the optimizer and scheduler
PROGRESS_FILE = "progress.json"
STATE_FILE = "train_state.pt"
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
METRIC = selection_key("minilm")  # FNSCRS selects by valid recall@50 (UniCRS: @25, see selection_key)

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]
ScheduleFn = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LambdaLR]


@runtime_checkable
class TrainableRecommender(Protocol):
    """What the loop needs from a backbone besides the Recommender interface (see MiniLMRecommender)."""

    module: torch.nn.Module | None  # tokenized contexts -> (batch, n_items) logits

    def initialise(self, catalog: Catalog) -> None: ...

    def tokenize(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(worker_seed: int, epoch: int) -> int:
    """Dropout seed of one epoch: a resumed run replays exactly the epochs it missed."""
    return int(np.random.SeedSequence([worker_seed, epoch]).generate_state(1)[0])


def build_optimizer(module: torch.nn.Module, learning_rate: float) -> torch.optim.AdamW:
    """AdamW, weight decay 0.01 on matrices only (biases, LayerNorm and the scale are not decayed)."""
    params = [p for p in module.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `warmup_steps` (one epoch), then linear decay to 0 at `total_steps`. The first
    step already uses lr/warmup (not 0), so a one-step epoch still trains."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def plain_step(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               params: list[torch.nn.Parameter]) -> Callable[[torch.Tensor], None]:
    def step(loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()

    return step


def stage_loss(stage: str, alpha: float = 0.0, reference: torch.nn.Module | None = None) -> LossFn:
    """Grouped CE for "pretrain"; CE + alpha * KL to `reference` for "finetune"."""
    if stage == "pretrain":
        return lambda logits, batch: grouped_cross_entropy(logits, batch.targets)

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        ref_logits = None
        if alpha and reference is not None:
            with torch.no_grad():
                ref_logits = reference(**batch.inputs)
        return stage2_loss(logits, batch.targets, ref_logits, alpha)

    return loss


def train_epoch(model: torch.nn.Module, batches: Iterable[Batch], loss_fn: LossFn,
                step: Callable[[torch.Tensor], None]) -> float:
    """One pass over `batches`; `model` is the plain module, its DDP wrapper or a DeepSpeed engine and
    `step` the matching backward/update. Returns the mean batch loss."""
    model.train()
    total, count = 0.0, 0
    for batch in batches:
        loss = loss_fn(model(**batch.inputs), batch)
        step(loss)
        total += float(loss.detach())
        count += 1
    return total / max(count, 1)


EpochEnd = Callable[[int, float, float, int], dict]  # (epoch, mean loss, seconds, samples seen) -> its record


def run_epochs(model: TrainableRecommender, forward: torch.nn.Module, samples: Sequence[Sample],
               columns: Sequence[Sequence[int]], *, loss_fn: LossFn, step: Callable[[torch.Tensor], None],
               epochs: int, start: int = 0, seed: int, batch_size: int, rank: int = 0, world: int = 1,
               epoch_end: EpochEnd | None = None) -> list:
    """Epochs `start`..`epochs`-1 of a stage: each seeds this worker's dropout by (seed + rank, epoch), takes the
    epoch's order (one permutation for all ranks, dealt by rank) and makes one pass. `epoch_end` validates,
    checkpoints and reports; the records it returns (else the mean losses) are returned, one per epoch."""
    records = []
    for epoch in range(start, epochs):
        torch.manual_seed(epoch_seed(seed + rank, epoch))
        order = epoch_indices(len(samples), epoch, seed, rank, world)
        started = time.perf_counter()
        loss = train_epoch(forward, iter_batches(model.tokenize, samples, columns, order, batch_size), loss_fn, step)
        seconds = time.perf_counter() - started
        records.append(loss if epoch_end is None else epoch_end(epoch + 1, loss, seconds, len(order)))
    return records


def write_checkpoint(out: Path, model: Recommender, epoch: int, metrics: dict) -> None:
    """The model after `epoch` and its metrics, in the layout every runner resumes from."""
    model.save(out / MODEL_DIR)
    write_json(out / PROGRESS_FILE, {"epoch": epoch, "metrics": metrics})


def checkpoint_progress(directory: Path) -> dict:
    """{"epoch": the epoch the checkpoint ends, "metrics": its metrics}."""
    return json.loads((Path(directory) / PROGRESS_FILE).read_text())


def save_optimizer(out: Path, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, out / STATE_FILE)


def load_optimizer(directory: Path, optimizer: torch.optim.Optimizer,
                   scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Restore what `save_optimizer` wrote, so a resumed stage continues the learning-rate schedule exactly."""
    state = torch.load(Path(directory) / STATE_FILE, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])


def train_in_process(model: TrainableRecommender, train: Sequence[Sample], catalog: Catalog, *, epochs: int,
                     learning_rate: float, batch_size: int, seed: int) -> list[float]:
    """Plain CE on `train` targets without Ray (what `fit` runs); global RNG state is left untouched."""
    samples, columns = labelled(train, catalog)
    if not samples:
        raise ValueError("no training sample has a target in the catalog")
    module = model.module
    assert module is not None
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(module, learning_rate)
    steps = math.ceil(len(samples) / batch_size)
    step = plain_step(optimizer, linear_warmup_schedule(optimizer, steps, epochs * steps), params)
    with torch.random.fork_rng(devices=[]):
        losses = run_epochs(model, module, samples, columns, loss_fn=stage_loss("finetune"), step=step,
                            epochs=epochs, seed=seed, batch_size=batch_size)
    module.eval()
    return losses


def validate(model: Recommender, data: TrainingData) -> dict[str, float]:
    """FNSCRS's train-time valid metrics (crs_core.evaluation.selection): the best epoch is chosen by these."""
    result = selection_scores(model.score(data.valid), data.valid, data.catalog)
    return {"valid_recall@1": result["recall@1"], "valid_recall@10": result["recall@10"],
            "valid_recall@25": result["recall@25"], "valid_recall@50": result["recall@50"],
            "valid_ndcg@10": result["ndcg@10"], "valid_n": result["n"]}


def frozen_reference(directory: Path) -> torch.nn.Module:
    """The stage-1 model loaded on its own (no storage shared with the trained copy), frozen, eval mode."""
    reference = load_model(directory)
    assert isinstance(reference, TrainableRecommender) and reference.module is not None
    return reference.module.requires_grad_(False).eval()
