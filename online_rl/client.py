"""The RL loop's view of the server: the public OpenAI-style API plus the admin routes, over HTTP.

The loop is a client like any other (docs/architecture.md: online_rl -> serve over HTTP only): rollouts are
ordinary chat completions pinned to a version, and their token ids and behaviour logprobs
come back from the interaction export, checked against the loop's view of it (`exported.py`).
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from openvlthinker.data import png_data_url

from .exported import Page, StoredChoice, StoredFeedback, parse


class GatewayError(RuntimeError):
    """The gateway answered a call with an error status."""

    def __init__(self, message: str, status: int, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code  # the server's error code (e.g. adapter_not_found), when it sent one

    @property
    def refused_request(self) -> bool:
        """The request itself was refused (4xx other than auth): another request may still succeed."""
        return 400 <= self.status < 500 and self.status not in (401, 403)


def image_part(image) -> dict[str, Any]:
    """An OpenAI `image_url` content part carrying a PIL image as a PNG data URL."""
    return {"type": "image_url", "image_url": {"url": png_data_url(image)}}


class GatewayClient:
    """Chat, interaction export and adapter admin calls against one gateway."""

    def __init__(self, endpoint: str, api_key: str, admin_key: str, timeout: float = 600, retry_s: float = 300):
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout)
        self.api = {"Authorization": f"Bearer {api_key}"}
        self.admin = {"Authorization": f"Bearer {admin_key}"}
        self.retry_s = retry_s

    def _send(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> httpx.Response:
        """One call, repeated for up to `retry_s` seconds while the gateway is overloaded (503, after its
        Retry-After) or not accepting connections (restarting); other answers are returned as they are.

        The loop shares the gateway's queue with user traffic, so a 503 is an expected moment, not a
        reason to end hours of online learning. Only failures before the request reached the server are
        retried, so a call is never applied twice."""
        deadline, pause = time.monotonic() + self.retry_s, 0.5
        while True:
            try:
                resp = self.http.request(method, path, headers=headers, **kw)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if time.monotonic() + pause > deadline:
                    raise RuntimeError(f"{method} {path}: the gateway at {self.http.base_url} refused connections "
                                       f"for {self.retry_s:.0f} s ({exc})") from exc
                wait = pause
            else:
                if resp.status_code != 503 or time.monotonic() + pause > deadline:
                    return resp
                wait = _retry_after(resp, pause)
            time.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            pause = min(pause * 2, 30.0)

    def _call(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
        """The JSON of a successful call; GatewayError naming the call and the server's answer otherwise."""
        resp = self._send(method, path, headers, **kw)
        if resp.status_code >= 400:
            raise GatewayError(f"{method} {path} -> {resp.status_code}: {resp.text[:500]}", resp.status_code,
                               _error_code(resp))
        return resp.json()

    def chat(self, messages: list[dict], *, model: str, n: int = 1, temperature: float = 1.0, max_tokens: int = 128,
             metadata: dict[str, str] | None = None, seed: int | None = None) -> dict:
        """One chat completion (OpenAI wire format) with its behaviour logprobs, token ids, texts and mode."""
        body = {"model": model, "messages": messages, "n": n, "temperature": temperature, "max_tokens": max_tokens,
                "logprobs": True, "return_token_ids": True, "metadata": metadata or {}, "seed": seed}
        return self._call("POST", "/v1/chat/completions", self.api, json=body)

    def interactions(self, after: str | None = None, limit: int = 100, gradable: bool | None = None) -> Page[StoredChoice]:
        """One page of stored choices after the cursor `after`, oldest first (`gradable`: only those with a
        reference answer or feedback, or only those without)."""
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        if gradable is not None:
            params["gradable"] = "true" if gradable else "false"
        raw = self._call("GET", "/v1/interactions", self.admin, params=params)
        return parse(Page[StoredChoice], raw, "GET /v1/interactions")

    def feedback(self, after: str | None = None, limit: int = 100) -> Page[StoredFeedback]:
        """One page of feedback after the cursor `after`, in arrival order, each with the choice it rates."""
        raw = self._call("GET", "/v1/feedback", self.admin, params={"limit": limit, **({"after": after} if after else {})})
        return parse(Page[StoredFeedback], raw, "GET /v1/feedback")

    def image(self, sha256: str) -> bytes | None:
        """A stored image's bytes, or None if the server no longer has it."""
        resp = self._send("GET", f"/v1/images/{sha256}", self.admin)
        return resp.content if resp.status_code == 200 else None

    def interaction(self, interaction_id: str) -> list[StoredChoice]:
        """Every stored choice of one interaction, with token ids and behaviour logprobs."""
        raw = self._call("GET", f"/v1/interactions/{interaction_id}", self.admin)
        return parse(Page[StoredChoice], raw, f"GET /v1/interactions/{interaction_id}").data

    def server(self, probe: str | None = None) -> dict:
        """What the server serves: base model and folder, engine, adapters folder, alias, store (and
        whether the file `probe` is in its adapters folder)."""
        return self._call("GET", "/v1/server", self.admin, params={"probe": probe} if probe else None)

    def adapters(self) -> dict:
        """The server's adapter listing (versions, loaded, promoted)."""
        return self._call("GET", "/v1/adapters", self.admin)

    def load(self, version: str) -> dict:
        """Ask the server to load `policy-<version>` from its adapters folder."""
        return self._call("POST", "/v1/adapters/load", self.admin, json={"version": version})

    def promote(self, version: str) -> dict:
        """Point the served alias at a loaded version."""
        return self._call("POST", "/v1/adapters/promote", self.admin, json={"version": version})

    def rollback(self) -> dict:
        """Point the served alias back at the previously promoted version (or the base model)."""
        return self._call("POST", "/v1/adapters/rollback", self.admin)

    def unload(self, version: str) -> dict:
        """Unload a (non-promoted) version after its requests drain."""
        return self._call("POST", "/v1/adapters/unload", self.admin, json={"version": version})


def _error_code(resp: httpx.Response) -> str | None:
    """The `error.code` of an OpenAI-style error body, if there is one."""
    try:
        error = resp.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) else None


def _retry_after(resp: httpx.Response, default: float) -> float:
    """Seconds the server asked to wait (Retry-After in seconds), else `default`."""
    try:
        return max(0.0, float(resp.headers.get("Retry-After", default)))
    except ValueError:  # an HTTP date: not what this gateway sends
        return default
