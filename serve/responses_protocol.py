"""The OpenAI Responses API subset this server accepts and returns (`POST /v1/responses`).

Served: `input` as a string or a list of messages with `input_text` / `input_image` parts
(assistant turns may carry `output_text`, and `reasoning` items sent back are skipped, so
`input=[*earlier_input, *response.output, next_message]` continues a conversation),
`instructions`, `max_output_tokens`, `temperature`, `top_p`, `reasoning.effort` (plus
`auto`), `reasoning.summary`, `metadata`, `store`, `stream`, `top_logprobs` with
`include=["message.output_text.logprobs"]`, and `previous_response_id`: the stored response's
conversation (without its `instructions`, as OpenAI does) and its answer come before `input`.
`text.format`, `tool_choice`, `truncation` and `background` are accepted at the values that ask for
what this server does anyway; tools and the rest are refused with 400 naming the parameter. Our
addition, as on chat completions: `adapter_version` on the response.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .paging import CursorPage
from .protocol import Effort, Text, TextFormat, TokenLogprob, _Strict

LOGPROBS_INCLUDE = "message.output_text.logprobs"


# ----------------------------------------------------------------------------- requests

class InputContent(_Strict):
    """One part of an input message: `input_text`, `input_image`, or, in an assistant turn sent back,
    `output_text` / `refusal`; `reasoning_text` only inside a reasoning item.

    One model rather than a tagged union, so an error names `input[i].content[j].<field>`."""

    type: Literal["input_text", "input_image", "output_text", "refusal", "reasoning_text", "summary_text"]
    text: Text | None = None
    image_url: str | None = Field(None, min_length=1, description="data:image/...;base64,... "
                                                                 "(http(s) only with --allow-remote-images)")
    detail: Literal["auto", "low", "high", "original"] | None = None
    file_id: str | None = None
    refusal: str | None = None
    # What a returned output_text carries; sent back, it is ignored.
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None

    @model_validator(mode="after")
    def _matches_type(self) -> "InputContent":
        if self.type == "input_image":
            if self.file_id is not None:
                raise ValueError("file_id is not supported (this server has no Files API); "
                                 "send the image as a data: URL in 'image_url'")
            if self.image_url is None or self.text is not None:
                raise ValueError("an input_image part needs 'image_url' (and no 'text')")
        elif self.type == "refusal":
            if self.refusal is None:
                raise ValueError("a refusal part needs 'refusal'")
        elif self.text is None or self.image_url is not None:
            raise ValueError(f"an {self.type} part needs 'text' (and no 'image_url')")
        return self


class InputItem(_Strict):
    """A conversation message (`type` "message" or left out), or a reasoning item sent back (skipped:
    earlier thinking is not shown to the model, as in chat completions)."""

    type: Literal["message", "reasoning"] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Text | list[InputContent] | None = None
    # Carried by the output items a client sends back.
    id: str | None = None
    status: str | None = None
    phase: str | None = None
    summary: list[InputContent] | None = None
    encrypted_content: str | None = None

    @model_validator(mode="after")
    def _fits_type(self) -> "InputItem":
        if self.type == "reasoning":
            if self.role is not None:
                raise ValueError("a reasoning item has no 'role'")
            return self
        if self.role is None:
            raise ValueError("a message needs 'role': user, assistant, system or developer")
        if self.content is None:
            raise ValueError(f"a {self.role} message needs 'content'")
        if self.summary is not None or self.encrypted_content is not None:
            raise ValueError("'summary' and 'encrypted_content' belong to reasoning items")
        allowed = {"output_text", "refusal"} if self.role == "assistant" else {"input_text", "input_image"}
        if isinstance(self.content, list):
            for part in self.content:
                if part.type not in allowed:
                    raise ValueError(f"a {self.role} message takes {' and '.join(sorted(allowed))} parts, "
                                     f"not {part.type}")
        return self


class ReasoningParam(_Strict):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # the older name of `summary`


class TextParam(_Strict):
    format: TextFormat = None
    verbosity: Literal["low", "medium", "high"] | None = None



class ResponseStreamOptions(_Strict):
    include_obfuscation: bool | None = None  # OpenAI pads events against length side channels; nothing to pad here


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1)
    input: Text | list[InputItem]
    instructions: Text | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    reasoning: ReasoningParam | None = None
    metadata: dict[Text, Text] | None = None
    store: bool | None = None
    stream: bool = False
    stream_options: ResponseStreamOptions | None = None
    include: list[str] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: Literal["auto", "default"] | None = None
    seed: int | None = None  # not OpenAI's (send it with extra_body): as on chat completions
    text: TextParam | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto"] | None = Field(None, description="no tools: none and auto mean the same")
    parallel_tool_calls: bool | None = None
    truncation: Literal["disabled"] | None = Field(None, description="only disabled: a prompt over the context is "
                                                                     "refused, never cut")
    background: Literal[False] | None = None
    previous_response_id: str | None = Field(None, min_length=1, description="a stored response this one continues")

    @field_validator("input")
    @classmethod
    def _not_empty(cls, v: str | list[InputItem]) -> str | list[InputItem]:
        if not v:
            raise ValueError("input needs a question: a non-empty string or at least one message")
        return v

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            if item != LOGPROBS_INCLUDE:
                raise ValueError(f"only {LOGPROBS_INCLUDE!r} can be included (got {item[:60]!r})")
        return v

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        if v:
            raise ValueError("this server has no tools (function calling is not supported)")
        return v



class InputTokensRequest(ResponsesRequest):
    """`POST /v1/responses/input_tokens`: what a create request would send, counted instead of answered;
    `model` may be left out (the served model)."""

    model: str | None = Field(None, min_length=1)  # type: ignore[assignment]


class InputTokens(BaseModel):
    object: Literal["response.input_tokens"] = "response.input_tokens"
    input_tokens: int


# ---------------------------------------------------------------------------- responses

class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = []
    logprobs: list[TokenLogprob] | None = None


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class SummaryText(BaseModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


Status = Literal["in_progress", "completed", "incomplete"]


class ReasoningItem(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[SummaryText] = []
    content: list[ReasoningText] = []
    status: Status


class MessageItem(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Status
    content: list[OutputText] = []


class InputTextPart(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class InputImagePart(BaseModel):
    type: Literal["input_image"] = "input_image"
    image_url: str  # a data: URL of the stored image
    detail: Literal["auto", "low", "high"] = "auto"
    file_id: None = None


class InputMessageItem(BaseModel):
    """A message of a response's input as `GET /v1/responses/{id}/input_items` lists it."""

    type: Literal["message"] = "message"
    id: str
    role: Literal["user", "system", "developer"]
    status: Literal["completed"] = "completed"
    content: list[InputTextPart | InputImagePart] = []


class InputItemList(CursorPage[InputMessageItem | MessageItem]):
    pass


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = InputTokensDetails()
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseError(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    id: str = Field(description="the interaction id: send it to /v1/feedback")
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[ReasoningItem | MessageItem] = []
    usage: ResponseUsage | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    metadata: dict[str, str] = {}
    temperature: float
    top_p: float
    max_output_tokens: int | None = None
    top_logprobs: int | None = None
    reasoning: dict[str, Any] = {}
    text: dict[str, Any] = {"format": {"type": "text"}}
    tools: list[Any] = []
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    truncation: str = "disabled"
    store: bool = True
    background: bool = False
    user: str | None = None
    service_tier: str = "default"
    adapter_version: str | None = None


class DeletedResponse(BaseModel):
    """What `DELETE /v1/responses/{id}` returns."""

    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
