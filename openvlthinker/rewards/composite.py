"""The composite reward of docs/method.md §3: accuracy, format and structure in one breakdown.

overall = (0.9 − w)·accuracy + 0.1·format + structure + w·length, where w = `length_weight`
applies only when the caller passes a `length_score` (computed from its own length envelope,
see docs/method.md §3). Without it, overall = 0.9·accuracy + 0.1·format + structure. The maximum is
1.0 for most problem types and 1.5 for JSON-answer types (structure adds up to 0.5).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from openvlthinker.data.records import TaskRecord
from openvlthinker.rewards.extract import extract_answer
from openvlthinker.rewards.format import format_reward, structure_reward
from openvlthinker.rewards.registry import accuracy, get_grader

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1


@dataclass(frozen=True)
class RewardBreakdown:
    """Parts of one response's reward; `length` is None when no length score was given."""

    accuracy: float
    format: float
    structure: float
    length: float | None
    overall: float

    def to_dict(self) -> dict[str, float | None]:
        """The breakdown as a plain dict (for logs and JSON)."""
        return asdict(self)


def with_length(overall: float, accuracy: float, length_score: float, weight: float) -> float:
    """An overall reward without a length term, given one: w of accuracy's weight goes to the length score."""
    if not 0.0 <= weight <= ACCURACY_WEIGHT:
        raise ValueError(f"length_weight must be in [0, {ACCURACY_WEIGHT}], got {weight!r}")
    return overall - weight * accuracy + weight * _unit(length_score)


def _unit(value: float) -> float:
    """`value` clipped to [0, 1]; non-finite values count as 0."""
    value = float(value)
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0


def grade(
    record: TaskRecord,
    response_text: str | None,
    *,
    require_thinking: bool = True,
    length_score: float | None = None,
    length_weight: float = 0.0,
) -> RewardBreakdown:
    """Grade one full model response against `record`; never raises on odd responses."""
    weight = float(length_weight)
    if not 0.0 <= weight <= ACCURACY_WEIGHT:
        raise ValueError(f"length_weight must be in [0, {ACCURACY_WEIGHT}], got {length_weight!r}")
    get_grader(record.problem_type)  # unknown types fail loudly, before any scoring
    text = response_text if isinstance(response_text, str) else ""
    answer = extract_answer(text)
    acc = 0.0 if answer is None else accuracy(record.problem_type, answer, record)
    fmt = format_reward(text, require_thinking)
    struct = structure_reward(text, record.problem_type, require_thinking)
    length = None if length_score is None else _unit(length_score)
    w = 0.0 if length is None else weight
    overall = (ACCURACY_WEIGHT - w) * acc + FORMAT_WEIGHT * fmt + struct + w * (length or 0.0)
    return RewardBreakdown(accuracy=acc, format=fmt, structure=struct, length=length, overall=overall)


def score(record: TaskRecord, response_text: str | None, **options: object) -> float:
    """The overall reward of `grade(record, response_text, **options)`."""
    return grade(record, response_text, **options).overall  # type: ignore[arg-type]
