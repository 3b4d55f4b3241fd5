"""ShapeWorld scenes: non-overlapping coloured shapes, their exact pixel boxes and descriptions.

Shapes are placed by rejection sampling with a gap between bounding boxes, then drawn
without anti-aliasing, so every shape's pixels are exactly its palette colour and its
tight box can be recovered from the image (the tests do exactly that).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Sequence

from PIL import Image, ImageDraw

from .common import COLORS, PALETTE, SHAPES, SIZES, light_background

ATTRS = ("size", "color", "shape")
MIN_IMAGE_SIZE = 96  # smaller images cannot fit four large (>= 24 px) shapes
_GAP = 4  # px between boxes: keeps same-coloured shapes separable when checking pixels


class PlacementError(RuntimeError):
    """The requested shapes do not fit in the image."""


@dataclass(frozen=True)
class Shape:
    """One drawn object; `box` is the tight pixel box [x1, y1, x2, y2), x2/y2 exclusive."""

    shape: str
    color: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the tight box in pixel coordinates."""
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2

    @property
    def width(self) -> int:
        """Width of the tight box in pixels."""
        return self.box[2] - self.box[0]

    def get(self, attr: str) -> str:
        """The value of one of ATTRS."""
        return getattr(self, attr)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (lists, not tuples, so records survive a JSON round trip)."""
        return {"shape": self.shape, "color": self.color, "size": self.size, "box": list(self.box)}


def side_range(size: str, image_size: int) -> tuple[int, int]:
    """Allowed side lengths (px) for a size class; small stays >= 14 px for 32-px patches."""
    scale = image_size / 128
    if size == "small":
        return max(14, round(14 * scale)), max(17, round(18 * scale))
    return max(24, round(26 * scale)), max(30, round(34 * scale))


def random_attrs(rng: random.Random, n: int, distinct: bool = True) -> list[tuple[str, str, str]]:
    """n random (shape, color, size) triples; distinct triples make full descriptions unique."""
    out: list[tuple[str, str, str]] = []
    while len(out) < n:
        triple = (rng.choice(SHAPES), rng.choice(COLORS), rng.choice(SIZES))
        if not distinct or triple not in out:
            out.append(triple)
    return out


def _draw(draw: ImageDraw.ImageDraw, shape: str, x0: int, y0: int, side: int) -> None:
    x1, y1 = x0 + side - 1, y0 + side - 1
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=1)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=1)
    else:  # upright isosceles triangle with its apex at the top centre
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=1)


def render_scene(
    rng: random.Random, image_size: int, attrs: Sequence[tuple[str, str, str]], tries: int = 50
) -> tuple[Image.Image, list[Shape], tuple[int, int, int]]:
    """Place and draw shapes with the given (shape, color, size) attributes; return image, shapes, bg."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    margin = max(2, image_size // 64)
    for _ in range(tries):  # restart the whole layout when one shape cannot be placed
        placed: list[tuple[int, int, int]] = []
        for shape, _color, size in attrs:
            lo, hi = side_range(size, image_size)
            for _attempt in range(100):
                side = rng.randint(lo, hi)
                x0 = rng.randint(margin, image_size - margin - side)
                y0 = rng.randint(margin, image_size - margin - side)
                if all(
                    x0 + side + _GAP <= px or px + ps + _GAP <= x0
                    or y0 + side + _GAP <= py or py + ps + _GAP <= y0
                    for px, py, ps in placed
                ):
                    placed.append((x0, y0, side))
                    break
            else:
                break
        if len(placed) == len(attrs):
            break
    else:
        raise PlacementError(f"could not place {len(attrs)} shapes in {image_size}px")
    bg = light_background(rng)
    image = Image.new("RGB", (image_size, image_size), bg)
    shapes = []
    for (shape, color, size), (x0, y0, side) in zip(attrs, placed):
        # Draw into a local mask first: the mask's bbox is the exact tight box of the pixels.
        mask = Image.new("1", (side, side), 0)
        _draw(ImageDraw.Draw(mask), shape, 0, 0, side)
        bx1, by1, bx2, by2 = mask.getbbox()
        image.paste(PALETTE[color], (x0, y0), mask)
        shapes.append(Shape(shape, color, size, (x0 + bx1, y0 + by1, x0 + bx2, y0 + by2)))
    return image, shapes, bg


def phrase(obj: Shape, attrs: Sequence[str]) -> str:
    """Noun phrase naming obj by the chosen attributes, e.g. "small red circle", "red object"."""
    words = [obj.get(a) for a in ("size", "color") if a in attrs]
    words.append(obj.shape if "shape" in attrs else "object")
    return " ".join(words)


def unique_descriptions(objs: Sequence[Shape], i: int, exclude: Sequence[str] = ()) -> list[tuple[str, ...]]:
    """Attribute subsets (without `exclude`) that single out objs[i] in the scene, shortest first."""
    usable = [a for a in ATTRS if a not in exclude]
    out = []
    for k in range(1, len(usable) + 1):
        for subset in combinations(usable, k):
            if all(any(o.get(a) != objs[i].get(a) for a in subset) for j, o in enumerate(objs) if j != i):
                out.append(subset)
    return out


def pick_phrase(rng: random.Random, objs: Sequence[Shape], i: int, exclude: Sequence[str] = ()) -> str | None:
    """A random unique noun phrase for objs[i], or None when no attribute subset is unique."""
    descs = unique_descriptions(objs, i, exclude)
    return phrase(objs[i], rng.choice(descs)) if descs else None


def distance(a: Shape, b: Shape) -> float:
    """Euclidean distance between box centres in pixels."""
    (ax, ay), (bx, by) = a.center, b.center
    return math.hypot(ax - bx, ay - by)


def plural(word: str, count: int) -> str:
    """English plural for the few nouns used here (circle, square, triangle, shape, object)."""
    return word if count == 1 else word + "s"
