"""The OpenAI wire subset this server accepts and returns (pydantic models; they make /openapi.json).

Served: chat completions with text and `image_url` parts, `n`, sampling knobs (with vLLM's `top_k`,
`min_p`, `repetition_penalty`), `stop`, `seed`, `presence_penalty`/`frequency_penalty`, `logit_bias`,
`logprobs`/`top_logprobs`, `stream` (+ `stream_options.include_usage`), `reasoning_effort`,
`metadata`, vLLM's `return_token_ids`, function calling (`tools`, `tool_choice`, `parallel_tool_calls`,
tool calls and tool results in the history, `tool_protocol.py`), `response_format` (`text`, `json_object`,
`json_schema`), `chat_template_kwargs.enable_thinking`; models list. Our additions:
`message.reasoning_content`/`reasoning`, top-level `adapter_version`, feedback, adapter admin
and the interaction export. `store: false` keeps the interaction out of the store (and so out of
learning). `modalities` is accepted at `["text"]`, `service_tier` at `auto`/`default`. Anything
else (audio, ...) is rejected with 400 naming the parameter, rather than being silently ignored.
The Responses API (`responses_protocol.py`) is translated onto these models.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .interaction import FeedbackList, Interaction, InteractionList  # noqa: F401 (the export's wire models)
from .tool_protocol import (MAX_TOOLS, DeltaToolCall, NamedToolChoice, ResponseFormat, ToolCall, ToolCallOut,
                            ToolChoice, ToolDef)
from .wire import Open, Strict, Text

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max", "auto"]
INT64 = 2**63
MAX_LOGIT_BIAS = 1024

_Strict, _Open = Strict, Open


# ----------------------------------------------------------------------------- requests

class ImageURL(_Strict):
    url: str = Field(min_length=1, description="data:image/...;base64,... (http(s) only with --allow-remote-images)")
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Strict):
    """`{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ...}}`.

    One model rather than a tagged union, so validation errors point at `content[i].image_url.url`
    without pydantic's branch labels in the way.
    """

    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> "ContentPart":
        if self.type == "text" and (self.text is None or self.image_url is not None):
            raise ValueError("a text part needs 'text' (and no 'image_url')")
        if self.type == "image_url" and (self.image_url is None or self.text is not None):
            raise ValueError("an image_url part needs 'image_url': {'url': ...} (and no 'text')")
        return self


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[ContentPart] | None = None
    name: str | None = None
    # Accepted on assistant turns so clients can send back what we returned; not shown to the model.
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="assistant turns: the calls it made")
    tool_call_id: str | None = Field(None, description="tool turns: the call this is the result of")

    @model_validator(mode="after")
    def _content_required(self) -> "ChatMessage":
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.tool_call_id is not None) != (self.role == "tool"):
            raise ValueError("a tool message needs tool_call_id, and only tool messages take one")
        if self.role == "tool" and isinstance(self.content, list) and any(p.type != "text" for p in self.content):
            raise ValueError("a tool message's content is text")
        return self


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(None, description="token id (as a string) -> bias, -100..100")
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Text | list[Text] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: Effort = "auto"
    metadata: dict[Text, Text] | None = None
    user: str | None = None
    # Unlike OpenAI's, this server keeps every interaction by default: the online loop learns from them.
    store: bool | None = Field(None, description="false: do not keep this interaction (it cannot get feedback "
                                                 "and is not learned from)")
    service_tier: Literal["auto", "default"] | None = Field(None, description="one tier: auto or default")
    tools: list[ToolDef] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = Field(None, description="none | auto (the default with tools) | required | "
                                                             "{type: function, function: {name}}")
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call per answer")
    response_format: ResponseFormat | None = None
    # Sampling knobs of vLLM's server that its users send.
    top_k: int | None = Field(None, ge=-1, description="keep the k most likely tokens; -1 or 0: all")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="drop tokens below min_p x the top probability")
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0,
                                             description="divide the logits of prompt and output tokens (1: off)")
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="only enable_thinking (true/false)")
    # Accepted only at the value that asks for what this server does anyway (clients send it by default).
    modalities: list[Literal["text"]] | None = Field(None, description='only ["text"]')
    # vLLM's name: the exact tokens beside the text, so a client (the RL loop) has a rollout in one call.
    return_token_ids: bool | None = Field(None, description="true: prompt_token_ids and the reasoning mode on the "
                                                            "response (in a stream: once, on the first choice's last "
                                                            "chunk), token_ids on each choice (in a stream: each "
                                                            "chunk's new tokens) and, not streamed, each choice's "
                                                            "whole text as the model wrote it, tags included")


    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if not v:
            return None
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} logit_bias entries")
        for key, bias in v.items():
            if not (key.isascii() and key.isdigit() and len(key) <= 10):  # isdigit alone admits "²"
                raise ValueError(f"logit_bias keys are token ids (non-negative integers as strings); got {key[:40]!r}")
            if not -100 <= bias <= 100:  # NaN fails too
                raise ValueError(f"logit_bias[{key!r}] = {bias} is outside -100..100")
        return v

    def token_bias(self) -> tuple[tuple[int, float], ...]:
        """logit_bias as (token id, bias) pairs, by id."""
        return tuple(sorted((int(k), float(b)) for k, b in (self.logit_bias or {}).items()))

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return None
        if len(v) > 16:
            raise ValueError("at most 16 metadata keys")
        for key, value in v.items():
            if not key or len(key) > 64:
                raise ValueError(f"metadata key {key[:70]!r} must have 1..64 characters")
            if len(value) > 8192:
                raise ValueError(f"metadata value of {key!r} is longer than 8192 characters")
        return v

    @field_validator("chat_template_kwargs")
    @classmethod
    def _template_kwargs(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, value in (v or {}).items():
            if key != "enable_thinking":
                raise ValueError(f"unsupported key {key[:40]!r}: only enable_thinking is understood (the model's "
                                 f"template takes no other options)")
            if not isinstance(value, bool):
                raise ValueError("enable_thinking must be true or false")
        return v

    @model_validator(mode="after")
    def _logprobs(self) -> "ChatCompletionRequest":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs=true")
        return self

    @model_validator(mode="after")
    def _tools(self) -> "ChatCompletionRequest":
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
        choice = self.tool_choice
        if choice not in (None, "none", "auto") and not names:
            raise ValueError("tool_choice that calls a tool needs tools")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools {names}")
        if self.forced_tools() and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("tool_choice forces a tool call, so the answer cannot also follow response_format")
        calls: set[str] = set()
        for i, msg in enumerate(self.messages):
            calls.update(c.id for c in msg.tool_calls or [])
            if msg.role == "tool" and msg.tool_call_id not in calls:
                raise ValueError(f"messages[{i}] answers tool_call_id {msg.tool_call_id!r}, which no earlier "
                                 f"assistant message called")
        return self

    def tools_offered(self) -> list[ToolDef]:
        """The tools the model is shown: all of them unless tool_choice is none."""
        return [] if self.tool_choice == "none" else list(self.tools or [])

    def forced_tools(self) -> list[ToolDef]:
        """The tools one of which the answer must call (tool_choice required or named), else []."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return [t for t in self.tools or [] if t.function.name == self.tool_choice.function.name]
        return list(self.tools or []) if self.tool_choice == "required" else []

    def parallel_calls(self) -> bool:
        """Whether one answer may make several calls: not with parallel_tool_calls false, nor with a named
        tool_choice, which (as in OpenAI's API) asks for exactly one call of that function."""
        return self.parallel_tool_calls is not False and not isinstance(self.tool_choice, NamedToolChoice)

    def thinking_switch(self) -> bool | None:
        """chat_template_kwargs.enable_thinking, if given."""
        return (self.chat_template_kwargs or {}).get("enable_thinking")


class FeedbackRequest(_Strict):
    id: str = Field(min_length=1, description="the chat completion (interaction) id")
    choice_index: int = Field(0, ge=0)
    thumbs: Literal["up", "down"] | None = None
    rating: int | None = Field(None, ge=1, le=5)
    score: float | None = Field(None, ge=0.0, le=1.0)
    correction: Text | None = Field(None, min_length=1, max_length=65536)
    comment: Text | None = Field(None, max_length=65536)

    @model_validator(mode="after")
    def _one_signal(self) -> "FeedbackRequest":
        if self.thumbs is None and self.rating is None and self.score is None and self.correction is None:
            raise ValueError("give at least one of thumbs, rating, score or correction")
        return self


class LoadAdapterRequest(_Strict):
    version: str | None = Field(None, description="vNNNN: loads <adapters-dir>/policy-vNNNN")
    path: str | None = Field(None, description="a folder relative to --adapters-dir")

    @model_validator(mode="after")
    def _one(self) -> "LoadAdapterRequest":
        if (self.version is None) == (self.path is None):
            raise ValueError("give exactly one of version or path")
        return self


class VersionRequest(_Strict):
    version: str = Field(min_length=1)


# ---------------------------------------------------------------------------- responses

class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails = CompletionTokensDetails()


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason
    token_ids: list[int] | None = Field(None, description="return_token_ids: the completion's tokens, "
                                                          "end-of-turn token included")
    text: str | None = Field(None, description="return_token_ids: the completion as the model wrote it, thinking "
                                               "and answer tags included (what a grader reads)")


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str
    adapter_version: str | None = None
    prompt_token_ids: list[int] | None = Field(None, description="return_token_ids: the prompt as the engine saw it")
    mode: Literal["think", "direct"] | None = Field(None, description="return_token_ids: the reasoning mode the "
                                                                      "router chose for this request")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: FinishReason | None = None
    token_ids: list[int] | None = Field(None, description="return_token_ids: the tokens this chunk adds")


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str
    adapter_version: str | None = None
    usage: Usage | None = None
    prompt_token_ids: list[int] | None = None
    mode: Literal["think", "direct"] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "openvlthinker"
    root: str | None = None  # the base model or the version an alias points at
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    interaction_id: str
    choice_index: int
    created: int


class AdapterInfo(BaseModel):
    version: str
    name: str  # what clients pass as `model` to pin it
    path: str  # relative to --adapters-dir
    loaded: bool
    promoted: bool
    engine_name: str | None = None
    in_flight: int = 0
    parent: str | None = None
    metrics: dict[str, Any] = {}


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    promoted: str | None
    data: list[AdapterInfo]


class Health(BaseModel):
    status: Literal["ok", "starting"]
    engine_ready: bool
    model: str
    served_name: str
    promoted: str | None
