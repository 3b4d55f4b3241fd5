"""The OpenAPI schema as the gateway really answers: its errors, not FastAPI's default 422.

FastAPI documents a 422 `HTTPValidationError` on every operation with inputs, but this gateway
answers validation errors with 400 in the OpenAI error shape (`errors.py`), and also answers
401/403 (keys), 404, 409 (adapter lifecycle), 413 (body cap) and 503 with `Retry-After`
(overloaded, engine or store unavailable). `install_openapi` replaces the 422s with those, each
with the one error body, so a client generated from `/openapi.json` (or a fuzzer checking
responses against it, `tests/serve/test_schema_fuzz.py`) sees what the server sends. The main
request bodies get examples.
"""

from __future__ import annotations

from typing import Any, Sequence

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel

from .auth import require_admin, require_api_key

_WHY = {
    400: "Invalid request: a value, the JSON or the body's shape (`error.param` names the field).",
    401: "Missing or invalid key (`Authorization: Bearer <key>`).",
    403: "Admin endpoints are off: the server was started without --admin-key.",
    404: "No such model, version, adapter folder, stored completion, interaction or image.",
    409: "The adapter's state does not allow it now (promoted, being unloaded, nothing to roll back).",
    413: "The request body is larger than the server's cap (--max-body-bytes).",
    503: "Overloaded, or the engine or the interaction store cannot serve right now: retry after `Retry-After`.",
}


# Reads of the gateway's own state: they reach neither the engine nor the store, so they never answer 503.
_NO_ENGINE_OR_STORE = {"/v1/models", "/v1/models/{model}", "/v1/server", "/v1/adapters"}


# Request examples, shown in /docs and sent first by API fuzzers: a random body rarely passes every check.
_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): {
        "text": {"model": "openvlthinker", "max_tokens": 16,
                 "messages": [{"role": "user", "content": "How many circles are there?"}]},
        "graded, streamed": {"model": "openvlthinker", "reasoning_effort": "low", "stream": True, "max_tokens": 16,
                             "metadata": {"problem_type": "numerical", "reference_answer": "3"},
                             "messages": [{"role": "user",
                                           "content": [{"type": "text", "text": "How many squares are there?"}]}]}},
    ("post", "/v1/responses"): {
        "text": {"model": "openvlthinker", "input": "How many squares are there?", "max_output_tokens": 16},
        "no thinking": {"model": "openvlthinker", "reasoning": {"effort": "none"}, "max_output_tokens": 16,
                        "input": [{"role": "user", "content": [{"type": "input_text", "text": "What colour is it?"}]}]}},
    ("post", "/v1/feedback"): {
        "thumbs": {"id": "chatcmpl-0123456789abcdef0123456789abcdef", "thumbs": "up"},
        "correction": {"id": "chatcmpl-0123456789abcdef0123456789abcdef", "rating": 2, "correction": "3"}},
}


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error the gateway answers, whatever its status (OpenAI's shape)."""

    error: ErrorDetail


def error_statuses(route: APIRoute) -> list[int]:
    """The error statuses `route` can answer, from its inputs and the keys it requires."""
    calls = {dep.call for dep in route.dependant.dependencies}
    dependant = route.dependant
    has_input = bool(dependant.body_params or dependant.query_params or dependant.path_params)
    codes = {400, 404} if has_input else set()
    if require_api_key in calls or require_admin in calls:
        codes.add(401)
    if require_admin in calls:
        codes.add(403)
    if route.path.startswith("/v1/adapters/"):
        codes |= {404, 409}
    if dependant.body_params:
        codes.add(413)
    if route.path.startswith("/v1/") and not (route.methods == {"GET"} and route.path_format in _NO_ENGINE_OR_STORE):
        codes.add(503)  # overloaded, engine restarting, store full
    return sorted(codes)


def _error_response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": _WHY[status],
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    if status == 503:
        out["headers"] = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                          "schema": {"type": "string"}}}
    return out


def document_errors(schema: dict[str, Any], routes: Sequence[Any]) -> dict[str, Any]:
    """`schema` (FastAPI's) with every 422 replaced by the statuses and error body each of `routes` answers."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorResponse"] = error_schema
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        operations = schema["paths"].get(route.path_format, {})
        for method in route.methods:
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in error_statuses(route):
                responses.setdefault(str(status), _error_response(status))
    for (method, path), examples in _EXAMPLES.items():
        body = schema["paths"].get(path, {}).get(method, {}).get("requestBody", {}).get("content", {})
        if "application/json" in body:
            body["application/json"]["examples"] = {name: {"value": value} for name, value in examples.items()}
    return schema


def install_openapi(app: FastAPI, routes: Sequence[Any]) -> None:
    """Serve FastAPI's schema passed through `document_errors` at /openapi.json (built once, when first asked).

    `routes` are the routers' own routes (`APIRouter.routes`): the app's route list holds FastAPI's
    wrappers of included routers, whose layout changes between FastAPI releases."""
    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(fastapi_openapi(), routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
