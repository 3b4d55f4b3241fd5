"""Streaming text for one completion: incremental detokenisation and stop strings.

A byte-level BPE token can end in the middle of a UTF-8 character, so decoding token by
token would emit replacement characters. `IncrementalDetokenizer` (the prefix/read-offset
scheme of vLLM and TGI) decodes a short window and only releases text once the window no
longer ends in a partial character. Stop strings are matched on the decoded text; while the
text ends with the beginning of a stop string, that tail is held back from the stream, so a
client never sees a stop string that the final text then excludes.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["IncrementalDetokenizer", "StopWatch", "find_stop", "partial_stop_len"]

_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turn a stream of token ids into text deltas that never split a character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        # ids[prefix:read] were already released; decoding them again gives the context the
        # next tokens need (byte merges), and the difference is the new text.
        self.prefix = 0
        self.read = 0

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text ('' while a character is incomplete)."""
        self.ids.append(token_id)
        return self._release(final=False)

    def flush(self) -> str:
        """Release whatever is held back (the completion ended), partial characters included."""
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and (final or not after.endswith(_REPLACEMENT)):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""


def find_stop(text: str, stops: Sequence[str], start: int = 0) -> int:
    """Index of the earliest stop string in `text` at or after `start`; -1 if none."""
    hits = [pos for s in stops if s and (pos := text.find(s, start)) >= 0]
    return min(hits, default=-1)


def partial_stop_len(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class StopWatch:
    """A completion's growing text against its stop strings: where one starts, and what may stream now."""

    def __init__(self, stops: Sequence[str]):
        self.stops = tuple(s for s in stops if s)
        self._longest = max(map(len, self.stops), default=0)
        self._scanned = 0  # text already searched (a stop can still end in the new text)
        self.emitted = 0  # characters already released to the stream

    def find(self, text: str) -> int:
        """Where a stop string starts in `text`, searching only around what is new; -1 if none."""
        if not self.stops:
            return -1
        pos = find_stop(text, self.stops, max(0, self._scanned - self._longest + 1))
        self._scanned = len(text)
        return pos

    def release(self, text: str, end: int | None = None) -> str:
        """The text that may stream now: up to `end` if the completion ends there, else up to where
        a stop string might be starting (held back until it matches or cannot)."""
        safe = end if end is not None else len(text) - partial_stop_len(text, self.stops)
        delta = text[self.emitted:safe] if safe > self.emitted else ""
        self.emitted = max(self.emitted, safe)
        return delta
