"""The two training objectives of the paper (docs/training.md), in pure torch.

Targets are given per context as lists of catalog columns, so a context with several positives (the
synthetic labels of stage 1) costs one forward pass instead of one per (context, target) pair.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

WEIGHTINGS = ("pair", "context")


def target_counts(target_lists: Sequence[Sequence[int]], shape: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(contexts, items) matrix counting how often each column is a target of each context."""
    rows = [i for i, cols in enumerate(target_lists) for _ in cols]
    cols = [c for targets in target_lists for c in targets]
    counts = torch.zeros(shape, dtype=torch.float32, device=device)
    if rows:
        index = (torch.tensor(rows, device=device), torch.tensor(cols, device=device))
        counts.index_put_(index, torch.ones(len(rows), device=device), accumulate=True)
    return counts


def grouped_cross_entropy(logits: torch.Tensor, target_lists: Sequence[Sequence[int]],
                          weighting: str = "pair") -> torch.Tensor:
    """Multi-positive cross-entropy with one softmax per context.

    Context i with positives P_i (a list; a repeated column counts twice) has the target distribution
    q_i = uniform over P_i and the loss l_i = -sum_j q_ij log p_ij = (1/|P_i|) sum_{g in P_i} CE(i, g).

    - weighting="pair": sum_i |P_i| l_i / sum_i |P_i| = sum_{(i, g)} CE(i, g) / #pairs, i.e. EXACTLY the
      reference code's per-pair loss (every (context, target) pair one sample, averaged over pairs).
    - weighting="context": mean_i l_i = sum_{(i, g)} CE(i, g) / (|P_i| * #contexts), i.e. the per-pair loss
      with each pair weighted 1/|P_i|, so every context counts once however many positives it has.

    Contexts without positives contribute nothing; a batch without any gives a zero loss (with a graph).
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if len(target_lists) != logits.shape[0]:
        raise ValueError(f"{len(target_lists)} target lists for {logits.shape[0]} rows of logits")
    log_p = torch.log_softmax(logits.float(), dim=-1)
    counts = target_counts(target_lists, tuple(log_p.shape), log_p.device)
    pair_sums = -(counts * log_p).sum(dim=-1)  # sum of the per-pair CEs of each context
    positives = counts.sum(dim=-1)
    if not bool((positives > 0).any()):
        return log_p.sum() * 0.0
    if weighting == "pair":
        return pair_sums.sum() / positives.sum()
    has = positives > 0
    return (pair_sums[has] / positives[has]).mean()


def kl_to_reference(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(P_ref || P_model) over the catalog, averaged over contexts: the reference code's
    `KLDivLoss(log_softmax(student), softmax(ref))` with "batchmean". The reference is never trained."""
    return F.kl_div(torch.log_softmax(logits.float(), dim=-1), torch.softmax(ref_logits.detach().float(), dim=-1),
                    reduction="batchmean")


def stage2_loss(logits: torch.Tensor, target_lists: Sequence[Sequence[int]], ref_logits: torch.Tensor | None,
                alpha: float, weighting: str = "pair") -> torch.Tensor:
    """Fine-tuning loss: CE on the original targets + alpha * KL to the frozen stage-1 model.

    The KL is averaged per context while the CE (weighting="pair") is per pair. alpha = 0 is plain CE and
    needs no reference: that is the no-augmentation baseline.
    """
    loss = grouped_cross_entropy(logits, target_lists, weighting)
    if alpha == 0:
        return loss
    if ref_logits is None:
        raise ValueError(f"alpha={alpha} needs the reference model's logits")
    return loss + alpha * kl_to_reference(logits, ref_logits)
