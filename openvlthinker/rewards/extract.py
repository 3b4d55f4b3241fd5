"""Pull the tagged parts out of a model response.

The prompt asks for `<thinking>...</thinking>` then `<answer>...</answer>`. Extraction is
deliberately lenient (any case, stray spaces inside the tags) because accuracy should not
depend on tag hygiene; the strict shape check lives in `format.py`. Everything here is a
single linear scan, so megabyte-sized responses cost milliseconds.
"""

from __future__ import annotations

import re

_TAGS = {
    name: re.compile(rf"<\s*(/?)\s*{name}\s*>", re.IGNORECASE) for name in ("answer", "thinking")
}


def _blocks(text: str, name: str) -> list[tuple[int, int]]:
    """Content spans of the complete `<name>...</name>` pairs, in order of appearance."""
    spans: list[tuple[int, int]] = []
    opened: int | None = None
    for match in _TAGS[name].finditer(text):
        if not match.group(1):
            # A second opening tag restarts the block: the model changed its mind.
            opened = match.end()
        elif opened is not None:
            spans.append((opened, match.start()))
            opened = None
    return spans


def _block_text(text: str, tag: str, which: int) -> str | None:
    """Stripped content of the `which`-th complete `<tag>` block (0 first, -1 last), or None."""
    if not isinstance(text, str):
        return None
    spans = _blocks(text, tag)
    if not spans:
        return None
    start, end = spans[which]
    return text[start:end].strip()


def extract_answer(text: str) -> str | None:
    """Content of the last complete `<answer>...</answer>` block, stripped; None if there is none."""
    return _block_text(text, "answer", -1)


def extract_thinking(text: str) -> str | None:
    """Content of the first complete `<thinking>...</thinking>` block, stripped; None if there is none."""
    return _block_text(text, "thinking", 0)
