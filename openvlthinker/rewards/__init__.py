"""Graders: accuracy per problem type, format and structure, and the composite reward."""

from openvlthinker.rewards.choice import multiple_choice_accuracy
from openvlthinker.rewards.composite import RewardBreakdown, grade, score, with_length
from openvlthinker.rewards.extract import extract_answer, extract_thinking
from openvlthinker.rewards.format import (
    JSON_ANSWER_TYPES,
    format_reward,
    structure_reward,
)
from openvlthinker.rewards.grounding import (
    box_iou,
    grounding_accuracy,
    parse_box,
    parse_boxes_json,
)
from openvlthinker.rewards.mathexpr import math_accuracy
from openvlthinker.rewards.numerical import numerical_accuracy
from openvlthinker.rewards.numparse import parse_number
from openvlthinker.rewards.ocr import ocr_accuracy, word_edit_distance
from openvlthinker.rewards.registry import ACCURACY, accuracy, get_grader
from openvlthinker.rewards.regression import mean_relative_accuracy, regression_accuracy

__all__ = [
    "ACCURACY",
    "JSON_ANSWER_TYPES",
    "RewardBreakdown",
    "accuracy",
    "box_iou",
    "extract_answer",
    "extract_thinking",
    "format_reward",
    "get_grader",
    "grade",
    "grounding_accuracy",
    "math_accuracy",
    "mean_relative_accuracy",
    "multiple_choice_accuracy",
    "numerical_accuracy",
    "ocr_accuracy",
    "parse_box",
    "parse_boxes_json",
    "parse_number",
    "regression_accuracy",
    "score",
    "structure_reward",
    "word_edit_distance",
]
