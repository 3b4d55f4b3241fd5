"""Public routes: chat completions (and the stored ones), responses, models, feedback (API key), health
and metrics (open). Thin: they validate with the protocol models and hand over to the service objects
on `app.state`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import AsyncIterator, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from .auth import feedback_origin, require_api_key
from .chat import Stream
from .errors import not_found
from .protocol import (ChatCompletion, ChatCompletionRequest, FeedbackRequest, FeedbackResponse, Health, ModelCard,
                       ModelList)
from .responses import events as response_events
from .responses_protocol import (DeletedResponse, InputItemList, InputTokens, InputTokensRequest, ResponseObject,
                                 ResponsesRequest)
from .store import UnknownInteraction
from .stored_completions import CompletionList, DeletedCompletion, MessageList

api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])
open_routes = APIRouter()


class EventStream(StreamingResponse):
    """SSE response that always runs the stream's cleanup, even if the client left before the first chunk."""

    def __init__(self, body: AsyncIterator[str], stream: Stream):
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._close = stream.close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()


@api.post("/chat/completions", response_model=ChatCompletion,
          responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks when stream=true"}})
async def chat_completions(body: ChatCompletionRequest, request: Request):
    result = await request.app.state.chat.create(body)
    return EventStream(result.sse(), result) if isinstance(result, Stream) else result


@api.get("/chat/completions", response_model=CompletionList)
async def list_chat_completions(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                                order: Literal["asc", "desc"] = "asc", model: str | None = None) -> CompletionList:
    """Stored chat completions, a page at a time (`client.chat.completions.list`); `metadata[key]=value`
    query parameters keep the completions whose metadata has those values."""
    metadata = {m.group(1): value for key, value in request.query_params.multi_items()
                if (m := re.fullmatch(r"metadata\[(.+)\]", key))}
    return await request.app.state.stored.list(after, limit, order, model, metadata)


@api.get("/chat/completions/{completion_id}", response_model=ChatCompletion)
async def retrieve_chat_completion(completion_id: str, request: Request) -> ChatCompletion:
    """A stored chat completion (`client.chat.completions.retrieve`)."""
    return await request.app.state.stored.retrieve(completion_id)


@api.get("/chat/completions/{completion_id}/messages", response_model=MessageList)
async def list_chat_completion_messages(completion_id: str, request: Request, after: str | None = None,
                                        limit: int = Query(20, ge=1, le=100),
                                        order: Literal["asc", "desc"] = "asc") -> MessageList:
    """The messages a stored chat completion was asked with (`client.chat.completions.messages.list`)."""
    return await request.app.state.stored.messages(completion_id, after, limit, order)


@api.delete("/chat/completions/{completion_id}", response_model=DeletedCompletion)
async def delete_chat_completion(completion_id: str, request: Request) -> DeletedCompletion:
    """Delete a stored chat completion and its feedback (`client.chat.completions.delete`)."""
    return await request.app.state.stored.delete(completion_id)


@api.post("/responses", response_model=ResponseObject,
          responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE events when stream=true"}})
async def create_response(body: ResponsesRequest, request: Request):
    """The Responses API over the same path as chat completions (responses.py)."""
    result = await request.app.state.responses.create(body)
    return EventStream(response_events(body, result), result) if isinstance(result, Stream) else result


@api.post("/responses/input_tokens", response_model=InputTokens)
async def count_input_tokens(body: InputTokensRequest, request: Request) -> InputTokens:
    """How many input tokens a Responses request would be answered with (`client.responses.input_tokens.count`)."""
    return await request.app.state.responses.count_input_tokens(body)


@api.get("/responses/{response_id}", response_model=ResponseObject)
async def retrieve_response(response_id: str, request: Request) -> ResponseObject:
    """A stored response (`client.responses.retrieve`)."""
    return await request.app.state.responses.retrieve(response_id)


@api.get("/responses/{response_id}/input_items", response_model=InputItemList)
async def list_input_items(response_id: str, request: Request, after: str | None = None,
                           limit: int = Query(20, ge=1, le=100), order: Literal["asc", "desc"] = "desc",
                           include: list[str] | None = Query(None)) -> InputItemList:
    """The messages a stored response was asked with, newest first by default (`client.responses.input_items.list`);
    `include` is accepted and has nothing to add."""
    return await request.app.state.responses.input_items(response_id, after, limit, order)


@api.delete("/responses/{response_id}", response_model=DeletedResponse)
async def delete_response(response_id: str, request: Request) -> DeletedResponse:
    """Delete a stored response and its feedback (`client.responses.delete`)."""
    return await request.app.state.responses.delete(response_id)


def _model_cards(request: Request) -> list[ModelCard]:
    """The base model, the served alias and every loaded (not draining) version."""
    registry = request.app.state.registry
    now = int(request.app.state.started)
    promoted = registry.model_name(registry.promoted) if registry.promoted else registry.base_name
    cards = [ModelCard(id=registry.base_name, created=now, root=registry.base_name),
             ModelCard(id=registry.served_name, created=now, root=promoted, parent=registry.base_name)]
    cards += [ModelCard(id=registry.model_name(v), created=now, root=registry.model_name(v), parent=registry.base_name)
              for v, entry in sorted(registry.loaded.items()) if not entry.draining]
    return cards


@api.get("/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=_model_cards(request))


@api.get("/models/{model:path}", response_model=ModelCard)
async def retrieve_model(model: str, request: Request) -> ModelCard:
    """One model card, as `client.models.retrieve(id)` asks for it (ids may hold '/' or '@')."""
    cards = _model_cards(request)
    for card in cards:
        if card.id == model:
            return card
    raise not_found(f"The model {model!r} does not exist; available: {', '.join(c.id for c in cards)}.", "model",
                    "model_not_found")


@api.post("/feedback", response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
    """Store a rating or correction of one choice, with who sent it (hashed) and whether it may train."""
    store, writer = request.app.state.store, request.app.state.writer
    key_hash, trusted = feedback_origin(request)
    fields = {**body.model_dump(exclude={"id", "choice_index"}), "key_hash": key_hash, "trusted": trusted}
    try:  # on the store's writer thread, in order with the interactions being logged
        fb_id = await asyncio.wrap_future(writer.call(lambda: store.add_feedback(body.id, body.choice_index, **fields)))
    except UnknownInteraction as exc:
        raise not_found(f"{exc} (Requests sent with store: false are not kept.)", "id",
                        "interaction_not_found") from None
    return FeedbackResponse(id=fb_id, interaction_id=body.id, choice_index=body.choice_index, created=int(time.time()))


class Unhealthy(BaseModel):
    """/health's 503 body: the engine cannot answer right now, and why."""

    status: Literal["unavailable"] = "unavailable"
    engine_ready: Literal[False] = False
    reason: str
    model: str
    served_name: str


def engine_problem(engine) -> str | None:
    """Why the engine cannot answer now (its own `health()` says; None for one that serves or has no such check)."""
    check = getattr(engine, "health", None)
    if not callable(check):
        return None
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a failing check is itself the answer, not a 500
        return f"the engine's health check failed: {type(exc).__name__}: {exc}"


@open_routes.get("/health", response_model=Health, responses={503: {"model": Unhealthy}})
async def health(request: Request):
    """200 while the gateway and its engine serve; 503 with the reason while the engine is down (restarting)."""
    state = request.app.state
    ready = bool(getattr(state, "ready", False))
    registry = getattr(state, "registry", None)
    model = registry.base_name if registry else state.config.model
    problem = engine_problem(state.engine) if ready else None
    if problem is not None:
        body = Unhealthy(reason=problem, model=model, served_name=state.config.served_name)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    return Health(status="ok" if ready else "starting", engine_ready=ready, served_name=state.config.served_name,
                  model=model, promoted=registry.promoted if registry else None)


@open_routes.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    m = request.app.state.metrics
    return Response(m.render(request.app.state.engine.stats()), media_type=m.content_type)
