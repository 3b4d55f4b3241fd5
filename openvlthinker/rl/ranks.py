"""Rank-based Gaussianisation (docs/method.md §1): scores -> N(0,1) quantiles by rank.

`segment_gaussian_rank_np` does it for many segments (prompt groups, tasks) at once with
a value sort, a stable radix sort by segment and bincount sums, so the cost is O(N log N) with no Python loop
over segments. `gaussian_rank` is the one-segment case on tensors. The core is numpy:
its sorts are ~25x faster than torch's CPU int64 sort, and the arithmetic is identical.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import torch
from scipy.special import ndtri

# Stage-one outputs are exact copies of the same quantiles for equally sized groups; rounding
# far below their precision keeps such copies bit-identical, so stage two sees them as ties.
_TIE_SCALE = 1e9


def segment_ids(keys: Sequence[Hashable] | torch.Tensor, n: int, *, name: str) -> np.ndarray:
    """Map a sequence of hashable keys (or an integer tensor) to dense int64 ids 0..S-1."""
    if isinstance(keys, torch.Tensor):
        if keys.ndim != 1 or keys.numel() != n:
            raise ValueError(f"{name} must be 1-D with {n} entries, got shape {tuple(keys.shape)}")
        if keys.dtype.is_floating_point:
            raise ValueError(f"{name} must be integer ids, got dtype {keys.dtype}")
        raw = keys.detach().cpu().numpy().astype(np.int64)
        if raw.size and raw.min() >= 0 and raw.max() < 4 * raw.size + 1024:
            # Compact non-negative ids: a bincount table maps them without sorting.
            present = np.bincount(raw) > 0
            return (np.cumsum(present) - 1)[raw]
        return np.unique(raw, return_inverse=True)[1].astype(np.int64).reshape(-1)
    if len(keys) != n:
        raise ValueError(f"{name} has {len(keys)} entries but rewards has {n}")
    index: dict[Hashable, int] = {}
    try:
        ids = [index.setdefault(k, len(index)) for k in keys]
    except TypeError as exc:
        raise ValueError(f"{name} entries must be hashable: {exc}") from None
    return np.asarray(ids, dtype=np.int64)


def _sort_by_segment_then_value(v: np.ndarray, seg: np.ndarray, num_segments: int) -> np.ndarray:
    """Indices ordering by (segment, value); equal values may come in any order."""
    # An unstable value sort is fine: members of a tie block all get the same output. The
    # stable segment pass is a radix sort when the ids fit 8 or 16 bits (5x faster than lexsort).
    by_value = np.argsort(v)
    if num_segments <= 1:
        return by_value
    narrow = np.uint8 if num_segments <= 256 else np.uint16 if num_segments <= 65536 else np.int64
    return by_value[np.argsort(seg[by_value].astype(narrow), kind="stable")]


def segment_gaussian_rank_np(v: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Gaussian-rank float64 `v` independently inside each segment of dense int ids `seg`.

    Shapes: (N,), (N,) -> (N,). Ties inside a segment get the mean of the quantiles their
    block occupies; segments of size 1 and all-equal segments give exactly 0.
    """
    n = v.size
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    sizes = np.bincount(seg)
    order = _sort_by_segment_then_value(v, seg, sizes.size)
    seg_sorted, v_sorted = seg[order], v[order]

    starts = np.cumsum(sizes) - sizes
    size_of = sizes[seg_sorted]
    rank0 = np.arange(n) - starts[seg_sorted]  # 0-based rank inside the segment
    q = ndtri((rank0 + 0.5) / size_of)

    # Tie blocks: a new block starts wherever the segment or the value changes.
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (seg_sorted[1:] != seg_sorted[:-1]) | (v_sorted[1:] != v_sorted[:-1])
    block = np.cumsum(new_block) - 1
    block_len = np.bincount(block)
    q_tied = (np.bincount(block, weights=q) / block_len)[block]
    # A block spanning its whole segment (all equal, or a singleton) is exactly 0, not a
    # float-rounding residue of summing symmetric quantiles.
    q_tied = np.where(block_len[block] < size_of, q_tied, 0.0)

    out = np.empty(n, dtype=np.float64)
    out[order] = q_tied
    return out


def gaussian_rank(scores: torch.Tensor) -> torch.Tensor:
    """Map N scores to the mean N(0,1) quantiles of their rank blocks; shape (N,) -> (N,)."""
    scores = torch.as_tensor(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {tuple(scores.shape)}")
    dtype = scores.dtype if scores.dtype.is_floating_point else torch.float32
    v = scores.detach().cpu().numpy().astype(np.float64)
    out = segment_gaussian_rank_np(v, np.zeros(v.size, dtype=np.int64))
    return torch.from_numpy(out).to(device=scores.device, dtype=dtype)


def round_for_ties(x: np.ndarray) -> np.ndarray:
    """Round float64 values far below their precision so equal quantiles compare equal."""
    return np.round(x * _TIE_SCALE) / _TIE_SCALE
