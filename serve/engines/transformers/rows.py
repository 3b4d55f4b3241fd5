"""Decode state of every row of the running batch, and the per-step token choice.

`pick_tokens` takes the logits of one decoding step and picks every row's token itself
(forced by the thinking budget, greedy, or sampled with the row's own knobs, see `sampling`,
from logits shifted by the row's logit_bias, presence/frequency and repetition penalties, and masked
by its answer grammar when it has one), records its raw
logprob and advances the row's `RowState`: text delta, thinking block, stop strings, max_tokens.
Events go out the moment they exist, and a row's GenerationResult the moment that row ends, not
when the batch does. (This is where the token, its logprobs and the row's text are known
together, so streaming starts here.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..base import GenerationRequest, GenerationResult, TokenEvent
from ..grammar import GrammarMasks
from ..text import IncrementalDetokenizer, StopWatch
from .sampling import GREEDY_EPS, choose_tokens, make_generator, top_logprobs
from openvlthinker.thinking import THINK_OPEN, ThinkTracker, close_tag_suffix_ids

__all__ = ["DecodeContext", "Emit", "RowState", "pick_tokens"]

VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
Emit = Callable[[list[tuple[Any, Any]]], None]  # [(job, TokenEvent | GenerationResult), ...]


@dataclass
class DecodeContext:
    """Tokenizer-level facts shared by all rows: end-of-turn ids, close-tag ids, token strings."""

    tokenizer: Any
    eos_ids: frozenset[int]
    pad_id: int
    close_ids: dict[int, list[int]]
    banned: tuple[int, ...] = ()  # vision placeholder tokens: never generated (see from_tokenizer)
    _token_text: dict[int, str] = field(default_factory=dict)
    _grammars: GrammarMasks | None = None

    @property
    def grammars(self) -> GrammarMasks:
        """Matchers for answers held to a JSON schema (built on first use: most servers never need them)."""
        if self._grammars is None:
            end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            end = end if isinstance(end, int) and end != self.tokenizer.unk_token_id else min(self.eos_ids)
            self._grammars = GrammarMasks(self.tokenizer, end)
        return self._grammars

    @classmethod
    def from_tokenizer(cls, tokenizer, extra_eos: Sequence[int] = ()) -> "DecodeContext":
        """Build from a tokenizer; `<|im_end|>`, its eos and `extra_eos` all end a completion."""
        eos = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"), *extra_eos)
               if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        # An image placeholder in a completion has no pixels behind it: the trainer (and any
        # later turn) could not even run the model on it. Sampling such a token is never valid.
        vision = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
        banned = tuple(sorted({i for i in vision if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}))
        return cls(tokenizer, frozenset(eos), pad, close_tag_suffix_ids(tokenizer), banned=banned)

    def token_text(self, token_id: int) -> str:
        """Text of a single token (cached: top_logprobs ask for the same ids again and again)."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._token_text[token_id] = text
        return text


class RowState:
    """One request's completion as it is decoded: ids, logprobs, text, thinking, finish."""

    def __init__(self, job: Any, request: GenerationRequest, prompt_ids: list[int], ctx: DecodeContext,
                 device: torch.device | str, prefix: str = ""):
        s = request.sampling
        self.job, self.request, self.prompt_ids, self.ctx = job, request, prompt_ids, ctx
        self.temperature, self.top_p = float(s.temperature), float(s.top_p)
        self.k = int(s.top_logprobs)
        self.stops = StopWatch(s.stop)
        self.max_tokens = int(s.max_tokens)
        self.generator = make_generator(s.seed, device) if self.temperature > GREEDY_EPS else None
        self.shapes_logits = s.shapes_logits()
        self._offsets: torch.Tensor | None = None  # logit_bias minus the penalties, kept up to date per token
        self._seen: set[int] = set()
        budget = request.thinking_budget if request.mode == "think" and request.thinking_budget > 0 else None
        self.think = ThinkTracker(ctx.close_ids, budget=budget, prefix=prefix)
        # vLLM's repetition penalty counts the prompt's tokens as well as the completion's.
        self._repeated = set(prompt_ids) if s.repetition_penalty != 1.0 else None
        # An answer held to a schema: in think mode the block is opened by force and thought in freely (it may
        # not end the turn there); the grammar takes over once the block has closed.
        self.grammar = None
        self._opening: list[int] = []
        if request.answer_schema is not None:
            if request.mode == "think":
                self._opening = ctx.tokenizer.encode(THINK_OPEN, add_special_tokens=False)
            else:
                self.grammar = ctx.grammars.matcher(request.answer_schema, "answer")
        self.detok = IncrementalDetokenizer(ctx.tokenizer)
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.tops: list[tuple[tuple[str, float], ...]] = []
        self.text, self.offsets = "", []
        self.finished = False

    @property
    def live(self) -> bool:
        """Still decoding: neither finished nor abandoned by its client."""
        return not self.finished and not getattr(self.job, "cancelled", False)

    def forced_next(self) -> int | None:
        """The token the thinking budget (or a held answer's opening tag) imposes next, if any."""
        if self._opening:
            return self._opening[0]
        return self.think.forced_next(self.text, len(self.ids))

    @property
    def thinking_before_grammar(self) -> bool:
        """A held answer still in its free thinking block: the turn may not end yet."""
        return self.request.answer_schema is not None and self.grammar is None

    def _after_token(self, token: int) -> None:
        """Advance the opening tag and the grammar past `token`."""
        if self._opening and token == self._opening[0]:
            self._opening.pop(0)
        elif self.grammar is not None and not self.grammar.consume_token(token):
            # Only a forced token can disagree with the grammar (sampled ones come from its mask).
            raise RuntimeError(f"token {token} broke the answer grammar: {self.grammar.get_error()}")
        if self.thinking_before_grammar and not self._opening and self.think.close_end is not None:
            self.grammar = self.ctx.grammars.matcher(self.request.answer_schema, "answer")

    def logit_offsets(self, vocab: int, device: torch.device | str) -> torch.Tensor:
        """(V,) what this row adds to its logits before choosing: the logit_bias, less the presence and
        frequency penalties of the tokens generated so far."""
        if self._offsets is None:
            s = self.request.sampling
            self._offsets = torch.zeros(vocab, dtype=torch.float32, device=device)
            for token, bias in s.logit_bias:
                self._offsets[token] += bias
            for token in self.ids:  # none yet, unless rows are rebuilt mid-completion
                self._penalise(token)
        return self._offsets

    def _penalise(self, token: int) -> None:
        s = self.request.sampling
        # Every occurrence costs the frequency penalty; the first also the presence penalty.
        self._offsets[token] -= s.frequency_penalty + (0.0 if token in self._seen else s.presence_penalty)
        self._seen.add(token)

    def advance(self, token: int, logprob: float, top: tuple[tuple[str, float], ...]) -> list[Any]:
        """Take one token; return its TokenEvent (unless the caller reads only results) and the GenerationResult
        if this row ends here."""
        self.ids.append(token)
        if self._offsets is not None:
            self._penalise(token)
        if self._repeated is not None:
            self._repeated.add(token)
        self.logprobs.append(logprob)
        if self.k:
            self.tops.append(top)
        self.text += self.detok.push(token)
        self.offsets.append(len(self.text))
        self.think.observe(self.text, self.offsets)
        if self.request.answer_schema is not None:
            self._after_token(token)
        reason, end = None, None
        if token in self.ctx.eos_ids:
            reason = "stop"
        elif (pos := self.stops.find(self.text)) >= 0:
            reason, end = "stop", pos
        if reason is None and len(self.ids) >= self.max_tokens:
            reason = "length"
        if reason is not None and end is None:
            self.text += self.detok.flush()
            end = len(self.text)
        delta = self.stops.release(self.text, end)
        out: list[Any] = []
        # Every event travels (a pipe, an event loop) to a caller that may only want the result:
        # then only the first goes, which tells it the request was admitted.
        if self.request.token_events or len(self.ids) == 1:
            out.append(TokenEvent(token_id=token, text=delta, logprob=logprob, top_logprobs=top))
        if reason is not None:
            self.finished = True
            out.append(self._result(self.text[:end], reason))
        return out

    def close(self, reason: str) -> GenerationResult:
        """End the row now (decoding stopped early); the held-back text is released into the result."""
        self.text += self.detok.flush()
        self.finished = True
        return self._result(self.text, reason)

    def _result(self, text: str, reason: str) -> GenerationResult:
        return GenerationResult(
            text=text, prompt_token_ids=list(self.prompt_ids), completion_token_ids=list(self.ids),
            completion_logprobs=list(self.logprobs), finish_reason=reason,  # type: ignore[arg-type]
            thinking_tokens=self.think.thinking_tokens(len(self.ids)), budget_hit=self.think.budget_hit,
            adapter=self.request.adapter, top_logprobs=list(self.tops),
        )


def pick_tokens(rows: Sequence[RowState], logits: torch.Tensor) -> tuple[list[int], list[tuple[Any, Any]]]:
    """Choose the next token of each row from its logits (B, V) and advance it.

    Returns the chosen ids and the (job, TokenEvent | GenerationResult) pairs to deliver.
    Logprobs are those of the raw distribution, whatever the row's sampling knobs.
    """
    forced = [row.forced_next() for row in rows]
    allowed = logits
    shaped = [i for i, row in enumerate(rows) if row.shapes_logits or row._repeated is not None]
    if shaped:
        allowed = logits.to(torch.float32, copy=True)
        for i in shaped:
            if rows[i]._repeated is not None:
                _repetition_penalty(allowed[i], rows[i]._repeated, rows[i].request.sampling.repetition_penalty)
            if rows[i].shapes_logits:
                allowed[i] += rows[i].logit_offsets(logits.shape[-1], logits.device)
    if rows and rows[0].ctx.banned:
        allowed = logits.clone() if allowed is logits else allowed
        # after the bias: no logit_bias can make an image placeholder a generated token
        allowed[:, list(rows[0].ctx.banned)] = float("-inf")
    held = [i for i, row in enumerate(rows) if row.grammar is not None and forced[i] is None]
    if held:
        allowed = logits.clone() if allowed is logits else allowed
        rows[held[0]].ctx.grammars.apply(allowed, held, [rows[i].grammar for i in held])
    thinking = [i for i, row in enumerate(rows) if row.thinking_before_grammar]
    if thinking:
        allowed = logits.clone() if allowed is logits else allowed
        allowed[torch.tensor(thinking)[:, None], torch.tensor(sorted(rows[0].ctx.eos_ids))[None, :]] = float("-inf")
    chosen = choose_tokens(allowed, [r.temperature for r in rows], [r.top_p for r in rows],
                           [r.generator for r in rows], forced, top_ks=[r.request.sampling.top_k for r in rows],
                           min_ps=[r.request.sampling.min_p for r in rows])
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen_lp = logp.gather(1, chosen[:, None])[:, 0].tolist()
    tops = top_logprobs(logp, [r.k for r in rows])
    tokens = chosen.tolist()
    out: list[tuple[Any, Any]] = []
    for row, token, lp, (ids, vals) in zip(rows, tokens, chosen_lp, tops):
        top = tuple((row.ctx.token_text(t), v) for t, v in zip(ids, vals))
        out.extend((row.job, item) for item in row.advance(token, lp, top))
    return tokens, out


# Bound of a penalised logit: a penalty near 0 (any > 0 is valid) divides a logit into inf, and the sampler's
# softmax into NaN. Past a gap of ~100 the distribution does not change, so the bound changes nothing else.
_LOGIT_BOUND = 1e4


def _repetition_penalty(logits: torch.Tensor, seen: set[int], penalty: float) -> None:
    """vLLM's (and HF's) repetition penalty on one row, in place: seen tokens' positive logits are divided
    by `penalty`, negative ones multiplied (within +-_LOGIT_BOUND)."""
    ids = torch.tensor(sorted(seen), dtype=torch.long, device=logits.device)
    picked = logits[ids]
    penalised = torch.where(picked > 0, picked / penalty, picked * penalty)
    logits[ids] = penalised.clamp(-_LOGIT_BOUND, _LOGIT_BOUND)
