"""Bearer-key checks as FastAPI dependencies: the API key for /v1, the admin key for admin routes.

Admin routes accept only the admin key (one Authorization header cannot carry two keys); with no
admin key configured they are switched off (403), never open. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import APIError


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str | None, key: str) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, type="authentication_error", code=code, headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request) -> None:
    key = request.app.state.config.api_key
    if key is None:
        return
    token = _token(request)
    if token is None:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key")
    if not _matches(token, key):
        raise _unauthorized("Invalid API key.", "invalid_api_key")


async def require_admin(request: Request) -> None:
    key = request.app.state.config.admin_key
    if key is None:
        raise APIError(403, "Admin endpoints are disabled on this server; start it with --admin-key to enable them.",
                       type="permission_error", code="admin_disabled")
    token = _token(request)
    if token is None:
        raise _unauthorized("Missing admin key: send 'Authorization: Bearer <admin key>'.", "missing_admin_key")
    if not _matches(token, key):
        raise _unauthorized("Invalid admin key.", "invalid_admin_key")
