"""Admin routes (admin key): adapter lifecycle, the interaction export for the RL loop, stored images."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from .auth import require_admin
from .errors import invalid, not_found
from .protocol import AdapterInfo, AdapterList, InteractionList, LoadAdapterRequest, VersionRequest
from .store.blobs import is_sha256, media_type

admin = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])


def _info(request: Request, version: str) -> AdapterInfo:
    rows = {row["version"]: row for row in request.app.state.registry.describe()}
    return AdapterInfo(**rows[version])


def _summary(request: Request) -> dict:
    registry = request.app.state.registry
    return {"promoted": registry.promoted, "alias": registry.served_name,
            "model": registry.model_name(registry.promoted) if registry.promoted else registry.base_name}


@admin.get("/adapters", response_model=AdapterList)
async def list_adapters(request: Request) -> AdapterList:
    registry = request.app.state.registry
    return AdapterList(promoted=registry.promoted, data=[AdapterInfo(**row) for row in registry.describe()])


@admin.post("/adapters/load", response_model=AdapterInfo)
async def load_adapter(body: LoadAdapterRequest, request: Request) -> AdapterInfo:
    entry = await request.app.state.registry.load(version=body.version, path=body.path)
    return _info(request, entry.version)


@admin.post("/adapters/promote")
async def promote_adapter(body: VersionRequest, request: Request) -> dict:
    await request.app.state.registry.promote(body.version)
    return _summary(request)


@admin.post("/adapters/rollback")
async def rollback_adapter(request: Request) -> dict:
    await request.app.state.registry.rollback()
    return _summary(request)


@admin.post("/adapters/unload")
async def unload_adapter(body: VersionRequest, request: Request) -> dict:
    await request.app.state.registry.unload(body.version)
    return {"unloaded": body.version, **_summary(request)}


@admin.get("/interactions", response_model=InteractionList)
async def list_interactions(request: Request, after: str | None = Query(None, description="next_cursor of the previous page"),
                            limit: int = Query(100, ge=1, le=1000), gradable: bool | None = None) -> InteractionList:
    if after is not None and not after.isdigit():
        raise invalid(f"Invalid cursor {after[:40]!r}; pass the next_cursor of a previous page.", "after")
    items, cursor, more = await run_in_threadpool(request.app.state.store.list_interactions, int(after or 0), limit,
                                                  gradable)
    return InteractionList(data=items, next_cursor=None if cursor is None else str(cursor), has_more=more)


@admin.get("/feedback", response_model=InteractionList)
async def list_feedback(request: Request, after: str | None = Query(None, description="next_cursor of the previous page"),
                        limit: int = Query(100, ge=1, le=1000)) -> InteractionList:
    """Feedback in arrival order, each with its interaction (for feedback on already-paged interactions)."""
    if after is not None and not after.isdigit():
        raise invalid(f"Invalid cursor {after[:40]!r}; pass the next_cursor of a previous page.", "after")
    items, cursor, more = await run_in_threadpool(request.app.state.store.list_feedback, int(after or 0), limit)
    return InteractionList(data=items, next_cursor=None if cursor is None else str(cursor), has_more=more)


@admin.get("/interactions/{interaction_id}", response_model=InteractionList)
async def get_interaction(interaction_id: str, request: Request) -> InteractionList:
    items = await run_in_threadpool(request.app.state.store.get_interaction, interaction_id)
    if not items:
        raise not_found(f"No interaction {interaction_id[:80]!r}.", "id", "interaction_not_found")
    return InteractionList(data=items, next_cursor=None, has_more=False)


@admin.get("/images/{sha256}", response_class=Response,
           responses={200: {"content": {"image/*": {}}, "description": "the stored image bytes"}})
async def get_image(sha256: str, request: Request) -> Response:
    if not is_sha256(sha256):
        raise invalid("Not a sha256 hex digest (64 lowercase hex characters).", "sha256")
    data = await run_in_threadpool(request.app.state.store.blobs.get, sha256)
    if data is None:
        raise not_found(f"No image {sha256}.", "sha256", "image_not_found")
    return Response(data, media_type=media_type(data), headers={"Cache-Control": "public, max-age=31536000, immutable"})
