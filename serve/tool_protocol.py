"""Function calling and JSON output on the wire: tools, tool_choice, tool calls, response_format.

The pydantic models of OpenAI's chat parameters for tools and structured outputs (they make
/openapi.json). What they mean for the prompt and the answer is in `tool_calls.py`; how the
answer is held to a JSON schema while it is decoded is in `engines/grammar.py`.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .wire import Strict, Text

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128
MAX_SCHEMA_CHARS = 65536


def _schema(v: dict[str, Any] | None, what: str) -> dict[str, Any] | None:
    """A JSON schema object of bounded size (its meaning is checked when the grammar is built)."""
    if v is None:
        return None
    if len(json.dumps(v)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"the {what} is longer than {MAX_SCHEMA_CHARS} characters of JSON")
    return v


# ----------------------------------------------------------------------------- requests

class FunctionDef(Strict):
    name: str = Field(pattern=NAME_PATTERN, description="a-z, A-Z, 0-9, _ and -, at most 64 characters")
    description: Text | None = None
    parameters: dict[str, Any] | None = Field(None, description="a JSON schema of the arguments object")
    strict: bool | None = Field(None, description="arguments are always held to the schema when the call is forced")

    @field_validator("parameters")
    @classmethod
    def _params(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _schema(v, "parameters schema")


class ToolDef(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str = Field(min_length=1)


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(Strict):
    name: str = Field(min_length=1)
    arguments: Text = Field(description="the arguments as a JSON object, in a string")


class ToolCall(Strict):
    """An assistant's tool call, as the client sends it back in the history."""

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall

    @field_validator("function")
    @classmethod
    def _json_arguments(cls, v: FunctionCall) -> FunctionCall:
        try:
            args = json.loads(v.arguments)
        except ValueError:
            raise ValueError(f"the arguments of {v.name!r} are not JSON") from None
        if not isinstance(args, dict):
            raise ValueError(f"the arguments of {v.name!r} must be a JSON object")
        return v


class JsonSchemaSpec(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: Text | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="the JSON schema the answer follows")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return _schema(v, "schema")


class ResponseFormat(Strict):
    """`text` (the default), `json_object` (any JSON object) or `json_schema` (held to the given schema)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    @model_validator(mode="after")
    def _spec(self) -> "ResponseFormat":
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("type json_schema needs 'json_schema': {'name': ..., 'schema': {...}}, "
                             "and only that type takes one")
        return self


# ---------------------------------------------------------------------------- responses

class CalledFunction(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class DeltaFunction(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunction
