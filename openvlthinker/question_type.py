"""The kind of answer a question asks for, read from its text when no problem type is given.

The instruction after a question ends with a tail per problem type ("Answer with the option
letter only.", "Answer with the bounding box as JSON ..."): that is how the models were
trained and prompted. A client that sends a bare question through the API or the demo gives no
type, and a model then has to guess the answer format. These patterns recognise the clear
cases (lettered options, boxes, reading text, ratios, counting, a value to read off) and
return None otherwise, so an open question keeps the plain instruction. Only the prompt uses
the result: grading still needs a type and a reference the client states.
"""

from __future__ import annotations

import re

__all__ = ["infer_problem_type"]

_OPTION_LINE = re.compile(r"^\s*\(?[A-H][.)]\s+\S", re.MULTILINE)
_INLINE_OPTIONS = re.compile(r"\(A\)\s*\S.*\(B\)\s*\S", re.DOTALL)
_RULES: list[tuple[str, re.Pattern]] = [
    ("spatial grounding", re.compile(r"\bbounding box\b|\blocate\b.*\bbox\b|\bgive (its|the) (box|coordinates)\b",
                                     re.IGNORECASE)),
    ("OCR", re.compile(r"\bread the (text|word|words|sign|label)\b|\btranscribe\b|\bwhat (text|word|words) (is|are)\b"
                       r"|\bwhat does the (text|sign|label|caption)\b.*\bsay\b|\bwhat is written\b", re.IGNORECASE)),
    ("regression", re.compile(r"\bhow many times\b|\bratio of\b", re.IGNORECASE)),
    ("math", re.compile(r"\bhow many\b|\bremove all\b|\bplus\b|\bminus\b|\bsum of\b|\bdifference between\b",
                        re.IGNORECASE)),
    ("numerical", re.compile(r"\bwhat is the value of\b|\bwhat value\b|\bhow (much|tall|long|high)\b", re.IGNORECASE)),
]


def infer_problem_type(question: str) -> str | None:
    """A problem type (as in TaskRecord) when the question's text makes it plain, else None."""
    text = question.replace("<image>", " ")
    if _OPTION_LINE.search(text) and len(_OPTION_LINE.findall(text)) >= 2 or _INLINE_OPTIONS.search(text):
        return "multiple choice"
    for problem_type, pattern in _RULES:
        if pattern.search(text):
            return problem_type
    return None
