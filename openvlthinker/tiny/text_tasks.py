"""Seeded text-only tasks with reference answers: what the online loop trains a text-only model on.

ShapeWorld's questions are about an image, which a text-only model (the vLLM tests' Qwen3, see
text_model.py) cannot see. These ask about what the question itself says, in ShapeWorld's answer
formats (lettered options, a bare number), so the shipped model's language model already answers
them in tags and the existing graders score them:

- larger_number: which of 2-4 numbers is the largest (multiple choice);
- alphabet_first: which of 2-3 words comes first alphabetically (multiple choice);
- addition: the sum of two one-digit numbers (math).

A task is a pure function of (family, seed). The train and eval splits are disjoint in content,
not only in seeds (the question space is small, so seeds alone would repeat questions): a
question belongs to the eval split when a hash of its text falls in one fifth of the range, and
each split's generator draws until it has a question of its own.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable, Sequence

from openvlthinker.data.records import TaskRecord

from .shapeworld.common import OCR_WORDS, lettered

TEXT_VERSION = "text-tasks-v1"
TEXT_SPLITS = ("train", "eval")
_EVAL_SHARE = 5  # one question text in five belongs to the eval split
_Draft = tuple[str, str, str, tuple[str, ...]]  # question, problem type, answer, options


def _yes_no(rng: random.Random, question: str, truth: bool) -> _Draft:
    """A yes/no question as ShapeWorld asks them: two lettered options in random order."""
    options, letter = lettered(rng, "yes" if truth else "no", ["no" if truth else "yes"])
    return question, "multiple choice", letter, options


def _larger_number(rng: random.Random) -> _Draft:
    a, b = rng.sample(range(21), 2)
    return _yes_no(rng, f"Is {a} larger than {b}?", a > b)


def _alphabet_first(rng: random.Random) -> _Draft:
    a, b = rng.sample(OCR_WORDS, 2)
    return _yes_no(rng, f"Does the word {a} come before {b} in alphabetical order?", a < b)


def _addition(rng: random.Random) -> _Draft:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    shown = a + b if rng.random() < 0.5 else a + b + rng.choice((-2, -1, 1, 2))
    return _yes_no(rng, f"Is {a} plus {b} equal to {shown}?", shown == a + b)


def _word_length(rng: random.Random) -> _Draft:
    word = rng.choice(OCR_WORDS)
    return f"How many letters are in the word {word}?", "numerical", str(len(word)), ()


_BUILDERS: dict[str, Callable[[random.Random], _Draft]] = {
    "larger_number": _larger_number,
    "alphabet_first": _alphabet_first,
    "addition": _addition,
    "word_length": _word_length,
}
TEXT_FAMILIES: tuple[str, ...] = tuple(_BUILDERS)


def _split_of(problem: str) -> str:
    """The split a question text belongs to (a stable hash, the same on every machine)."""
    digest = hashlib.sha256(f"{TEXT_VERSION}|{problem}".encode()).digest()
    return "eval" if int.from_bytes(digest[:4], "big") % _EVAL_SHARE == 0 else "train"


def text_task(family: str, seed: int, split: str = "train") -> TaskRecord:
    """The `split` question of (family, seed); identical on every call."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown text task family {family!r}; valid: {', '.join(TEXT_FAMILIES)}")
    if split not in TEXT_SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(TEXT_SPLITS)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = random.Random(f"{TEXT_VERSION}|{family}|{split}|{seed}")
    for _ in range(1000):  # a fifth of the questions are eval's: a handful of draws suffices
        question, problem_type, answer, options = _BUILDERS[family](rng)
        problem = "\n".join((question, *options))
        if _split_of(problem) == split:
            break
    else:
        raise RuntimeError(f"text tasks: no {split} question of {family} after 1000 draws")
    return TaskRecord(problem_id=f"text-{family}-{split}-{seed}", problem=problem, problem_type=problem_type,
                      answer=answer, task_type=family, data_type="text", options=options,
                      data_source="text-tasks", extra={"text_tasks_version": TEXT_VERSION, "seed": seed})


def text_tasks(split: str, count: int, start: int = 0, families: Sequence[str] = TEXT_FAMILIES) -> list[TaskRecord]:
    """`count` questions of `split` from the `start`-th on, families interleaved."""
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got {count} and {start}")
    if not families:
        raise ValueError("text_tasks needs at least one family")
    return [text_task(families[i % len(families)], i, split)
            for i in range(start, start + count)]
