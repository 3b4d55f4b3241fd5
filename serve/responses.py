"""ResponsesService: `POST /v1/responses` as a view of the chat-completion path.

A Responses request becomes a chat request (input items -> messages, `instructions` -> a system
message first, `max_output_tokens` -> `max_completion_tokens`, `reasoning.effort` ->
`reasoning_effort`) and goes through `ChatService` unchanged: the same prompt, engine, store and
metrics. The interaction id starts with "resp_", so `response.id` is what /v1/feedback takes, and
the store is the conversation state: `previous_response_id` puts the stored conversation (images
read back from the image store) and its answer before the new input,
`GET /v1/responses/{id}` rebuilds a stored response, `.../input_items` lists what it was asked
with, and `DELETE` removes it with its feedback. `POST /v1/responses/input_tokens` counts a
request's prompt tokens the same way, without answering it.
The answer comes back as output items: a `reasoning` item holding the thinking (when there is
any) and a `message` item holding the answer; a stream as the Responses API's typed events.
Errors name the Responses parameter (`input[2].content[0].image_url`, not `messages[...]`).
"""

from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from .chat import ChatService, Stream
from .errors import APIError, not_found, validation_error
from .paging import page_after
from .protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, TokenLogprob, Usage
from .responses_protocol import (LOGPROBS_INCLUDE, DeletedResponse, IncompleteDetails, InputImagePart, InputItem,
                                 InputItemList, InputMessageItem, InputTextPart, InputTokens, InputTokensRequest,
                                 MessageItem, OutputText, OutputTokensDetails, ReasoningItem, ReasoningText, ResponseError, ResponseObject,
                                 ResponsesRequest, ResponseUsage, SummaryText)
from .store import Store
from .store.blobs import BlobStore
from .stored_reads import chat_parts, delete_stored, image_url

# Chat parameters that the Responses API names differently.
_RENAMED = {"max_completion_tokens": "max_output_tokens", "reasoning_effort": "reasoning.effort"}


class ResponsesService:
    """Serves /v1/responses through a ChatService; the store holds what `previous_response_id` continues."""

    def __init__(self, chat: ChatService, store: Store):
        self.chat, self.store = chat, store

    async def create(self, req: ResponsesRequest) -> ResponseObject | Stream:
        """A ResponseObject, or for `stream=true` the chat Stream to send through `events` (errors before
        the stream are raised)."""
        chat_req, where, history = await self._chat_request(req)
        kept = {"api": "responses", "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
                "reasoning_summary": _summary_kind(req), "previous_response_id": req.previous_response_id,
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
    instructions or a prefilled assistant turn, its images as data: URLs again, then its answer."""
    request = row["request"]
    messages = request["messages"][1:] if request.get("instructions") is not None else list(request["messages"])
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]  # a prefill that the answer continued
    owner = f"response {row['id']!r}"
    out = [{"role": message["role"], "content": chat_parts(blobs, message["content"], owner, "previous_response_id")}
           for message in messages]
    return out + [{"role": "assistant", "content": row["answer"] or ""}]


def input_items(row: dict[str, Any], blobs: BlobStore) -> list[InputMessageItem | MessageItem]:
    """The messages of a stored response's own input, oldest first: not its instructions, nor the
    conversation `previous_response_id` put before them."""
    request = row["request"]
    start = request.get("input_start", 1 if request.get("instructions") is not None else 0)
    suffix = row["id"].removeprefix("resp_")
    out: list[InputMessageItem | MessageItem] = []
    for i, message in enumerate(request["messages"][start:]):
        item_id = f"msg_{suffix}_{i}"
        if message["role"] == "assistant":  # an answer sent back
            text = "".join(part.get("text", "") for part in message["content"])
            out.append(MessageItem(id=item_id, status="completed", content=[OutputText(text=text)]))
            continue
        parts = [InputImagePart(image_url=image_url(blobs, part, f"response {row['id']!r}", "response_id"))
                 if part["type"] == "image"
                 else InputTextPart(text=part["text"]) for part in message["content"]]
        out.append(InputMessageItem(id=item_id, role=message["role"], content=parts))
    return out


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
        messages.append({"role": item.role, "content": _chat_content(item.content)})
        where.append("input" if isinstance(req.input, str) else f"input[{i}]")
    logprobs = LOGPROBS_INCLUDE in (req.include or ())
    fields = dict(model=req.model, messages=messages, max_completion_tokens=req.max_output_tokens,
                  temperature=req.temperature, top_p=req.top_p, metadata=req.metadata, store=req.store,
                  stream=req.stream, user=req.user or req.safety_identifier, service_tier=req.service_tier,
                  seed=req.seed, logprobs=logprobs, top_logprobs=req.top_logprobs if logprobs else None,
                  reasoning_effort=req.reasoning.effort if req.reasoning else None,
                  stream_options={"include_usage": True} if req.stream else None)
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
        head, _, rest = param.partition(".")
        return _RENAMED.get(head, head) + (f".{rest}" if rest else "")
    index, rest = match.group(1), match.group(2)
    if index is None or int(index) >= len(where):
        return "input"
    source = where[int(index)]
    return source + rest.replace(".image_url.url", ".image_url") if source.startswith("input[") else source


# ---------------------------------------------------------------------------- answering

def _envelope(req: ResponsesRequest, answer: ChatCompletion | ChatCompletionChunk) -> ResponseObject:
    """The response in progress: the chat answer's id, time, model and version, and the fields that echo
    the request."""
    return ResponseObject(
        id=answer.id, created_at=answer.created, status="in_progress", model=answer.model,
        instructions=req.instructions, metadata=dict(req.metadata or {}),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p, max_output_tokens=req.max_output_tokens,
        top_logprobs=req.top_logprobs,
        reasoning={"effort": req.reasoning.effort if req.reasoning and req.reasoning.effort else "auto",
                   "summary": _summary_kind(req)}, previous_response_id=req.previous_response_id,
        tool_choice=req.tool_choice or "auto", parallel_tool_calls=req.parallel_tool_calls is not False,
        store=req.store is not False, user=req.user, adapter_version=answer.adapter_version)


def _summary_kind(req: ResponsesRequest) -> str | None:
    return req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary) or None


def _item_ids(rid: str) -> tuple[str, str]:
    """Ids of the reasoning and message items, derived from the response id."""
    suffix = rid.removeprefix("resp_")
    return f"rs_{suffix}", f"msg_{suffix}"


def _reasoning_item(summarize: bool, item_id: str, thinking: str, status: str) -> ReasoningItem:
    # The thinking is short and not hidden: when a summary is asked for, it is the thinking itself.
    summary = [SummaryText(text=thinking)] if summarize and thinking else []
    return ReasoningItem(id=item_id, summary=summary, content=[ReasoningText(text=thinking)], status=status)


def _message_item(item_id: str, text: str, status: str, logprobs: list[TokenLogprob] | None) -> MessageItem:
    return MessageItem(id=item_id, status=status, content=[OutputText(text=text, logprobs=logprobs)])


def _status(finish_reason: str) -> str:
    """A finished response's status: incomplete when the token limit cut the answer."""
    return "incomplete" if finish_reason == "length" else "completed"


def _outcome(finish_reason: str, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int,
             completed_at: float) -> dict[str, Any]:
    """The fields a response gets when it finishes: status, why it is incomplete, usage, when."""
    return dict(status=_status(finish_reason), completed_at=int(completed_at),
                incomplete_details=IncompleteDetails(reason="max_output_tokens") if finish_reason == "length" else None,
                usage=ResponseUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens,
                                    output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning_tokens),
                                    total_tokens=prompt_tokens + completion_tokens))


def _chat_outcome(finish_reason: str, usage: Usage) -> dict[str, Any]:
    """`_outcome` of a chat completion's usage, finishing now."""
    return _outcome(finish_reason, usage.prompt_tokens, usage.completion_tokens,
                    usage.completion_tokens_details.reasoning_tokens, time.time())


def _output(rid: str, thinking: str, answer: str, status: str, summarize: bool,
            logprobs: list[TokenLogprob] | None) -> list[ReasoningItem | MessageItem]:
    """A finished response's items: the reasoning (if it thought), then the message."""
    reasoning_id, message_id = _item_ids(rid)
    output: list[ReasoningItem | MessageItem] = (
        [_reasoning_item(summarize, reasoning_id, thinking, status)] if thinking else [])
    return output + [_message_item(message_id, answer, status, logprobs)]


def from_chat(req: ResponsesRequest, completion: ChatCompletion) -> ResponseObject:
    """The Responses view of a finished chat completion (one choice)."""
    choice = completion.choices[0]
    output = _output(completion.id, choice.message.reasoning_content or "", choice.message.content or "",
                     _status(choice.finish_reason), bool(_summary_kind(req)),
                     choice.logprobs.content if choice.logprobs is not None else None)
    outcome = _chat_outcome(choice.finish_reason, completion.usage)
    return _envelope(req, completion).model_copy(update=dict(output=output, **outcome))


def stored_response(row: dict[str, Any]) -> ResponseObject:
    """The response object of a stored interaction (one the Responses API answered)."""
    request, params, usage = row["request"], row["request"]["params"], row["usage"]
    output = _output(row["id"], row["thinking"] or "", row["answer"] or "", _status(row["finish_reason"]),
                     bool(request.get("reasoning_summary")), None)
    return ResponseObject(
        id=row["id"], created_at=int(row["created"] - (row["latency_s"] or 0)), model=row["model"], output=output,
        **_outcome(row["finish_reason"], usage["prompt_tokens"], usage["completion_tokens"],
                   usage["reasoning_tokens"], row["created"]),
        instructions=request.get("instructions"), previous_response_id=request.get("previous_response_id"),
        metadata=row["metadata"], temperature=params["temperature"], top_p=params["top_p"],
        max_output_tokens=request.get("max_output_tokens"), top_logprobs=params.get("top_logprobs"),
        reasoning={"effort": params["reasoning_effort"], "summary": request.get("reasoning_summary")},
        user=params.get("user"), adapter_version=row["adapter_version"])


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
        self.output: list[ReasoningItem | MessageItem] = []
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
            self.response = _envelope(self.req, item)
            self.ids = _item_ids(item.id)
            events += [self._event("response.created", response=self._dump(self.response)),
                       self._event("response.in_progress", response=self._dump(self.response))]
        if item.usage is not None:  # the last chunk: every choice has finished
            return (events + self._close_reasoning(_status(self.finish_reason)) + self._close_items()
                    + self._completed(item.usage))
        for choice in item.choices:
            delta = choice.delta
            if delta.reasoning_content:
                events += self._reasoning_delta(delta.reasoning_content)
            if delta.content:
                events += self._text_delta(delta.content, choice.logprobs.content if choice.logprobs else None)
            elif choice.logprobs is not None and choice.logprobs.content:
                self.logprobs += choice.logprobs.content  # tokens of the thinking (or none of the text)
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
        item = _reasoning_item(bool(_summary_kind(self.req)), self.ids[0], self.thinking, status)
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
        item = _message_item(self.ids[1], self.answer, _status(self.finish_reason), logprobs)
        part = self._dump(item.content[0])
        self.output.append(item)
        self.open = None
        return events + [
            self._event("response.output_text.done", item_id=self.ids[1], output_index=index, content_index=0,
                        text=self.answer, logprobs=part["logprobs"] or []),
            self._event("response.content_part.done", item_id=self.ids[1], output_index=index, content_index=0,
                        part=part),
            self._event("response.output_item.done", output_index=index, item=self._dump(item))]

    def _completed(self, usage: Usage) -> list[str]:
        final = self.response.model_copy(update=dict(output=self.output,
                                                     **_chat_outcome(self.finish_reason, usage)))
        kind = "response.incomplete" if final.status == "incomplete" else "response.completed"
        return [self._event(kind, response=self._dump(final))]

    def _failed(self, exc: APIError) -> list[str]:
        events = [self._event("error", code=exc.code, message=exc.message, param=exc.param)]
        if self.response is not None:
            failed = self.response.model_copy(update=dict(
                status="failed", error=ResponseError(code=exc.code or "server_error", message=exc.message)))
            events.append(self._event("response.failed", response=self._dump(failed)))
        return events

