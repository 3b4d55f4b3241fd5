"""Admin routes (admin key): what the server serves, adapter lifecycle, the interaction export for the RL
loop, stored images."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool

from .auth import require_admin
from .errors import invalid, not_found
from .protocol import AdapterInfo, AdapterList, FeedbackList, InteractionList, LoadAdapterRequest, VersionRequest
from .store.blobs import is_sha256, media_type

admin = APIRouter(prefix="/v1", dependencies=[Depends(require_admin)])
# A probe is a file name the RL loop created in what it takes for the adapters folder; nothing else is looked up.
_PROBE = re.compile(r"^\.probe-[0-9a-f]{8,64}$")


class ServerInfo(BaseModel):
    """What this server serves, for a client that publishes into its adapters folder (the RL loop)."""

    model: str = Field(description="the base model's name (selects the base model in requests)")
    model_path: str | None = Field(description="the base model's local folder, absolute; null for a hub id")
    engine: str
    images: bool | None = Field(description="whether the base model reads images (false: a text-only model, which "
                                            "answers an image part with a 400); null when its folder is not here")
    adapters_dir: str = Field(description="the folder the server loads policy-vNNNN versions from, absolute")
    served_name: str = Field(description="the alias clients call; <served_name>@vNNNN pins a version")
    store: str = Field(description="the interaction store's URL, password hidden")
    probe_visible: bool | None = Field(None, description="whether the file named by `probe` is in the adapters folder")


def server_info(request: Request, probe: str | None = None) -> ServerInfo:
    """The served model, engine, adapters folder, alias and store of this app (probe: a file to look for)."""
    config, registry = request.app.state.config, request.app.state.registry
    model = Path(config.model)
    adapters = config.adapters_path.resolve()
    return ServerInfo(model=registry.base_name, model_path=str(model.resolve()) if model.is_dir() else None,
                      engine=config.engine, images=_reads_images(config.model), adapters_dir=str(adapters), served_name=registry.served_name,
                      store=make_url(config.store_url).render_as_string(hide_password=True),
                      probe_visible=None if probe is None else (adapters / probe).is_file())


def _reads_images(model: str) -> bool | None:
    """Whether the model folder (or cached hub snapshot) is vision-language; None when there is no such folder."""
    from openvlthinker.models import ModelNotFoundError, is_vision_language, resolve_model_path

    try:
        folder = Path(resolve_model_path(model))
    except ModelNotFoundError:
        return None
    return is_vision_language(folder) if (folder / "config.json").is_file() else None


def _info(request: Request, version: str) -> AdapterInfo:
    rows = {row["version"]: row for row in request.app.state.registry.describe()}
    return AdapterInfo(**rows[version])


def _summary(request: Request) -> dict:
    registry = request.app.state.registry
    return {"promoted": registry.promoted, "alias": registry.served_name,
            "model": registry.model_name(registry.promoted) if registry.promoted else registry.base_name}


@admin.get("/server", response_model=ServerInfo)
async def get_server(request: Request, probe: str | None = Query(
        None, description="a file name .probe-<hex> to look for in the adapters folder (is it the caller's folder?)")
) -> ServerInfo:
    """What this server serves: base model, engine, adapters folder, alias, store."""
    if probe is not None and not _PROBE.match(probe):
        raise invalid("A probe is a file name '.probe-' followed by 8 to 64 lowercase hex digits.", "probe")
    return await run_in_threadpool(server_info, request, probe)


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
    """Stored choices in commit order, with token ids, behaviour logprobs and feedback (the RL loop's export)."""
    if after is not None and not after.isdigit():
        raise invalid(f"Invalid cursor {after[:40]!r}; pass the next_cursor of a previous page.", "after")
    items, cursor, more = await run_in_threadpool(request.app.state.store.list_interactions, int(after or 0), limit,
                                                  gradable)
    return InteractionList(data=items, next_cursor=None if cursor is None else str(cursor), has_more=more)


@admin.get("/feedback", response_model=FeedbackList)
async def list_feedback(request: Request, after: str | None = Query(None, description="next_cursor of the previous page"),
                        limit: int = Query(100, ge=1, le=1000)) -> FeedbackList:
    """Feedback in arrival order, each with its interaction (for feedback on already-paged interactions)."""
    if after is not None and not after.isdigit():
        raise invalid(f"Invalid cursor {after[:40]!r}; pass the next_cursor of a previous page.", "after")
    items, cursor, more = await run_in_threadpool(request.app.state.store.list_feedback, int(after or 0), limit)
    return FeedbackList(data=items, next_cursor=None if cursor is None else str(cursor), has_more=more)


@admin.get("/interactions/{interaction_id}", response_model=InteractionList)
async def get_interaction(interaction_id: str, request: Request) -> InteractionList:
    """Every stored choice of one chat completion (or response) id."""
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
