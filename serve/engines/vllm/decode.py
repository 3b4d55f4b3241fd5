"""One completion on vLLM, in passes, with the hard thinking budget enforced by the gateway.

vLLM cannot force tokens mid-stream, and its own thinking-budget feature differs between
versions, so the budget is enforced here with stop strings and continuation:

  before  the block opens: decode with `<thinking>` as an extra stop string;
  inside  the block: decode at most `budget` more tokens with `</thinking>` as a stop string;
          if the budget runs out, the gateway appends the closing tag itself ("forced");
  after   the block: decode the answer.

An answer held to a JSON schema is decoded in the after pass, under the grammar. In think mode
the gateway writes `<thinking>` itself first (forced, as the transformers engine does) and the
end of the turn is banned inside the block, so a model that would never open the block, or
would end the turn in it, still reaches the pass that writes a schema-valid answer.

Each later pass continues from the exact token ids so far (prompt + completion, a completions
request), so vLLM's prefix cache reuses the prompt and every logged logprob is conditioned on the
logged ids; with images (which vLLM's completions do not take) it continues the assistant message
as text (`continue_final_message`). Passes are streamed from vLLM only when the client
streams: a non-streamed pass is one JSON reply, which spares vLLM's server and the gateway
an SSE chunk per token. The caller sees one stream of TokenEvents and one
GenerationResult, exactly as from the transformers engine: token ids and behaviour logprobs
of every generated and forced token (forced tokens are scored with `prompt_logprobs`), the
prompt ids of the first pass, thinking tokens counted from `<thinking>` through
`</thinking>`. Stop strings of the request are matched here on the whole text (so one that
spans two passes still stops), and held back from the stream while they may be starting.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from openvlthinker.thinking import THINK_CLOSE, THINK_OPEN, ThinkTracker

from ..base import EngineFailed, GenerationRequest, GenerationResult, TokenEvent
from ..grammar import answer_grammar
from ..text import IncrementalDetokenizer, StopWatch

__all__ = ["Upstream", "decode"]

log = logging.getLogger("serve.vllm")

BEFORE, INSIDE, AFTER = "before", "inside", "after"

ChatStream = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any]]]  # body -> parsed SSE chunks
ChatOnce = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]  # body -> parsed JSON response


@dataclass
class Upstream:
    """What a decode needs from the engine: vLLM calls and tokenizer facts."""

    stream: ChatStream
    once: ChatOnce
    close_ids: dict[int, list[int]]  # close_tag_suffix_ids(tokenizer)
    tokenizer: Any  # the model's tokenizer (a copy private to decoding)

    def open_ids(self) -> list[int]:
        """Token ids of the opening tag `<thinking>`."""
        return self.tokenizer.encode(THINK_OPEN, add_special_tokens=False)

    def end_ids(self) -> list[int]:
        """Token ids that end the turn (the tokenizer's eos and `<|im_end|>`)."""
        unk = self.tokenizer.unk_token_id
        ids = (self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>"))
        return sorted({i for i in ids if isinstance(i, int) and i >= 0 and i != unk})

    def decode_ids(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def pieces(self, ids: list[int], text: str) -> list[str]:
        """Split `text` (what vLLM decoded for `ids`) into per-token pieces; all on the last token
        when the local tokenizer does not reproduce it exactly."""
        if len(ids) <= 1:
            return [text] * len(ids)
        detok = IncrementalDetokenizer(self.tokenizer)
        out = [detok.push(i) for i in ids]
        out[-1] += detok.flush()
        return out if "".join(out) == text else [""] * (len(ids) - 1) + [text]


def _top(entry: dict[str, Any] | None, k: int) -> tuple[tuple[str, float], ...]:
    """The k most likely tokens, best first. vLLM lists the sampled token first and then the
    most likely ones, so it is asked for k + 1 and the list is re-sorted."""
    if not k or not entry:
        return ()
    ranked = sorted(((t["token"], float(t["logprob"])) for t in entry.get("top_logprobs") or []), key=lambda t: -t[1])
    return tuple(ranked[:k])


class _Completion:
    """The growing completion: ids, logprobs, text, what was streamed, the thinking block."""

    def __init__(self, request: GenerationRequest, prefix: str):
        s = request.sampling
        self.request, self.prefix, self.k = request, prefix, int(s.top_logprobs)
        self.stops = StopWatch(s.stop)
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.tops: list[tuple[tuple[str, float], ...]] = []
        self.text, self.offsets = "", []
        self.think = ThinkTracker({}, budget=None, prefix=prefix)  # counting only: the budget is ours
        self.stop_at: int | None = None  # a request stop string starts here: the completion ends
        self.prompt_ids: list[int] | None = None

    def take(self, token: int, logprob: float, top, text: str) -> TokenEvent:
        """Append one token (with the text it completes) and return its event (text held back at stops)."""
        self.ids.append(token)
        self.logprobs.append(logprob)
        if self.k:
            self.tops.append(top)
        self.text += text
        self.offsets.append(len(self.text))
        self.think.observe(self.text, self.offsets)
        if (pos := self.stops.find(self.text)) >= 0:
            self.stop_at = pos
        delta = self.stops.release(self.text, self.stop_at)
        return TokenEvent(token_id=token, text=delta, logprob=logprob, top_logprobs=top)

    def flush(self) -> str:
        """Text held back for a possible stop string that never came (the completion ended)."""
        return self.stops.release(self.text, self.stop_at if self.stop_at is not None else len(self.text))

    def inside_tokens(self) -> int:
        """Tokens since the opening tag was completed (open_end = -1 when it opened in the prefix)."""
        return len(self.ids) - 1 - self.think.open_end

    def result(self, reason: str, budget_hit: bool) -> GenerationResult:
        end = self.stop_at if self.stop_at is not None else len(self.text)
        return GenerationResult(
            text=self.text[:end], prompt_token_ids=list(self.prompt_ids or []), completion_token_ids=list(self.ids),
            completion_logprobs=list(self.logprobs), finish_reason=reason,  # type: ignore[arg-type]
            thinking_tokens=self.think.thinking_tokens(len(self.ids)), budget_hit=budget_hit,
            adapter=self.request.adapter, top_logprobs=list(self.tops) if self.k else [])


def _body(request: GenerationRequest, model: str, messages: list[dict[str, Any]], done: _Completion,
          extra_stops: list[str], max_tokens: int, state: str, up: Upstream) -> dict[str, Any]:
    """The vLLM request body of one pass: a chat request on the first pass and for images, else a completions
    request on the exact prompt and completion ids so far (see `_token_prompt`)."""
    s = request.sampling
    end_ids = up.end_ids() if request.answer_schema is not None and state == INSIDE else []
    body = {
        "model": model, "max_tokens": max_tokens, "temperature": s.temperature, "top_p": s.top_p,
        "stop": list(dict.fromkeys([*done.stops.stops, *extra_stops])), "include_stop_str_in_output": True,
        "return_token_ids": True, "stream": request.stream, "skip_special_tokens": True,
    }
    top = s.top_logprobs + 1 if s.top_logprobs else 0
    ids = _token_prompt(messages, done)
    if ids is not None:  # a completions request on the exact tokens so far
        body.update(prompt=ids, logprobs=top)
    else:
        msgs, cont = _continued(messages, done.prefix + done.text)
        body.update(messages=msgs, logprobs=True, top_logprobs=top, add_generation_prompt=not cont,
                    continue_final_message=cont)
    if s.seed is not None:
        body["seed"] = s.seed + len(done.ids)  # a different draw per pass, reproducible per request
    bias = {str(token): bias for token, bias in s.logit_bias}
    if request.answer_schema is not None and state == INSIDE:
        # A held answer's thinking may not end the turn: the answer pass must still come (vLLM's bound).
        bias.update({str(token): -100.0 for token in end_ids})
    if bias:
        body["logit_bias"] = bias
    if s.presence_penalty or s.frequency_penalty:
        # vLLM counts a pass's own output only: after a budget pass the thinking so far is prompt to it.
        body.update(presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty)
    if s.top_k:
        body["top_k"] = s.top_k
    if s.min_p:
        body["min_p"] = s.min_p
    if s.repetition_penalty != 1.0:
        body["repetition_penalty"] = s.repetition_penalty
    if request.answer_schema is not None and state == AFTER:
        # The thinking passes are free; the answer pass (a new vLLM request) is held to the grammar.
        start = "answer"
        if request.mode == "think" and done.think.close_end is None and not done.think.is_open:
            start = "think"  # a thinking completion without a budget: one pass from the top
        body["structured_outputs"] = {"grammar": answer_grammar(request.answer_schema, up.tokenizer, start)}
    return body


def _token_prompt(messages: list[dict[str, Any]], done: _Completion) -> list[int] | None:
    """The exact ids a later pass must condition on (prompt + completion so far), or None where the pass
    goes through the chat template: the first pass, and requests with images (vLLM's completions take no
    images). Re-rendering the text instead would re-tokenize it, and a sampled completion is often not the
    tokenizer's own split of its text: the next tokens' logprobs would then be conditioned on other ids
    than the ones logged for training."""
    if done.prompt_ids is None or any(isinstance(m.get("content"), list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"]) for m in messages):
        return None
    return [*done.prompt_ids, *done.ids]


def _chat_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """A completions choice (streamed or not) in the shape of a streamed chat choice."""
    lp = choice.get("logprobs") or {}
    tops = lp.get("top_logprobs") or []
    entries = [None if v is None else {"logprob": v, "top_logprobs": [
        {"token": t, "logprob": x} for t, x in ((tops[j] if j < len(tops) else None) or {}).items()]}
        for j, v in enumerate(lp.get("token_logprobs") or [])]
    return {"token_ids": choice.get("token_ids"), "logprobs": {"content": entries},
            "finish_reason": choice.get("finish_reason"), "delta": {"content": choice.get("text") or ""}}


def _continued(messages: list[dict[str, Any]], assistant: str) -> tuple[list[dict[str, Any]], bool]:
    """`messages` with the assistant text so far as a final message to continue (if any)."""
    if messages and messages[-1].get("role") == "assistant":
        return [*messages[:-1], {"role": "assistant", "content": assistant}], True
    if assistant:
        return [*messages, {"role": "assistant", "content": assistant}], True
    return list(messages), False


async def decode(request: GenerationRequest, model: str, messages: list[dict[str, Any]], prefix: str,
                 up: Upstream) -> AsyncIterator[TokenEvent | GenerationResult]:
    """TokenEvents then one GenerationResult for `request` on vLLM model name `model`.

    messages: OpenAI-format messages (images as data URLs); prefix: the text of a trailing
    assistant message, which the completion continues.
    """
    s = request.sampling
    done = _Completion(request, prefix)
    budget = request.thinking_budget if request.mode == "think" and request.thinking_budget > 0 else None
    state = AFTER if budget is None else INSIDE if done.think.is_open else BEFORE
    budget_hit = False
    if state == BEFORE and request.answer_schema is not None and done.think.close_end is None:
        # The grammar is on the answer pass, after the block: open the block now so that pass comes.
        async for event in _force(request, model, messages, done, up, up.open_ids()[:s.max_tokens]):
            yield event
        state = INSIDE
    while True:
        remaining = s.max_tokens - len(done.ids)
        if remaining <= 0:
            yield done.result("length", budget_hit)
            return
        if state == INSIDE and done.inside_tokens() >= budget:
            async for event in _force_close(request, model, messages, done, up, remaining):
                yield event
            budget_hit, state = True, AFTER
            continue
        if state == INSIDE:
            extra, limit = [THINK_CLOSE], min(remaining, budget - max(0, done.inside_tokens()))
        else:
            extra, limit = ([THINK_OPEN] if state == BEFORE else []), remaining
        finish, final = None, None
        async for chunk in _chunks(up, _body(request, model, messages, done, extra, limit, state, up)):
            if done.prompt_ids is None and chunk.get("prompt_token_ids"):
                done.prompt_ids = list(chunk["prompt_token_ids"])
            for choice in chunk.get("choices") or []:
                events = _take_chunk(done, choice, up)
                finish = choice.get("finish_reason") or finish
                if done.stop_at is not None or finish is not None:
                    state, final = _after_pass(state, done, finish)
                    if final is not None and events:
                        last = events[-1]
                        events[-1] = TokenEvent(last.token_id, last.text + done.flush(), last.logprob, last.top_logprobs)
                for event in events:
                    yield event
                if done.stop_at is not None or (finish is not None and final is not None):
                    yield done.result(final or "stop", budget_hit)
                    return
            if finish is not None:
                break
        if finish is None:
            raise EngineFailed("vLLM ended a stream without a finish reason")


async def _chunks(up: Upstream, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The pass's stream chunks; a non-streamed pass is one reply, reshaped as one big chunk."""
    tokens_in = "prompt" in body
    if body["stream"]:
        async for chunk in up.stream(body):
            yield {**chunk, "choices": [_chat_choice(c) for c in chunk.get("choices") or []]} if tokens_in else chunk
        return
    reply = await up.once(body)
    if tokens_in:
        choices = [_chat_choice(c) for c in reply.get("choices") or []]
    else:
        choices = [{"token_ids": c.get("token_ids"), "logprobs": c.get("logprobs"),
                    "finish_reason": c.get("finish_reason"),
                    "delta": {"content": (c.get("message") or {}).get("content") or ""}}
                   for c in reply.get("choices") or []]
    yield {"prompt_token_ids": reply.get("prompt_token_ids"), "choices": choices}


def _take_chunk(done: _Completion, choice: dict[str, Any], up: Upstream) -> list[TokenEvent]:
    """Events for the tokens of one choice delta (a chunk may hold several tokens)."""
    token_ids = [int(t) for t in choice.get("token_ids") or []]
    entries = (choice.get("logprobs") or {}).get("content") or []
    pieces = up.pieces(token_ids, (choice.get("delta") or {}).get("content") or "")
    events = []
    for j, token in enumerate(token_ids):
        if done.stop_at is not None:
            break  # a stop string ended the completion inside this chunk
        entry = entries[j] if j < len(entries) else None
        logprob = float(entry["logprob"]) if entry else 0.0
        events.append(done.take(token, logprob, _top(entry, done.k), pieces[j]))
    return events


def _after_pass(state: str, done: _Completion, finish: str | None) -> tuple[str, str | None]:
    """(next state, final finish reason or None to run another pass) once a pass has finished."""
    if done.stop_at is not None:
        return state, "stop"
    if finish not in ("stop", "length"):
        raise EngineFailed(f"vLLM finished a pass with reason {finish!r}")
    if finish == "stop":
        if state == BEFORE and done.think.is_open:
            return INSIDE, None
        if state == INSIDE and not done.think.is_open:
            return AFTER, None
        return state, "stop"  # end of turn
    if state == INSIDE and len(done.ids) < done.request.sampling.max_tokens:
        return state, None  # the budget ran out inside the block: the next round forces the close
    return state, "length"


async def _force_close(request: GenerationRequest, model: str, messages: list[dict[str, Any]], done: _Completion,
                       up: Upstream, remaining: int) -> AsyncIterator[TokenEvent]:
    """Append `</thinking>` (or the rest of it) as forced tokens."""
    k = next((k for k in range(len(THINK_CLOSE) - 1, 0, -1) if done.text.endswith(THINK_CLOSE[:k])), 0)
    async for event in _force(request, model, messages, done, up, list(up.close_ids[k])[:remaining]):
        yield event


async def _force(request: GenerationRequest, model: str, messages: list[dict[str, Any]], done: _Completion,
                 up: Upstream, forced: list[int]) -> AsyncIterator[TokenEvent]:
    """Append `forced` as tokens of the completion, scored by the model for their logprobs."""
    scores = await _score_forced(request, model, messages, done, forced, up)
    pieces = [up.decode_ids(forced[:i + 1]) for i in range(len(forced))]
    for i, token in enumerate(forced):
        text = pieces[i][len(pieces[i - 1]):] if i else pieces[0]
        logprob, top = scores[i]
        yield done.take(token, logprob, top, text)


async def _score_forced(request: GenerationRequest, model: str, messages: list[dict[str, Any]], done: _Completion,
                        forced: list[int], up: Upstream) -> list[tuple[float, tuple[tuple[str, float], ...]]]:
    """The model's logprob (and top alternatives) of each forced token, from one prompt_logprobs call."""
    k = done.k
    body = {"model": model, "max_tokens": 1, "temperature": 0, "prompt_logprobs": k, "return_token_ids": True,
            "stream": False}
    ids = _token_prompt(messages, done)
    if ids is not None:
        body["prompt"] = ids + list(forced)
    else:
        msgs, _ = _continued(messages, done.prefix + done.text + up.decode_ids(forced))
        body.update(messages=msgs, add_generation_prompt=False, continue_final_message=True)
    reply = await up.once(body)
    if ids is not None:  # a completions reply: the prompt's ids and logprobs are on its choice
        reply = (reply.get("choices") or [{}])[0]
    ids, lps = reply.get("prompt_token_ids") or [], reply.get("prompt_logprobs") or []
    exact = len(ids) >= len(forced) and ids[-len(forced):] == forced
    if done.prompt_ids is None and exact and not done.ids:
        done.prompt_ids = ids[:-len(forced)]  # forced from the start: the prompt is what precedes them
    if not exact or len(lps) != len(ids):
        # The continued text tokenized differently at the tag: no exact score; 0.0 = "forced".
        log.warning("cannot score forced %s for %s: prompt tokens differ", forced, request.request_id)
        return [(0.0, ())] * len(forced)
    out = []
    for token, entry in zip(forced, lps[-len(forced):]):
        entry = entry or {}
        chosen = entry.get(str(token)) or entry.get(token) or {}
        ranked = sorted(((v.get("rank", 0), v.get("decoded_token", ""), float(v["logprob"])) for v in entry.values()),
                        key=lambda r: r[0])
        top = tuple((t, lp) for rank, t, lp in ranked if 1 <= rank <= k)[:k]
        out.append((float(chosen.get("logprob", 0.0)), top))
    return out
