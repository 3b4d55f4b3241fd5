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

from .engines.grammar import schema_error
from .errors import invalid
from .images import DecodedImage, ImageLimits, load_image_url
from .protocol import ChatCompletionRequest, ChatMessage
from .tool_calls import answer_schema, call_text, tool_response_text, tools_text


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
    answer_schema: dict[str, Any] | None = None  # the JSON schema the answer is held to (response_format, forced tools)
    tool_names: tuple[str, ...] = ()  # the tools offered; their calls are parsed out of the answer


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
    last_asked = max((i for i, m in enumerate(req.messages) if m.role == "user"), default=None)
    if last_asked is None:
        raise invalid("The conversation needs at least one user message.", "messages")

    messages: list[dict[str, Any]] = []
    stored: list[dict[str, Any]] = []
    images: list[DecodedImage] = []
    results: list[str] = []  # tool results waiting to become one user turn, as the model was trained to see them
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
        stored.append({"role": msg.role, "content": kept, **_tool_fields(msg)})
        if role == "tool":
            results.append("".join(p["text"] for p in parts))
            continue
        if results:
            messages.append({"role": "user", "content": [{"type": "text", "text": tool_response_text(results)}]})
            results = []
        if msg.tool_calls:
            parts.append({"type": "text", "text": "\n".join(call_text(c) for c in msg.tool_calls)})
        if i == last_asked:
            last_user = len(messages)  # its place among the engine's messages
        messages.append({"role": role, "content": parts})
    if results:
        messages.append({"role": "user", "content": [{"type": "text", "text": tool_response_text(results)}]})
    offered = req.tools_offered()
    if offered:
        last_user += _offer_tools(messages, offered)

    question = "\n".join(p["text"] for p in messages[last_user]["content"] if p["type"] == "text")
    reasoning = plan(_effort(req), question, problem_type, task_type)
    missing = [opt for opt in options if opt not in question]
    # Without a stated type, the question's own shape picks the answer-format tail (question_type.py).
    suffix = "\n".join([*missing, instruction(problem_type or infer_problem_type(question), reasoning.mode)])
    _append_text(messages[last_user]["content"], suffix)
    prefix = ""
    if messages[-1]["role"] == "assistant":
        prefix = "".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
    _check_schemas(req)
    schema = answer_schema(req.response_format, req.forced_tools(), req.parallel_calls())
    if schema is not None and prefix:
        raise invalid("A held answer (response_format json or a forced tool call) cannot continue a prefilled "
                      "assistant message; drop the trailing assistant message.", "messages")
    return Prompt(messages, stored, images, reasoning, suffix, problem_type, task_type, options, has_reference, prefix,
                  schema, tuple(t.function.name for t in offered))


def _check_schemas(req: ChatCompletionRequest) -> None:
    """A 400 naming the first tool parameters or response_format schema an answer could not be held to."""
    checks = [(t.function.parameters, f"tools[{i}].function.parameters") for i, t in enumerate(req.tools or [])]
    if req.response_format is not None and req.response_format.json_schema is not None:
        checks.append((req.response_format.json_schema.schema_, "response_format.json_schema.schema"))
    for schema, param in checks:
        if schema is not None and (error := schema_error(json.dumps(schema))):
            reason = error.strip().splitlines()[0].split("failed to compile JSON schema:")[-1].strip()
            raise invalid(f"{param} is not a JSON schema this server can hold an answer to: {reason[:300]}", param)


def _effort(req: ChatCompletionRequest) -> str:
    """reasoning_effort, unless chat_template_kwargs.enable_thinking switches thinking off or on."""
    switch = req.thinking_switch()
    if switch is False:
        return "none"
    if switch is True and req.reasoning_effort == "none":
        raise invalid("chat_template_kwargs.enable_thinking=true contradicts reasoning_effort=none.",
                      "chat_template_kwargs.enable_thinking")
    return req.reasoning_effort


def _tool_fields(msg: ChatMessage) -> dict[str, Any]:
    """What the store keeps of a message's tool calls or tool result."""
    out: dict[str, Any] = {}
    if msg.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
    return out


def _offer_tools(messages: list[dict[str, Any]], tools: list) -> int:
    """Put the tools section into the leading system message (a new one if there is none); the number
    of messages inserted before the others."""
    section = tools_text(tools)
    if messages and messages[0]["role"] == "system":
        _append_text(messages[0]["content"], f"\n{section}")
        return 0
    messages.insert(0, {"role": "system", "content": [{"type": "text", "text": section}]})
    return 1


def _append_text(parts: list[dict[str, Any]], suffix: str) -> None:
    """Put `suffix` on a new line after the turn's last text (or as a new text part)."""
    if parts and parts[-1]["type"] == "text":
        parts[-1] = {"type": "text", "text": f"{parts[-1]['text'].rstrip()}\n{suffix}"}
    else:
        parts.append({"type": "text", "text": suffix})
