"""The accuracy grader of each problem type, behind one signature: fn(pred, record) -> [0, 1].

`pred` is the extracted answer text (see `extract.extract_answer`). `accuracy` is the one entry
point callers use: it rejects unknown problem types with a ValueError that lists the valid
ones, and it guarantees a finite score in [0, 1] even if a grader misbehaves, because a single
odd response must never take down a training step or a server request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from openvlthinker.data.records import TaskRecord
from openvlthinker.registry import lookup
from openvlthinker.rewards.choice import multiple_choice_accuracy
from openvlthinker.rewards.grounding import grounding_accuracy
from openvlthinker.rewards.mathexpr import math_accuracy
from openvlthinker.rewards.numerical import numerical_accuracy
from openvlthinker.rewards.ocr import ocr_accuracy
from openvlthinker.rewards.regression import regression_accuracy

logger = logging.getLogger(__name__)

Grader = Callable[[str, TaskRecord], float]

ACCURACY: dict[str, Grader] = {
    "multiple choice": multiple_choice_accuracy,
    "numerical": numerical_accuracy,
    "regression": regression_accuracy,
    "OCR": ocr_accuracy,
    "math": math_accuracy,
    "spatial grounding": grounding_accuracy,
}


def get_grader(problem_type: str) -> Grader:
    """The accuracy grader for `problem_type`; ValueError listing the valid types if unknown."""
    return lookup(ACCURACY, problem_type, "problem_type (no accuracy grader)")


def accuracy(problem_type: str, pred: str | None, record: TaskRecord) -> float:
    """Accuracy of the extracted answer `pred` for `record`, a finite float in [0, 1]."""
    grader = get_grader(problem_type)
    if not isinstance(pred, str):
        return 0.0
    try:
        value = float(grader(pred, record))
    except Exception:  # graders are built not to raise; this is the last guard
        logger.exception("%s grader raised on problem %r", problem_type, record.problem_id)
        return 0.0
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
