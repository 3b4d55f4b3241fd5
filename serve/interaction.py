"""The stored interaction: what the gateway keeps of each returned choice, and what the export serves.

One `InteractionRecord` per choice is built when a request finishes (`chat.py`) and written as a row
(`store.store.row_of`); read back it is an `Interaction`, which adds its cursor, feedback and whether
it is gradable (`store.store.to_dict`). The admin export (`GET /v1/interactions`, `/v1/feedback`,
`/v1/interactions/{id}`) serves these models, so /openapi.json documents every field the RL loop
reads. Images are never inline: a stored message part names its image by sha256 (`GET /v1/images/{sha256}`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StoredPart(BaseModel):
    """One part of a stored message: text, or an image kept by its sha256."""

    model_config = ConfigDict(extra="allow")

    type: Literal["text", "image"]
    text: str | None = Field(None, description="text parts")
    sha256: str | None = Field(None, description="image parts: the stored image, GET /v1/images/{sha256}")


class StoredMessage(BaseModel):
    """One message of the conversation as asked (images replaced by their sha256)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: list[StoredPart]
    tool_calls: list[dict[str, Any]] | None = Field(None, description="assistant messages: the calls it made")
    tool_call_id: str | None = Field(None, description="tool messages: the call this is the result of")


class StoredRequest(BaseModel):
    """What the request asked: its messages and sampling parameters, the instruction the gateway added.

    The Responses API keeps its own fields beside these (`api: "responses"`, `instructions`, ...)."""

    model_config = ConfigDict(extra="allow")

    messages: list[StoredMessage]
    params: dict[str, Any] = Field(description="the sampling parameters as asked (model, temperature, n, "
                                               "max_tokens as applied, seed, ...)")
    instruction: str | None = Field(None, description="the answer-format instruction appended to the question")
    created: int | None = Field(None, description="the request's arrival, unix seconds (the response's `created`)")
    system_fingerprint: str | None = None


class InteractionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int


class InteractionRecord(BaseModel):
    """One returned choice as the gateway logs it: the conversation, the answer, the exact tokens."""

    id: str = Field(description="the chat completion (or response) id, shared by the n choices of one request")
    choice_index: int = Field(ge=0)
    created: float = Field(description="when the choice was logged, unix seconds")
    model: str = Field(description="the concrete name that answered (base model or alias@version)")
    adapter_version: str | None = Field(description="the adapter version that produced it; null: the base model")
    effort: str = Field(description="the reasoning effort as planned")
    mode: Literal["think", "direct"] = Field(description="think: the answer was to reason in a thinking block first")
    budget: int = Field(description="the thinking budget in tokens (0: none)")
    budget_hit: bool
    request: StoredRequest
    metadata: dict[str, Any] = Field(description="the request's metadata")
    problem_type: str | None = Field(description="metadata.problem_type (null: none given)")
    task_type: str | None = Field(description="metadata.task_type (null: none)")
    thinking: str = Field(description="the thinking block's text, tags stripped")
    answer: str = Field(description="the answer's text, tags stripped")
    text: str = Field(description="the whole completion text, tags included (what the token ids decode to)")
    prompt_token_ids: list[int] = Field(description="the prompt exactly as the engine saw it")
    completion_token_ids: list[int] = Field(description="the sampled tokens, end-of-turn token included")
    logprobs: list[float] = Field(description="behaviour logprobs: one per completion token")
    finish_reason: str
    usage: InteractionUsage
    latency_s: float | None = Field(description="arrival to this choice's last token, seconds")
    stream: bool

    @model_validator(mode="after")
    def _one_logprob_per_token(self) -> "InteractionRecord":
        if len(self.logprobs) != len(self.completion_token_ids):
            raise ValueError(f"logprobs has {len(self.logprobs)} entries for {len(self.completion_token_ids)} "
                             f"completion_token_ids")
        return self


class FeedbackRecord(BaseModel):
    """One rating or correction of a choice (POST /v1/feedback)."""

    id: str
    created: float
    thumbs: Literal["up", "down"] | None
    rating: int | None
    score: float | None
    correction: str | None
    comment: str | None
    key_hash: str | None = Field(description="who sent it: a prefix of the sha256 of their key (null: unknown)")
    trusted: bool | None = Field(description="whether that key's feedback may train (null: unknown, never trained on)")


class Interaction(InteractionRecord):
    """A stored choice as exported: its record, its cursor, and the feedback given on it."""

    cursor: str = Field(description="its place in the store; /v1/interactions?after=<cursor> pages past it")
    gradable: bool = Field(description="it has a reference answer (metadata.reference_answer) or feedback")
    feedback: list[FeedbackRecord] = Field(default_factory=list)


class FeedbackItem(FeedbackRecord):
    """A feedback row as exported, with the choice it rates."""

    cursor: str = Field(description="its place among feedback; /v1/feedback?after=<cursor> pages past it")
    interaction: Interaction


class InteractionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Interaction]
    next_cursor: str | None
    has_more: bool


class FeedbackList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FeedbackItem]
    next_cursor: str | None
    has_more: bool
