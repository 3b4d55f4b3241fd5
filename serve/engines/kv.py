"""The running batch's key/value cache: left-padded rows that join and leave between steps.

Every row's tokens sit right-aligned in one `(batch, heads, columns, head_dim)` tensor per
layer, with a `(batch, columns)` attention mask marking the real ones, so each decoding step
appends one column for all rows at once. Rows that join bring a cache of their own (their
prefill); the narrower of the two is padded on the left and the two are stacked. Rows that
leave are dropped by index, and columns that no remaining row uses are trimmed from the left,
so the batch is never wider than its longest live row. Positions are not implied by columns
(the engine passes explicit position ids), so padding never shifts a row's rotary positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KVBatch"]


def _layers(cache) -> list:
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"unsupported cache type {type(cache).__name__}: need a transformers DynamicCache")
    for layer in layers:
        if getattr(layer, "is_sliding", False):
            raise TypeError("sliding-window cache layers cannot be re-batched")
    return layers


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Pad tensor `t` with zeros on the left of `dim` up to `width`."""
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    pad = [0, 0] * (t.ndim - 1 - dim % t.ndim) + [missing, 0]
    return F.pad(t, pad)


class KVBatch:
    """A DynamicCache plus its attention mask, for a batch whose rows change between steps."""

    def __init__(self, cache, mask: torch.Tensor):
        _layers(cache)
        self.cache, self.mask = cache, mask.to(torch.long)

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return self.mask.shape[0]

    @property
    def width(self) -> int:
        """Columns (cached positions, padding included)."""
        return self.mask.shape[1]

    def extend(self, other: "KVBatch") -> None:
        """Append `other`'s rows after this batch's rows (both left-padded to the wider one)."""
        width = max(self.width, other.width)
        mine, theirs = _layers(self.cache), _layers(other.cache)
        if len(mine) != len(theirs):
            raise ValueError(f"caches with {len(mine)} and {len(theirs)} layers cannot be merged")
        for a, b in zip(mine, theirs):
            a.keys = torch.cat([_pad_left(a.keys, width, -2), _pad_left(b.keys, width, -2)])
            a.values = torch.cat([_pad_left(a.values, width, -2), _pad_left(b.values, width, -2)])
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order), then trim columns no kept row uses."""
        if rows == list(range(self.size)):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else self.width
        self.mask = self.mask[:, start:]
        for layer in _layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]

    def grow(self) -> torch.Tensor:
        """The mask for the next step: one more real column for every row (returned and kept)."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        return self.mask
