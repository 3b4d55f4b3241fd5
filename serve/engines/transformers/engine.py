"""The embedded engine: HF transformers with continuous batching, in a worker thread or a child process.

Requests join the running batch as soon as they arrive and leave it the step they end
(`running.RunningBatch`): a new request is prefilled between two decoding steps (those that
arrive together, within `batch_wait_ms` of an idle engine, are prefilled together), and
every step decodes one token for all rows at once, up to `max_batch` rows, each with its own
sampling knobs, seed, thinking budget, stops and adapter version (PEFT mixed batches).

All torch work (model load, decoding, adapter load/unload) runs in one thread with
`torch.set_num_threads(threads)` (`core.EngineCore`), never on the event loop: on a small CPU
box torch with more threads than free cores slows down 10-75x, and one thread also serialises
adapter changes with decoding (a version is never removed under a running forward).
`process=True` runs that thread as the main thread of a child process (`engine_process`),
so it never waits for the GIL behind the gateway's threads; the gateway's `openvlthinker serve`
does that. `process=False` (the default here) keeps it a thread of this process: cheaper to
start, and the tests' way. Either way prompts are rendered and counted on the caller's event
loop, and tokens reach each request's asyncio queue through `loop.call_soon_threadsafe`, one
callback per decoding step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from ..base import (EngineError, EngineOverloaded, EngineUnavailable, GenerationRequest, GenerationResult, Mode,
                   TokenEvent)
from .core import DEFAULT_MAX_CONTEXT, CoreSettings, EngineCore
from .scheduler import Command, Job, Scheduler

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


class TransformersEngine:
    """Engine protocol over `openvlthinker.models.load`, for the tiny default or any Qwen3-VL folder."""

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
        self._sched = Scheduler(max_queue, self._batch_wait)
        self._core: EngineCore | None = None  # in-thread mode
        self._child = None  # process mode: an engine_process.EngineProcess
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future | None = None
        self._processor = self._encoder = self._ctx = None
        self._prepared: tuple[Any, Any] | None = None  # (messages, Prepared): the last prompt counted
        self._vision = None  # process mode: the vision tower on this side of the pipe (gateway_vision.py)

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def engine_pid(self) -> int | None:
        """Process id of the engine's child process (None in thread mode or when stopped)."""
        return self._child.pid if self._child is not None else None

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._thread is not None or self._child is not None

    async def start(self) -> None:
        """Start the worker thread or child process, loading the model there; return when ready to serve."""
        if self.running:
            return
        if self.process:
            await self._start_child()
        else:
            await self._start_thread()
        from ..inputs import PromptEncoder

        # The event loop renders, counts and encodes prompts; a private tokenizer copy keeps the Rust
        # tokenizer's padding state (mutated by batch encoding in the worker) out of its way.
        self._encoder = PromptEncoder(self._processor, copy.deepcopy(self._processor.tokenizer))
        self._vocab = len(self._processor.tokenizer)  # logit_bias ids are checked against it

    async def _start_thread(self) -> None:
        self._sched.reopen()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._stopped = concurrent.futures.Future()
        self._core = EngineCore(self.settings, self._sched)
        self._thread = threading.Thread(target=self._worker, args=(ready,), name="transformers-engine", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except Exception as exc:
            self._thread = self._core = None
            raise EngineError(f"cannot load model {self.model_name!r}: {exc}") from exc
        self._processor, self._ctx, self.max_context = self._core.processor, self._core.ctx, self._core.max_context

    async def _start_child(self) -> None:
        import torch

        from openvlthinker.models import load_processor

        from .process_runner import EngineProcess
        from .gateway_vision import GatewayVision

        try:  # the gateway's copy renders, counts and encodes prompts; first, so a bad folder starts no child
            processor = await asyncio.to_thread(load_processor, self.model_name)
            vision = None
            if self.settings.lean_decode:  # the vision tower runs here too (the model's forward needs pixels)
                torch.set_num_threads(1)  # small work; the other core belongs to the engine's process
                vision = await asyncio.to_thread(GatewayVision.load, self.model_name, self.settings.dtype)
        except Exception as exc:
            raise EngineError(f"cannot load model {self.model_name!r}: {exc}") from exc
        child = EngineProcess(self.settings, self.max_queue, self._batch_wait)
        await asyncio.to_thread(child.start)
        self._child, self.max_context, self._processor, self._vision = child, child.max_context, processor, vision

    async def stop(self) -> None:
        """Fail waiting requests, abort the running batch (its clients get EngineError), end the worker."""
        if self._child is not None:
            child, self._child = self._child, None
            await asyncio.to_thread(child.stop)
        elif self._thread is not None:
            self._sched.close(EngineUnavailable("engine stopped"))
            await asyncio.wrap_future(self._stopped)
            self._thread = self._core = None
        self._processor = self._encoder = self._ctx = self._vision = self._prepared = None

    # ---- requests --------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict[str, Any]], mode: Mode) -> int:
        """Prompt length after the chat template and image expansion.

        `mode` does not change the prompt here: the gateway already wrote the mode's
        instruction into the messages; the engine only enforces the thinking budget.
        """
        return self._prepare(messages).n_tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent | GenerationResult]:
        """TokenEvents as tokens come, then one GenerationResult (errors raise on first iteration)."""
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
                (self._child or self._sched).cancel(job)

    def _require_ready(self) -> None:
        if not self.running or self._processor is None or (self._child is None and self._sched.closed):
            raise EngineUnavailable("engine is not running (call start() first)")

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
        self._require_ready()
        self._check_room()  # answer an overload before rendering anything
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
        inputs = self._encoder.encode(prepared)
        if self._vision is not None:
            inputs = self._vision.encode(inputs)
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue(), inputs, prepared.prefix)
        (self._child or self._sched).admit(job)
        return job

    def _check_room(self) -> None:
        if self._child is None:
            self._sched.check_room()
        elif self._child.in_flight >= self.max_batch + self.max_queue:  # the child checks its own queue too
            raise EngineOverloaded(f"{self._child.in_flight} requests are already in the engine "
                                   f"(max_batch {self.max_batch} + max_queue {self.max_queue})")

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        """Validate and load a PEFT LoRA folder under a new name (in the worker, between batches)."""
        if not isinstance(name, str) or not name.strip():
            raise EngineError("adapter name must be a non-empty string")
        if name in self.loaded_adapters():
            raise EngineError(f"adapter name {name!r} is already loaded; load each version under a new name")
        await self._command("load_adapter", name, path)
        if self._child is not None:
            self._child.adapters[name] = path

    async def unload_adapter(self, name: str) -> None:
        """Unload a version between batches (the gateway drains its requests first)."""
        await self._command("unload_adapter", name)
        if self._child is not None:
            self._child.adapters.pop(name, None)

    def loaded_adapters(self) -> list[str]:
        """Names of the loaded adapter versions, in load order."""
        if self._child is not None:
            return list(self._child.adapters)
        return list(self._core.adapters.internal) if self._core is not None and self._core.adapters else []

    async def _command(self, name: str, *args: Any) -> Any:
        self._require_ready()
        if self._child is not None:
            return await asyncio.wrap_future(self._child.command(name, *args))
        core = self._core
        command = Command(lambda: core.command(name, *args))
        self._sched.submit(command)
        return await asyncio.wrap_future(command.future)

    def stats(self) -> dict[str, float]:
        """queue_depth, running, last_batch_size (prefilled together), batches_total, tokens_total, adapters."""
        base = {"queue_depth": 0.0, "running": 0.0, "last_batch_size": 0.0, "batches_total": 0.0, "tokens_total": 0.0}
        if self._child is not None:
            base.update(self._child.stats())
        elif self._core is not None:
            base.update(self._core.stats())
        return {**base, "adapters": float(len(self.loaded_adapters()))}

    # ---- worker thread ---------------------------------------------------------------------

    def _worker(self, ready: concurrent.futures.Future) -> None:
        try:
            self._core.load()
        except BaseException as exc:  # noqa: BLE001 - reported to start() through the future
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        ready.set_result(None)
        try:
            self._core.run()
        finally:
            self._stopped.set_result(None)
