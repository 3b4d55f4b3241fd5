"""Where the loop's questions come from: users' pending prompts, a data file or generated tasks, and the gate set.

A round takes users' prompts (harvested references and corrections, waiting in the loop's state)
first, then fills up from a OneThinker-format file or a generated train split: ShapeWorld's for a
vision-language model, the text tasks' (openvlthinker/tiny/text_tasks.py) for a text-only one,
which cannot see ShapeWorld's images. Dynamic sampling asks the same source for more when it drops
groups without signal. The gate's held-out questions are the first questions of the same
generator's eval split, families interleaved.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from openvlthinker.data import TaskRecord
from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from openvlthinker.tiny.text_tasks import TEXT_FAMILIES, text_task, text_tasks


@dataclass
class Prompt:
    """A gradable question and its images (PIL)."""

    record: TaskRecord
    images: list[Any]


SEED_ROUNDS = 1000  # rounds of questions per loop seed: seed s draws rounds s*1000 on (none shared before then)


def shapeworld_prompts(count: int, round_index: int, families=FAMILIES, start: int = 0, seed: int = 0) -> list[Prompt]:
    """`count` train-split questions for a round from its `start`-th on, families interleaved, never repeated
    across rounds (each round has 100,000 questions of its own); another `seed` draws other questions."""
    out = []
    for i in range(start, start + count):
        family = families[i % len(families)]
        # Away from the SFT stream (below 10M); rounds past SEED_ROUNDS meet the next seed's questions.
        seed_i = split_seed("train", 10_000_000 + (round_index + seed * SEED_ROUNDS) * 100_000 + i)
        sample = generate(family, seed_i)
        out.append(Prompt(sample.record, [sample.image]))
    return out


def text_prompts(count: int, round_index: int, families=TEXT_FAMILIES, start: int = 0, seed: int = 0) -> list[Prompt]:
    """`count` text-task train questions for a round from its `start`-th on, as `shapeworld_prompts` draws them
    (families interleaved, each round's own seeds); no images."""
    base = (round_index + seed * SEED_ROUNDS) * 100_000
    return [Prompt(text_task(families[i % len(families)], base + i, "train"), []) for i in range(start, start + count)]


def trainable(prompts: list[Prompt], skip_tasks: tuple[str, ...]) -> list[Prompt]:
    """The prompts whose task the loop trains on."""
    return [p for p in prompts if p.record.task not in skip_tasks]


def fill_prompts(stream: Iterator[Prompt] | None, count: int, round_index: int,
                 skip_tasks: tuple[str, ...] = (), start: int = 0, seed: int = 0, text: bool = False) -> list[Prompt]:
    """Prompts that complete a round: the data file's next `count` records (those of skipped tasks dropped,
    so a round may come out short), or `count` generated questions (ShapeWorld's; with `text`, the text
    tasks') of the families not skipped, from the round's `start`-th on."""
    if count <= 0:
        return []
    if stream is not None:
        return trainable([next(stream) for _ in range(count)], skip_tasks)
    families = tuple(f for f in (TEXT_FAMILIES if text else FAMILIES) if f not in skip_tasks)
    if not families:
        return []
    return (text_prompts if text else shapeworld_prompts)(count, round_index, families, start, seed)


def file_prompts(path: str, image_root: str | None, seed: int) -> Iterator[Prompt]:
    """An endless shuffled stream of a OneThinker file's records with their images."""
    from openvlthinker.data import load_records, open_image

    records = load_records(path, image_root)
    rng = random.Random(seed)
    while True:
        for record in rng.sample(records, len(records)):
            yield Prompt(record, [open_image(p) for p in record.images])


def gate_prompts(count: int, text: bool = False) -> list[Prompt]:
    """The fixed promotion-gate set: the first `count` questions of the ShapeWorld eval split (with `text`: of
    the text tasks' eval split), families in turn."""
    if count < 1:
        raise ValueError(f"the gate needs at least one question, got {count}")
    if text:
        return [Prompt(record, []) for record in text_tasks("eval", count)]
    samples = (generate(FAMILIES[i % len(FAMILIES)], split_seed("eval", i // len(FAMILIES))) for i in range(count))
    return [Prompt(s.record, [s.image]) for s in samples]


HELD_OUT_OFFSET = 100_000  # eval-split index of the first held-out question: far past any gate's first few dozen


def held_out_prompts(per_family: int) -> list[Prompt]:
    """The benches' held-out set: `per_family` fresh eval-split questions of every family, the families sharing
    seeds (HELD_OUT_OFFSET + i for each family's i-th), never trained on and never in the gate's set."""
    if per_family < 1:
        raise ValueError(f"per_family must be >= 1, got {per_family}")
    return [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("eval", HELD_OUT_OFFSET + i))
                                                  for i in range(per_family) for f in FAMILIES)]


class RoundPrompts:
    """One round's source of prompts: users' pending prompts first (oldest first), then the fill source.

    `pending` holds the users' prompts still waiting; `fetch` turns one into a Prompt (None when the
    server no longer has it). What a round does not take stays pending for the next.
    """

    def __init__(self, pending: list, fetch: Callable[[Any], Prompt | None], stream: Iterator[Prompt] | None,
                 round_index: int, skip_tasks: tuple[str, ...] = (), seed: int = 0, text: bool = False):
        self.pending = [p for p in pending if p.task not in skip_tasks]
        self.fetch, self.stream, self.round_index, self.skip_tasks = fetch, stream, round_index, skip_tasks
        self.seed, self.text = seed, text  # text: fill from the text tasks (a text-only model)
        self.user = 0  # users' prompts handed out
        self.lost = 0  # pending prompts the server no longer had
        self.filled = 0  # fill questions drawn (the next ShapeWorld question's index in the round)

    def take(self, count: int) -> list[Prompt]:
        """Up to `count` prompts: pending users' prompts, then fill questions."""
        out: list[Prompt] = []
        while self.pending and len(out) < count:
            prompt = self.fetch(self.pending.pop(0))
            if prompt is None:
                self.lost += 1
            else:
                out.append(prompt)
                self.user += 1
        wanted = count - len(out)
        out += fill_prompts(self.stream, wanted, self.round_index, self.skip_tasks, start=self.filled, seed=self.seed,
                            text=self.text)
        self.filled += max(0, wanted)
        return out
