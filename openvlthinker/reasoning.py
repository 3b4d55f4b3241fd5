"""Adaptive reasoning length: pick a mode (think or direct) and a hard thinking budget per query.

`reasoning_effort` follows the OpenAI parameter: `none` answers directly, `minimal|low|medium|high|xhigh|max`
think with a growing token budget, `auto` (the default) decides per query. Perception
queries (grounding, reading text, simple attributes) are answered directly; multi-step
questions think with the medium budget. A known problem type or task family decides;
otherwise the question text does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .prompts import Mode

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max", "auto")
# xhigh and max are the SDK's newest values; max is more than any context here, so only max_tokens bounds it.
BUDGETS: dict[str, int] = {"minimal": 16, "low": 64, "medium": 256, "high": 1024, "xhigh": 4096, "max": 32768}
AUTO_BUDGET = "medium"

PERCEPTION_TASKS = frozenset({"spatial_grounding", "ocr"})
PERCEPTION_PROBLEM_TYPES = frozenset({"spatial grounding", "OCR"})

# Question shapes that are answered by looking, not by reasoning.
_PERCEPTION_PATTERNS = [
    r"\bbounding box\b", r"\blocate\b", r"\bwhere is\b", r"\bground(ing)?\b", r"\bcoordinates?\b",
    r"\bwhat does the (text|sign|label|caption)\b", r"\bread (the|out|off)\b", r"\btranscribe\b",
    r"\bwhat (text|word|words) (is|are)\b", r"\bwhat is written\b", r"\bocr\b",
    r"^\W*what (colou?r|shape|size) is the [\w\s]+\?\W*$",
]
_PERCEPTION = re.compile("|".join(_PERCEPTION_PATTERNS), re.IGNORECASE)
# Cue words that mark a multi-step question even when it also names a perception verb.
_MULTI_STEP = re.compile(r"\bhow many\b|\bwhy\b|\bcompare\b|\bcalculate\b|\btimes\b|\bremove\b|\bplus\b|\bminus\b",
                         re.IGNORECASE)


@dataclass(frozen=True)
class ReasoningPlan:
    """How to answer one query: the mode and, when thinking, the hard token budget."""

    effort: str
    mode: Mode
    budget: int  # max thinking tokens; 0 in direct mode


def check_effort(effort: str) -> str:
    """Return `effort` if valid, else raise a ValueError listing the valid ones."""
    if effort not in EFFORTS:
        raise ValueError(f"unknown reasoning_effort {effort!r}; valid: {', '.join(EFFORTS)}")
    return effort


def is_perception(question: str, problem_type: str | None = None, task_type: str | None = None) -> bool:
    """True when the query is answered by looking: grounding, reading text, simple attributes."""
    if task_type:
        return task_type in PERCEPTION_TASKS
    if problem_type:
        return problem_type in PERCEPTION_PROBLEM_TYPES
    text = question.replace("<image>", " ").strip()
    lines = [ln for ln in text.splitlines() if ln.strip() and not re.match(r"^\s*[A-Z]\.\s", ln)]
    text = " ".join(lines)
    return bool(_PERCEPTION.search(text)) and not _MULTI_STEP.search(text)


def plan(effort: str = "auto", question: str = "", problem_type: str | None = None,
         task_type: str | None = None, budgets: dict[str, int] | None = None) -> ReasoningPlan:
    """Decide mode and thinking budget for one query."""
    check_effort(effort)
    budgets = {**BUDGETS, **(budgets or {})}
    if effort == "auto":
        if is_perception(question, problem_type, task_type):
            return ReasoningPlan(effort, "direct", 0)
        return ReasoningPlan(effort, "think", budgets[AUTO_BUDGET])
    if effort == "none":
        return ReasoningPlan(effort, "direct", 0)
    return ReasoningPlan(effort, "think", budgets[effort])
