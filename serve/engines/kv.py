"""The running batch's key/value cache: left-padded rows that join and leave between steps.

Every row's tokens sit right-aligned in one `(batch, heads, columns, head_dim)` tensor per
layer, with a `(batch, columns)` attention mask marking the real ones, so each decoding step
appends one column for all rows at once. Rows that join bring a cache of their own (their
prefill); the narrower of the two is padded on the left and the two are stacked. Rows that
leave are dropped by index, and columns that no remaining row uses are trimmed from the left,
so the batch is never wider than its longest live row. Positions are not implied by columns
(the engine passes explicit position ids), so padding never shifts a row's rotary positions.

`append` (used by the lean decoding step) writes a step's column into spare room at the end
of each layer's tensors instead of concatenating: `torch.cat` copied the whole cache at every
step, which was the largest single cost of a decoding step at 16 rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROOM = 64  # spare columns allocated at a time for `append`

__all__ = ["KVBatch", "cache_layers"]


def cache_layers(cache) -> list:
    """The per-layer key/value holders of a DynamicCache (TypeError for caches that cannot be re-batched)."""
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
        cache_layers(cache)
        self.cache, self.mask = cache, mask.to(torch.long)
        self._room: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> (keys, values) with spare columns

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
        mine, theirs = cache_layers(self.cache), cache_layers(other.cache)
        if len(mine) != len(theirs):
            raise ValueError(f"caches with {len(mine)} and {len(theirs)} layers cannot be merged")
        for a, b in zip(mine, theirs):
            a.keys = torch.cat([_pad_left(a.keys, width, -2), _pad_left(b.keys, width, -2)])
            a.values = torch.cat([_pad_left(a.values, width, -2), _pad_left(b.values, width, -2)])
        self.mask = torch.cat([_pad_left(self.mask, width, -1), _pad_left(other.mask, width, -1)])
        self._room.clear()

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in that order), then trim columns no kept row uses."""
        if rows == list(range(self.size)):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else self.width
        self.mask = self.mask[:, start:]
        for layer in cache_layers(self.cache):
            layer.keys = layer.keys.index_select(0, index)[..., start:, :]
            layer.values = layer.values.index_select(0, index)[..., start:, :]
        self._room.clear()

    def append(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add one column (B, heads, 1, head_dim) to layer `index`; returns the layer's keys and values.

        The column goes into room kept after the layer's last column (allocated ROOM columns at
        a time), so a step copies one column, not the cache. The layer's tensors become views
        of that room; `extend` and `keep` build new tensors and drop it.
        """
        layer = cache_layers(self.cache)[index]
        width = layer.keys.shape[-2]
        room = self._room.get(index)
        if room is None or room[0].shape[-2] <= width:
            shape = (*layer.keys.shape[:-2], width + ROOM, layer.keys.shape[-1])
            room = (layer.keys.new_empty(shape), layer.values.new_empty(shape))
            room[0][..., :width, :] = layer.keys
            room[1][..., :width, :] = layer.values
            self._room[index] = room
        room[0][..., width : width + 1, :] = keys
        room[1][..., width : width + 1, :] = values
        layer.keys, layer.values = room[0][..., : width + 1, :], room[1][..., : width + 1, :]
        return layer.keys, layer.values

    def grow(self) -> torch.Tensor:
        """The mask for the next step: one more real column for every row (returned and kept)."""
        self.mask = F.pad(self.mask, (0, 1), value=1)
        return self.mask
