"""The demo's only link to the server: the public HTTP API through the `openai` SDK and httpx, like any user's client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator


@dataclass
class Delta:
    """One streamed piece: thinking and/or answer text, with the interaction id and the version that answers."""

    id: str
    model: str
    version: str | None
    thinking: str = ""
    answer: str = ""


class Gateway:
    """Chat (streamed), feedback, models and, with an admin key, adapters and interactions of one gateway."""

    def __init__(self, endpoint: str, api_key: str = "none", admin_key: str | None = None, timeout: float = 300):
        from openai import OpenAI

        self.endpoint = endpoint.rstrip("/")
        if self.endpoint.endswith("/v1"):  # accept both http://host:port and http://host:port/v1
            self.endpoint = self.endpoint[:-3]
        self.api_key, self.admin_key, self.timeout = api_key, admin_key, timeout
        # No retries: the user sees an overload at once and decides to try again.
        self.client = OpenAI(base_url=f"{self.endpoint}/v1", api_key=api_key, max_retries=0, timeout=timeout)

    def stream_chat(self, messages: list[dict[str, Any]], effort: str, temperature: float = 0.0,
                    model: str = "openvlthinker", max_tokens: int | None = None) -> Iterator[Delta]:
        """Stream one answer; raises the SDK's errors (the caller turns them into messages)."""
        extra = {"max_tokens": max_tokens} if max_tokens else {}
        stream = self.client.chat.completions.create(model=model, messages=messages, stream=True,
                                                     reasoning_effort=effort, temperature=temperature, **extra)
        for chunk in stream:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            # `reasoning_content` and `adapter_version` are this server's additions; the SDK keeps them as extras.
            yield Delta(id=chunk.id, model=chunk.model, version=getattr(chunk, "adapter_version", None),
                        thinking=getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None) or "",
                        answer=delta.content or "")

    def _request(self, method: str, path: str, key: str | None, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.request(method, f"{self.endpoint}/v1{path}", headers=headers, timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def feedback(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/feedback."""
        return self._request("POST", "/feedback", self.api_key, json=body)

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: the base model, the served alias and every loaded version."""
        return self._request("GET", "/models", self.api_key)["data"]

    def adapters(self) -> dict[str, Any] | None:
        """GET /v1/adapters (needs the admin key; None without one)."""
        return self._request("GET", "/adapters", self.admin_key) if self.admin_key else None
