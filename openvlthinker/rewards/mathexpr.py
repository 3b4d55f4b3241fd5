"""Math accuracy: symbolic equivalence with math-verify, else normalised string equality.

math-verify's own timeouts use `signal.alarm`, which raises outside the main thread, and the
graders run in a server's thread pool; so both of its timeouts are switched off here (it logs
one warning saying so). Instead, each check runs under `deadline.call_with_deadline`
(`VERIFY_SECONDS`), and what reaches sympy is bounded first: inputs longer than `MAX_CHARS`,
and inputs with "explosive" arithmetic (nested or large numeric powers such as `9^{9^{9^9}}`,
large factorials or binomials, whose exact evaluation is one uninterruptible C call), skip
math-verify. Whatever math-verify cannot settle, by error or timeout, falls back to
normalised string equality; nothing here raises.
"""

from __future__ import annotations

import re

from math_verify import parse, verify

from openvlthinker.data.records import TaskRecord
from openvlthinker.rewards.deadline import call_with_deadline

MAX_CHARS = 1000
# Ordinary answers verify in well under 0.1 s; sympy's simplify can otherwise run for minutes.
VERIFY_SECONDS = 2.0

_POWER = re.compile(r"\^|\*\*")
_MAX_POWERS = 20
_HEAVY = ("^", "**", "!", "exp", "binom", "choose")
_CLOSE_TO_OPEN = {")": "(", "}": "{", "]": "["}
_OPEN_TO_CLOSE = {v: k for k, v in _CLOSE_TO_OPEN.items()}
_DIGIT_RUN = re.compile(r"\d+")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_LETTERS = re.compile(r"[A-Za-z]")
_FACTORIAL_ARG = re.compile(r"(?:\b\d{1,4}|\b[A-Za-z])\s*!(?!=)")


def _group_after(text: str, i: int) -> tuple[str, int]:
    """The operand starting at `i` (a bracketed group or a word) and the index just past it."""
    while i < len(text) and text[i].isspace():
        i += 1
    if i < len(text) and text[i] in _OPEN_TO_CLOSE:
        depth, j = 0, i
        while j < len(text):
            if text[j] in _OPEN_TO_CLOSE:
                depth += 1
            elif text[j] in _CLOSE_TO_OPEN:
                depth -= 1
                if depth == 0:
                    return text[i + 1 : j], j + 1
            j += 1
        return text[i + 1 :], len(text)
    j = i
    while j < len(text) and (text[j].isalnum() or text[j] in "._\\"):
        j += 1
    return text[i:j], j


def _group_before(text: str, i: int) -> str:
    """The bracketed group ending just before index `i`, or "" if there is none."""
    j = i - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    if j < 0 or text[j] not in _CLOSE_TO_OPEN:
        return ""
    depth = 0
    for k in range(j, -1, -1):
        if text[k] in _CLOSE_TO_OPEN:
            depth += 1
        elif text[k] in _OPEN_TO_CLOSE:
            depth -= 1
            if depth == 0:
                return text[k + 1 : j]
    return text[:j]


def _letter_free(text: str) -> bool:
    """True if `text` has no variable letters (LaTeX command names like \\exp do not count)."""
    return _LETTERS.search(_COMMAND.sub("", text)) is None


def is_explosive(text: str) -> bool:
    """True if sympy might evaluate `text` into an astronomically large exact number."""
    powers = list(_POWER.finditer(text))
    if len(powers) > _MAX_POWERS:
        return True  # also bounds the bracket scans below, each linear in len(text)
    for match in powers:
        exponent, end = _group_after(text, match.end())
        base = _group_before(text, match.start())
        # Only letter-free operands can evaluate to a number; e^{-x^2} stays symbolic.
        if any(_letter_free(g) and any(h in g for h in _HEAVY) for g in (exponent, base)):
            return True
        if any(len(run) > 3 for run in _DIGIT_RUN.findall(exponent)):
            return True
        if _POWER.match(text, end) or text[end : end + 1] == "!":
            return True  # a power tower written without braces, e.g. 10^10^10
    bangs = text.count("!") - text.count("!=")
    if bangs and bangs != len(_FACTORIAL_ARG.findall(text)):
        return True  # factorial of something other than a small literal or a variable
    big_literal = any(len(r) > 4 for r in _DIGIT_RUN.findall(text))
    return big_literal and ("binom" in text or "choose" in text)


def _parse(text: str) -> list:
    """math-verify parse without signal timeouts, reading undelimited text as LaTeX first."""
    if not any(d in text for d in ("$", "\\(", "\\[")):
        # Bare text is far more often LaTeX (x^2+1, \pi) than prose, and math-verify only
        # reads LaTeX inside delimiters; outside them it finds just the first number.
        parsed = parse(f"${text}$", parsing_timeout=None)
        if parsed:
            return parsed
    return parse(text, parsing_timeout=None)


def _verify(gold: str, pred: str) -> bool:
    """math-verify parse + verify with its signal-based timeouts off."""
    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def symbolic_equal(gold: str, pred: str, seconds: float = VERIFY_SECONDS) -> bool:
    """math-verify equivalence of two answers; False when unsafe, on any error, or after `seconds`."""
    if len(gold) > MAX_CHARS or len(pred) > MAX_CHARS:
        return False
    if is_explosive(gold) or is_explosive(pred):
        return False
    # Errors inside math-verify also come back as (False, None): a grader must never raise.
    finished, same = call_with_deadline(lambda: _verify(gold, pred), seconds)
    return bool(finished and same)


_BOXED = re.compile(r"\\boxed\s*\{(.*)\}", re.DOTALL)
_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\s+")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")


def normalize_math(text: str) -> str:
    """A canonical string for a math answer: no delimiters, \\boxed, spacing or degree signs."""
    s = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
            break
    boxed = _BOXED.search(s)
    if boxed:
        s = boxed.group(1)
    s = _TEXT.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _DEGREES.sub("", s)
    s = _SPACING.sub("", s)
    return s.rstrip(".")


def math_accuracy(pred: str, record: TaskRecord) -> float:
    """1.0 iff `pred` is mathematically equivalent to the reference (math-verify or string match)."""
    if not isinstance(pred, str) or not pred.strip():
        return 0.0
    gold = record.answer
    if symbolic_equal(gold, pred):
        return 1.0
    if len(pred) > 10 * MAX_CHARS:
        return 0.0
    g, p = normalize_math(gold), normalize_math(pred)
    # A lone option letter ("B") is not case-sensitive the way a variable name is.
    if len(g) == 1 and g.isalpha():
        g, p = g.casefold(), p.casefold()
    return 1.0 if g and g == p else 0.0
