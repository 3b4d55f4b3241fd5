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


class StoredChoice(_Read):
    """One stored choice of an interaction: its conversation, its text and the exact tokens sampled."""

    id: str
    choice_index: int
    cursor: str
    adapter_version: str | None
    mode: Literal["think", "direct"]
    metadata: dict[str, str]
    problem_type: str | None
    task_type: str | None
    text: str
    prompt_token_ids: list[int]
    completion_token_ids: list[int]
    logprobs: list[float]
    request: StoredRequest

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> "StoredChoice":
        if len(self.logprobs) != len(self.completion_token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.completion_token_ids)} "
                             f"completion_token_ids")
        return self

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
