"""Thinking-block tracking and the hard thinking budget, for tags of any token length.

The tags are found in the decoded text (with a real Qwen tokenizer `<thinking>` is several
tokens; in the tiny one it is one) and the closing tag is forced as a token sequence. After
`budget` tokens past the opening tag the next tokens are `</thinking>`; thinking tokens run
from the opening tag through the closing one. Used by the serving engine and by
`openvlthinker.generation` (evaluation), so both enforce the budget the same way.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Mapping, Sequence

THINK_OPEN, THINK_CLOSE = "<thinking>", "</thinking>"

__all__ = ["THINK_CLOSE", "THINK_OPEN", "ThinkTracker", "close_tag_suffix_ids", "count_thinking"]


def close_tag_suffix_ids(tokenizer, close_tag: str = THINK_CLOSE) -> dict[int, list[int]]:
    """Token ids of `close_tag[k:]` for every k: what to force when the text already ends with `close_tag[:k]`."""
    return {k: tokenizer.encode(close_tag[k:], add_special_tokens=False) for k in range(len(close_tag))}


class ThinkTracker:
    """Where one row's thinking block opens and closes, and which tokens the budget forces.

    budget: max tokens after the opening tag (None = uncapped; direct mode passes None).
    prefix: assistant text already in the prompt (a continued message); an unclosed
      `<thinking>` there means the completion starts inside the thinking block.
    """

    def __init__(self, close_ids: Mapping[int, Sequence[int]], budget: int | None = None, prefix: str = "",
                 open_tag: str = THINK_OPEN, close_tag: str = THINK_CLOSE):
        self.close_ids, self.budget = close_ids, budget
        self.open_tag, self.close_tag = open_tag, close_tag
        self.open_start: int | None = None  # token index where the opening tag starts
        self.open_end = -1  # token index that completed the opening tag (-1: opened in the prefix)
        self.close_end: int | None = None  # token index that completed the closing tag
        self.budget_hit = False
        self._pending: list[int] = []
        self._seen = 0  # length of the text at the previous observe (searched already)
        self._after_open = 0  # text offset just after the opening tag
        opened = prefix.rfind(open_tag)
        if opened >= 0 and prefix.find(close_tag, opened) < 0:
            self.open_start = 0

    @property
    def enforcing(self) -> bool:
        """True while the budget may still force tokens (capped and not yet fully closed by it)."""
        return self.budget is not None and (not self.budget_hit or bool(self._pending))

    @property
    def is_open(self) -> bool:
        """True while inside an unclosed thinking block."""
        return self.open_start is not None and self.close_end is None

    def observe(self, text: str, offsets: Sequence[int]) -> None:
        """Update after a token; `offsets[i]` is len(text) once token i was decoded."""
        n = len(offsets)
        if self.open_start is None:
            pos = text.find(self.open_tag, max(0, self._seen - len(self.open_tag) + 1))
            if pos >= 0:
                self.open_start, self.open_end = bisect_right(offsets, pos), n - 1
                self._after_open = pos + len(self.open_tag)
        if self.is_open and text.find(self.close_tag, max(self._after_open, self._seen - len(self.close_tag) + 1)) >= 0:
            self.close_end = n - 1
        self._seen = len(text)

    def forced_next(self, text: str, n_tokens: int) -> int | None:
        """The token the budget forces as token number `n_tokens` (0-based), or None."""
        if self._pending:
            return self._pending.pop(0)
        if self.budget is None or self.budget_hit or not self.is_open:
            return None
        if n_tokens - 1 - self.open_end < self.budget:
            return None
        # If the model already began the closing tag, force only the rest of it.
        k = next((k for k in range(len(self.close_tag) - 1, 0, -1) if text.endswith(self.close_tag[:k])), 0)
        self._pending = list(self.close_ids[k])
        self.budget_hit = True  # force once: never loop if the forced text decodes unexpectedly
        return self._pending.pop(0) if self._pending else None

    def thinking_tokens(self, n_tokens: int) -> int:
        """Completion tokens from the opening tag through the closing tag (or the end)."""
        if self.open_start is None:
            return 0
        end = self.close_end if self.close_end is not None else n_tokens - 1
        return max(0, end - self.open_start + 1)


def count_thinking(tokenizer, ids: Sequence[int]) -> int:
    """Thinking tokens of a finished completion (from `<thinking>` through `</thinking>`)."""
    tracker, offsets, text = ThinkTracker({}), [], ""
    for n in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:n], skip_special_tokens=False)
        offsets.append(len(text))
        tracker.observe(text, offsets)
        if tracker.close_end is not None:
            break
    return tracker.thinking_tokens(len(ids))
