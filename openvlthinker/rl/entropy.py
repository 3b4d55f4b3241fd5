"""Token entropy and the per-task entropy band penalty (docs/method.md §4).

H_task is the mean token entropy over that task's response tokens in the micro-batch;
penalty = sum over tasks of relu(H_task - high) + relu(low - H_task). It keeps reasoning
tasks from exploding and perception tasks from collapsing.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import torch

from .ranks import segment_ids


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Exact entropy of softmax(logits) over the last dim: shape (..., V) -> (...)."""
    logits = logits.float()
    log_z = torch.logsumexp(logits, dim=-1)
    p = torch.softmax(logits, dim=-1)
    # H = log Z - sum p * logits, stable for very peaked distributions.
    return log_z - (p * logits).sum(dim=-1)


def task_entropies(
    token_entropy: torch.Tensor, mask: torch.Tensor, task_ids: Sequence[Hashable] | torch.Tensor
) -> tuple[list[Hashable], torch.Tensor, torch.Tensor]:
    """Mean masked token entropy per task: ((B, T), (B, T), B ids) -> (keys, means (K,), counts (K,))."""
    if token_entropy.shape != mask.shape or token_entropy.ndim != 2:
        raise ValueError(
            f"token_entropy and mask must both be (B, T); got {tuple(token_entropy.shape)} "
            f"and {tuple(mask.shape)}"
        )
    b = token_entropy.shape[0]
    seg = torch.from_numpy(segment_ids(task_ids, b, name="task_ids")).to(token_entropy.device)
    keys: list[Hashable] = (
        torch.unique(task_ids).tolist() if isinstance(task_ids, torch.Tensor) else list(dict.fromkeys(task_ids))
    )
    m = mask.to(token_entropy.dtype)
    k = len(keys)
    ent_sum = torch.zeros(k, dtype=token_entropy.dtype, device=token_entropy.device)
    ent_sum = ent_sum.index_add(0, seg, (token_entropy * m).sum(dim=1))
    count = torch.zeros(k, dtype=token_entropy.dtype, device=token_entropy.device)
    count = count.index_add(0, seg, m.sum(dim=1))
    return keys, ent_sum / count.clamp(min=1.0), count


def entropy_band_penalty(
    token_entropy: torch.Tensor,
    mask: torch.Tensor,
    task_ids: Sequence[Hashable] | torch.Tensor,
    low: float = 0.2,
    high: float = 0.6,
) -> torch.Tensor:
    """Sum over tasks of relu(H_task - high) + relu(low - H_task); differentiable scalar."""
    if not low <= high:
        raise ValueError(f"need low <= high, got low={low}, high={high}")
    if token_entropy.numel() == 0:
        return token_entropy.sum() * 0.0
    _, h, count = task_entropies(token_entropy, mask, task_ids)
    # A task with no response tokens in this micro-batch has no entropy to shape.
    band = torch.relu(h - high) + torch.relu(low - h)
    return torch.where(count > 0, band, torch.zeros_like(band)).sum()
