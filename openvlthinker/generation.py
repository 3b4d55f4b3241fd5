"""Batched generation with a hard thinking budget, for evaluation and offline use.

The budget is enforced inside decoding by `ThinkingBudget`, a logits processor: once a
row has spent its budget of tokens after `<thinking>` without closing it, the next token
is forced to be `</thinking>`, and the answer follows. Rows keep their own budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

THINK_OPEN, THINK_CLOSE = "<thinking>", "</thinking>"


class ThinkingBudget:
    """Logits processor forcing `</thinking>` once a row's thinking reaches its token budget.

    budgets: one cap per row; None (or <= 0) leaves that row uncapped. Direct mode needs no
    cap: its prompt asks for the answer only. prompt_len: width of the (left-padded) prompt.
    """

    def __init__(self, budgets: Sequence[int | None], open_id: int, close_id: int, prompt_len: int):
        self.budgets = torch.tensor([b if b is not None and b > 0 else -1 for b in budgets])
        self.open_id, self.close_id, self.prompt_len = open_id, close_id, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len:]
        if gen.shape[1] == 0:
            return scores
        opened = gen == self.open_id
        has_open = opened.any(dim=1)
        closed = (gen == self.close_id).any(dim=1)
        # Tokens generated after the first <thinking> (argmax finds the first True).
        first_open = torch.where(has_open, opened.float().argmax(dim=1), torch.full_like(has_open, gen.shape[1], dtype=torch.long))
        spent = gen.shape[1] - 1 - first_open
        force = has_open & ~closed & (self.budgets >= 0) & (spent >= self.budgets)
        if force.any():
            scores[force] = float("-inf")
            scores[force, self.close_id] = 0.0
        return scores


@dataclass(frozen=True)
class Generation:
    """One decoded completion with its token accounting."""

    text: str
    completion_ids: list[int]
    thinking_tokens: int  # tokens from <thinking> through </thinking>
    answer_tokens: int  # the remaining completion tokens (end-of-turn excluded)
    finish_reason: str  # "stop" or "length"


def count_thinking(ids: Sequence[int], open_id: int, close_id: int) -> int:
    """Number of tokens from the first `<thinking>` through its `</thinking>` (or the end)."""
    if open_id not in ids:
        return 0
    start = list(ids).index(open_id)
    rest = list(ids[start:])
    return rest.index(close_id) + 1 if close_id in rest else len(rest)


@torch.inference_mode()
def generate_batch(
    model, processor, conversations: Sequence[tuple[list[dict[str, Any]], list[Any]]], *,
    budgets: Sequence[int | None] | None = None, max_new_tokens: int = 512,
    temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
) -> list[Generation]:
    """Generate for several (messages, images) conversations together (left padding)."""
    tok = processor.tokenizer
    texts = [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m, _ in conversations]
    images = [img for _, imgs in conversations for img in imgs]
    enc = processor(text=texts, images=images or None, return_tensors="pt", padding=True, padding_side="left")
    enc = enc.to(model.device)
    prompt_len = enc["input_ids"].shape[1]
    open_id, close_id = tok.convert_tokens_to_ids(THINK_OPEN), tok.convert_tokens_to_ids(THINK_CLOSE)
    budget = ThinkingBudget(budgets or [None] * len(texts), open_id, close_id, prompt_len)
    if seed is not None:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    out = model.generate(
        **enc, max_new_tokens=max_new_tokens, logits_processor=[budget], pad_token_id=tok.pad_token_id,
        **sampling,
    )
    stop_ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id, tok.pad_token_id}
    results = []
    for row in out[:, prompt_len:].tolist():
        end = next((i for i, t in enumerate(row) if t in stop_ids), None)
        ids = row if end is None else row[:end]
        thinking = count_thinking(ids, open_id, close_id)
        results.append(Generation(
            text=tok.decode(ids, skip_special_tokens=True), completion_ids=ids, thinking_tokens=thinking,
            answer_tokens=len(ids) - thinking, finish_reason="length" if end is None else "stop",
        ))
    return results
