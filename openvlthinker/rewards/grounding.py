"""Spatial-grounding accuracy: IoU between the first predicted box and the reference box.

Boxes are `[x1, y1, x2, y2]` in whatever coordinate frame the prompt used (the reference data
uses Qwen's 0-1000 grid; nothing is rescaled here). Only the first predicted box counts, so
listing many boxes cannot raise the score. Parsing tries JSON first and then falls back to the
first bracketed group of four numbers, because models often emit almost-JSON.
"""

from __future__ import annotations

import json
import math
import re
from itertools import islice
from typing import Any

from openvlthinker.data.records import TaskRecord

Box = tuple[float, float, float, float]

# Keys other than "boxes" are what Qwen-VL models emit natively; accepting them keeps the
# accuracy lenient while `parse_boxes_json` (the structure check) insists on "boxes".
_BOX_KEYS = ("boxes", "bbox_2d", "bbox", "box")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_MAX_JSON_CHARS = 100_000


def _as_box(value: Any) -> Box | None:
    """A 4-tuple of finite floats if `value` is a list of exactly four real numbers."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    out = []
    for v in value:
        # bool is an int subclass; `true` in JSON is not a coordinate.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        try:
            f = float(v)
        except OverflowError:  # a JSON integer with hundreds of digits
            return None
        if not math.isfinite(f):
            return None
        out.append(f)
    return (out[0], out[1], out[2], out[3])


def _box_list(value: Any) -> list[Box] | None:
    """Boxes from either one flat box or a non-empty list of boxes; None if malformed."""
    single = _as_box(value)
    if single is not None:
        return [single]
    if isinstance(value, list) and value:
        boxes = [_as_box(v) for v in value]
        if all(b is not None for b in boxes):
            return boxes  # type: ignore[return-value]
    return None


def _loads(text: str) -> Any:
    """json.loads that returns None instead of raising (bad JSON, deep nesting, huge input)."""
    if len(text) > _MAX_JSON_CHARS:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def parse_boxes_json(text: str) -> list[Box] | None:
    """Strict parse of `{"boxes": [x1,y1,x2,y2]}` or `{"boxes": [[...], ...]}`; None otherwise."""
    if not isinstance(text, str):
        return None
    data = _loads(text.strip())
    if not isinstance(data, dict) or "boxes" not in data:
        return None
    return _box_list(data["boxes"])


def _first_json_box(data: Any) -> Box | None:
    """First box found in parsed JSON: a dict with a box key, a bare list, or a list of those."""
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        for key in _BOX_KEYS:
            if key in lowered:
                boxes = _box_list(lowered[key])
                return boxes[0] if boxes else None
        return None
    if isinstance(data, list) and data:
        boxes = _box_list(data)
        if boxes:
            return boxes[0]
        return _first_json_box(data[0]) if isinstance(data[0], dict) else None
    return None


def parse_box(text: str) -> Box | None:
    """Lenient parse of the first box in `text` (JSON, bare list, or the first `[...]` of 4 numbers)."""
    if not isinstance(text, str):
        return None
    box = _first_json_box(_loads(text.strip()))
    if box is not None:
        return box
    for group in _BRACKETED.finditer(text):
        numbers = [m.group() for m in islice(_NUMBER.finditer(group.group(1)), 4)]
        if len(numbers) == 4:
            box = _as_box([float(n) for n in numbers])
            if box is not None:
                return box
    return None


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes; corners may be in any order; degenerate → 0."""
    ax1, ax2 = sorted((a[0], a[2]))
    ay1, ay2 = sorted((a[1], a[3]))
    bx1, bx2 = sorted((b[0], b[2]))
    by1, by2 = sorted((b[1], b[3]))
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    # Coordinates near the float limit overflow to inf; such boxes are garbage, not huge.
    if not (0 < area_a < math.inf and 0 < area_b < math.inf):
        return 0.0
    inter_w = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    inter_h = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = inter_w * inter_h
    iou = inter / (area_a + area_b - inter)
    return min(1.0, max(0.0, iou)) if math.isfinite(iou) else 0.0


def grounding_accuracy(pred: str, record: TaskRecord) -> float:
    """IoU of the first predicted box with the reference box; 0 if either does not parse."""
    gold = parse_box(record.answer)
    box = parse_box(pred)
    if gold is None or box is None:
        return 0.0
    return box_iou(box, gold)
