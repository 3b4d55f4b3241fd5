"""Plain, loop-based reference implementations of the estimators (for tests and benchmarks).

Written for reading, not speed: one Python pass per group and per task, straight from
docs/method.md §1. The vectorised code in `ranks.py` and `advantages.py` must agree with them.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Callable, Hashable, Sequence

_PPF = NormalDist().inv_cdf


def reference_gaussian_rank(values: Sequence[float]) -> list[float]:
    """docs/method.md §1 literally: sort, quantile per position, mean quantile per tie block."""
    n = len(values)
    if n <= 1:
        return [0.0] * n
    order = sorted(range(n), key=lambda i: values[i])
    q = [_PPF((k + 0.5) / n) for k in range(n)]
    out = [0.0] * n
    k = 0
    while k < n:
        j = k
        while j + 1 < n and values[order[j + 1]] == values[order[k]]:
            j += 1
        mean = 0.0 if j - k + 1 == n else sum(q[k : j + 1]) / (j + 1 - k)
        for pos in range(k, j + 1):
            out[order[pos]] = mean
        k = j + 1
    return out


def apply_per_key(
    values: Sequence[float], keys: Sequence[Hashable], fn: Callable[[list[float]], list[float]]
) -> list[float]:
    """Apply `fn` to the values of each key separately, in a Python loop over keys."""
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    out = [0.0] * len(values)
    for idx in members.values():
        for i, v in zip(idx, fn([values[i] for i in idx])):
            out[i] = float(v)
    return out


def reference_g2rpo(
    rewards: Sequence[float], group_ids: Sequence[Hashable], task_ids: Sequence[Hashable] | None = None
) -> list[float]:
    """Two-stage G²RPO with a loop over groups, then a loop over tasks."""
    stage1 = apply_per_key(rewards, group_ids, reference_gaussian_rank)
    stage1 = [round(v, 9) for v in stage1]  # same tie rounding as the vectorised version
    tasks = task_ids if task_ids is not None else [0] * len(rewards)
    return apply_per_key(stage1, tasks, reference_gaussian_rank)
