"""ChatService: one chat completion from request to logged interaction.

resolve the version (lease) -> build the prompt (images, plan, instruction) -> check the
context -> fan out `n` engine requests -> split thinking from answer -> commit the interaction
-> answer (or send the final stream chunks). The commit happens before the client sees the
end of the response, so whatever was acknowledged is in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio

from serve.engines.base import EngineError, EngineFailed, EngineOverloaded, EngineUnavailable, GenerationRequest, GenerationResult, SamplingParams, TokenEvent

from .adapters import AdapterRegistry, Lease
from .config import ServeConfig
from .errors import APIError, invalid, overloaded, store_unavailable
from .fanout import Fanout
from .images import ImageLimits
from .interaction import InteractionRecord, InteractionUsage
from .metrics import Metrics
from .prompting import Prompt, build_prompt
from .protocol import (AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
                       ChoiceLogprobs, ChunkChoice, CompletionTokensDetails, Delta, TokenLogprob, TopLogprob, Usage)
from .reasoning_split import ReasoningSplitter, split_text
from .tool_calls import parse_answer
from .tool_protocol import DeltaFunction, DeltaToolCall, ToolCallOut
from .store import StoreUnavailable
from .store.store import row_of
from .store.writer import StoreWriter

log = logging.getLogger("serve.chat")
# Any top_p below the largest token probability keeps exactly the top token; vocabularies are far
# smaller than 1e6, so clamping here changes nothing but keeps denormal values out of the sampler.
_MIN_TOP_P = 1e-6


@dataclass
class Call:
    """Everything about one request that outlives its preparation."""

    id: str
    created: int
    arrival: float
    req: ChatCompletionRequest
    lease: Lease
    prompt: Prompt
    max_tokens: int
    fingerprint: str
    stored: dict[str, Any]  # kept with the request in the store, beside its messages and parameters


@dataclass
class Stream:
    """A streamed answer: its chunks (an APIError last if it failed midway, the headers being sent), and
    a cleanup that is safe to call twice (and needed if never iterated)."""

    chunks: AsyncIterator[ChatCompletionChunk | APIError]
    close: Callable[[], Awaitable[None]]

    async def sse(self) -> AsyncIterator[str]:
        """The chunks as chat-completion SSE lines: `[DONE]` after the last unless an error ended them."""
        failed = False
        async for item in self.chunks:
            failed = isinstance(item, APIError)
            yield _sse(item.body() if failed else item)
        if not failed:
            yield "data: [DONE]\n\n"


def engine_error(exc: Exception) -> APIError:
    """Map an engine failure to the client-facing error."""
    if isinstance(exc, EngineOverloaded):
        return overloaded()
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, StoreUnavailable):  # the answer was made but could not be logged: not acknowledged
        return store_unavailable(exc)
    if isinstance(exc, EngineUnavailable):
        # the engine's own words say which (vLLM restarting after a crash, the engine process starting, ...)
        return APIError(503, f"The engine is not serving right now: {exc}. Retry later.",
                        type="server_error", code="engine_unavailable", headers={"Retry-After": "5"})
    if isinstance(exc, EngineFailed):
        return APIError(500, f"Generation failed inside the engine: {exc}", type="server_error", code="engine_failed")
    return invalid(f"The engine could not serve this request: {exc}", getattr(exc, "param", None), "engine_error")


class ChatService:
    """Serves /v1/chat/completions on top of an Engine, the adapter registry and the store's writer."""

    def __init__(self, engine: Any, registry: AdapterRegistry, writer: StoreWriter, config: ServeConfig, metrics: Metrics):
        self.engine, self.registry, self.writer, self.config, self.metrics = engine, registry, writer, config, metrics
        self.limits = ImageLimits(config.max_image_bytes, config.max_image_pixels, config.max_images,
                                  config.allow_remote_images, config.remote_timeout_s,
                                  tuple(config.remote_image_allow_networks))

    async def create(self, req: ChatCompletionRequest, id_prefix: str = "chatcmpl-",
                     stored: dict[str, Any] | None = None) -> ChatCompletion | Stream:
        """A ChatCompletion, or for `stream=true` a Stream of chunks (errors before it are raised).

        `id_prefix` starts the interaction id (the Responses API's are "resp_..."); `stored` is kept
        with the request in the store (what the Responses API needs to find it again)."""
        arrival, created = time.perf_counter(), int(time.time())
        lease = self.registry.acquire(req.model)  # the version is fixed here, at arrival
        self.metrics.in_flight.inc()
        try:
            if req.n > self.config.max_n:
                raise invalid(f"n={req.n} is above this server's limit of {self.config.max_n}.", "n")
            prompt = await build_prompt(req, self.limits)
            try:
                call = Call(f"{id_prefix}{uuid.uuid4().hex}", created, arrival, req, lease, prompt,
                            self._max_tokens(req, prompt), self._fingerprint(lease), dict(stored or {}))
                fan = Fanout(self.engine, self._engine_requests(call))
                await fan.start()
            except EngineError as exc:
                raise engine_error(exc) from None
        except BaseException:
            self._done(lease)
            raise
        if req.stream:
            closed = False

            async def close() -> None:
                nonlocal closed
                if not closed:
                    closed = True
                    self._done(lease)
                    await fan.close()

            return Stream(self._stream(call, fan, close), close)
        try:
            return await self._complete(call, fan)
        finally:
            await fan.close()
            self._done(lease)

    async def count_prompt_tokens(self, req: ChatCompletionRequest) -> int:
        """The prompt tokens `req` would be answered with, images included, without answering it."""
        lease = self.registry.acquire(req.model)  # an unknown model is the same error as when answering
        try:
            prompt = await build_prompt(req, self.limits)
            return self.engine.count_prompt_tokens(prompt.messages, prompt.plan.mode)
        finally:
            lease.release()

    # ------------------------------------------------------------- preparing

    def _max_tokens(self, req: ChatCompletionRequest, prompt: Prompt) -> int:
        context = int(self.engine.max_context)
        # Called on the event loop, as the engine contract asks (the tokenizer is not shared across threads).
        prompt_tokens = self.engine.count_prompt_tokens(prompt.messages, prompt.plan.mode)
        if prompt_tokens >= context:
            raise invalid(f"The prompt is {prompt_tokens} tokens; the model's context is {context}.", "messages",
                          "context_length_exceeded")
        asked, param = ((req.max_completion_tokens, "max_completion_tokens") if req.max_completion_tokens
                        else (req.max_tokens, "max_tokens"))
        if asked is None:
            return min(self.config.default_max_tokens, context - prompt_tokens)
        if prompt_tokens + asked > context:
            raise invalid(f"{param}={asked} plus the prompt's {prompt_tokens} tokens exceeds the model's context of "
                          f"{context} tokens; ask for at most {context - prompt_tokens}.", param,
                          "context_length_exceeded")
        return asked

    def _engine_requests(self, call: Call) -> list[GenerationRequest]:
        req = call.req
        schema = None if call.prompt.answer_schema is None else json.dumps(call.prompt.answer_schema)
        return [GenerationRequest(
            request_id=f"{call.id}-{i}", messages=call.prompt.messages,
            sampling=SamplingParams(max_tokens=call.max_tokens, temperature=req.temperature, top_p=max(req.top_p, _MIN_TOP_P),
                                    stop=tuple(req.stop or ()), seed=None if req.seed is None else req.seed + i,
                                    top_logprobs=(req.top_logprobs or 0) if req.logprobs else 0,
                                    presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                                    logit_bias=req.token_bias(), top_k=max(req.top_k or 0, 0), min_p=req.min_p or 0.0,
                                    repetition_penalty=req.repetition_penalty or 1.0),
            mode=call.prompt.plan.mode, thinking_budget=call.prompt.plan.budget, adapter=call.lease.engine_name,
            stream=bool(req.stream), token_events=bool(req.stream or req.logprobs), answer_schema=schema,
        ) for i in range(req.n)]

    def _fingerprint(self, lease: Lease) -> str:
        key = f"{self.registry.base_name}|{lease.engine_name or 'base'}|{self.config.engine}"
        return "fp_" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def _done(self, lease: Lease) -> None:
        lease.release()
        self.metrics.in_flight.dec()

    # ------------------------------------------------------------- answering

    async def _complete(self, call: Call, fan: Fanout) -> ChatCompletion:
        n = call.req.n
        events: list[list[TokenEvent]] = [[] for _ in range(n)]
        results: list[GenerationResult | None] = [None] * n
        done_at = [0.0] * n
        try:
            async for i, item in fan.events():
                if isinstance(item, GenerationResult):
                    results[i], done_at[i] = item, time.perf_counter()
                elif call.req.logprobs:
                    events[i].append(item)
        except (EngineError, APIError) as exc:
            raise engine_error(exc) from None
        finished = _check_results(results)
        await self._log(call, finished, done_at, stream=False)
        choices = []
        for i, res in enumerate(finished):
            thinking, answer = split_text(res.text, call.prompt.prefix)
            content, calls, finish = _answer(call, answer, res.finish_reason)
            choices.append(Choice(
                index=i, finish_reason=finish,
                message=AssistantMessage(content=content, reasoning_content=thinking or None, reasoning=thinking or None,
                                         tool_calls=calls),
                logprobs=ChoiceLogprobs(content=_token_logprobs(events[i], call.req)) if call.req.logprobs else None,
                token_ids=list(res.completion_token_ids) if call.req.return_token_ids else None,
                text=res.text if call.req.return_token_ids else None,
            ))
        return ChatCompletion(id=call.id, created=call.created, model=call.lease.model, choices=choices,
                              usage=_usage(finished), system_fingerprint=call.fingerprint,
                              adapter_version=call.lease.version,
                              prompt_token_ids=list(finished[0].prompt_token_ids) if call.req.return_token_ids else None,
                              mode=call.prompt.plan.mode if call.req.return_token_ids else None)

    async def _stream(self, call: Call, fan: Fanout,
                      close: Callable[[], Awaitable[None]]) -> AsyncIterator[ChatCompletionChunk | APIError]:
        n, req = call.req.n, call.req
        splitters = [ReasoningSplitter(call.prompt.prefix) for _ in range(n)]
        results: list[GenerationResult | None] = [None] * n
        done_at = [0.0] * n
        # return_token_ids: each choice's tokens not sent yet (a token whose text is held back waits for
        # the next chunk of its choice), and how many were sent
        ids: list[list[int]] | None = [[] for _ in range(n)] if req.return_token_ids else None
        sent = [0] * n

        def token_ids(i: int) -> list[int] | None:
            if ids is None:
                return None
            out, ids[i] = ids[i], []
            sent[i] += len(out)
            return out

        try:
            for i in range(n):
                yield self._chunk(call, i, Delta(role="assistant", content=""))
            # With tools offered, the answer may be a call: it goes out as tool-call deltas once it is complete.
            held = bool(call.prompt.tool_names)
            async for i, item in fan.events():
                if isinstance(item, GenerationResult):
                    results[i], done_at[i] = item, time.perf_counter()
                    deltas, logprobs = splitters[i].finish(), None
                else:
                    deltas = splitters[i].feed(item.text)
                    logprobs = ChoiceLogprobs(content=_token_logprobs([item], req)) if req.logprobs else None
                    if ids is not None:
                        ids[i].append(item.token_id)
                if held:
                    deltas = [(kind, text) for kind, text in deltas if kind != "content"]
                if logprobs is not None and not deltas:
                    yield self._chunk(call, i, Delta(), logprobs=logprobs, token_ids=token_ids(i))
                for kind, text in deltas:
                    delta = Delta(content=text) if kind == "content" else Delta(reasoning_content=text, reasoning=text)
                    yield self._chunk(call, i, delta, logprobs=logprobs, token_ids=token_ids(i))
                    logprobs = None
            finished = _check_results(results)
            await self._log(call, finished, done_at, stream=True)  # committed before the final chunks
            for i, res in enumerate(finished):
                finish = res.finish_reason
                if held:
                    content, calls, finish = _answer(call, splitters[i].content_text, res.finish_reason)
                    if content:
                        yield self._chunk(call, i, Delta(content=content))
                    if calls:
                        yield self._chunk(call, i, Delta(tool_calls=[
                            DeltaToolCall(index=j, id=c.id, type="function",
                                          function=DeltaFunction(name=c.function.name, arguments=c.function.arguments))
                            for j, c in enumerate(calls)]))
                last = None
                if ids is not None:  # the result is what was logged: the rest of its tokens go with the last chunk
                    last = list(res.completion_token_ids[sent[i]:])
                chunk = self._chunk(call, i, Delta(), finish_reason=finish, token_ids=last)
                if ids is not None and i == 0:  # known only once a choice has finished
                    chunk.prompt_token_ids, chunk.mode = list(res.prompt_token_ids), call.prompt.plan.mode
                yield chunk
            if req.stream_options and req.stream_options.include_usage:
                yield self._chunk_obj(call, [], usage=_usage(finished))
        except (EngineError, APIError, StoreUnavailable) as exc:
            yield engine_error(exc)
        except Exception as exc:  # noqa: BLE001 - the headers are sent: report in-band, keep serving
            log.exception("stream %s failed", call.id)
            yield APIError(500, f"Internal server error ({type(exc).__name__}).", type="server_error",
                           code="internal_error")
        finally:
            with anyio.CancelScope(shield=True):  # a disconnect cancels us; still free the engine slots
                await close()

    def _chunk_obj(self, call: Call, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=call.id, created=call.created, model=call.lease.model, choices=choices,
                                   system_fingerprint=call.fingerprint, adapter_version=call.lease.version, usage=usage)

    def _chunk(self, call: Call, index: int, delta: Delta, finish_reason: str | None = None,
               logprobs: ChoiceLogprobs | None = None, token_ids: list[int] | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=index, delta=delta, finish_reason=finish_reason, logprobs=logprobs,
                             token_ids=token_ids)
        return self._chunk_obj(call, [choice])

    # ---------------------------------------------------------------- logging

    async def _log(self, call: Call, results: list[GenerationResult], done_at: list[float], stream: bool) -> None:
        prompt = call.prompt
        if call.req.store is not False:  # false: the client asked that nothing of this request be kept
            # One writer thread commits concurrent requests together (store/writer.py); shielded, so a client
            # that goes away while its interaction is being written cannot cancel the write.
            rows = _rows(call, results, done_at, stream)
            await asyncio.shield(asyncio.wrap_future(self.writer.submit([img.data for img in prompt.images], rows)))
        usage = _usage(results)
        self.metrics.record_completion(call.lease.version, usage.prompt_tokens, usage.completion_tokens,
                                       usage.completion_tokens_details.reasoning_tokens,
                                       [(r.finish_reason, prompt.plan.mode) for r in results])


def _rows(call: Call, results: list[GenerationResult], done_at: list[float], stream: bool) -> list[dict]:
    """The store rows of a finished request, one per choice."""
    req, prompt = call.req, call.prompt
    params = {"model": req.model, "temperature": req.temperature, "top_p": req.top_p, "n": req.n,
              "max_tokens": call.max_tokens, "stop": req.stop, "seed": req.seed, "logprobs": req.logprobs,
              "top_logprobs": req.top_logprobs, "reasoning_effort": req.reasoning_effort, "stream": stream,
              "user": req.user, "presence_penalty": req.presence_penalty,
              "frequency_penalty": req.frequency_penalty, "logit_bias": req.logit_bias, "top_k": req.top_k,
              "min_p": req.min_p, "repetition_penalty": req.repetition_penalty,
              "chat_template_kwargs": req.chat_template_kwargs,
              "tools": [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None,
              "tool_choice": req.tool_choice if isinstance(req.tool_choice, (str, type(None))) else req.tool_choice.model_dump(),
              "parallel_tool_calls": req.parallel_tool_calls,
              "response_format": req.response_format.model_dump(by_alias=True, exclude_none=True) if req.response_format else None}
    request = {"messages": prompt.stored, "params": params, "instruction": prompt.instruction,
               "created": call.created, "system_fingerprint": call.fingerprint, **call.stored}
    rows = []
    for i, res in enumerate(results):
        thinking, answer = split_text(res.text, prompt.prefix)
        record = InteractionRecord(
            id=call.id, choice_index=i, created=time.time(), model=call.lease.model,
            adapter_version=call.lease.version, effort=prompt.plan.effort, mode=prompt.plan.mode,
            budget=prompt.plan.budget, budget_hit=res.budget_hit, request=request, metadata=dict(req.metadata or {}),
            problem_type=prompt.problem_type, task_type=prompt.task_type,
            thinking=thinking, answer=answer, text=res.text, prompt_token_ids=list(res.prompt_token_ids),
            completion_token_ids=list(res.completion_token_ids), logprobs=[float(x) for x in res.completion_logprobs],
            finish_reason=res.finish_reason,
            usage=InteractionUsage(prompt_tokens=len(res.prompt_token_ids),
                                   completion_tokens=len(res.completion_token_ids),
                                   reasoning_tokens=res.thinking_tokens),
            latency_s=done_at[i] - call.arrival, stream=stream,
        )
        rows.append(row_of(record, prompt.has_reference))
    return rows


def _answer(call: Call, answer: str, finish: str) -> tuple[str | None, list[ToolCallOut] | None, str]:
    """(content, tool calls, finish reason) of one choice's answer text."""
    if not call.prompt.tool_names:
        return answer, None, finish
    req = call.req
    parsed = parse_answer(answer, call.prompt.tool_names, forced=bool(req.forced_tools()),
                          parallel=req.parallel_calls())
    if not parsed.calls:
        return answer, None, finish
    return parsed.content, parsed.calls, "tool_calls" if finish == "stop" else finish


def _check_results(results: list[GenerationResult | None]) -> list[GenerationResult]:
    if any(r is None for r in results):
        raise RuntimeError("the engine finished a request without a GenerationResult")
    return results  # type: ignore[return-value]


def _usage(results: list[GenerationResult]) -> Usage:
    prompt = len(results[0].prompt_token_ids) if results else 0
    completion = sum(len(r.completion_token_ids) for r in results)
    reasoning = sum(r.thinking_tokens for r in results)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                 completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning))


def _token_logprobs(events: list[TokenEvent], req: ChatCompletionRequest) -> list[TokenLogprob]:
    k = req.top_logprobs or 0
    return [TokenLogprob(token=e.text, logprob=e.logprob, bytes=list(e.text.encode()),
                         top_logprobs=[TopLogprob(token=t, logprob=lp, bytes=list(t.encode()))
                                       for t, lp in e.top_logprobs[:k]])
            for e in events]


def _sse(obj: Any) -> str:
    data = obj.model_dump_json(exclude_none=True) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"
