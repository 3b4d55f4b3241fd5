"""Give every HTTP response an `x-request-id` header, as the OpenAI API does.

The SDKs surface it (`completion._request_id`, `APIError.request_id`) so a user can quote it in
a bug report; the gateway logs it with every unexpected error, so that quote finds the traceback.
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
current: ContextVar[str] = ContextVar("request_id", default="-")


def new_request_id() -> str:
    """A fresh id in OpenAI's style: `req_` and 32 hex digits."""
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Pure ASGI middleware: set `current` for the request and add the header to its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = new_request_id()
        token = current.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)
