"""The loop's typed view of the server's interaction export: the fields it reads, checked on arrival.

The loop reaches the server over HTTP only, like any client, so it does not import the server's
models (`serve/interaction.py`, documented in /openapi.json); these name the subset it trains on.
A record that does not fit is refused where it arrives (`client.py`) with the field it got wrong,
not deep in a training step. tests/online_rl/test_exported.py checks this view against the schema
a real server publishes.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

T = TypeVar("T")


class _Read(BaseModel):
    """Fields the loop does not read are ignored, so a server that adds some still works."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StoredPart(_Read):
    """A message part: text, or an image the server keeps (fetched by its sha256)."""

    type: str
    text: str | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> "StoredPart":
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type == "image" and not self.sha256:
            raise ValueError("an image part needs 'sha256'")
        return self


class StoredMessage(_Read):
    role: str
    content: list[StoredPart]


class StoredRequest(_Read):
    messages: list[StoredMessage]


class SampledChoice(_Read):
    """One sampled choice: its interaction id, the version and mode that wrote it, its text, the exact tokens
    and their behaviour logprobs (what a rollout is made of)."""

    id: str
    choice_index: int
    adapter_version: str | None
    mode: Literal["think", "direct"]
    text: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> "SampledChoice":
        if len(self.logprobs) != len(self.completion_token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.completion_token_ids)} "
                             f"completion_token_ids")
        return self


class StoredChoice(SampledChoice):
    """One stored choice of an interaction: a sampled choice with its conversation, cursor and labels."""

    cursor: str
    metadata: dict[str, str]
    problem_type: str | None
    task_type: str | None
    request: StoredRequest

    @property
    def loop_traffic(self) -> bool:
        """The loop's own rollouts and gate requests (metadata source rl-*)."""
        return self.metadata.get("source", "").startswith("rl-")


class Rating(_Read):
    """What a feedback row says about a choice."""

    thumbs: Literal["up", "down"] | None = None
    rating: int | None = None
    score: float | None = None
    correction: str | None = None
    trusted: bool | None = None


class StoredFeedback(Rating):
    """A feedback row of the export, with the choice it rates."""

    cursor: str
    interaction: StoredChoice


class Page(_Read, Generic[T]):
    """One page of an export and the cursor to resume from."""

    data: list[T]
    next_cursor: str | None
    has_more: bool


def sampled_choices(completion: dict[str, Any]) -> list[SampledChoice]:
    """The choices of a chat completion asked with `logprobs` and `return_token_ids`, as sampled choices
    (MalformedExport when the response lacks what a rollout needs)."""
    choices = completion.get("choices") if isinstance(completion, dict) else None
    rows = [{"id": completion.get("id"), "choice_index": c.get("index"), "adapter_version": completion.get(
        "adapter_version"), "mode": completion.get("mode"), "text": c.get("text"),
        "prompt_token_ids": completion.get("prompt_token_ids"), "completion_token_ids": c.get("token_ids"),
        "logprobs": [e.get("logprob") for e in ((c.get("logprobs") or {}).get("content") or [])]}
        for c in (choices if isinstance(choices, list) else []) if isinstance(c, dict)]
    return parse(_Choices, {"data": rows}, "POST /v1/chat/completions").data


class _Choices(_Read):
    data: list[SampledChoice]


class MalformedExport(ValueError):
    """The server sent an export record that does not fit what the loop trains on."""


def parse(model: Any, raw: Any, where: str) -> Any:
    """`raw` as `model`; MalformedExport naming `where` and each field that does not fit."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(the record)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise MalformedExport(f"{where}: the server sent a record the loop cannot read: {problems}") from None
