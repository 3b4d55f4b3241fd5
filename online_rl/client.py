"""The RL loop's view of the server: the public OpenAI-style API plus the admin routes, over HTTP.

The loop is a client like any other (DESIGN: online_rl -> serve over HTTP only): rollouts are
ordinary chat completions pinned to a version, and their token ids and behaviour logprobs
come back from the interaction export.
"""

from __future__ import annotations

from typing import Any

import httpx

from openvlthinker.data import png_data_url


def image_part(image) -> dict[str, Any]:
    """An OpenAI `image_url` content part carrying a PIL image as a PNG data URL."""
    return {"type": "image_url", "image_url": {"url": png_data_url(image)}}


class GatewayClient:
    """Chat, interaction export and adapter admin calls against one gateway."""

    def __init__(self, endpoint: str, api_key: str, admin_key: str, timeout: float = 600):
        self.http = httpx.Client(base_url=endpoint.rstrip("/"), timeout=timeout)
        self.api = {"Authorization": f"Bearer {api_key}"}
        self.admin = {"Authorization": f"Bearer {admin_key}"}

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise RuntimeError(f"{resp.request.method} {resp.request.url.path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json()

    def chat(self, messages: list[dict], *, model: str, n: int = 1, temperature: float = 1.0, max_tokens: int = 128,
             metadata: dict[str, str] | None = None, seed: int | None = None) -> dict:
        """One chat completion (OpenAI wire format)."""
        body = {"model": model, "messages": messages, "n": n, "temperature": temperature, "max_tokens": max_tokens,
                "logprobs": True, "metadata": metadata or {}, "seed": seed}
        return self._check(self.http.post("/v1/chat/completions", json=body, headers=self.api))

    def interaction(self, interaction_id: str) -> list[dict]:
        """Every stored choice of one interaction, with token ids and behaviour logprobs."""
        return self._check(self.http.get(f"/v1/interactions/{interaction_id}", headers=self.admin))["data"]

    def adapters(self) -> dict:
        """The server's adapter listing (versions, loaded, promoted)."""
        return self._check(self.http.get("/v1/adapters", headers=self.admin))

    def load(self, version: str) -> dict:
        """Ask the server to load `policy-<version>` from its adapters folder."""
        return self._check(self.http.post("/v1/adapters/load", json={"version": version}, headers=self.admin))

    def promote(self, version: str) -> dict:
        """Point the served alias at a loaded version."""
        return self._check(self.http.post("/v1/adapters/promote", json={"version": version}, headers=self.admin))

    def rollback(self) -> dict:
        """Point the served alias back at the previously promoted version (or the base model)."""
        return self._check(self.http.post("/v1/adapters/rollback", headers=self.admin))

    def unload(self, version: str) -> dict:
        """Unload a (non-promoted) version after its requests drain."""
        return self._check(self.http.post("/v1/adapters/unload", json={"version": version}, headers=self.admin))
