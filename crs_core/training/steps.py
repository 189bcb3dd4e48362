"""The training steps every loop shares: the in-process `fit`, each Ray Train worker (crs_core.training.loop)
and each Ray Tune trial (crs_core.tune) optimise with exactly these functions, so their numbers compare.

AdamW (weight decay 0.01 on matrices), linear warmup over one epoch then linear decay, gradient clipping at
1.0, grouped CE for stage 1 and CE + alpha * KL(P_ref || P_model) for stage 2 (docs/training.md); every epoch's
dropout is seeded by (worker seed, epoch) so a resumed run replays exactly the epochs it missed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

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
    loss_fn = stage_loss("finetune")
    losses = []
    with torch.random.fork_rng(devices=[]):
        for epoch in range(epochs):
            torch.manual_seed(epoch_seed(seed, epoch))
            order = epoch_indices(len(samples), epoch, seed)
            losses.append(train_epoch(module, iter_batches(model.tokenize, samples, columns, order, batch_size),
                                      loss_fn, step))
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
