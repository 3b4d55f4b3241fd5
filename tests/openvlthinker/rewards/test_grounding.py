"""Spatial-grounding grading: box parsing (strict and lenient) and IoU."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openvlthinker.rewards import (
    box_iou,
    grounding_accuracy,
    parse_box,
    parse_boxes_json,
)

GOLD = '{"boxes": [577, 232, 899, 786]}'


@pytest.mark.parametrize(
    "pred",
    [
        GOLD, '{"boxes": [[577, 232, 899, 786]]}', "[577, 232, 899, 786]", "[[577, 232, 899, 786]]",
        '{"bbox_2d": [577, 232, 899, 786]}', '[{"bbox_2d": [577, 232, 899, 786], "label": "dog"}]',
        '{"boxes": [899, 786, 577, 232]}', '{"boxes": [577.0, 232.0, 899.0, 786.0]}',
        '{"boxes": [577, 232, 899, 786]', "The box is [577, 232, 899, 786].", "boxes: [577,232,899,786]",
        '{"boxes": [[577, 232, 899, 786], [0, 0, 10, 10]]}',
    ],
)
def test_exact_box_in_many_spellings(rec, pred):
    assert grounding_accuracy(pred, rec("spatial grounding", GOLD)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "pred",
    [
        "", "no box", "[1, 2, 3]", '{"boxes": []}', '{"boxes": [1, 2, 3, "x"]}', "[5, 5, 5, 9]",
        "[0, 0, 10, 10]", '{"boxes": [NaN, 1, 2, 3]}', '{"boxes": [1e999, 0, 2e999, 5]}',
        "[" * 100_000, '{"boxes": [true, 232, 899, 786]}', '{"boxes": [-1e308, -1e308, 1e308, 1e308]}',
    ],
)
def test_bad_or_disjoint_boxes_score_zero(rec, pred):
    assert grounding_accuracy(pred, rec("spatial grounding", GOLD)) == 0.0


def test_only_the_first_box_counts(rec):
    record = rec("spatial grounding", GOLD)
    spam = '{"boxes": [[0, 0, 10, 10], [577, 232, 899, 786], [500, 200, 900, 800]]}'
    assert grounding_accuracy(spam, record) == 0.0


def test_partial_overlap(rec):
    record = rec("spatial grounding", '{"boxes": [0, 0, 10, 10]}')
    assert grounding_accuracy("[5, 0, 15, 10]", record) == pytest.approx(50 / 150)


def test_strict_parse_requires_the_boxes_key():
    assert parse_boxes_json(GOLD) == [(577.0, 232.0, 899.0, 786.0)]
    assert parse_boxes_json("[1, 2, 3, 4]") is None
    assert parse_boxes_json('{"box": [1, 2, 3, 4]}') is None
    assert parse_boxes_json('{"boxes": [[1, 2, 3, 4], [1, 2]]}') is None
    assert parse_box('{"boxes": [[1, 2, 3, 4], [1, 2]]}') == (1.0, 2.0, 3.0, 4.0)


coord = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
boxes = st.tuples(coord, coord, coord, coord)


@settings(max_examples=200, deadline=None)
@given(boxes, boxes)
def test_iou_is_symmetric_and_bounded(a, b):
    iou = box_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == pytest.approx(box_iou(b, a))
    if (a[2] - a[0]) * (a[3] - a[1]) != 0:
        assert box_iou(a, a) == pytest.approx(1.0)
