"""One error shape for every failure: `{"error": {"message", "type", "param", "code"}}` (OpenAI's).

Services raise `APIError` (or one of the helpers below); `install_handlers` maps it, FastAPI's
validation errors, unknown routes and any unexpected exception to that shape, so a client never
sees a bare 500 page and the server keeps serving after a bug in one request.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .request_id import HEADER, request_id
from .store import StoreUnavailable

log = logging.getLogger("serve")


class APIError(Exception):
    """An error answered to the client as-is: HTTP status plus the OpenAI error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    """400: the request is well-formed JSON but a value is not acceptable."""
    return APIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str = "not_found") -> APIError:
    return APIError(404, message, param=param, code=code)


def conflict(message: str, param: str | None = None, code: str = "conflict") -> APIError:
    return APIError(409, message, param=param, code=code)


def store_unavailable(exc: "StoreUnavailable") -> APIError:
    """503 naming the storage that failed (disk full, read-only): nothing of the request was kept."""
    if exc.full:
        message = (f"The interaction store is full ({exc.where}: {exc.reason}); this request was not kept. "
                   "Free space there, then retry.")
    else:
        message = f"The interaction store is unavailable ({exc.where}: {exc.reason}); retry later."
    return APIError(503, message, type="server_error", code="store_full" if exc.full else "store_unavailable",
                    headers={"Retry-After": "10"})


def overloaded(retry_after: int = 1) -> APIError:
    return APIError(503, "The server is overloaded (queue full); retry later.", type="server_overloaded",
                    code="overloaded", headers={"Retry-After": str(retry_after)})


_BRANCH_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """`("body", "messages", 0, "content")` -> `messages[0].content` (the OpenAI `param` style)."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "[" in str(p) or str(p).startswith("function-") or p in _BRANCH_LABELS:
            continue  # pydantic's union-branch labels ("list[...]", "function-after[...]") are noise to a client
        else:
            out += f".{p}" if out else str(p)
    return out or None


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    if err.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
    if param is None and tuple(err.get("loc", ())) == ("body",) and err.get("type") != "value_error":
        # the body as a whole is not an object (a value_error there is a check across its fields)
        return f"The request body must be a JSON object, sent with Content-Type: application/json; got {_kind(err)}."
    if err.get("type") == "extra_forbidden":
        return f"Unsupported parameter: {param!r} is not accepted by this server."
    if err.get("type") == "missing":
        return f"Missing required parameter: {param!r}."
    # a ValueError raised by one of our validators reads "Value error, <our sentence>": keep the sentence
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    return f"Invalid value for {param!r}: {msg}" if param else msg


def _kind(err: dict[str, Any]) -> str:
    """What the sender sent instead of a JSON object, in JSON's words."""
    value = err.get("input")
    if err.get("type") == "missing" or value in (b"", ""):
        return "an empty body"
    if isinstance(value, bytes):  # FastAPI reads the body as JSON only when the Content-Type says so
        return "a body that was not read as JSON"
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def validation_error(errors: Sequence[dict[str, Any]], rename: Callable[[str], str] = lambda p: p) -> APIError:
    """The 400 for pydantic's errors: the deepest one, its location as an OpenAI `param` (through `rename`)."""
    # With unions (content: str | list[part]) pydantic reports one error per branch; the
    # deepest location is the one that names what the client actually got wrong.
    first = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {}
    if first.get("type") == "json_invalid":
        return invalid(_validation_message(first, None), None, "invalid_json")
    param = _loc_to_param(tuple(first.get("loc", ())))
    param = rename(param) if param is not None else None
    return invalid(_validation_message(first, param), param)


def allowed_methods(request: Request) -> list[str]:
    """Every method the routes of this path serve (`app.state.routes`). Starlette's 405 lists only the first
    matching route's, so GET /v1/responses/{id} hid DELETE on the same path. Of the routes that match, the
    ones with the fewest path parameters name the resource: /v1/responses/input_tokens is not a response id."""
    matched: dict[int, set[str]] = {}
    for route in getattr(request.app.state, "routes", ()):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            params = len(getattr(route, "param_convertors", {}))
            matched.setdefault(params, set()).update(getattr(route, "methods", None) or ())
    return sorted(matched[min(matched)]) if matched else []


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StoreUnavailable)
    async def _store(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return store_unavailable(exc).response()

    @app.exception_handler(OperationalError)
    async def _store_read(request: Request, exc: OperationalError) -> JSONResponse:
        # a read in a worker thread (the writer thread's failures arrive as StoreUnavailable already)
        return store_unavailable(request.app.state.store.unavailable(exc)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return APIError(exc.status_code, str(exc.detail), code=kind, headers=headers).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this outside every added middleware, so the id's header is set here.
        rid = request_id(request.scope)
        log.exception("unexpected error on %s %s (%s)", request.method, request.url.path, rid)
        return APIError(500, f"Internal server error ({type(exc).__name__}); the server keeps serving.",
                        type="server_error", code="internal_error", headers={HEADER: rid} if rid else None).response()
