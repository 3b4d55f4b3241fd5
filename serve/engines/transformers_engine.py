"""The embedded engine: HF transformers in one worker thread, with continuous batching.

Requests join the running batch as soon as they arrive and leave it the step they end
(`running.RunningBatch`): a new request is prefilled between two decoding steps (those that
arrive together, within `batch_wait_ms` of an idle engine, are prefilled together), and
every step decodes one token for all rows at once, up to `max_batch` rows, each with its own
sampling knobs, seed, thinking budget, stops and adapter version (PEFT mixed batches).

Why one thread: all torch work (model load, decoding, adapter load/unload) runs in a single
dedicated worker thread with `torch.set_num_threads(threads)`, never on the event loop. On a
small CPU box torch with more threads than free cores slows down 10-75x, and a single thread
also serialises adapter changes with decoding: load/unload run between two steps, so a
version is never removed under a running forward. Tokens reach each request's asyncio queue
through `loop.call_soon_threadsafe`, one callback per decoding step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from .base import EngineError, EngineUnavailable, GenerationRequest, GenerationResult, Mode, TokenEvent
from .scheduler import Command, Job, Scheduler

__all__ = ["DEFAULT_MAX_CONTEXT", "TransformersEngine"]

DEFAULT_MAX_CONTEXT = 4096  # cap on the config's window: the KV cache of a CPU batch must stay small
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
                 lean_decode: bool = True):
        if max_batch < 1 or max_queue < 1 or threads < 1 or batch_wait_ms < 0:
            raise ValueError("max_batch, max_queue and threads must be >= 1 and batch_wait_ms >= 0")
        self.model_name = str(model_path)
        self.device, self.dtype, self.threads = device, dtype, threads
        # Decoding steps outside the transformers call stack and the patch embedding as a matmul (lean_decode.py).
        self.lean_decode = lean_decode
        self._context_arg = max_context
        window = _config_context(self.model_name)
        self.max_context = max_context or min(window or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        self._sched = Scheduler(max_queue, batch_wait_ms / 1000)
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future | None = None
        self._processor = self._count_tokenizer = self._adapters = self._ctx = None
        self.max_batch = max_batch
        self._batch = None  # the worker's RunningBatch (read for live stats)
        self._stats = {"last_batch_size": 0, "batches_total": 0}

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker thread and load the model in it; return when ready to serve."""
        if self._thread is not None:
            return
        self._sched.reopen()
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._stopped = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._worker, args=(ready,), name="transformers-engine", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except Exception as exc:
            self._thread = None
            raise EngineError(f"cannot load model {self.model_name!r}: {exc}") from exc

    async def stop(self) -> None:
        """Fail waiting requests, abort the running batch (its clients get EngineError), end the worker."""
        if self._thread is None:
            return
        self._sched.close(EngineUnavailable("engine stopped"))
        await asyncio.wrap_future(self._stopped)
        self._thread = None
        self._processor = self._count_tokenizer = self._adapters = self._ctx = None

    # ---- requests --------------------------------------------------------------------------

    def count_prompt_tokens(self, messages: list[dict[str, Any]], mode: Mode) -> int:
        """Prompt length after the chat template and image expansion.

        `mode` does not change the prompt here: the gateway already wrote the mode's
        instruction into the messages; the engine only enforces the thinking budget.
        """
        return self._prepare(messages)[3]

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
                self._sched.cancel(job)

    def _require_ready(self) -> None:
        if self._thread is None or self._sched.closed or self._processor is None:
            raise EngineUnavailable("engine is not running (call start() first)")

    def _prepare(self, messages: list[dict[str, Any]]) -> tuple[str, list[Any], str, int]:
        """Render the prompt and count its tokens on the caller's thread (no pixel work)."""
        from .inputs import assistant_prefix, collect_images, count_tokens, render

        self._require_ready()
        images = collect_images(messages)
        text = render(self._processor, messages)
        return text, images, assistant_prefix(messages), count_tokens(self._count_tokenizer, self._processor, text, images)

    def _admit(self, request: GenerationRequest) -> Job:
        """Check a request and queue it; EngineError / EngineOverloaded before it is queued."""
        self._require_ready()
        self._sched.check_room()  # answer an overload before rendering anything
        s = request.sampling
        if s.max_tokens < 1 or s.temperature < 0 or not 0 < s.top_p <= 1 or not 0 <= s.top_logprobs <= MAX_TOP_LOGPROBS:
            raise EngineError(f"invalid sampling parameters {s}: need max_tokens >= 1, temperature >= 0, "
                              f"0 < top_p <= 1, 0 <= top_logprobs <= {MAX_TOP_LOGPROBS}")
        if request.adapter is not None and request.adapter not in self._adapters.internal:
            raise EngineError(f"adapter {request.adapter!r} is not loaded; loaded: {self.loaded_adapters()}")
        text, images, prefix, n_prompt = self._prepare(request.messages)
        if n_prompt + s.max_tokens > self.max_context:
            raise EngineError(f"prompt ({n_prompt} tokens) + max_tokens ({s.max_tokens}) exceeds the "
                              f"context window of {self.max_context} tokens")
        job = Job(request, asyncio.get_running_loop(), asyncio.Queue(), text, images, prefix, n_prompt)
        self._sched.admit(job)
        return job

    # ---- adapters --------------------------------------------------------------------------

    async def load_adapter(self, name: str, path: str) -> None:
        """Validate and load a PEFT LoRA folder under a new name (in the worker, between batches)."""
        if not isinstance(name, str) or not name.strip():
            raise EngineError("adapter name must be a non-empty string")
        if self._adapters is not None and name in self._adapters.internal:
            raise EngineError(f"adapter name {name!r} is already loaded; load each version under a new name")
        await self._submit(lambda: self._adapters.load(name, path))

    async def unload_adapter(self, name: str) -> None:
        """Unload a version between batches (the gateway drains its requests first)."""
        await self._submit(lambda: self._adapters.unload(name))

    def loaded_adapters(self) -> list[str]:
        """Names of the loaded adapter versions, in load order."""
        return list(self._adapters.internal) if self._adapters is not None else []

    async def _submit(self, fn: Callable[[], Any]) -> Any:
        self._require_ready()
        command = Command(fn)
        self._sched.submit(command)
        return await asyncio.wrap_future(command.future)

    def stats(self) -> dict[str, float]:
        """queue_depth, running, last_batch_size (requests prefilled together), batches_total, tokens_total, adapters."""
        batch = self._batch
        return {"queue_depth": float(self._sched.depth), "running": float(batch.size if batch is not None else 0),
                "last_batch_size": float(self._stats["last_batch_size"]),
                "batches_total": float(self._stats["batches_total"]),
                "tokens_total": float(batch.tokens if batch is not None else 0),
                "adapters": float(len(self.loaded_adapters()))}

    # ---- worker thread ---------------------------------------------------------------------

    def _worker(self, ready: concurrent.futures.Future) -> None:
        try:
            self._load()
        except BaseException as exc:  # noqa: BLE001 - reported to start() through the future
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        ready.set_result(None)
        from .running import RunningBatch

        batch = self._batch = RunningBatch(self._adapters, self._processor, self._ctx, self._sched.emit,
                                          lean=self.lean_decode)
        try:
            while (work := self._sched.next_work(self.max_batch - batch.size, busy=batch.size > 0)) is not None:
                if isinstance(work, Command):
                    try:
                        work.future.set_result(work.fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                        work.future.set_exception(exc)
                    batch.drop_orphans()
                    continue
                if jobs := [j for j in work if not j.cancelled]:
                    self._stats.update(last_batch_size=len(jobs), batches_total=self._stats["batches_total"] + 1)
                    batch.admit(jobs)
                batch.step()
        finally:
            batch.fail_all(EngineUnavailable("engine stopped"))
            self._stopped.set_result(None)

    def _load(self) -> None:
        """Load model and processor in this thread (torch threads are set where torch runs)."""
        import torch

        from openvlthinker.models import load

        from .adapters import AdapterSet
        from .rows import DecodeContext

        torch.set_num_threads(self.threads)
        model, processor = load(self.model_name, device=self.device, dtype=self.dtype)
        if self.lean_decode:
            from .lean_decode import linear_patch_embed

            linear_patch_embed(model)
        model_eos = model.generation_config.eos_token_id
        model_eos = model_eos if isinstance(model_eos, list) else [model_eos] if model_eos is not None else []
        ctx = DecodeContext.from_tokenizer(processor.tokenizer, extra_eos=model_eos)
        if self._context_arg is None:
            window = getattr(model.config.get_text_config(), "max_position_embeddings", None)
            self.max_context = min(window or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        # The event loop tokenizes prompts for counting; a private copy keeps the Rust
        # tokenizer's padding state (mutated by batch encoding here) out of its way.
        self._count_tokenizer = copy.deepcopy(processor.tokenizer)
        self._adapters, self._ctx, self._processor = AdapterSet(model), ctx, processor
