"""The embedded engine: HF transformers with continuous batching, in a worker thread or a child process.

Requests join the running batch as soon as they arrive and leave it the step they end
(`running_batch.RunningBatch`): a new request is prefilled between two decoding steps (those that
arrive together, within `batch_wait_ms` of an idle engine, are prefilled together), and
every step decodes one token for all rows at once, up to `max_batch` rows, each with its own
sampling knobs, seed, thinking budget, stops and adapter version (PEFT mixed batches).

All torch work (model load, decoding, adapter load/unload) runs in one thread with
`torch.set_num_threads(threads)` (`core.EngineCore`), never on the event loop: on a small CPU
box torch with more threads than free cores slows down 10-75x, and one thread also serialises
adapter changes with decoding (a version is never removed under a running forward).
Where that thread lives is the runner's business (`runner.Runner`): `process=True` runs it as
the main thread of a child process (`process_runner.ProcessRunner`), so it never waits for the
GIL behind the gateway's threads; the gateway's `openvlthinker serve` does that. `process=False`
(the default here) keeps it a thread of this process (`thread_runner.ThreadRunner`): cheaper to
start, and the tests' way. Either way prompts are rendered, counted and encoded on the caller's
event loop, and tokens reach each request's asyncio queue through `loop.call_soon_threadsafe`,
one callback per decoding step.

A text-only causal LM (no image processor, e.g. `openvlthinker.tiny.text_model`) is served the
same way; a request with an image is refused, naming the image part.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator

from ..base import EngineError, EngineUnavailable, GenerationRequest, GenerationResult, Mode, TokenEvent
from .core import DEFAULT_MAX_CONTEXT, CoreSettings
from .runner import Runner
from .scheduler import Job
from .thread_runner import ThreadRunner

if TYPE_CHECKING:
    from ..inputs import PromptEncoder

__all__ = ["DEFAULT_MAX_CONTEXT", "TransformersEngine"]

MAX_TOP_LOGPROBS = 20


def _config_context(model_path: str) -> int | None:
    """The context window written in a local model folder's config.json, if readable."""
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    window = cfg.get("text_config", {}).get("max_position_embeddings") or cfg.get("max_position_embeddings")
    return int(window) if window else None


def _runner_type(process: bool) -> type[Runner]:
    """ProcessRunner or ThreadRunner (the first imported only when used: the child process runs
    process_runner as __main__, which must not find that module imported already)."""
    if not process:
        return ThreadRunner
    from .process_runner import ProcessRunner

    return ProcessRunner


class TransformersEngine:
    """Engine protocol over `openvlthinker.models.load`, for the tiny default, any Qwen3-VL folder or a causal LM."""

    def __init__(self, model_path: str, *, device: str = "cpu", dtype: Any = None, max_batch: int = 16,
                 max_queue: int = 64, max_context: int | None = None, threads: int = 1, batch_wait_ms: float = 5,
                 lean_decode: bool = True, process: bool = False):
        if max_batch < 1 or max_queue < 1 or threads < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch, max_queue and threads must be >= 1 and batch_wait_ms >= 0")
        self.model_name = str(model_path)
        self.process = process
        # What the core loads and how it runs (lean_decode: decoding steps and prefill outside the
        # transformers call stack, lean_step.py); the single copy of these options.
        self.settings = CoreSettings(self.model_name, device=device, dtype=dtype, threads=threads, max_batch=max_batch,
                                     max_context=max_context, lean_decode=lean_decode)
        window = _config_context(self.model_name)
        self.max_context = max_context or min(window or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        self.max_batch, self.max_queue, self._batch_wait = max_batch, max_queue, batch_wait_ms / 1000
        self._runner_type = _runner_type(process)  # the one place the mode matters
        self._runner: Runner | None = None
        self._encoder: PromptEncoder | None = None
        self._prepared: tuple[Any, Any] | None = None  # (messages, Prepared): the last prompt counted

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def engine_pid(self) -> int | None:
        """Process id of the engine's child process (None in thread mode or when stopped)."""
        return self._runner.pid if self._runner is not None else None

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._runner is not None

    async def start(self) -> None:
        """Start the runner (a worker thread or a child process) that loads the model; return when ready to serve."""
        if self.running:
            return
        from ..inputs import PromptEncoder, tokenizer_of

        runner = self._runner_type(self.settings, self.max_queue, self._batch_wait)
        await runner.start()
        try:
            tokenizer = tokenizer_of(runner.processor)
            # The event loop renders, counts and encodes prompts; a private tokenizer copy keeps the Rust
            # tokenizer's padding state (mutated by batch encoding in a worker thread) out of its way.
            self._encoder = PromptEncoder(runner.processor, copy.deepcopy(tokenizer))
        except Exception as exc:
            await runner.stop()  # no core left running for an engine that did not start
            raise EngineError(f"cannot load model {self.model_name!r}: {exc}") from exc
        self._vocab = len(tokenizer)  # logit_bias ids are checked against it
        self._runner, self.max_context = runner, runner.max_context

    async def stop(self) -> None:
        """Fail waiting requests, abort the running batch (its clients get EngineError), end the runner."""
        runner, self._runner = self._runner, None
        self._encoder = self._prepared = None
        if runner is not None:
            await runner.stop()

    # ---- requests --------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict[str, Any]], mode: Mode) -> int:
        """Prompt length after the chat template and image expansion.

        `mode` does not change the prompt here: the gateway already wrote the mode's
        instruction into the messages; the engine only enforces the thinking budget.
        """
        return self._prepare(messages).n_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent | GenerationResult]:
        """TokenEvents as tokens come, then one GenerationResult (errors raise on first iteration)."""
        runner = self._runner  # the one this job is in, even if the engine stops meanwhile
        job = self._admit(request)
        done = False
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, BaseException):
                    done = True
                    raise item
                done = isinstance(item, GenerationResult)
                yield item
                if done:
                    return
        finally:
            if not done:  # client went away (aclose / task cancelled): free the slot or drop the row
                runner.cancel(job)

    def _require_ready(self) -> Runner:
        runner = self._runner
        if runner is None or self._encoder is None:
            raise EngineUnavailable("engine is not running (call start() first)")
        return runner

    def _prepare(self, messages: list[dict[str, Any]]) -> Any:
        """The rendered, tokenized prompt (`inputs.Prepared`; no pixel work), on the caller's thread.

        The chat counts a prompt and then admits its `n` requests with the same messages list: the last
        prompt prepared is kept (with a reference to its messages, so the identity check cannot meet a
        recycled id) and reused, so each prompt is rendered and tokenized once."""
        self._require_ready()
        if self._prepared is not None and self._prepared[0] is messages:
            return self._prepared[1]
        prepared = self._encoder.prepare(messages)
        self._prepared = (messages, prepared)
        return prepared

    def _admit(self, request: GenerationRequest) -> Job:
        """Check a request and queue it; EngineError / EngineOverloaded before it is queued."""
        runner = self._require_ready()
        runner.check_room()  # answer an overload before rendering anything
        s = request.sampling
        s.check(self._vocab, MAX_TOP_LOGPROBS)
        if request.adapter is not None and request.adapter not in self.loaded_adapters():
            raise EngineError(f"adapter {request.adapter!r} is not loaded; loaded: {self.loaded_adapters()}")
        prepared = self._prepare(request.messages)
        if prepared.n_tokens + s.max_tokens > self.max_context:
            raise EngineError(f"prompt ({prepared.n_tokens} tokens) + max_tokens ({s.max_tokens}) exceeds the "
                              f"context window of {self.max_context} tokens")
        # Encoded here, on the caller's side (after the checks, which need no pixels): the engine's
        # thread or process only stacks prompts.
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue(), self._encoder.encode(prepared), prepared.prefix)
        runner.admit(job)
        return job

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        """Validate and load a PEFT LoRA folder under a new name (in the worker, between batches)."""
        if not isinstance(name, str) or not name.strip():
            raise EngineError("adapter name must be a non-empty string")
        if name in self.loaded_adapters():
            raise EngineError(f"adapter name {name!r} is already loaded; load each version under a new name")
        await self._command("load_adapter", name, path)

    async def unload_adapter(self, name: str) -> None:
        """Unload a version between batches (the gateway drains its requests first)."""
        await self._command("unload_adapter", name)

    def loaded_adapters(self) -> list[str]:
        """Names of the loaded adapter versions, in load order."""
        return self._runner.loaded_adapters() if self._runner is not None else []

    async def _command(self, name: str, *args: Any) -> Any:
        return await asyncio.wrap_future(self._require_ready().command(name, *args))

    def stats(self) -> dict[str, float]:
        """queue_depth, running, last_batch_size (prefilled together), batches_total, tokens_total, adapters."""
        base = {"queue_depth": 0.0, "running": 0.0, "last_batch_size": 0.0, "batches_total": 0.0, "tokens_total": 0.0}
        runner = self._runner
        if runner is not None:
            base.update(runner.stats())
        return {**base, "adapters": float(len(self.loaded_adapters()))}
