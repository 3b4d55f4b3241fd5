"""Seeded ShapeWorld generator: `generate`, the fixed train/eval splits, writing and corpus text.

A sample is a pure function of (family, seed, image_size): its rng is seeded with a string
that includes SHAPEWORLD_VERSION, so bumping the version is the only way the eval split
changes. Train uses seeds [0, EVAL_SEED_BASE) and eval seeds EVAL_SEED_BASE + i.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from PIL import Image

from openvlthinker.data.records import TaskRecord

from . import chart_ocr, shape_tasks
from .common import (
    CHART_LETTER_LABELS, CHART_WORD_LABELS, COLORS, LETTERS, OCR_WORDS, SHAPES, SIZES, Draft,
)

SHAPEWORLD_VERSION = "shapeworld-v1"
EVAL_SEED_BASE = 1_000_000_000  # far above any train index, so the seed spaces never meet
SPLITS = ("train", "eval")

_BUILDERS: dict[str, Callable[[random.Random, int], Draft]] = {
    "spatial_grounding": shape_tasks.spatial_grounding,
    "spatial_reasoning": shape_tasks.spatial_reasoning,
    "general_vqa": shape_tasks.general_vqa,
    "math_reasoning": shape_tasks.math_reasoning,
    "chart": chart_ocr.chart,
    "ocr": chart_ocr.ocr,
}
FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


@dataclass(frozen=True)
class Sample:
    """One generated task: the record, its rendered image and the reasoning trace ("" if none)."""

    record: TaskRecord
    image: Image.Image
    thinking: str


def _check_family(family: str) -> None:
    if family not in _BUILDERS:
        raise ValueError(f"unknown ShapeWorld family {family!r}; valid: {', '.join(FAMILIES)}")


def generate(family: str, seed: int, image_size: int = 128) -> Sample:
    """The sample for (family, seed, image_size); identical on every call."""
    _check_family(family)
    rng = random.Random(f"{SHAPEWORLD_VERSION}|{family}|{int(seed)}")
    draft = _BUILDERS[family](rng, image_size)
    problem = f"<image> {draft.question}"
    if draft.options:  # listed in the text too, so the model reads them with the question
        problem += "\n" + "\n".join(draft.options)
    record = TaskRecord(
        problem_id=f"shapeworld-{family}-{seed}",
        problem=problem,
        problem_type=draft.problem_type,
        answer=draft.answer,
        task_type=family,
        options=draft.options,
        images=(f"images/{family}-{seed}.png",),
        data_source="ShapeWorld",
        extra={
            "problem_reserved_text": draft.question,
            "thinking": draft.thinking,
            "shapeworld_version": SHAPEWORLD_VERSION,
            "seed": int(seed),
            "image_size": image_size,
            "scene": draft.facts,
        },
    )
    return Sample(record, draft.image, draft.thinking)


def split_seed(name: str, index: int) -> int:
    """The generator seed of the index-th sample of a family in split `name`."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
    if not 0 <= index < EVAL_SEED_BASE:
        raise ValueError(f"split index must be in [0, {EVAL_SEED_BASE}), got {index}")
    return index if name == "train" else EVAL_SEED_BASE + index


def split(
    name: str, n_per_family: int, families: Sequence[str] = FAMILIES, image_size: int = 128
) -> list[Sample]:
    """n_per_family samples of each family for split "train" or "eval", families interleaved."""
    for family in families:
        _check_family(family)
    split_seed(name, max(n_per_family - 1, 0))  # validates the name and the range
    out = []
    for i in range(n_per_family):
        for family in families:
            sample = generate(family, split_seed(name, i), image_size)
            stem = f"{name}-{family}-{i:06d}"
            record = replace(
                sample.record,
                problem_id=stem,
                images=(f"images/{stem}.png",),
                extra={**sample.record.extra, "split": name},
            )
            out.append(Sample(record, sample.image, sample.thinking))
    return out


def write_split(samples: Iterable[Sample], out_dir: str | Path, name: str | None = None) -> Path:
    """Save PNGs under out_dir/images/ and the records to out_dir/<split>.json; return the JSON path."""
    samples = list(samples)
    if name is None:
        names = {s.record.extra.get("split", "samples") for s in samples}
        if len(names) > 1:
            raise ValueError(f"samples come from several splits {sorted(names)}; pass name=")
        name = names.pop() if names else "samples"
    out = Path(out_dir)
    seen: dict[str, str] = {}
    for s in samples:
        rel = s.record.images[0]
        if seen.setdefault(rel, s.record.problem_id) != s.record.problem_id:
            raise ValueError(f"two records share the image path {rel!r}")
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        s.image.save(path, format="PNG")
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps([s.record.to_dict() for s in samples], ensure_ascii=False, indent=1))
    return json_path


def vocabulary_texts() -> list[str]:
    """Every word, label, digit and answer syntax the generator can emit, as a few strings."""
    shape_words = [w for s in SHAPES for w in (s, s + "s")]
    return [
        " ".join(COLORS), " ".join(shape_words), " ".join(SIZES), "shape shapes object objects",
        " ".join(OCR_WORDS), " ".join(CHART_WORD_LABELS), " ".join(CHART_LETTER_LABELS),
        " ".join(str(d) for d in range(10)) + " 10 0.5 1.25 + - / = < > ( ) , .",
        '{"boxes": [12, 34, 56, 78]}',
        " ".join(f"{letter}." for letter in LETTERS) + " yes no",
    ]


def corpus_texts(n: int, seed: int = 0) -> Iterator[str]:
    """Vocabulary strings, then the question, options, thinking and answer of n train-space samples."""
    yield from vocabulary_texts()
    for i in range(n):
        family = FAMILIES[i % len(FAMILIES)]
        # Train seed space only, so eval questions never shape the tokenizer.
        s = generate(family, (seed * 1_000_003 + i) % EVAL_SEED_BASE)
        yield s.record.extra["problem_reserved_text"]
        yield from s.record.options
        if s.thinking:
            yield s.thinking
        yield s.record.answer
