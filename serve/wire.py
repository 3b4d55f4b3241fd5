"""Base types shared by the wire models (`protocol.py`, `tool_protocol.py`, `responses_protocol.py`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def _utf8(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); tokenizers cannot encode them, so refuse them here.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


Text = Annotated[str, AfterValidator(_utf8)]


class Strict(BaseModel):
    """A request model: unknown fields are an error naming them, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """A model that keeps fields it does not know."""

    model_config = ConfigDict(extra="allow")
