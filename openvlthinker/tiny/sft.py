"""Supervised examples for the tiny model: ShapeWorld samples -> (prompt, target) token batches.

Reasoning families are taught to think (`<thinking>` trace, then `<answer>`), perception
families (grounding, OCR) to answer directly. A fraction of examples flips the mode, with
the prompt's instruction saying which, so that `reasoning_effort` can force either mode on
any question at serving time. Multiple-choice answers are the chosen option's text, which the
grader resolves like its letter: finding a text among the listed options and copying the letter
in front of it is a lookup the 4-layer model did not learn in any recipe tried
(docs/experiments.md#multiple-choice-lookup).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from openvlthinker.prompts import (
    DIRECT_INSTRUCTION,
    TAILS,
    THINK_INSTRUCTION,
    Mode,
    record_messages,
    to_messages,
)
from openvlthinker.reasoning import PERCEPTION_TASKS
from openvlthinker.rewards.choice import parse_options

DESCRIBE_QUESTION = "<image> Describe everything in the image."
IGNORE_INDEX = -100


def default_mode(task_type: str) -> Mode:
    """The mode a family is trained and evaluated in by default."""
    return "direct" if task_type in PERCEPTION_TASKS else "think"


def perception_thinking(sample) -> str:
    """A short trace for perception questions asked in thinking mode (they have none of their own)."""
    if sample.record.task_type == "ocr":
        return "I read the words in the image from left to right."
    return "I find the object that matches the description and read off its edges."


def answer_text(record) -> str:
    """The answer the tiny model is taught: the reference, or for multiple choice the chosen option's text."""
    if record.problem_type == "multiple choice" and record.options:
        return parse_options(record.options).get(record.answer, record.answer)
    return record.answer


def target_text(sample, mode: Mode) -> str:
    """The assistant output for a sample in a mode: optional thinking, then the answer."""
    answer = f"<answer>{answer_text(sample.record)}</answer>"
    if mode == "direct":
        return answer
    thinking = sample.thinking or perception_thinking(sample)
    return f"<thinking>{thinking}</thinking>{answer}"


def template_texts() -> list[str]:
    """The fixed instruction texts, so the tokenizer learns them as a few tokens."""
    return [THINK_INSTRUCTION, DIRECT_INSTRUCTION, DESCRIBE_QUESTION, *TAILS.values()]


def describe(sample) -> str:
    """A dense description of the scene: every token of it depends on the image.

    Auxiliary supervision for learning to see: a task answer carries one or two
    image-dependent tokens, a description carries dozens (objects left to right with their
    boxes, bars with their values, the text as written).
    """
    scene = sample.record.extra["scene"]
    if "objects" in scene:
        objs = sorted(scene["objects"], key=lambda o: (o["box"][0], o["box"][1]))
        return "; ".join(f"{o['size']} {o['color']} {o['shape']} at {o['box']}" for o in objs)
    if "bars" in scene:
        return "bar chart: " + ", ".join(f"{b['label']} {b['value']}" for b in scene["bars"])
    return "text: " + " / ".join(scene["lines"])


@dataclass
class Example:
    """One tokenised example: prompt ids (with image pads), target ids, and the images."""

    prompt_ids: list[int]
    target_ids: list[int]
    mm_token_type_ids: list[int]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    task_type: str
    mode: Mode


def encode(processor, sample, mode: Mode, *, describe_scene: bool = False) -> Example:
    """Tokenise one sample in `mode` (or as a scene description); the target ends with `<|im_end|>`."""
    if describe_scene:
        messages = to_messages(DESCRIBE_QUESTION, [sample.image], mode="direct")
        target_str = f"<answer>{describe(sample)}</answer>"
    else:
        messages = record_messages(sample.record, images=[sample.image], mode=mode)
        target_str = target_text(sample, mode)
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(text=[prompt], images=[sample.image], return_tensors="pt")
    tok = processor.tokenizer
    target = tok(target_str + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return Example(
        prompt_ids=enc["input_ids"][0].tolist(), target_ids=list(target),
        mm_token_type_ids=enc["mm_token_type_ids"][0].tolist(), pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"], task_type=sample.record.task_type, mode=mode,
    )


def pick_mode(task_type: str, rng: random.Random, flip: float) -> Mode:
    """The family's default mode, flipped with probability `flip`."""
    mode = default_mode(task_type)
    if rng.random() < flip:
        return "think" if mode == "direct" else "direct"
    return mode


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; labels are -100 on prompt and padding tokens."""
    seqs = [e.prompt_ids + e.target_ids for e in examples]
    width = max(map(len, seqs))
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mm_types = torch.zeros((n, width), dtype=torch.long)
    for i, (e, seq) in enumerate(zip(examples, seqs)):
        input_ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        mm_types[i, : len(e.prompt_ids)] = torch.tensor(e.mm_token_type_ids)
        labels[i, len(e.prompt_ids) : len(seq)] = torch.tensor(e.target_ids)
    return {
        "input_ids": input_ids, "attention_mask": attention, "mm_token_type_ids": mm_types, "labels": labels,
        "pixel_values": torch.cat([e.pixel_values for e in examples]),
        "image_grid_thw": torch.cat([e.image_grid_thw for e in examples]),
    }
