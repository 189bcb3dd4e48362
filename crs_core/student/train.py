"""Fine-tune a student on the teacher's (context, item, score) triplets and measure how well it agrees.

Agreement is measured on contexts held out whole (never pairs of a training context), because the student
will score the candidates of contexts it has never seen. Failed teacher rows carry no score and are left
out: treating them as 0 would teach the student that hard pairs are irrelevant.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from crs_core.artifacts import atomic_dir
from crs_core.config import StudentConfig
from crs_core.errors import DataError
from crs_core.schema import TEACHER_STATUS_OK, Catalog, Sample
from crs_core.student import StudentScorer, soft_targets
from crs_core.text import item_text, render_context

LOG = logging.getLogger(__name__)
WEIGHT_DECAY = 0.01
WARMUP_SHARE = 0.1
MAX_GRAD_NORM = 1.0


@dataclass(frozen=True)
class Triplet:
    sample_id: str
    item_id: int
    context: str
    item_text: str
    score: float | None  # None: the teacher failed on this pair


def teacher_triplets(teacher: pa.Table, samples: Sequence[Sample], catalog: Catalog) -> list[Triplet]:
    """Teacher rows (TEACHER_SCHEMA) with their rendered texts; a row whose status is not "ok" gets score
    None even if a number was stored."""
    by_id = {s.sample_id: s for s in samples}
    contexts: dict[str, str] = {}
    out = []
    for row in teacher.select(["sample_id", "item_id", "score", "status"]).to_pylist():
        sample = by_id.get(row["sample_id"])
        if sample is None or row["item_id"] not in catalog:
            raise DataError("teacher.parquet", f"pair ({row['sample_id']}, {row['item_id']}) is not a train "
                                               "sample and catalog item: teacher and prepare are out of step")
        if row["sample_id"] not in contexts:
            contexts[row["sample_id"]] = render_context(sample)
        ok = row["status"] == TEACHER_STATUS_OK and row["score"] is not None
        out.append(Triplet(row["sample_id"], row["item_id"], contexts[row["sample_id"]],
                           item_text(catalog.get(row["item_id"])), float(row["score"]) if ok else None))
    return out


def split_holdout(triplets: Sequence[Triplet], fraction: float, seed: int) -> tuple[list[Triplet], list[Triplet]]:
    """(train, held-out): a seeded `fraction` of the CONTEXTS is held out with all their pairs."""
    ids = sorted({t.sample_id for t in triplets})
    n_held = min(len(ids) - 1, round(fraction * len(ids))) if fraction > 0 else 0
    held = set(np.random.default_rng(seed).permutation(ids)[:n_held].tolist()) if n_held > 0 else set()
    return [t for t in triplets if t.sample_id not in held], [t for t in triplets if t.sample_id in held]


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None when either side is constant."""
    ra, rb = average_ranks(np.asarray(a)), average_ranks(np.asarray(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else None


def agreement(scorer: StudentScorer, triplets: Sequence[Triplet], batch_size: int) -> dict:
    """Student vs teacher on scored triplets: mean absolute error and Spearman of the 0-4 scores."""
    if not triplets:
        return {"mae": None, "spearman": None}
    pred = scorer.score_pairs([t.context for t in triplets], [t.item_text for t in triplets], batch_size)
    truth = np.array([t.score for t in triplets])
    return {"mae": float(np.abs(pred - truth).mean()), "spearman": spearman(pred, truth)}


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def train_student(scorer: StudentScorer, triplets: Sequence[Triplet], config: StudentConfig, seed: int) -> dict:
    """Seeded fine-tuning (AdamW, linear warmup/decay) on the scored triplets; returns loss per epoch and
    held-out agreement with the teacher."""
    usable = [t for t in triplets if t.score is not None]
    if not usable:
        raise ValueError("no usable teacher triplets (every row failed or the table is empty)")
    train, held = split_holdout(usable, config.holdout_fraction, seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    targets = torch.tensor(soft_targets([t.score for t in train]), dtype=torch.float32)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = max(1, config.epochs * steps_per_epoch)
    warmup = max(1, int(WARMUP_SHARE * total))
    optimizer = torch.optim.AdamW(scorer.trainable_parameters(), lr=config.learning_rate, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup))))
    epoch_losses = []
    started = time.perf_counter()
    scorer.train(True)
    for _ in range(config.epochs):
        losses = []
        order = rng.permutation(len(train))
        for start in range(0, len(train), config.batch_size):
            idx = order[start:start + config.batch_size]
            logits = scorer.logits([train[i].context for i in idx], [train[i].item_text for i in idx])
            loss = soft_cross_entropy(logits, targets[idx].to(logits.device))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(scorer.trainable_parameters(), MAX_GRAD_NORM)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
        LOG.info("student epoch %d/%d: loss %.4f (%d pairs, %.0fs elapsed)", len(epoch_losses), config.epochs,
                 epoch_losses[-1], len(train), time.perf_counter() - started)
    seconds = time.perf_counter() - started
    held_metrics = agreement(scorer, held, config.pool.batch_size)
    return {
        "train_pairs": len(train),
        "holdout_pairs": len(held),
        "failed_excluded": len(triplets) - len(usable),
        "epochs": config.epochs,
        "epoch_losses": epoch_losses,
        "train_loss": epoch_losses[-1] if epoch_losses else None,
        "train_seconds": seconds,
        "holdout_mae": held_metrics["mae"],
        "holdout_spearman": held_metrics["spearman"],
    }


def save_student(scorer: StudentScorer, path: Path) -> None:
    """Save into a temp folder beside `path`, then rename: a reader sees the old student or the new one,
    never half of one."""
    with atomic_dir(path) as tmp:
        scorer.save(tmp)
