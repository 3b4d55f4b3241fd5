"""Turn whatever went wrong talking to the gateway into one readable sentence for the chat (never a traceback)."""

from __future__ import annotations

import json
from typing import Any

# Why a status happens, in the user's words; the gateway's own message follows.
_HINTS = {
    400: "The server could not use this request",
    401: "The server refused the API key (start the demo with the right --api-key)",
    403: "The server refused the API key (start the demo with the right --api-key)",
    404: "The server does not know this",
    413: "The request is too large for the server (try a smaller image)",
    422: "The server could not use this request",
    429: "The server is busy; try again in a moment",
    503: "The server is overloaded; try again in a moment",
}


def _server_message(body: Any) -> str | None:
    # The gateway answers errors in OpenAI's shape {"error": {"message", ...}}.
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("message"), str):
            return body["message"]
    return None


def describe_error(exc: BaseException, endpoint: str = "the server") -> str:
    """A one-paragraph message for the chat, from an openai or httpx exception (or anything else)."""
    import httpx
    import openai

    status, message = None, None
    if isinstance(exc, openai.APIStatusError):
        status, message = exc.status_code, _server_message(exc.body) or exc.message
    elif isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        message = _server_message(exc.response.content) or exc.response.text[:300]
    elif isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return f"{endpoint} did not answer in time; try again, or ask for less thinking (reasoning effort)."
    elif isinstance(exc, (openai.APIConnectionError, httpx.TransportError)):
        return f"Cannot reach {endpoint}: is the server running? ({type(exc).__name__})"
    elif isinstance(exc, openai.APIError):  # an error event inside a stream
        message = _server_message(exc.body) or exc.message
    elif isinstance(exc, (ValueError, OSError)):
        return str(exc)
    if status is None:
        return f"Something went wrong: {message or type(exc).__name__}."
    hint = _HINTS.get(status) or ("The server failed" if status >= 500 else "The server refused the request")
    message = (message or "").strip()
    return f"{hint} (HTTP {status}): {message}" if message else f"{hint} (HTTP {status})."
