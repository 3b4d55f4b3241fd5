"""Batched generation with a hard thinking budget, for evaluation and offline use.

The budget is enforced inside decoding by `ThinkingBudget`, a logits processor over
`openvlthinker.thinking.ThinkTracker` (the same tracker the serving engine uses): once a
row has spent its budget of tokens after `<thinking>` without closing it, the next tokens
are forced to be `</thinking>`, and the answer follows. Rows keep their own budgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .thinking import ThinkTracker, close_tag_suffix_ids, count_thinking


class ThinkingBudget:
    """Logits processor forcing `</thinking>` once a row's thinking reaches its token budget.

    budgets: one cap per row; None (or <= 0) leaves that row uncapped. Direct mode needs no
    cap: its prompt asks for the answer only. prompt_len: width of the (left-padded) prompt.
    """

    def __init__(self, tokenizer, budgets: Sequence[int | None], prompt_len: int):
        close_ids = close_tag_suffix_ids(tokenizer)
        self.tokenizer, self.prompt_len = tokenizer, prompt_len
        self.trackers = [ThinkTracker(close_ids, b if b is not None and b > 0 else None) for b in budgets]
        self.offsets: list[list[int]] = [[] for _ in budgets]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len:].tolist()
        for row, (tracker, offsets, ids) in enumerate(zip(self.trackers, self.offsets, gen)):
            if not tracker.enforcing:
                continue  # nothing left to enforce on this row: skip the decoding work
            text = ""
            while len(offsets) < len(ids):
                text = self.tokenizer.decode(ids[: len(offsets) + 1], skip_special_tokens=False)
                offsets.append(len(text))
                tracker.observe(text, offsets)
            forced = tracker.forced_next(text or self.tokenizer.decode(ids, skip_special_tokens=False), len(ids))
            if forced is not None:
                scores[row] = float("-inf")
                scores[row, forced] = 0.0
        return scores


@dataclass(frozen=True)
class Generation:
    """One decoded completion with its token accounting."""

    text: str
    completion_ids: list[int]
    thinking_tokens: int  # tokens from <thinking> through </thinking>
    answer_tokens: int  # the remaining completion tokens (end-of-turn excluded)
    finish_reason: str  # "stop" or "length"


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
    budget = ThinkingBudget(tok, budgets or [None] * len(texts), prompt_len)
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
        thinking = count_thinking(tok, ids)
        results.append(Generation(
            text=tok.decode(ids, skip_special_tokens=True), completion_ids=ids, thinking_tokens=thinking,
            answer_tokens=len(ids) - thinking, finish_reason="length" if end is None else "stop",
        ))
    return results
