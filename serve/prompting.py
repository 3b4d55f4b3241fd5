"""From an OpenAI request to the engine's prompt: decode images, plan the reasoning, add the instruction.

The output has two views of the same conversation: `messages` in the Hugging Face content-part
format (PIL images) for the engine, and `stored` in OpenAI format with each image replaced by
`{"type": "image", "sha256": ...}` for the interaction store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openvlthinker.data.records import PROBLEM_TYPES
from openvlthinker.prompts import instruction
from openvlthinker.question_type import infer_problem_type
from openvlthinker.reasoning import ReasoningPlan, plan

from .errors import invalid
from .images import DecodedImage, ImageLimits, load_image_url
from .protocol import ChatCompletionRequest


@dataclass
class Prompt:
    """The engine-ready conversation and what the store keeps about it."""

    messages: list[dict[str, Any]]
    stored: list[dict[str, Any]]
    images: list[DecodedImage]
    plan: ReasoningPlan
    instruction: str
    problem_type: str | None
    task_type: str | None
    options: list[str]
    has_reference: bool
    prefix: str = ""  # a trailing assistant message the completion continues (e.g. a prefilled "<thinking>")


def read_metadata(metadata: dict[str, str] | None) -> tuple[str | None, str | None, list[str], bool]:
    """(problem_type, task_type, options, has_reference) from the request metadata, checked."""
    meta = metadata or {}
    problem_type = meta.get("problem_type") or None
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise invalid(f"Unknown problem_type {problem_type!r}; valid: {', '.join(PROBLEM_TYPES)}.",
                      "metadata.problem_type")
    options: list[str] = []
    if meta.get("options"):
        try:
            options = json.loads(meta["options"])
        except ValueError:
            options = None  # type: ignore[assignment]
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise invalid('metadata.options must be a JSON list of strings, e.g. "[\\"A. red\\", \\"B. blue\\"]".',
                          "metadata.options")
    return problem_type, meta.get("task_type") or None, options, bool(meta.get("reference_answer"))


async def build_prompt(req: ChatCompletionRequest, limits: ImageLimits) -> Prompt:
    """Decode and check images, plan mode/budget from the last user text, append the instruction."""
    problem_type, task_type, options, has_reference = read_metadata(req.metadata)
    n_images = sum(p.type == "image_url" for m in req.messages if isinstance(m.content, list) for p in m.content)
    if n_images > limits.max_images:
        raise invalid(f"The request has {n_images} images; the limit is {limits.max_images}.", "messages",
                      "too_many_images")
    last_user = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=None)
    if last_user is None:
        raise invalid("The conversation needs at least one user message.", "messages")

    messages: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []
    images: list[DecodedImage] = []
    for i, msg in enumerate(req.messages):
        role = "system" if msg.role == "developer" else msg.role
        parts, kept = [], []
        content = msg.content if isinstance(msg.content, list) else (
            [] if msg.content is None else [{"type": "text", "text": msg.content}])
        for j, part in enumerate(content):
            if isinstance(part, dict):
                part_type, text = "text", part["text"]
            else:
                part_type, text = part.type, part.text
            if part_type == "image_url":
                img = await load_image_url(part.image_url.url, limits, f"messages[{i}].content[{j}].image_url.url")
                images.append(img)
                parts.append({"type": "image", "image": img.image})
                kept.append({"type": "image", "sha256": img.sha256})
            else:
                parts.append({"type": "text", "text": text})
                kept.append({"type": "text", "text": text})
        messages.append({"role": role, "content": parts})
        stored.append({"role": msg.role, "content": kept})

    question = "\n".join(p["text"] for p in messages[last_user]["content"] if p["type"] == "text")
    reasoning = plan(req.reasoning_effort, question, problem_type, task_type)
    missing = [opt for opt in options if opt not in question]
    # Without a stated type, the question's own shape picks the answer-format tail (question_type.py).
    suffix = "\n".join([*missing, instruction(problem_type or infer_problem_type(question), reasoning.mode)])
    _append_text(messages[last_user]["content"], suffix)
    prefix = ""
    if messages[-1]["role"] == "assistant":
        prefix = "".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
    return Prompt(messages, stored, images, reasoning, suffix, problem_type, task_type, options, has_reference, prefix)


def _append_text(parts: list[dict[str, Any]], suffix: str) -> None:
    """Put `suffix` on a new line after the turn's last text (or as a new text part)."""
    if parts and parts[-1]["type"] == "text":
        parts[-1] = {"type": "text", "text": f"{parts[-1]['text'].rstrip()}\n{suffix}"}
    else:
        parts.append({"type": "text", "text": suffix})
