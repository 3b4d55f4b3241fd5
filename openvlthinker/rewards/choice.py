"""Multiple-choice accuracy: does the answer pick the same option as the reference?

Options look like "A. Yes" or "B) No". The reference is usually a letter but may be the option
text. A prediction may name the option by letter ("B", "(b)", "B.", "Option B", "B. No") or by
its text ("no"); both are resolved to an option and compared. When option texts are themselves
single letters ("A. b", "B. l"), a prediction that matches an option text exactly, case
included, is read as that text before it is read as a letter.
"""

from __future__ import annotations

import re

from openvlthinker.data.records import TaskRecord

_OPTION = re.compile(r"\s*\(?([A-Za-z])\s*[.)．:：]\s*(.*?)\s*", re.DOTALL)
_LETTER = re.compile(
    r"""\s*
    (?:(?:the\s+)?(?:correct\s+)?(?:option|answer|choice)(?:\s+is)?\s*[:：]?\s*)?
    [(\[]?\s*(?P<letter>[A-Za-z])\s*[)\]]?
    \s*(?:[.)．:：]\s*(?P<text>.*))?
    """,
    re.VERBOSE | re.IGNORECASE | re.DOTALL,
)
# Long predictions cannot be an option; skip the regexes on them.
_MAX_CHARS = 2000


def _norm(text: str) -> str:
    """Case-folded text with whitespace collapsed and wrapping quotes / final period dropped."""
    return " ".join(text.casefold().split()).strip(" .。'\"`")


def parse_options(options: tuple[str, ...]) -> dict[str, str]:
    """Map upper-case option letters to option texts; unlettered option lists get A, B, C… by position."""
    parsed = {}
    for option in options:
        match = _OPTION.fullmatch(option)
        if match:
            parsed.setdefault(match[1].upper(), match[2])
    if not parsed and options:
        parsed = {chr(ord("A") + i): o.strip() for i, o in enumerate(options[:26])}
    return parsed


def _letter(text: str, options: dict[str, str]) -> str | None:
    """The option letter `text` names by letter form, if it is a valid one."""
    match = _LETTER.fullmatch(text)
    if match is None:
        return None
    letter = match["letter"].upper()
    return letter if not options or letter in options else None


def _by_text(text: str, options: dict[str, str], *, exact: bool) -> str | None:
    """The unique option letter whose text equals `text` (exactly, or after normalisation)."""
    key = " ".join(text.split()) if exact else _norm(text)
    hits = [k for k, v in options.items() if (" ".join(v.split()) if exact else _norm(v)) == key]
    return hits[0] if len(hits) == 1 else None


def resolve_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter a free-text answer refers to, or None if it names no single option."""
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_CHARS:
        return None
    return (
        _by_text(text, options, exact=True)
        or _letter(text, options)
        or _by_text(text, options, exact=False)
    )


def multiple_choice_accuracy(pred: str, record: TaskRecord) -> float:
    """1.0 iff `pred` selects the reference option (by letter or by text), else 0.0."""
    if not isinstance(pred, str) or len(pred) > _MAX_CHARS:
        return 0.0
    options = parse_options(record.options)
    # References are letters in the data, so read the reference as a letter first.
    gold = _letter(record.answer, options) or resolve_choice(record.answer, options)
    picked = resolve_choice(pred, options)
    if gold is not None:
        return 1.0 if picked == gold else 0.0
    # A reference that names no listed option is compared as text.
    return 1.0 if _norm(pred) and _norm(pred) == _norm(record.answer) else 0.0
