"""Read one number out of a short free-text answer, for the numerical and regression graders.

Accepts what models actually write around a number: thousands separators ("1,234"), a
currency sign ("$3.5"), a percent sign or a trailing unit ("45%", "12 cm"), a plain fraction
("1/2") and a leading "x =". Anything with a second number in it ("3 or 4") is refused rather
than guessed at. Non-finite values (nan, inf, 1e999) are refused too, so graders built on this
only ever see finite floats.
"""

from __future__ import annotations

import math
import re

# Final answers are short; refusing long strings keeps a 1 MB response from costing time.
_MAX_CHARS = 200

_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ANSWER = re.compile(
    rf"""
    (?P<sign>[-+−]?)\s*
    [$€£¥]?\s*
    (?P<num>{_UNSIGNED})
    (?:\s*/\s*(?P<den>{_UNSIGNED}))?
    \s*(?P<unit>\D*)
    """,
    re.VERBOSE,
)
_PREFIX = re.compile(r"^\s*[$€£¥~≈]?\s*")


def _to_float(text: str) -> float | None:
    """float() of a matched literal, or None if it overflows to a non-finite value."""
    value = float(text.replace(",", ""))
    return value if math.isfinite(value) else None


def parse_number(text: str) -> float | None:
    """The single finite number in a short answer string, or None if there is not exactly one."""
    if not isinstance(text, str) or len(text) > _MAX_CHARS:
        return None
    body = text.strip().replace("\\$", "$").replace("\\%", "%")
    if "=" in body:
        body = body.rsplit("=", 1)[1]
    # A currency or "approximately" sign may come before the sign of the number.
    body = _PREFIX.sub("", body)
    match = _ANSWER.fullmatch(body.rstrip(" ."))
    if match is None:
        return None
    value = _to_float(match["num"])
    if value is None:
        return None
    if match["den"] is not None:
        den = _to_float(match["den"])
        if not den:
            return None
        value /= den
    if match["sign"] in ("-", "−"):
        value = -value
    return value if math.isfinite(value) else None


def number_candidates(text: str) -> tuple[float, ...]:
    """Readings of the answer: its number, plus number/100 when written as a percentage."""
    value = parse_number(text)
    if value is None:
        return ()
    if "%" in text:
        # "45%" may be graded against either 45 or 0.45; accept both readings.
        return (value, value / 100.0)
    return (value,)
