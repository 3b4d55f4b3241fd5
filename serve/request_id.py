"""Give every HTTP response an `x-request-id` header, as the OpenAI API does.

The SDKs surface it (`completion._request_id`, `APIError.request_id`) so a user can quote it in
a bug report; the gateway logs it with every unexpected error, so that quote finds the traceback.
The id lives in the ASGI scope: Starlette answers an unexpected exception from its outermost
middleware, outside this one, and the scope is what both see.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
SCOPE_KEY = "openvlthinker.request_id"


def new_request_id() -> str:
    """A fresh id in OpenAI's style: `req_` and 32 hex digits."""
    return f"req_{uuid.uuid4().hex}"


def request_id(scope: Scope) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None outside it)."""
    return scope.get(SCOPE_KEY)


class RequestIdMiddleware:
    """Pure ASGI middleware: give the request an id in its scope and add it to the response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = scope[SCOPE_KEY] = new_request_id()
        header = HEADER.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != header]
                message = {**message, "headers": [*headers, (header, rid.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)
