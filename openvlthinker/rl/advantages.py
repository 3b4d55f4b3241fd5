"""Advantage estimators with one signature: fn(rewards, group_ids, task_ids=None) -> (N,).

`rewards` is a 1-D float tensor with one scalar per response; `group_ids` says which
prompt group (the G responses sampled for one prompt) each response belongs to;
`task_ids` is the task key (problem type or task family) and only G²RPO uses it.
Every estimator is vectorised over groups (one sort, bincount sums; no per-group loop).
The arithmetic runs in float64 numpy: on a busy CPU torch's OpenMP start-up costs
milliseconds per elementwise op at this size, numpy microseconds.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from ..registry import lookup
from .ranks import round_for_ties, segment_gaussian_rank_np, segment_ids

Ids = Sequence[Hashable] | torch.Tensor
AdvantageFn = Callable[..., torch.Tensor]
_NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _prepare(rewards: torch.Tensor, group_ids: Ids) -> tuple[np.ndarray, np.ndarray]:
    rewards = torch.as_tensor(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D, got shape {tuple(rewards.shape)}")
    r = rewards.detach().cpu().numpy().astype(np.float64)
    if not np.isfinite(r).all():
        raise ValueError("rewards must be finite (no NaN or inf)")
    return r, segment_ids(group_ids, r.size, name="group_ids")


def _finish(values: np.ndarray, rewards: torch.Tensor) -> torch.Tensor:
    """Back to a tensor with the rewards' float dtype (float32 for integer rewards) and device."""
    rewards = torch.as_tensor(rewards)
    dtype = rewards.dtype if rewards.dtype.is_floating_point else torch.float32
    if dtype in _NUMPY_FLOATS:  # cast in numpy: torch's threaded cast costs ms on a busy CPU
        values = values.astype(_NUMPY_FLOATS[dtype], copy=False)
    return torch.from_numpy(values).to(device=rewards.device, dtype=dtype)


def _group_stats(r: np.ndarray, seg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-response group size, group sum and group sum of squares."""
    if r.size == 0:
        return r, r, r
    count = np.bincount(seg).astype(np.float64)
    return count[seg], np.bincount(seg, weights=r)[seg], np.bincount(seg, weights=r * r)[seg]


def g2rpo_advantages(rewards: torch.Tensor, group_ids: Ids, task_ids: Ids | None = None) -> torch.Tensor:
    """G²RPO: Gaussian-rank within each prompt group, then within each task across the batch."""
    r, groups = _prepare(rewards, group_ids)
    stage1 = round_for_ties(segment_gaussian_rank_np(r, groups))
    tasks = np.zeros(r.size, dtype=np.int64) if task_ids is None else segment_ids(task_ids, r.size, name="task_ids")
    return _finish(segment_gaussian_rank_np(stage1, tasks), rewards)


def grpo_advantages(
    rewards: torch.Tensor, group_ids: Ids, task_ids: Ids | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """GRPO: (r - group mean) / (group std + eps), population std; task_ids unused."""
    r, groups = _prepare(rewards, group_ids)
    count, total, sq = _group_stats(r, groups)
    mean = total / np.maximum(count, 1.0)
    std = np.sqrt(np.maximum(sq / np.maximum(count, 1.0) - mean * mean, 0.0))
    return _finish((r - mean) / (std + eps), rewards)


def dr_grpo_advantages(rewards: torch.Tensor, group_ids: Ids, task_ids: Ids | None = None) -> torch.Tensor:
    """Dr. GRPO: r - group mean (no std normalisation); task_ids unused."""
    r, groups = _prepare(rewards, group_ids)
    count, total, _ = _group_stats(r, groups)
    return _finish(r - total / np.maximum(count, 1.0), rewards)


def rloo_advantages(rewards: torch.Tensor, group_ids: Ids, task_ids: Ids | None = None) -> torch.Tensor:
    """RLOO: r minus the mean of the other responses of its group (0 for singleton groups)."""
    r, groups = _prepare(rewards, group_ids)
    count, total, _ = _group_stats(r, groups)
    others = np.maximum(count - 1, 1.0)
    return _finish((r - (total - r) / others) * (count > 1), rewards)


ADVANTAGES: dict[str, AdvantageFn] = {
    "g2rpo": g2rpo_advantages,
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}


def get_advantage(name: str) -> AdvantageFn:
    """Look up an estimator by name; an unknown name lists the valid ones."""
    return lookup(ADVANTAGES, name, "advantage")


def informative_groups(
    accuracy: torch.Tensor, group_ids: Ids, low: float = 0.01, high: float = 0.99
) -> torch.Tensor:
    """Boolean mask of responses whose group's mean accuracy lies strictly in (low, high).

    Dynamic sampling (docs/method.md §1): groups that are all right or all wrong carry no signal.
    """
    r, groups = _prepare(accuracy, group_ids)
    count, total, _ = _group_stats(r, groups)
    mean = total / np.maximum(count, 1.0)
    return torch.from_numpy((mean > low) & (mean < high))
