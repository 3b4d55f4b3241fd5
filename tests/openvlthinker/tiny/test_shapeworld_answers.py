"""ShapeWorld answers checked against the rendered pixels and the scene facts in record.extra."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from openvlthinker.tiny.shapeworld import COLORS, OCR_WORDS, PALETTE, SHAPES, generate

SEEDS = st.integers(min_value=0, max_value=10**6)
# Fixed examples and no example database: runs are reproducible and write nothing to disk.
CHECK = settings(max_examples=60, derandomize=True, deadline=None, database=None)
_PHRASE = re.compile(
    r"the ((?:small|large) )?((?:" + "|".join(COLORS) + r") )?(" + "|".join(SHAPES) + r"|object)\b"
)


def _pixel_box(arr: np.ndarray, color: str, box: list[int], pad: int = 3) -> tuple[int, ...]:
    """Extent [x1, y1, x2, y2) of `color` pixels near `box` (shapes are >= 4 px apart)."""
    h, w = arr.shape[:2]
    x1, y1, x2, y2 = max(box[0] - pad, 0), max(box[1] - pad, 0), min(box[2] + pad, w), min(box[3] + pad, h)
    ys, xs = np.nonzero((arr[y1:y2, x1:x2] == PALETTE[color]).all(axis=-1))
    return x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1


def _check_scene_pixels(sample) -> list[dict]:
    arr = np.asarray(sample.image)
    objects = sample.record.extra["scene"]["objects"]
    covered = np.zeros(arr.shape[:2], bool)
    for o in objects:
        got = _pixel_box(arr, o["color"], o["box"])
        assert all(abs(a - b) <= 1 for a, b in zip(got, o["box"])), (o, got)
        assert min(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) >= 14
        x1, y1, x2, y2 = o["box"]
        covered[y1:y2, x1:x2] = True
    # No palette-coloured pixel lies outside the listed objects' boxes.
    painted = np.zeros(arr.shape[:2], bool)
    for color in {o["color"] for o in objects}:
        painted |= (arr == PALETTE[color]).all(axis=-1)
    assert not (painted & ~covered).any()
    return objects


def _matches(objects: list[dict], text: str) -> list[int]:
    size, color, shape = _PHRASE.fullmatch(text).groups()
    return [i for i, o in enumerate(objects)
            if (not size or o["size"] == size.strip()) and (not color or o["color"] == color.strip())
            and (shape == "object" or o["shape"] == shape)]


def _gold_option(record) -> str:
    letters = [opt.split(". ", 1)[0] for opt in record.options]
    assert letters == list("ABCD"[: len(letters)])
    texts = [opt.split(". ", 1)[1] for opt in record.options]
    assert len(set(texts)) == len(texts) and letters.count(record.answer) == 1
    return texts[letters.index(record.answer)]


@CHECK
@given(seed=SEEDS, size=st.sampled_from([128, 256]))
def test_grounding_box_matches_pixels_and_description_is_unique(seed, size):
    s = generate("spatial_grounding", seed, image_size=size)
    objects = _check_scene_pixels(s)
    target = s.record.extra["scene"]["target"]
    box = json.loads(s.record.answer)["boxes"]
    assert box == objects[target]["box"] and all(isinstance(v, int) for v in box)
    phrases = [m.group(0) for m in _PHRASE.finditer(s.record.problem)]
    assert len(phrases) == 1 and _matches(objects, phrases[0]) == [target]


@settings(CHECK, max_examples=80)
@given(seed=SEEDS)
def test_spatial_reasoning_answers(seed):
    s = generate("spatial_reasoning", seed)
    r, objects = s.record, _check_scene_pixels(s)
    q = r.extra["scene"]["query"]
    center = [((o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2) for o in objects]

    def dist(i, j):
        return math.dist(center[i], center[j])

    names = [m.group(0) for m in _PHRASE.finditer(r.extra["problem_reserved_text"])]
    if q["kind"] == "relation":
        (ax, ay), (bx, by) = center[q["a"]], center[q["b"]]
        truth = {"left of": ax < bx, "right of": ax > bx, "above": ay < by, "below": ay > by}[q["relation"]]
        assert _gold_option(r) == ("yes" if truth else "no")
        assert [_matches(objects, n) for n in names] == [[q["a"]], [q["b"]]]
    elif q["kind"] == "nearest":
        others = [j for j in range(len(objects)) if j != q["a"]]
        assert min(others, key=lambda j: dist(q["a"], j)) == q["nearest"]
        assert _matches(objects, "the " + _gold_option(r)) == [q["nearest"]]
    else:
        assert r.problem_type == "regression" and re.fullmatch(r"\d+\.\d\d?", r.answer)
        if q["kind"] == "width_ratio":
            a, b = (objects[q[k]]["box"] for k in "ab")
            exact = (a[2] - a[0]) / (b[2] - b[0])
        else:
            exact = dist(q["a"], q["b"]) / dist(q["a"], q["c"])
        assert exact >= 1 and abs(float(r.answer) - exact) / exact < 0.05


@CHECK
@given(seed=SEEDS)
def test_general_vqa_answers(seed):
    s = generate("general_vqa", seed)
    r, objects = s.record, _check_scene_pixels(s)
    q = r.extra["scene"]["query"]
    target, gold = objects[q["target"]], _gold_option(r)
    assert 3 <= len(r.options) <= 4
    if q["kind"] == "size":
        odd = r.extra["problem_reserved_text"].split()[-1].rstrip("?")
        assert [o["size"] for o in objects].count(odd) == 1 and target["size"] == odd
        assert gold == f"{target['color']} {target['shape']}"
    else:
        assert gold == target[q["kind"]]
        name = _PHRASE.search(r.extra["problem_reserved_text"]).group(0)
        assert _matches(objects, name) == [q["target"]] and gold not in name


@CHECK
@given(seed=SEEDS)
def test_math_answers(seed):
    s = generate("math_reasoning", seed)
    objects = _check_scene_pixels(s)
    q = s.record.extra["scene"]["query"]
    counts = [sum(o[q["attr"]] == v for o in objects) for v in q["values"]]
    expected = {
        "remove": lambda: len(objects) - counts[0],
        "plus": lambda: counts[0] + counts[1],
        "more": lambda: counts[0] - counts[1],
    }[q["op"]]()
    assert expected >= 0 and s.record.answer == str(expected)
    assert all(v in s.record.problem for v in q["values"])


@CHECK
@given(seed=SEEDS, size=st.sampled_from([128, 192]))
def test_chart_bar_heights_proportional_to_values(seed, size):
    s = generate("chart", seed, image_size=size)
    facts, arr = s.record.extra["scene"], np.asarray(s.image)
    color = PALETTE[facts["bar_color"]]
    heights = []
    for bar in facts["bars"]:
        x1, _, x2, bottom = bar["box"]
        column = (arr[:, (x1 + x2) // 2] == color).all(axis=-1)
        ys = np.nonzero(column)[0]
        assert ys.max() == bottom - 1 and len(ys) == ys.max() - ys.min() + 1  # one solid run
        heights.append(len(ys))
    values = [b["value"] for b in facts["bars"]]
    unit = heights[0] / values[0]
    assert all(abs(h - v * unit) <= 1 for h, v in zip(heights, values))
    assert 3 <= len(values) <= 5 and all(1 <= v <= 9 for v in values)
    q = facts["query"]
    if q["kind"] == "largest":
        assert values.count(max(values)) == 1
        assert _gold_option(s.record) == facts["bars"][values.index(max(values))]["label"]
    else:
        bar = facts["bars"][q["bar"]]
        assert s.record.answer == str(bar["value"]) and bar["label"] in s.record.problem


@CHECK
@given(seed=SEEDS)
def test_ocr_text_is_from_word_list_and_fits(seed):
    s = generate("ocr", seed)
    words = s.record.answer.split(" ")
    assert 1 <= len(words) <= 4 and set(words) <= set(OCR_WORDS)
    arr = np.asarray(s.image).astype(int)
    ink = np.abs(arr - s.record.extra["scene"]["background"]).sum(axis=-1) > 60
    ys, xs = np.nonzero(ink)
    assert ys.size and ys.min() > 0 and xs.min() > 0 and ys.max() < 127 and xs.max() < 127


@pytest.mark.parametrize("family", ["spatial_reasoning", "general_vqa", "chart"])
def test_multiple_choice_gold_is_unique_letter(family):
    found = 0
    for seed in range(100):
        r = generate(family, seed).record
        if r.problem_type == "multiple choice":
            _gold_option(r)
            found += 1
    assert found > 20
