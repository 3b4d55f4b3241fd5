"""ResponsesService: `POST /v1/responses` as a view of the chat-completion path.

A Responses request becomes a chat request (input items -> messages, `instructions` -> a system
message first, `max_output_tokens` -> `max_completion_tokens`, `reasoning.effort` ->
`reasoning_effort`, `text.format` -> `response_format`, flat function tools -> chat tools,
`function_call` / `function_call_output` items -> assistant tool calls and tool messages) and goes
through `ChatService` unchanged: the same prompt, engine, grammar, store and metrics. The
interaction id starts with "resp_", so `response.id` is what /v1/feedback takes, and the store is
the conversation state: `previous_response_id` puts the stored conversation (images
read back from the image store) and its answer before the new input,
`GET /v1/responses/{id}` rebuilds a stored response, `.../input_items` lists what it was asked
with, and `DELETE` removes it with its feedback. `POST /v1/responses/input_tokens` counts a
request's prompt tokens the same way, without answering it.
The answer comes back as output items (`responses_items.py`); a stream as the Responses API's
typed events.
Errors name the Responses parameter (`input[2].content[0].image_url`, not `messages[...]`).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .chat import ChatService, Stream
from .errors import APIError, invalid, not_found, validation_error
from .paging import page_after
from .protocol import ChatCompletionChunk, ChatCompletionRequest, DeltaToolCall, TokenLogprob, Usage
from .responses_items import (call_ids, chat_outcome, envelope, from_chat, input_items, item_ids, message_item,
                              reasoning_item, status_of, stored_calls, stored_response, summary_kind)
from .responses_protocol import (LOGPROBS_INCLUDE, DeletedResponse, FunctionCallItem, InputItem, InputItemList,
                                 InputTokens, InputTokensRequest, MessageItem, OutputItem, ReasoningItem,
                                 ResponseError, ResponseObject, ResponsesRequest)
from .store import Store
from .store.blobs import BlobStore
from .stored_reads import chat_parts, delete_stored

# Chat parameters that the Responses API names differently (the first match of a name's start is replaced).
_RENAMED = [(r"max_completion_tokens", "max_output_tokens"), (r"reasoning_effort", "reasoning.effort"),
            (r"response_format\.json_schema\.schema", "text.format.schema"), (r"response_format", "text.format"),
            (r"(tools\[\d+\])\.function", r"\1")]


class ResponsesService:
    """Serves /v1/responses through a ChatService; the store holds what `previous_response_id` continues."""

    def __init__(self, chat: ChatService, store: Store):
        self.chat, self.store = chat, store

    async def create(self, req: ResponsesRequest) -> ResponseObject | Stream:
        """A ResponseObject, or for `stream=true` the chat Stream to send through `events` (errors before
        the stream are raised)."""
        chat_req, where, history = await self._chat_request(req)
        kept = {"api": "responses", "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
                "reasoning_summary": summary_kind(req), "previous_response_id": req.previous_response_id,
                "input_start": (req.instructions is not None) + len(history)}  # where its own input begins
        with _named_as_responses(where):
            result = await self.chat.create(chat_req, id_prefix="resp_", stored=kept)
        return result if isinstance(result, Stream) else from_chat(req, result)

    async def count_input_tokens(self, req: InputTokensRequest) -> InputTokens:
        """The input tokens `req` would be answered with (`client.responses.input_tokens.count`): its stored
        conversation, instructions, input and images, and the prompt the server wraps them in."""
        full = req.model_copy(update={"model": req.model or self.chat.config.served_name, "stream": False})
        chat_req, where, _ = await self._chat_request(full)
        with _named_as_responses(where):
            return InputTokens(input_tokens=await self.chat.count_prompt_tokens(chat_req))

    async def retrieve(self, response_id: str) -> ResponseObject:
        """A stored response, as it was answered."""
        return stored_response(await self._stored(response_id, "response_id"))

    async def delete(self, response_id: str) -> DeletedResponse:
        """Delete a stored response and its feedback: neither `previous_response_id` nor the RL loop sees it
        again. On the store's writer thread, in order with the interactions being logged."""
        await delete_stored(self.store, self.chat.writer, response_id, lambda: self._stored(response_id, "response_id"))
        return DeletedResponse(id=response_id)

    async def input_items(self, response_id: str, after: str | None = None, limit: int = 20,
                          order: str = "desc") -> InputItemList:
        """One page of the messages a stored response was asked with (`client.responses.input_items.list`)."""
        row = await self._stored(response_id, "response_id")
        items = await run_in_threadpool(input_items, row, self.store.blobs)
        return InputItemList.of(*page_after(items, after, limit, response_id, descending=order == "desc"))

    async def _chat_request(self, req: ResponsesRequest) -> tuple[ChatCompletionRequest, list[str], list[dict]]:
        """The chat request serving `req`, where each of its messages came from, and the stored conversation
        `previous_response_id` put first."""
        history: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            row = await self._stored(req.previous_response_id, "previous_response_id")
            history = await run_in_threadpool(history_messages, row, self.store.blobs)
        return (*to_chat(req, history), history)

    async def _stored(self, response_id: str, param: str) -> dict[str, Any]:
        rows = await run_in_threadpool(self.store.get_interaction, response_id) if response_id.startswith("resp_") else []
        if not rows or rows[0]["request"].get("api") != "responses":
            raise not_found(f"No stored response {response_id[:80]!r} (responses sent with store: false are not "
                            f"kept).", param, "response_not_found")
        return rows[0]


def history_messages(row: dict[str, Any], blobs: BlobStore) -> list[dict[str, Any]]:
    """The conversation a stored response continues, as chat messages: its messages without its
    instructions or a prefilled assistant turn, its images as data: URLs again, then its answer with
    the calls it made (so a `function_call_output` of the new input answers one of them)."""
    request = row["request"]
    messages = request["messages"][1:] if request.get("instructions") is not None else list(request["messages"])
    if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
        messages = messages[:-1]  # a prefill that the answer continued
    owner = f"response {row['id']!r}"
    out = [{"role": message["role"], "content": chat_parts(blobs, message["content"], owner, "previous_response_id"),
            **{k: message[k] for k in ("tool_calls", "tool_call_id") if k in message}} for message in messages]
    content, calls = stored_calls(row)
    answer: dict[str, Any] = {"role": "assistant", "content": content or ("" if not calls else None)}
    if calls:
        answer["tool_calls"] = [c.model_dump() for c in calls]
    return out + [answer]


def to_chat(req: ResponsesRequest,
            history: list[dict[str, Any]] | None = None) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat request that serves `req` after the `history` messages, and for each of its messages the
    parameter it came from (`instructions`, `previous_response_id`, `input` or `input[i]`)."""
    messages: list[dict[str, Any]] = []
    where: list[str] = []
    if req.instructions is not None:
        messages.append({"role": "system", "content": req.instructions})
        where.append("instructions")
    history = history or []
    messages += history
    where += ["previous_response_id"] * len(history)
    items = [InputItem(role="user", content=req.input)] if isinstance(req.input, str) else req.input
    for i, item in enumerate(items):
        if item.type == "reasoning":  # earlier thinking is not shown to the model (as in chat completions)
            continue
        source = "input" if isinstance(req.input, str) else f"input[{i}]"
        if item.type == "function_call":
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            if messages and messages[-1]["role"] == "assistant" and where[-1].startswith("input"):
                messages[-1].setdefault("tool_calls", []).append(call)  # the answer (or call) it came with
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            if not any(c["id"] == item.call_id for m in messages for c in m.get("tool_calls") or []):
                raise invalid(f"{source} answers call_id {item.call_id!r}, which no earlier function_call (of the "
                              f"input or of previous_response_id) made.", f"{source}.call_id")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        else:
            messages.append({"role": item.role, "content": _chat_content(item.content)})
        where.append(source)
    logprobs = LOGPROBS_INCLUDE in (req.include or ())
    choice = req.tool_choice
    fields = dict(model=req.model, messages=messages, max_completion_tokens=req.max_output_tokens,
                  temperature=req.temperature, top_p=req.top_p, metadata=req.metadata, store=req.store,
                  stream=req.stream, user=req.user or req.safety_identifier, service_tier=req.service_tier,
                  seed=req.seed, logprobs=logprobs, top_logprobs=req.top_logprobs if logprobs else None,
                  reasoning_effort=req.reasoning.effort if req.reasoning else None,
                  stream_options={"include_usage": True} if req.stream else None,
                  tools=[t.chat() for t in req.tools] if req.tools else None,
                  tool_choice=choice if isinstance(choice, (str, type(None))) else
                  {"type": "function", "function": {"name": choice.name}},
                  parallel_tool_calls=req.parallel_tool_calls,
                  response_format=req.text.format.chat() if req.text and req.text.format else None)
    try:
        return ChatCompletionRequest(**{k: v for k, v in fields.items() if v is not None}), where
    except ValidationError as exc:  # a value the Responses model let through but the chat path refuses
        raise validation_error(exc.errors(), lambda p: _responses_param(p, where)) from None


def _chat_content(content: str | list) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": part.image_url,
                                                             **({"detail": part.detail} if part.detail in
                                                                ("auto", "low", "high") else {})}})
        else:  # input_text, or the output_text / refusal of an assistant turn sent back
            parts.append({"type": "text", "text": part.text if part.type != "refusal" else part.refusal})
    return parts


@contextmanager
def _named_as_responses(where: list[str]) -> Iterator[None]:
    """Errors of the chat path name the Responses parameter they came from."""
    try:
        yield
    except APIError as exc:
        exc.param = _responses_param(exc.param, where)
        raise


def _responses_param(param: str | None, where: list[str]) -> str | None:
    """A chat-path parameter name as the Responses client knows it: `messages[3].content[0].image_url.url`
    -> `input[2].content[0].image_url`."""
    if param is None:
        return None
    match = re.match(r"messages(?:\[(\d+)\])?(.*)", param)
    if match is None:
        for pattern, name in _RENAMED:
            if re.match(pattern, param):
                return re.sub(f"^{pattern}", name, param)
        return param
    index, rest = match.group(1), match.group(2)
    if index is None or int(index) >= len(where):
        return "input"
    source = where[int(index)]
    return source + rest.replace(".image_url.url", ".image_url") if source.startswith("input[") else source


# ---------------------------------------------------------------------------- streaming

async def events(req: ResponsesRequest, stream: Stream) -> AsyncIterator[str]:
    """The chat stream's chunks as Responses API events (`event: <type>` + `data: {...}`)."""
    state = _StreamState(req)
    async for item in stream.chunks:
        for event in state.feed(item):
            yield event


class _StreamState:
    """Turns chat chunks into the Responses API's event sequence, one call of `feed` per chunk."""

    def __init__(self, req: ResponsesRequest):
        self.req = req
        self.seq = 0
        self.response: ResponseObject | None = None
        self.ids = ("", "")  # the reasoning and message items' ids, known from the first chunk
        self.output: list[OutputItem] = []
        self.calls: list[DeltaToolCall] = []  # each arrives whole, after the answer
        self.open: str | None = None  # "reasoning" or "message": the item receiving deltas
        self.thinking, self.answer = "", ""
        self.logprobs: list[TokenLogprob] = []
        self.finish_reason = "stop"

    def _event(self, kind: str, **fields: Any) -> str:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"

    def _dump(self, model: Any) -> dict[str, Any]:
        return model.model_dump(mode="json")

    def feed(self, item: ChatCompletionChunk | APIError) -> list[str]:
        """The events one chat chunk (or the error that ended the stream) makes."""
        if isinstance(item, APIError):
            return self._failed(item)
        events: list[str] = []
        if self.response is None:
            self.response = envelope(self.req, item)
            self.ids = item_ids(item.id)
            events += [self._event("response.created", response=self._dump(self.response)),
                       self._event("response.in_progress", response=self._dump(self.response))]
        if item.usage is not None:  # the last chunk: every choice has finished
            message = self._close_items() if self.answer or not self.calls else []
            return (events + self._close_reasoning(status_of(self.finish_reason)) + message + self._call_events()
                    + self._completed(item.usage))
        for choice in item.choices:
            delta = choice.delta
            if delta.reasoning_content:
                events += self._reasoning_delta(delta.reasoning_content)
            if delta.content:
                events += self._text_delta(delta.content, choice.logprobs.content if choice.logprobs else None)
            elif choice.logprobs is not None and choice.logprobs.content:
                self.logprobs += choice.logprobs.content  # tokens of the thinking (or none of the text)
            self.calls += delta.tool_calls or []
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
        return events

    def _reasoning_delta(self, text: str) -> list[str]:
        events = []
        if self.open is None and not self.output:
            self.open = "reasoning"
            item = ReasoningItem(id=self.ids[0], status="in_progress")
            events += [self._event("response.output_item.added", output_index=0, item=self._dump(item)),
                       self._event("response.content_part.added", item_id=self.ids[0], output_index=0, content_index=0,
                                   part={"type": "reasoning_text", "text": ""})]
        if self.open != "reasoning":  # thinking after the answer began: the splitter never yields it
            return events
        self.thinking += text
        return events + [self._event("response.reasoning_text.delta", item_id=self.ids[0], output_index=0,
                                     content_index=0, delta=text)]

    def _text_delta(self, text: str, logprobs: list[TokenLogprob] | None) -> list[str]:
        events = self._open_message()
        self.answer += text
        new = list(logprobs or [])
        self.logprobs += new
        return events + [self._event("response.output_text.delta", item_id=self.ids[1], output_index=len(self.output),
                                     content_index=0, delta=text, logprobs=[self._dump(lp) for lp in new])]

    def _open_message(self) -> list[str]:
        if self.open == "message":
            return []
        events = self._close_reasoning()
        self.open = "message"
        item = MessageItem(id=self.ids[1], status="in_progress")
        index = len(self.output)
        return events + [
            self._event("response.output_item.added", output_index=index, item=self._dump(item)),
            self._event("response.content_part.added", item_id=self.ids[1], output_index=index, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    def _close_reasoning(self, status: str = "completed") -> list[str]:
        if self.open != "reasoning":
            return []
        self.open = None
        item = reasoning_item(bool(summary_kind(self.req)), self.ids[0], self.thinking, status)
        self.output.append(item)
        return [self._event("response.reasoning_text.done", item_id=self.ids[0], output_index=0, content_index=0,
                            text=self.thinking),
                self._event("response.content_part.done", item_id=self.ids[0], output_index=0, content_index=0,
                            part={"type": "reasoning_text", "text": self.thinking}),
                self._event("response.output_item.done", output_index=0, item=self._dump(item))]

    def _close_items(self) -> list[str]:
        """Close the reasoning item if still open, then the message (opened now if the answer is empty)."""
        events = self._open_message()
        index = len(self.output)
        logprobs = self.logprobs if LOGPROBS_INCLUDE in (self.req.include or ()) else None
        item = message_item(self.ids[1], self.answer, status_of(self.finish_reason), logprobs)
        part = self._dump(item.content[0])
        self.output.append(item)
        self.open = None
        return events + [
            self._event("response.output_text.done", item_id=self.ids[1], output_index=index, content_index=0,
                        text=self.answer, logprobs=part["logprobs"] or []),
            self._event("response.content_part.done", item_id=self.ids[1], output_index=index, content_index=0,
                        part=part),
            self._event("response.output_item.done", output_index=index, item=self._dump(item))]

    def _call_events(self) -> list[str]:
        """Each call as an item: added, its arguments (in one delta: the call is complete), done."""
        events = []
        for j, call in enumerate(self.calls):
            item_id, call_id = call_ids(self.response.id, j)
            index, name, arguments = len(self.output), call.function.name or "", call.function.arguments or ""
            added = FunctionCallItem(id=item_id, call_id=call_id, name=name, arguments="", status="in_progress")
            done = added.model_copy(update={"arguments": arguments, "status": "completed"})
            self.output.append(done)
            events += [self._event("response.output_item.added", output_index=index, item=self._dump(added)),
                       self._event("response.function_call_arguments.delta", item_id=item_id, output_index=index,
                                   delta=arguments),
                       self._event("response.function_call_arguments.done", item_id=item_id, output_index=index,
                                   name=name, arguments=arguments),
                       self._event("response.output_item.done", output_index=index, item=self._dump(done))]
        return events

    def _completed(self, usage: Usage) -> list[str]:
        final = self.response.model_copy(update=dict(output=self.output,
                                                     **chat_outcome(self.finish_reason, usage)))
        kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
        return [self._event(kind, response=self._dump(final))]

    def _failed(self, exc: APIError) -> list[str]:
        events = [self._event("error", code=exc.code, message=exc.message, param=exc.param)]
        if self.response is not None:
            failed = self.response.model_copy(update=dict(
                status="failed", error=ResponseError(code=exc.code or "server_error", message=exc.message)))
            events.append(self._event("response.failed", response=self._dump(failed)))
        return events

