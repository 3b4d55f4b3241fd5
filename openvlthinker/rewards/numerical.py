"""Numerical accuracy: the predicted number equals the reference after rounding to 2 decimals.

Both sides go through `numparse.parse_number`, so "1,234", "$3.5" or "45%" are read as the
numbers they denote; an answer that is not a single finite number scores 0.
"""

from __future__ import annotations

from openvlthinker.data.records import TaskRecord
from openvlthinker.rewards.numparse import number_candidates, parse_number


def numerical_accuracy(pred: str, record: TaskRecord) -> float:
    """1.0 iff some reading of `pred` rounds (2 decimals) to the same value as the reference."""
    gold = parse_number(record.answer)
    if gold is None:
        return 0.0
    target = round(gold, 2)
    return 1.0 if any(round(v, 2) == target for v in number_candidates(pred)) else 0.0
