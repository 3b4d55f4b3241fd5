"""The OpenAI Responses API subset this server accepts and returns (`POST /v1/responses`).

Served: `input` as a string or a list of messages with `input_text` / `input_image` parts
(assistant turns may carry `output_text`, and `reasoning` items sent back are skipped, so
`input=[*earlier_input, *response.output, next_message]` continues a conversation),
`instructions`, `max_output_tokens`, `temperature`, `top_p`, `reasoning.effort` (plus
`auto`), `reasoning.summary`, `metadata`, `store`, `stream`, `top_logprobs` with
`include=["message.output_text.logprobs"]`, and `previous_response_id`: the stored response's
conversation (without its `instructions`, as OpenAI does) and its answer come before `input`.
Function calling and JSON output map onto the chat parameters: function `tools` (flat, as the
Responses API writes them), `tool_choice` (`none`, `auto`, `required`, `{"type": "function",
"name"}`), `parallel_tool_calls`, `function_call` and `function_call_output` input items, and
`text.format` `text` / `json_object` / `json_schema`. `truncation` and `background` are accepted at
the values that ask for what this server does anyway; other tool types and the rest are refused
with 400 naming the parameter. Our addition, as on chat completions: `adapter_version` on the response.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from .paging import CursorPage
from .protocol import Effort, Text, TokenLogprob, _Strict
from .tool_protocol import NAME_PATTERN, FunctionDef, JsonSchemaSpec

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
    """A conversation message (`type` "message" or left out), a reasoning item sent back (skipped:
    earlier thinking is not shown to the model, as in chat completions), a `function_call` sent back or
    the `function_call_output` that answers it."""

    type: Literal["message", "reasoning", "function_call", "function_call_output"] = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: Text | list[InputContent] | None = None
    call_id: str | None = Field(None, min_length=1, max_length=256)
    name: str | None = Field(None, min_length=1)
    arguments: Text | None = None
    output: Text | None = None
    # Carried by the output items a client sends back.
    id: str | None = None
    status: str | None = None
    phase: str | None = None
    summary: list[InputContent] | None = None
    encrypted_content: str | None = None

    @model_validator(mode="after")
    def _fits_type(self) -> "InputItem":
        needs = {"function_call": ("call_id", "name", "arguments"), "function_call_output": ("call_id", "output")}
        if self.type in needs:
            missing = [f for f in needs[self.type] if getattr(self, f) is None]
            if missing or self.role is not None or self.content is not None:
                raise ValueError(f"a {self.type} item needs {', '.join(repr(f) for f in needs[self.type])} "
                                 f"(and no 'role' or 'content')")
            if self.arguments is not None and not _json_object(self.arguments):
                raise ValueError("'arguments' must be a JSON object, in a string")
            return self
        if self.call_id is not None or self.name is not None or self.arguments is not None or self.output is not None:
            raise ValueError("'call_id', 'name', 'arguments' and 'output' belong to function_call(_output) items")
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


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


class ReasoningParam(_Strict):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None  # the older name of `summary`


class TextFormat(_Strict):
    """`text.format`: `text`, `json_object`, or `json_schema` with its `name` and `schema` alongside the type."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, pattern=NAME_PATTERN)
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _spec(self) -> "TextFormat":
        if (self.type == "json_schema") != (self.name is not None and self.schema_ is not None):
            raise ValueError("type json_schema needs 'name' and 'schema' (a JSON schema), and only that type "
                             "takes them")
        return self

    def chat(self) -> dict[str, Any]:
        """The chat completion's `response_format`."""
        if self.type != "json_schema":
            return {"type": self.type}
        spec = JsonSchemaSpec.model_validate(self.model_dump(by_alias=True, exclude={"type"}, exclude_none=True))
        return {"type": "json_schema", "json_schema": spec.model_dump(by_alias=True, exclude_none=True)}


class TextParam(_Strict):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class FunctionTool(FunctionDef):
    """A function the model may call, as the Responses API writes it (flat: no `function` wrapper)."""

    type: Literal["function"] = Field(description="only function tools are served")

    @model_validator(mode="before")
    @classmethod
    def _function_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") != "function":
            raise ValueError(f"only function tools are served (got type {str(data.get('type'))[:40]!r})")
        return data

    def chat(self) -> dict[str, Any]:
        """The chat completion's form of the tool."""
        return {"type": "function", "function": self.model_dump(exclude={"type"}, exclude_none=True)}


class FunctionChoice(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1)



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
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
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

    @field_validator("tool_choice")
    @classmethod
    def _choice_among_tools(cls, v: Any, info: ValidationInfo) -> Any:
        names = [t.name for t in info.data.get("tools") or []]
        if isinstance(v, FunctionChoice) and v.name not in names:
            raise ValueError(f"tool_choice names {v.name!r}, which is not among the tools {names}")
        if v == "required" and not names:
            raise ValueError("tool_choice required needs tools")
        return v

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            if item != LOGPROBS_INCLUDE:
                raise ValueError(f"only {LOGPROBS_INCLUDE!r} can be included (got {item[:60]!r})")
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


class FunctionCallItem(BaseModel):
    """A call the answer makes; the client runs it and sends a `function_call_output` with its `call_id`."""

    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Status = "completed"


class FunctionCallOutputItem(BaseModel):
    """A tool result of a response's input, as `input_items` lists it."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str
    call_id: str
    output: str
    status: Literal["completed"] = "completed"


OutputItem = ReasoningItem | MessageItem | FunctionCallItem


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


class InputItemList(CursorPage[InputMessageItem | MessageItem | FunctionCallItem | FunctionCallOutputItem]):
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
    output: list[OutputItem] = []
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
    tools: list[dict[str, Any]] = []
    tool_choice: str | dict[str, Any] = "auto"
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
