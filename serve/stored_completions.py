"""Stored chat completions: `client.chat.completions.retrieve / list / delete` and `.messages.list`.

Every chat completion sent without `store: false` is in the interaction store already (it is what
the RL loop learns from), so these read it back: a completion as it was answered (without
logprobs: the store keeps their values, not the tokens' texts and alternatives), a page of
completions filtered by model and metadata values, the messages it was asked with (images as
data: URLs read back from the image store), and deletion together with its feedback, after which
neither the RL loop nor these endpoints see it. Responses-API interactions ("resp_...") are not
chat completions; `/v1/responses` serves them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from .errors import APIError, not_found
from .paging import CursorPage, page_after
from .protocol import AssistantMessage, ChatCompletion, Choice, CompletionTokensDetails, Usage
from .store import Store, UnknownInteraction
from .store.blobs import BlobStore
from .store.writer import StoreWriter
from .stored_reads import chat_parts, delete_stored

PREFIX = "chatcmpl-"


class StoreMessage(BaseModel):
    """One message a stored completion was asked with."""

    id: str
    role: str
    content: str | None
    content_parts: list[dict[str, Any]] | None = None
    name: str | None = None


class CompletionList(CursorPage[ChatCompletion]):
    pass


class MessageList(CursorPage[StoreMessage]):
    pass


class DeletedCompletion(BaseModel):
    id: str
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
    deleted: bool = True


class StoredCompletions:
    """The stored-completions endpoints over the interaction store."""

    def __init__(self, store: Store, writer: StoreWriter):
        self.store, self.writer = store, writer

    async def retrieve(self, completion_id: str) -> ChatCompletion:
        """A stored completion with all its choices."""
        return completion_of(await self._rows(completion_id))

    async def list(self, after: str | None = None, limit: int = 20, order: str = "asc", model: str | None = None,
                   metadata: dict[str, str] | None = None) -> CompletionList:
        """One page of stored completions, oldest first unless `order` is "desc"."""
        for key in metadata or {}:
            if any(c in '"\\' or ord(c) < 32 for c in key):  # they would break the store's JSON path
                raise APIError(400, "A metadata filter key cannot contain a double quote, a backslash or a "
                                    "control character.", param=f"metadata[{key[:60]}]", code="invalid_value")
        try:
            ids, more = await run_in_threadpool(self.store.page_ids, PREFIX, after, limit, order == "desc", model,
                                                metadata)
        except UnknownInteraction as exc:
            raise APIError(400, f"'after' names no stored chat completion: {exc}", param="after",
                           code="invalid_value") from None
        rows = await run_in_threadpool(self.store.get_interactions, ids)
        # Deleted between the two reads: left out rather than failed.
        return CompletionList.of([completion_of(rows[i]) for i in ids if i in rows], more)

    async def messages(self, completion_id: str, after: str | None = None, limit: int = 20,
                       order: str = "asc") -> MessageList:
        """One page of the messages a stored completion was asked with."""
        rows = await self._rows(completion_id)
        items = await run_in_threadpool(store_messages, rows[0], self.store.blobs)
        return MessageList.of(*page_after(items, after, limit, completion_id, descending=order == "desc"))

    async def delete(self, completion_id: str) -> DeletedCompletion:
        """Delete a stored completion and its feedback, on the writer thread (in order with the logging)."""
        await delete_stored(self.store, self.writer, completion_id, lambda: self._rows(completion_id))
        return DeletedCompletion(id=completion_id)

    async def _rows(self, completion_id: str) -> list[dict[str, Any]]:
        rows = await run_in_threadpool(self.store.get_interaction, completion_id) \
            if completion_id.startswith(PREFIX) else []
        if not rows:
            raise not_found(f"No stored chat completion {completion_id[:80]!r} (requests sent with store: false "
                            f"are not kept).", "completion_id", "completion_not_found")
        return rows


def completion_of(rows: list[dict[str, Any]]) -> ChatCompletion:
    """A stored completion (its choices' rows) as the ChatCompletion it was answered as."""
    first, request = rows[0], rows[0]["request"]
    choices = [Choice(index=row["choice_index"], finish_reason=row["finish_reason"],
                      message=AssistantMessage(content=row["answer"], reasoning_content=row["thinking"] or None,
                                               reasoning=row["thinking"] or None))
               for row in rows]
    prompt = first["usage"]["prompt_tokens"]
    completion = sum(row["usage"]["completion_tokens"] for row in rows)
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                  completion_tokens_details=CompletionTokensDetails(
                      reasoning_tokens=sum(row["usage"]["reasoning_tokens"] for row in rows)))
    # Rows stored before the request kept these: their commit time, and no fingerprint.
    created = request.get("created", int(first["created"] - (first["latency_s"] or 0)))
    return ChatCompletion(id=first["id"], created=created, model=first["model"], choices=choices, usage=usage,
                          system_fingerprint=request.get("system_fingerprint", "fp_unknown"),
                          adapter_version=first["adapter_version"])


def store_messages(row: dict[str, Any], blobs: BlobStore) -> list[StoreMessage]:
    """The messages of a stored request, oldest first; `content` is their text, `content_parts` every part."""
    out = []
    for i, message in enumerate(row["request"]["messages"]):
        parts = chat_parts(blobs, message["content"], f"completion {row['id']!r}", "completion_id")
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        out.append(StoreMessage(id=f"{row['id']}-{i}", role=message["role"], content=text or None,
                                content_parts=parts))
    return out
