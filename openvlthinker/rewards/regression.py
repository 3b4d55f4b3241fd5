"""Regression accuracy: mean relative accuracy (MRA) over ten tolerance levels.

For θ in {0.50, 0.55, …, 0.95} a prediction passes when |pred − gt| / |gt| < 1 − θ; the score
is the fraction of levels passed, so it falls off gradually with the relative error (a 10%
error scores 0.8, a 50% error scores 0). A zero reference cannot be divided by, so it is graded
exactly: 1 iff the prediction is 0.
"""

from __future__ import annotations

import math

from openvlthinker.data.records import TaskRecord
from openvlthinker.rewards.numparse import number_candidates, parse_number

# Integer percentages avoid 0.5 + 0.05·k float drift putting a level on the wrong side.
_THRESHOLDS_PCT = tuple(range(50, 100, 5))


def mean_relative_accuracy(pred: float, gold: float) -> float:
    """MRA of one finite prediction against a finite reference, in [0, 1]."""
    if gold == 0:
        return 1.0 if pred == 0 else 0.0
    rel = abs(pred - gold) / abs(gold)
    if not math.isfinite(rel):
        return 0.0
    passed = sum(1 for t in _THRESHOLDS_PCT if rel < (100 - t) / 100)
    return passed / len(_THRESHOLDS_PCT)


def regression_accuracy(pred: str, record: TaskRecord) -> float:
    """Best mean relative accuracy over the readings of `pred` (see `numparse.number_candidates`)."""
    gold = parse_number(record.answer)
    if gold is None:
        return 0.0
    return max((mean_relative_accuracy(v, gold) for v in number_candidates(pred)), default=0.0)
