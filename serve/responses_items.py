"""What a response is made of: its output items, its envelope, and a stored response read back.

A response's items are a `reasoning` item holding the thinking (when there is any), a `message`
item holding the answer (left out when the answer is only function calls), then one
`function_call` item per call. Every item id is derived from the response id, call ids included,
so a stored response read back (`GET /v1/responses/{id}`, `previous_response_id`) names its
calls as it did when it answered: the chat path's ids are random, and the store keeps the answer
text, from which the calls are parsed again with the tools the request offered.
"""

from __future__ import annotations

import time
from typing import Any

from .protocol import ChatCompletion, ChatCompletionChunk, TokenLogprob, ToolCallOut, Usage
from .responses_protocol import (FunctionCallItem, FunctionCallOutputItem, IncompleteDetails, InputImagePart,
                                 InputMessageItem, InputTextPart, MessageItem, OutputItem, OutputText,
                                 OutputTokensDetails, ReasoningItem, ReasoningText, ResponseObject, ResponsesRequest,
                                 ResponseUsage, SummaryText)
from .store.blobs import BlobStore
from .stored_reads import image_url
from .tool_calls import parse_answer


def envelope(req: ResponsesRequest, answer: ChatCompletion | ChatCompletionChunk) -> ResponseObject:
    """The response in progress: the chat answer's id, time, model and version, and the fields that echo
    the request."""
    fmt = req.text.format if req.text is not None else None
    return ResponseObject(
        id=answer.id, created_at=answer.created, status="in_progress", model=answer.model,
        instructions=req.instructions, metadata=dict(req.metadata or {}),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, max_output_tokens=req.max_output_tokens,
        top_logprobs=req.top_logprobs,
        reasoning={"effort": req.reasoning.effort if req.reasoning and req.reasoning.effort else "auto",
                   "summary": summary_kind(req)}, previous_response_id=req.previous_response_id,
        tools=[t.model_dump(exclude_none=True) for t in req.tools or []],
        tool_choice=(req.tool_choice or "auto") if isinstance(req.tool_choice, (str, type(None)))
        else req.tool_choice.model_dump(),
        text={"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        parallel_tool_calls=req.parallel_tool_calls is not False,
        store=req.store is not False, user=req.user, adapter_version=answer.adapter_version)


def summary_kind(req: ResponsesRequest) -> str | None:
    return req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary) or None


def item_ids(rid: str) -> tuple[str, str]:
    """Ids of the reasoning and message items, derived from the response id."""
    suffix = rid.removeprefix("resp_")
    return f"rs_{suffix}", f"msg_{suffix}"


def call_ids(rid: str, j: int) -> tuple[str, str]:
    """(item id, call id) of the response's j-th function call."""
    suffix = rid.removeprefix("resp_")
    return f"fc_{suffix}_{j}", f"call_{suffix}_{j}"


def reasoning_item(summarize: bool, item_id: str, thinking: str, status: str) -> ReasoningItem:
    # The thinking is short and not hidden: when a summary is asked for, it is the thinking itself.
    summary = [SummaryText(text=thinking)] if summarize and thinking else []
    return ReasoningItem(id=item_id, summary=summary, content=[ReasoningText(text=thinking)], status=status)


def message_item(item_id: str, text: str, status: str, logprobs: list[TokenLogprob] | None) -> MessageItem:
    return MessageItem(id=item_id, status=status, content=[OutputText(text=text, logprobs=logprobs)])


def call_item(rid: str, j: int, call: ToolCallOut) -> FunctionCallItem:
    item_id, call_id = call_ids(rid, j)
    return FunctionCallItem(id=item_id, call_id=call_id, name=call.function.name, arguments=call.function.arguments)


def status_of(finish_reason: str) -> str:
    """A finished response's status: incomplete when the token limit cut the answer."""
    return "incomplete" if finish_reason == "length" else "completed"


def outcome(finish_reason: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int,
            completed_at: float) -> dict[str, Any]:
    """The fields a response gets when it finishes: status, why it is incomplete, usage, when."""
    return dict(status=status_of(finish_reason), completed_at=int(completed_at),
                incomplete_details=IncompleteDetails(reason="max_output_tokens") if finish_reason == "length" else None,
                usage=ResponseUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                                    output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
                                    total_tokens=prompt_tokens + completion_tokens))


def chat_outcome(finish_reason: str, usage: Usage) -> dict[str, Any]:
    """`outcome` of a chat completion's usage, finishing now."""
    return outcome(finish_reason, usage.prompt_tokens, usage.completion_tokens,
                   usage.completion_tokens_details.reasoning_tokens, time.time())


def output_items(rid: str, thinking: str, answer: str | None, calls: list[ToolCallOut], status: str,
                 summarize: bool, logprobs: list[TokenLogprob] | None) -> list[OutputItem]:
    """A finished response's items: the reasoning (if it thought), the message (unless only calls), the calls."""
    reasoning_id, message_id = item_ids(rid)
    output: list[OutputItem] = [reasoning_item(summarize, reasoning_id, thinking, status)] if thinking else []
    if answer or not calls:
        output.append(message_item(message_id, answer or "", status, logprobs))
    return output + [call_item(rid, j, c) for j, c in enumerate(calls)]


def from_chat(req: ResponsesRequest, completion: ChatCompletion) -> ResponseObject:
    """The Responses view of a finished chat completion (one choice)."""
    choice = completion.choices[0]
    output = output_items(completion.id, choice.message.reasoning_content or "", choice.message.content,
                          list(choice.message.tool_calls or []), status_of(choice.finish_reason),
                          bool(summary_kind(req)), choice.logprobs.content if choice.logprobs is not None else None)
    return envelope(req, completion).model_copy(update=dict(output=output, **chat_outcome(choice.finish_reason,
                                                                                          completion.usage)))


def stored_calls(row: dict[str, Any]) -> tuple[str | None, list[ToolCallOut]]:
    """(content, calls) of a stored answer, parsed as the chat path parsed it (ids: `call_ids`)."""
    params = row["request"]["params"]
    tools, choice = params.get("tools") or [], params.get("tool_choice")
    if not tools or choice == "none":
        return row["answer"], []
    named = isinstance(choice, dict)
    names = [t["function"]["name"] for t in tools]
    parsed = parse_answer(row["answer"] or "", names, forced=named or choice == "required",
                          parallel=params.get("parallel_tool_calls") is not False and not named)
    for j, call in enumerate(parsed.calls):
        call.id = call_ids(row["id"], j)[1]
    return parsed.content, parsed.calls


def stored_response(row: dict[str, Any]) -> ResponseObject:
    """The response object of a stored interaction (one the Responses API answered)."""
    request, params, usage = row["request"], row["request"]["params"], row["usage"]
    content, calls = stored_calls(row)
    output = output_items(row["id"], row["thinking"] or "", content, calls, status_of(row["finish_reason"]),
                          bool(request.get("reasoning_summary")), None)
    choice = params.get("tool_choice") or "auto"
    fmt = params.get("response_format") or {"type": "text"}
    return ResponseObject(
        id=row["id"], created_at=int(row["created"] - (row["latency_s"] or 0)), model=row["model"], output=output,
        **outcome(row["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"],
                  usage["reasoning_tokens"], row["created"]),
        instructions=request.get("instructions"), previous_response_id=request.get("previous_response_id"),
        metadata=row["metadata"], temperature=params["temperature"], top_p=params["top_p"],
        max_output_tokens=request.get("max_output_tokens"), top_logprobs=params.get("top_logprobs"),
        reasoning={"effort": params["reasoning_effort"], "summary": request.get("reasoning_summary")},
        tools=[{"type": "function", **t["function"]} for t in params.get("tools") or []],
        tool_choice={"type": "function", **choice["function"]} if isinstance(choice, dict) else choice,
        parallel_tool_calls=params.get("parallel_tool_calls") is not False,
        text={"format": {"type": fmt["type"], **fmt.get("json_schema", {})}},
        user=params.get("user"), adapter_version=row["adapter_version"])


def input_items(row: dict[str, Any], blobs: BlobStore) -> list:
    """The items of a stored response's own input, oldest first: not its instructions, nor the
    conversation `previous_response_id` put before them."""
    request = row["request"]
    start = request.get("input_start", 1 if request.get("instructions") is not None else 0)
    suffix = row["id"].removeprefix("resp_")
    out: list = []
    for i, message in enumerate(request["messages"][start:]):
        item_id = f"msg_{suffix}_{i}"
        text = "".join(part.get("text", "") for part in message["content"])
        if message["role"] == "tool":
            out.append(FunctionCallOutputItem(id=item_id, call_id=message["tool_call_id"], output=text))
        elif message["role"] == "assistant":  # an answer sent back, with the calls it made
            if text or not message.get("tool_calls"):
                out.append(MessageItem(id=item_id, status="completed", content=[OutputText(text=text)]))
            out += [FunctionCallItem(id=f"fc_{suffix}_{i}_{j}", call_id=c["id"], name=c["function"]["name"],
                                     arguments=c["function"]["arguments"])
                    for j, c in enumerate(message.get("tool_calls") or [])]
        else:
            parts = [InputImagePart(image_url=image_url(blobs, part, f"response {row['id']!r}", "response_id"))
                     if part["type"] == "image"
                     else InputTextPart(text=part["text"]) for part in message["content"]]
            out.append(InputMessageItem(id=item_id, role=message["role"], content=parts))
    return out
