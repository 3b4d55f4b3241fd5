"""Reject request bodies larger than the configured cap (413, OpenAI error shape) before they fill memory.

A declared Content-Length over the cap is refused at once; a chunked body is counted as it
arrives and cut off when it crosses the cap. Images are the only large inputs, so the default
cap is `max_images` base64-encoded images of `max_image_bytes` plus 1 MiB of text.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError


class BodyTooLarge(HTTPException):
    """Raised from `receive`; FastAPI lets HTTPExceptions from body reading through (to a 413)."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"Request body is larger than {max_bytes} bytes.")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _error(self) -> APIError:
        return APIError(413, f"Request body is larger than {self.max_bytes} bytes.", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._error().response()(scope, receive, send)
            return
        seen, started = 0, False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._error().response()(scope, receive, send)
