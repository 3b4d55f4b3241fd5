"""Shared pieces of the ShapeWorld generator: palette, vocab lists, drafts and option letters.

Every family builder returns a `Draft` (question, answer, options, thinking, image, scene
facts); `generator.py` turns drafts into `TaskRecord`s. Keeping the word lists here lets
`corpus_texts` cover the whole vocabulary without rendering anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFont

# Saturated colours far from the light backgrounds, so a shape's pixels can be found
# by exact colour match (PIL draws polygons and ellipses without anti-aliasing).
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 190, 20),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
LETTERS = "ABCD"

# OCR words: short and distinct so a few fit on one 128-px line at font size ~20.
OCR_WORDS = (
    "cat", "dog", "sun", "map", "box", "red", "tree", "book", "fish", "bird", "moon",
    "star", "door", "lamp", "cup", "hat", "key", "pen", "car", "bus", "ship", "rain",
    "snow", "wind", "gold", "milk", "rice", "corn", "leaf", "rock", "sand", "wave",
)
# Chart labels: single capital letters or short words (≤ 3 letters to fit under a bar).
CHART_LETTER_LABELS = tuple("ABCDE")
CHART_WORD_LABELS = ("cat", "dog", "sun", "map", "box", "cup", "hat", "key", "pen", "car", "bus", "fox")

_FONT_CACHE: dict[int, ImageFont.FreeTypeFont] = {}


def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled scalable default font at `size` px (never a system font)."""
    if size not in _FONT_CACHE:
        _FONT_CACHE[size] = ImageFont.load_default(size=size)
    return _FONT_CACHE[size]


@dataclass
class Draft:
    """One generated question before it becomes a TaskRecord."""

    question: str
    problem_type: str
    answer: str
    image: Image.Image
    thinking: str = ""
    options: tuple[str, ...] = ()
    facts: dict[str, Any] = field(default_factory=dict)


def lettered(rng: random.Random, gold: str, distractors: list[str]) -> tuple[tuple[str, ...], str]:
    """Shuffle gold among distractors; return ("A. x", ...) options and the gold letter."""
    choices = [gold, *distractors]
    if len(set(choices)) != len(choices) or len(choices) > len(LETTERS):
        raise ValueError(f"options must be distinct and at most {len(LETTERS)}: {choices}")
    rng.shuffle(choices)
    options = tuple(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return options, LETTERS[choices.index(gold)]


def fmt_ratio(num: int, den: int) -> str:
    """num/den rounded to 2 decimals, printed with 1-2 decimals ("2.0", "1.75")."""
    text = f"{round(num / den, 2):.2f}"
    return text[:-1] if text.endswith("0") else text


def light_background(rng: random.Random) -> tuple[int, int, int]:
    """A random near-white tint; the tint makes identical layouts across seeds unlikely."""
    return tuple(rng.randint(215, 255) for _ in range(3))  # type: ignore[return-value]
