"""Rendered-text families: bar charts (value / largest bar) and OCR of short word lists.

Charts use an integer number of pixels per unit so bar heights are exactly value × unit
(the tests measure them); OCR text is laid out in lines that always fit the image.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from .common import (
    CHART_LETTER_LABELS, CHART_WORD_LABELS, OCR_WORDS, PALETTE, Draft, font, lettered, light_background,
)

AXIS_MAX = 10
_GRID = (205, 205, 205)
_INK = (30, 30, 30)


def _fit_font(draw: ImageDraw.ImageDraw, labels: list[str], start: int, width: float) -> int:
    # Shrink the label font until the widest label fits its bar slot.
    size = start
    while size > 8 and max(draw.textlength(t, font=font(size)) for t in labels) > width - 2:
        size -= 1
    return size


def render_chart(
    rng: random.Random, image_size: int, labels: list[str], values: list[int]
) -> tuple[Image.Image, dict]:
    """Draw a vertical bar chart with a 0-10 gridded y-axis; return the image and its geometry."""
    s = image_size / 128
    left, right = round(22 * s), image_size - round(6 * s)
    bottom, top_room = image_size - round(20 * s), round(8 * s)
    unit = (bottom - top_room) // AXIS_MAX  # integer px per unit: heights are exact multiples
    top = bottom - unit * AXIS_MAX
    image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    tick_font = font(max(8, round(10 * s)))
    for v in range(AXIS_MAX + 1):
        y = bottom - v * unit
        if v:
            draw.line([(left, y), (right, y)], fill=_GRID)
        if v % 2 == 0:  # label every other gridline; all ten would not fit at 128 px
            draw.line([(left - 3, y), (left, y)], fill=_INK)
            draw.text((left - 5, y), str(v), fill=_INK, font=tick_font, anchor="rm")
    color = rng.choice(list(PALETTE))
    slot = (right - left) / len(values)
    bar_w = max(6, round(slot * 0.6))
    label_font = font(_fit_font(draw, labels, max(9, round(12 * s)), slot))
    bars = []
    for i, (label, value) in enumerate(zip(labels, values)):
        cx = left + slot * (i + 0.5)
        x0 = round(cx - bar_w / 2)
        # Rows bottom - value*unit .. bottom - 1: exactly value*unit pixels tall.
        draw.rectangle([x0, bottom - value * unit, x0 + bar_w - 1, bottom - 1], fill=PALETTE[color])
        draw.text((cx, bottom + 3 * s), label, fill=_INK, font=label_font, anchor="mt")
        bars.append({"label": label, "value": value, "box": [x0, bottom - value * unit, x0 + bar_w, bottom]})
    draw.line([(left, top), (left, bottom)], fill=_INK)
    draw.line([(left, bottom), (right, bottom)], fill=_INK)
    return image, {"bars": bars, "bar_color": color, "unit_px": unit, "axis_bottom": bottom, "axis_max": AXIS_MAX}


def chart(rng: random.Random, size: int) -> Draft:
    """"What is the value of bar X?" (numerical) or "Which bar is the largest?" (multiple choice)."""
    largest = rng.random() < 0.5
    # Letter labels would collide with option letters ("A. C"), so the choice question uses
    # words; word charts keep to 3-4 bars so the labels stay >= ~12 px tall at 128 px.
    if largest or rng.random() < 0.5:
        n = rng.randint(3, 4)
        labels = rng.sample(CHART_WORD_LABELS, n)
    else:
        n = rng.randint(3, 5)
        labels = list(CHART_LETTER_LABELS[:n])
    values = [rng.randint(1, 9) for _ in range(n)]
    if largest:
        while values.count(max(values)) > 1:  # a unique maximum keeps the gold answer unique
            values = [rng.randint(1, 9) for _ in range(n)]
    image, facts = render_chart(rng, size, labels, values)
    if largest:
        best = values.index(max(values))
        others = [lab for lab in labels if lab != labels[best]]
        options, letter = lettered(rng, labels[best], rng.sample(others, min(3, len(others))))
        listed = ", ".join(f"{lab} {v}" for lab, v in zip(labels, values))
        thinking = f"The bars are {listed}. The largest is {labels[best]} with {values[best]}."
        return Draft("Which bar is the largest?", "multiple choice", letter, image, thinking, options,
                     facts | {"query": {"kind": "largest"}})
    i = rng.randrange(n)
    name = f"bar {labels[i]}" if len(labels[i]) == 1 else f"the {labels[i]} bar"
    thinking = f"The top of {name} lines up with {values[i]} on the y-axis. So its value is {values[i]}."
    question = f"What is the value of {name}?"
    return Draft(question, "numerical", str(values[i]), image, thinking, (),
                 facts | {"query": {"kind": "value", "bar": i}})


def _layout(draw: ImageDraw.ImageDraw, words: list[str], size: int, width: int) -> list[str]:
    # Greedy line filling at the given font size.
    lines: list[str] = []
    for w in words:
        trial = f"{lines[-1]} {w}" if lines else w
        if lines and draw.textlength(trial, font=font(size)) <= width:
            lines[-1] = trial
        else:
            lines.append(w)
    return lines


def ocr(rng: random.Random, size: int) -> Draft:
    """One to four words from OCR_WORDS on a plain background -> the text."""
    words = [rng.choice(OCR_WORDS) for _ in range(rng.randint(1, 4))]
    bg = light_background(rng)
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    margin = max(4, size // 16)
    fsize = round(rng.randint(20, 28) * size / 128)
    while True:  # shrink until every line fits; 12 px is still legible for the tiny encoder
        lines = _layout(draw, words, fsize, size - 2 * margin)
        line_h = round(fsize * 1.25)
        widest = max(draw.textlength(t, font=font(fsize)) for t in lines)
        if fsize <= 12 or (widest <= size - 2 * margin and line_h * len(lines) <= size - 2 * margin):
            break
        fsize -= 1
    ink = rng.choice([(0, 0, 0), (40, 40, 40), (20, 30, 110), (110, 20, 20), (20, 80, 30)])
    x0 = rng.randint(margin, max(margin, int(size - margin - widest)))
    y0 = rng.randint(margin, max(margin, size - margin - line_h * len(lines)))
    word_boxes = []
    for k, text in enumerate(lines):
        y = y0 + k * line_h
        draw.text((x0, y), text, fill=ink, font=font(fsize))
        x = float(x0)
        for w in text.split(" "):  # each word's ink box, in reading order (= the order of `words`)
            word_boxes.append([round(v) for v in draw.textbbox((x, y), w, font=font(fsize))])
            x += draw.textlength(w + " ", font=font(fsize))
    question = rng.choice([
        "What text is written in the image?",
        "Read the text in the image.",
        "What does the text in the image say?",
    ])
    facts = {"words": words, "lines": lines, "word_boxes": word_boxes, "font_size": fsize, "background": list(bg),
             "ink": list(ink)}
    return Draft(question, "OCR", " ".join(words), image, "", (), facts)
