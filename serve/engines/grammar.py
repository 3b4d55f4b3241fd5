"""Structured outputs: hold a completion to a JSON schema while it is decoded (llguidance).

The grammar covers the whole completion, tags included, so the answer keeps the shape the
graders and the reasoning split read: in think mode `<thinking>`, thinking text without a
"<", `</thinking>`; then `<answer>`, JSON that follows the schema, `</answer>` and the end of
the turn. A tag that is one token of the tokenizer is named by its id (`<[id]>`, llguidance's
syntax for special tokens), otherwise it is spelt as text: the same grammar fits the tiny
tokenizer, whose tags are single tokens, and Qwen's, where they are several. The vLLM engine
sends the same grammar text, on the pass that writes the answer, to vLLM's guidance backend.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Literal, Sequence

import torch

from openvlthinker.thinking import THINK_CLOSE, THINK_OPEN

__all__ = ["GrammarMasks", "answer_grammar", "schema_error"]

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
Start = Literal["think", "answer"]  # from the top of a thinking completion, or at the answer


def _tag(tokenizer: Any, tag: str) -> str:
    """The tag as a grammar terminal: its token id when it is a single added token, else the literal text."""
    if tokenizer is not None:
        ids = tokenizer.encode(tag, add_special_tokens=False)
        if len(ids) == 1 and tag in tokenizer.get_added_vocab():
            return f"<[{ids[0]}]>"
    return json.dumps(tag)


def answer_grammar(schema: str, tokenizer: Any = None, start: Start = "answer") -> str:
    """Lark grammar (llguidance dialect) of a completion whose answer follows the JSON schema `schema`."""
    open_think, close_think = _tag(tokenizer, THINK_OPEN), _tag(tokenizer, THINK_CLOSE)
    answer = f'/[ \\n]*/ {_tag(tokenizer, ANSWER_OPEN)} body {_tag(tokenizer, ANSWER_CLOSE)}'
    head = {"think": f"{open_think} /[^<]*/ {close_think} ", "answer": ""}[start]
    return f"start: {head}{answer}\nbody: %json {_compact(schema)}\n"


def _compact(schema: str) -> str:
    """The schema with JSON written compactly: no optional whitespace, which a weak model can repeat forever."""
    obj = json.loads(schema)
    if isinstance(obj, dict) and "x-guidance" not in obj:
        obj = {**obj, "x-guidance": {"whitespace_flexible": False}}
    return json.dumps(obj, ensure_ascii=False)


@lru_cache(maxsize=256)
def schema_error(schema: str) -> str:
    """Why the JSON schema `schema` (JSON text) cannot hold an answer; "" when it can."""
    import llguidance

    return llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", answer_grammar(schema)))


class GrammarMasks:
    """Matchers for one tokenizer, and the per-step masking of a batch's logits by them."""

    def __init__(self, tokenizer: Any, end_id: int):
        self.tokenizer, self.end_id = tokenizer, end_id
        self._lltok = None
        self._compiled: dict[str, str] = {}

    def matcher(self, schema: str, start: Start) -> Any:
        """A fresh llguidance matcher for one completion."""
        import llguidance
        import llguidance.hf

        if self._lltok is None:
            self._lltok = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=len(self.tokenizer), eos_token=self.end_id)
        key = f"{start}\n{schema}"
        if key not in self._compiled:
            if len(self._compiled) > 256:
                self._compiled.clear()
            self._compiled[key] = llguidance.grammar_from("lark", answer_grammar(schema, self.tokenizer, start))
        matcher = llguidance.LLMatcher(self._lltok, self._compiled[key])
        if matcher.is_error():
            raise ValueError(f"the answer schema does not compile: {matcher.get_error()}")
        return matcher

    def apply(self, logits: torch.Tensor, rows: Sequence[int], matchers: Sequence[Any]) -> None:
        """Set to -inf, in place, the logits of `rows` that their matchers do not allow next."""
        import llguidance.torch as lt

        bitmask = lt.allocate_token_bitmask(len(rows), len(self.tokenizer))
        for j, m in enumerate(matchers):
            lt.fill_next_token_bitmask(m, bitmask, j)
        bits = torch.arange(32, dtype=torch.int32)
        allowed = ((bitmask[:, :, None] >> bits) & 1).bool().reshape(len(rows), -1)
        vocab = logits.shape[-1]
        keep = torch.zeros(len(rows), vocab, dtype=torch.bool, device=logits.device)
        width = min(vocab, allowed.shape[1])
        keep[:, :width] = allowed[:, :width].to(logits.device)  # ids past the tokenizer's are never allowed
        index = torch.tensor(list(rows), device=logits.device)
        logits[index] = logits[index].masked_fill(~keep, float("-inf"))
