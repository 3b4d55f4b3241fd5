"""Bearer-key checks as FastAPI dependencies: the API key for /v1, the admin key for admin routes.

Admin routes accept only the admin key (one Authorization header cannot carry two keys); with no
admin key configured they are switched off (403), never open. Keys are compared in constant time.
The trusted feedback keys are client keys too: /v1 accepts them beside the API key, and feedback
sent with one of them is what the RL loop trains on (`feedback_origin`).
"""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import APIError
from .keys import feedback_trusted, key_hash, matches_any


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _matches(token: str | None, key: str) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), key.encode())


def _unauthorized(message: str, code: str) -> APIError:
    return APIError(401, message, type="authentication_error", code=code, headers={"WWW-Authenticate": "Bearer"})


async def require_api_key(request: Request) -> None:
    """401 unless the request carries the API key or a trusted feedback key (open without an API key)."""
    key = request.app.state.config.api_key
    if key is None:
        return
    token = _token(request)
    if token is None:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.", "missing_api_key")
    if not (_matches(token, key) | matches_any(token, request.app.state.config.trusted_feedback_keys)):
        raise _unauthorized("Invalid API key.", "invalid_api_key")


def feedback_origin(request: Request) -> tuple[str | None, bool]:
    """(sha256 prefix of the key the request came with, whether its feedback may train the model)."""
    config = request.app.state.config
    token = _token(request)
    return key_hash(token), feedback_trusted(token, config.trusted_feedback_keys, config.host)


async def require_admin(request: Request) -> None:
    """401 unless the request carries the admin key; 403 when no admin key is configured."""
    key = request.app.state.config.admin_key
    if key is None:
        raise APIError(403, "Admin endpoints are disabled on this server; start it with --admin-key to enable them.",
                       type="permission_error", code="admin_disabled")
    token = _token(request)
    if token is None:
        raise _unauthorized("Missing admin key: send 'Authorization: Bearer <admin key>'.", "missing_admin_key")
    if not _matches(token, key):
        raise _unauthorized("Invalid admin key.", "invalid_admin_key")
