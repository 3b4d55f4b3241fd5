"""The running batch's key/value cache: rows that join and leave between steps, without copying the cache.

Each layer keeps one preallocated `(slots, kv_heads, capacity, head_dim)` buffer for keys and
one for values, plus a `(slots, capacity)` attention mask. The live rows are the first `size`
slots; every row's tokens end at the same column (`end`), right-aligned, and the mask marks
the real ones, so a decoding step writes one column for all rows at once (`append`) and
attention reads the views `[:size, :, start:end]`. Positions are not implied by columns (the
engine passes explicit position ids), so padding never shifts a row's rotary positions.

Why buffers: under load a row joins or leaves at almost every step. Concatenating on join,
`index_select` on leave and concatenating a column per step each copied the whole cache
(about a tenth of the engine's time at 16 clients). Now a leaving row's slot is refilled by
moving one of the last rows into it (`keep` returns the new order), a joining row is copied
once into free slots, columns no row uses are dropped by moving `start`, and buffers are
reallocated only when they run out of slots or columns.

Slots and columns outside the live views may hold stale values; they are finite (buffers
start zeroed) and always masked, and columns that come back into view when `start` moves
left are unmasked explicitly. The model-forward fallback path goes through `as_cache` /
`store_last` (a DynamicCache of views, and the column that forward appended). Every method
that writes runs in inference mode: buffers reallocated during a decoding step are inference
tensors, and rows may join or leave outside one.
"""

from __future__ import annotations

import torch

ROOM = 64  # spare columns allocated at a time (slots double when they run out)

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


class KVBatch:
    """Keys, values and attention mask of the rows being decoded, in reusable buffers."""

    @torch.inference_mode()
    def __init__(self, cache, mask: torch.Tensor):
        """Take the cache and (B, W) mask of a prefill (a transformers DynamicCache)."""
        layers = cache_layers(cache)
        rows, width = mask.shape
        self.size, self.start, self.end = rows, 0, width
        self.keys = [self._alloc(layer.keys, rows, width + ROOM) for layer in layers]
        self.values = [self._alloc(layer.values, rows, width + ROOM) for layer in layers]
        self._mask = mask.new_zeros((rows, width + ROOM), dtype=torch.long)
        for i, layer in enumerate(layers):
            self.keys[i][:, :, :width] = layer.keys
            self.values[i][:, :, :width] = layer.values
        self._mask[:, :width] = mask

    @staticmethod
    def _alloc(like: torch.Tensor, slots: int, columns: int) -> torch.Tensor:
        return like.new_zeros((slots, like.shape[1], columns, like.shape[3]))

    # ---- views ---------------------------------------------------------------------------

    @property
    def width(self) -> int:
        """Columns in view (cached positions, padding included)."""
        return self.end - self.start

    @property
    def mask(self) -> torch.Tensor:
        """(size, width) attention mask of the live rows: 1 = a real token."""
        return self._mask[: self.size, self.start : self.end]

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (size, kv_heads, width, head_dim) of layer `index` (views)."""
        view = (slice(None, self.size), slice(None), slice(self.start, self.end))
        return self.keys[index][view], self.values[index][view]

    # ---- rows joining and leaving ----------------------------------------------------------

    @torch.inference_mode()
    def extend(self, other: "KVBatch") -> None:
        """Add `other`'s rows after this batch's rows, right-aligned with them."""
        if len(other.keys) != len(self.keys):
            raise ValueError(f"caches with {len(self.keys)} and {len(other.keys)} layers cannot be merged")
        if other.width > self.end or self.size + other.size > self._mask.shape[0]:
            # New buffers start the live columns at `left`: leave room there for the wider joiners.
            self._reallocate(slots=self.size + other.size, left=max(0, other.width - self.width))
        first, rows = self.size, slice(self.size, self.size + other.size)
        start = min(self.start, self.end - other.width)
        if start < self.start:  # columns coming back into view: nothing of the old rows is there
            self._mask[:first, start : self.start] = 0
        self._mask[rows] = 0
        self._mask[rows, self.end - other.width : self.end] = other.mask
        for i in range(len(self.keys)):
            keys, values = other.layer(i)
            self.keys[i][rows, :, self.end - other.width : self.end] = keys
            self.values[i][rows, :, self.end - other.width : self.end] = values
        self.size, self.start = self.size + other.size, start

    @torch.inference_mode()
    def keep(self, rows: list[int]) -> list[int]:
        """Keep only `rows`; returns them in their new slot order (a leaving row's slot takes a later row)."""
        kept = sorted(set(rows))
        if len(kept) == self.size:
            return list(range(self.size))
        n = len(kept)
        holes = sorted(set(range(n)) - set(kept))
        movers = [r for r in kept if r >= n]
        order = list(range(n))
        cols = slice(self.start, self.end)
        for hole, mover in zip(holes, movers):
            order[hole] = mover
            self._mask[hole, cols] = self._mask[mover, cols]
            for buf in (*self.keys, *self.values):
                buf[hole, :, cols] = buf[mover, :, cols]
        self.size = n
        used = self.mask.any(0).nonzero()
        self.start += int(used[0]) if len(used) else self.width
        return order

    # ---- decoding ----------------------------------------------------------------------------

    @torch.inference_mode()
    def grow(self) -> torch.Tensor:
        """Open the next column for every row (marked real); returns the mask including it."""
        if self.end == self._mask.shape[1]:
            self._reallocate(slots=self.size, left=0)
        self._mask[: self.size, self.end] = 1
        self.end += 1
        return self.mask

    @torch.inference_mode()
    def append(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write layer `index`'s (size, kv_heads, 1, head_dim) column that `grow` opened; returns keys and values."""
        self.keys[index][: self.size, :, self.end - 1 : self.end] = keys
        self.values[index][: self.size, :, self.end - 1 : self.end] = values
        return self.layer(index)

    def as_cache(self):
        """A DynamicCache over every layer's columns before the one `grow` opened (for the model's forward)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(len(self.keys)):
            keys, values = self.layer(i)
            cache.update(keys[:, :, :-1], values[:, :, :-1], i)
        return cache

    @torch.inference_mode()
    def store_last(self, cache) -> None:
        """Keep the column the model's forward appended to `as_cache()`'s cache."""
        for i, layer in enumerate(cache_layers(cache)):
            self.append(i, layer.keys[:, :, -1:], layer.values[:, :, -1:])

    @torch.inference_mode()
    def _reallocate(self, slots: int, left: int) -> None:
        """New buffers with room for `slots` rows, `left` more columns before `start` and ROOM after `end`."""
        width, have = self.width, self._mask.shape[0]
        slots = have if slots <= have else max(slots, 2 * have)
        columns = left + width + ROOM
        at = slice(left, left + width)
        old = (slice(None, self.size), slice(None), slice(self.start, self.end))
        for bufs in (self.keys, self.values):
            for i, buf in enumerate(bufs):
                new = self._alloc(buf, slots, columns)
                new[: self.size, :, at] = buf[old]
                bufs[i] = new
        mask = self._mask.new_zeros((slots, columns))
        mask[: self.size, at] = self.mask
        self._mask, self.start, self.end = mask, left, left + width
