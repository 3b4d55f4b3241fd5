"""Prompt templates (docs/method.md §5): thinking mode, direct mode, per-problem-type tails.

One user turn, no system prompt. Thinking mode asks for `<thinking>…</thinking>` then
`<answer>…</answer>`; direct mode (perception queries: grounding, reading text) asks for
the answer only. `to_messages` renders a question and its images into chat messages in
the Hugging Face / Qwen-VL content-part format, images placed where `<image>` stands.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Sequence

from .data.records import TaskRecord, check_problem_type

Mode = Literal["think", "direct"]
MODES: tuple[str, ...] = ("think", "direct")

TAILS: dict[str, str] = {
    "multiple choice": "Answer with the option letter only.",
    "numerical": "Answer with a single number.",
    "regression": "Answer with a single number.",
    "OCR": "Answer with the text exactly as it appears.",
    "math": "Answer with the final number or expression only.",
    "spatial grounding": 'Answer with the bounding box as JSON: {"boxes": [x1, y1, x2, y2]}.',
}

THINK_INSTRUCTION = (
    "First think about the question as an internal monologue inside <thinking> </thinking> tags, "
    "then give the final answer inside <answer> </answer> tags."
)
DIRECT_INSTRUCTION = "Give only the final answer inside <answer> </answer> tags, without any reasoning."

IMAGE_PLACEHOLDER = "<image>"
_PLACEHOLDER = re.compile(r"\s*<image>\s*")


def check_mode(mode: str) -> Mode:
    """Return `mode` if it is a known reasoning mode, else raise a ValueError listing them."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return mode  # type: ignore[return-value]


def instruction(problem_type: str | None, mode: Mode = "think") -> str:
    """The instruction appended after a question: mode instruction plus the type's tail."""
    check_mode(mode)
    head = THINK_INSTRUCTION if mode == "think" else DIRECT_INSTRUCTION
    if problem_type is None:
        return head
    return f"{head} {TAILS[check_problem_type(problem_type)]}"


def render_question(
    problem: str, problem_type: str | None = None, options: Sequence[str] = (), mode: Mode = "think"
) -> str:
    """Question text (with `<image>` placeholders kept), options if not already listed, instruction."""
    text = problem.strip()
    missing = [opt for opt in options if opt not in text]
    if missing:
        text += "\n" + "\n".join(options)
    return f"{text}\n{instruction(problem_type, mode)}"


def to_messages(
    question: str, images: Sequence[Any] = (), *, problem_type: str | None = None,
    options: Sequence[str] = (), mode: Mode = "think",
) -> list[dict[str, Any]]:
    """One user message whose content parts interleave images and text as `<image>` says.

    Images with no placeholder left for them go first (the common "image, then question"
    layout); a placeholder with no image left is dropped. Each image part is
    `{"type": "image", "image": obj}` with whatever object the caller passed (PIL, path, URL).
    """
    text = render_question(question, problem_type, options, mode)
    pieces = _PLACEHOLDER.split(text)
    slots = len(pieces) - 1
    queue = list(images)
    leading = queue[: max(0, len(queue) - slots)]
    queue = queue[len(leading):]
    parts: list[dict[str, Any]] = [{"type": "image", "image": img} for img in leading]
    for i, piece in enumerate(pieces):
        if i > 0 and queue:
            parts.append({"type": "image", "image": queue.pop(0)})
        if piece.strip():
            parts.append({"type": "text", "text": piece.strip()})
    return [{"role": "user", "content": parts}]


def record_messages(record: TaskRecord, images: Sequence[Any] | None = None, mode: Mode = "think") -> list[dict[str, Any]]:
    """Chat messages for a task record; `images` defaults to the record's image paths."""
    return to_messages(
        record.problem, record.images if images is None else images,
        problem_type=record.problem_type, options=record.options, mode=mode,
    )
