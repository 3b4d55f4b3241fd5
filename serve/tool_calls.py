"""Function calling as text: tools into the prompt, tool calls out of the answer (pure functions).

Qwen models are trained to read tool signatures inside `<tools></tools>` and to call a tool by
writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; tool results come back as
`<tool_response>` blocks in a user turn. The gateway writes and reads that format itself, so
both engines (and any model of the family) behave the same. When the client forces a call
(`tool_choice` required or named) the answer is instead held to a JSON schema: a list of
`{"name", "arguments"}` objects, one item for each call (`answer_schema`).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from .tool_protocol import CalledFunction, ResponseFormat, ToolCall, ToolCallOut, ToolDef

__all__ = ["ParsedAnswer", "answer_schema", "call_text", "parse_answer", "tool_response_text", "tools_text"]

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def tools_text(tools: Sequence[ToolDef]) -> str:
    """The system-prompt section that offers `tools` to the model."""
    signatures = "\n".join(json.dumps(t.model_dump(exclude_none=True), ensure_ascii=False) for t in tools)
    return ("# Tools\n\nThese functions can be called to help answer the user. Their signatures, one JSON "
            f"object per line, are inside <tools></tools>:\n<tools>\n{signatures}\n</tools>\n\n"
            "To call one, write a JSON object with its name and its arguments inside <tool_call></tool_call>:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <arguments-object>}\n</tool_call>')


def call_text(call: ToolCall) -> str:
    """One call of an assistant turn in the history, as the model writes it."""
    body = {"name": call.function.name, "arguments": json.loads(call.function.arguments)}
    return f"{CALL_OPEN}\n{json.dumps(body, ensure_ascii=False)}\n{CALL_CLOSE}"


def tool_response_text(results: Sequence[str]) -> str:
    """The user turn that hands tool results back to the model."""
    return "\n".join(f"<tool_response>\n{r}\n</tool_response>" for r in results)


def answer_schema(response_format: ResponseFormat | None, forced: Sequence[ToolDef],
                  parallel: bool = True) -> dict[str, Any] | None:
    """The JSON schema the answer must follow, or None when it is free text."""
    if forced:
        calls = [{"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                  "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters or ANY_OBJECT}}
                 for t in forced]
        items = calls[0] if len(calls) == 1 else {"anyOf": calls}
        return {"type": "array", "items": items, "minItems": 1, **({} if parallel else {"maxItems": 1})}
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_object":
        return ANY_OBJECT
    return response_format.json_schema.schema_ or ANY_OBJECT  # type: ignore[union-attr]


@dataclass
class ParsedAnswer:
    """An answer split into its free text and the tool calls it makes."""

    content: str | None
    calls: list[ToolCallOut]


def _call(obj: Any, names: set[str]) -> ToolCallOut | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCallOut(id=f"call_{uuid.uuid4().hex[:24]}",
                       function=CalledFunction(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False)))


def parse_answer(answer: str, names: Sequence[str], forced: bool, parallel: bool = True) -> ParsedAnswer:
    """Tool calls of `answer` to tools named `names`: a JSON list when the call was forced, else
    `<tool_call>` blocks (the text around them stays content). Malformed calls stay text."""
    known = set(names)
    if forced:
        try:
            items = json.loads(answer)
        except ValueError:
            return ParsedAnswer(answer, [])  # cut off by max_tokens: the client sees what was written
        calls = [c for c in (_call(o, known) for o in (items if isinstance(items, list) else [items])) if c]
        return ParsedAnswer(None if calls else answer, calls[: None if parallel else 1])
    calls, spans = [], []
    for match in _CALL.finditer(answer):
        try:
            call = _call(json.loads(match.group(1)), known)
        except ValueError:
            call = None
        if call is not None and (parallel or not calls):
            calls.append(call)
            spans.append(match.span())
    if not calls:
        return ParsedAnswer(answer, [])
    rest, last = [], 0
    for start, end in spans:
        rest.append(answer[last:start])
        last = end
    rest.append(answer[last:])
    text = "".join(rest).strip()
    return ParsedAnswer(text or None, calls)
