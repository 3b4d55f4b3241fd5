"""Number parsing and the numerical (2-decimal equality) and regression (MRA) graders."""

from __future__ import annotations

import math

import pytest

from openvlthinker.rewards import (
    mean_relative_accuracy,
    numerical_accuracy,
    parse_number,
    regression_accuracy,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3.0), ("40.33", 40.33), ("-2.5", -2.5), ("−3", -3.0), (".5", 0.5), ("5.", 5.0),
        ("1,234", 1234.0), ("1,234.56 dollars", 1234.56), ("45%", 45.0), ("45\\%", 45.0),
        ("$3.5", 3.5), ("-$3", -3.0), ("~5", 5.0), ("12 cm", 12.0), ("1/2", 0.5), ("x = 5", 5.0),
        ("1e5", 1e5), (" 7 ", 7.0),
    ],
)
def test_parse_number_reads(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    ["", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1/0", "3 or 4", "1,5",
     "2^3", "1" * 400, "1" * 10_000, "9" * 300 + "/1"],
)
def test_parse_number_refuses(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("3", "3", 1.0), ("3", "3.0", 1.0), ("3", "3.001", 1.0), ("3", "3.01", 0.0),
        ("40.33", "40.333", 1.0), ("40.33", "40.34", 0.0), ("2000", "2,000", 1.0),
        ("1234", "$1,234", 1.0), ("0.5", "1/2", 1.0), ("45", "45%", 1.0), ("0.45", "45%", 1.0),
        ("14", "14 apples", 1.0), ("3", "3.3", 0.0), ("3", "6", 0.0), ("3", "nan", 0.0),
        ("3", "inf", 0.0), ("3", "1e999", 0.0), ("3", "three", 0.0), ("3", "", 0.0),
        ("nan", "nan", 0.0), ("-0.0", "0", 1.0),
    ],
)
def test_numerical(rec, gold, pred, expected):
    assert numerical_accuracy(pred, rec("numerical", gold)) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (10.0, 10.0, 1.0), (11.0, 10.0, 0.8), (9.0, 10.0, 0.8), (10.4, 10.0, 1.0),
        (13.0, 10.0, 0.4), (15.0, 10.0, 0.0), (20.0, 10.0, 0.0), (-10.0, 10.0, 0.0),
        (0.0, 0.0, 1.0), (1e-9, 0.0, 0.0), (1e308, -1e308, 0.0),
    ],
)
def test_mean_relative_accuracy(pred, gold, expected):
    assert mean_relative_accuracy(pred, gold) == pytest.approx(expected)


def test_mra_is_monotone_in_the_error():
    scores = [mean_relative_accuracy(10.0 + e, 10.0) for e in (0, 0.3, 0.7, 1.2, 2.2, 3.3, 4.9, 6)]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        ("2.55", "2.55", 1.0), ("2.55", "2.805", 0.8), ("2.55", "5.1", 0.0), ("0.0", "0", 1.0),
        ("0.0", "0.01", 0.0), ("2.57", "nan", 0.0), ("2.57", "1e999", 0.0), ("2.57", "", 0.0),
    ],
)
def test_regression(rec, gold, pred, expected):
    value = regression_accuracy(pred, rec("regression", gold))
    assert value == pytest.approx(expected) and math.isfinite(value)
