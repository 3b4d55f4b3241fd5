"""`create_app(config, engine)`: the FastAPI gateway around one engine. No module-level state.

The engine starts in the lifespan (uvicorn opens the port only after it is ready), then the
store and the adapter registry (restoring the versions and alias the store's database records, and
following that record while it serves, so replicas on one database serve one alias). Every
service object hangs off `app.state`; routes stay thin.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI

from .adapters import AdapterRegistry
from .admin import admin
from .body_limit import BodyLimitMiddleware
from .chat import ChatService
from .config import ServeConfig
from .errors import install_handlers
from .metrics import Metrics, MetricsMiddleware
from .openapi import install_openapi
from .request_id import RequestIdMiddleware
from .responses import ResponsesService
from .stored_completions import StoredCompletions
from .routes import api, open_routes
from .store import Store
from .store.registry import AliasTable
from .store.writer import StoreWriter

log = logging.getLogger("serve")


def base_names(config: ServeConfig, engine: Any) -> list[str]:
    """Names that select the base model: the folder name (or hub id) first, then the full forms."""
    path = Path(config.model)
    short = path.name if path.exists() else config.model
    names = [short, config.model, str(getattr(engine, "model_name", "") or "")]
    return list(dict.fromkeys(n for n in names if n))


def create_app(config: ServeConfig, engine: Any) -> FastAPI:
    """The gateway app serving `engine` with `config`; start it with any ASGI server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        store = Store(config.store_url, config.images_location)
        writer = StoreWriter(store)  # the chat's interactions, committed together under load
        # The alias lives in the store's database; the state file of an earlier release only seeds it.
        table = AliasTable(store.engine, config.served_name, replica=f"{config.host}:{config.port}-{uuid.uuid4().hex[:6]}")
        registry = AdapterRegistry(engine, config.adapters_path, config.served_name, base_names(config, engine),
                                   state_file=config.run_path / "adapters_state.json", table=table)
        await registry.restore()
        watcher = asyncio.create_task(registry.watch(config.registry_poll_s))
        app.state.store, app.state.writer, app.state.registry = store, writer, registry
        app.state.chat = ChatService(engine, registry, writer, config, app.state.metrics)
        app.state.responses = ResponsesService(app.state.chat, store)
        app.state.stored = StoredCompletions(store, writer)
        app.state.ready = True
        log.info("serving %s as %r (promoted: %s)", registry.base_name, config.served_name, registry.promoted or "base")
        try:
            yield
        finally:
            app.state.ready = False
            watcher.cancel()
            await engine.stop()
            await asyncio.to_thread(writer.close)  # what was acknowledged is committed by now; the rest too
            store.close()

    app = FastAPI(
        title="OpenVLThinker gateway",
        version="1",
        summary="OpenAI-compatible multimodal chat with thinking/answer split, feedback and hot-swapped adapters.",
        lifespan=lifespan,
    )
    app.state.config, app.state.engine, app.state.metrics = config, engine, Metrics()
    app.state.ready, app.state.started = False, time.time()
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # counts the 413s too
    app.add_middleware(RequestIdMiddleware)  # outermost: every response gets its id
    app.include_router(api)
    app.include_router(admin)
    app.include_router(open_routes)
    # The routers' own routes, for the schema's error statuses and the Allow header of a 405.
    app.state.routes = [*api.routes, *admin.routes, *open_routes.routes]
    install_openapi(app, app.state.routes)  # the errors the routes really answer, not FastAPI's 422
    return app
