"""The engine's core: the model, its adapters and the decoding loop, run by one thread.

`EngineCore` is everything that touches torch. It runs in exactly one thread: the worker
thread of a `thread_runner.ThreadRunner`, or the main thread of a `process_runner.ProcessRunner`'s
child process. It takes its work from a `Scheduler` (jobs and named commands) and
hands every token, result and error to the scheduler's `emit`, so the same loop serves both:
in-process, emit calls into the clients' event loops; in the child, it writes to a pipe.

Commands are named (`"load_adapter"`, `"unload_adapter"`) rather than closures so that they
can cross a process boundary; they run between two decoding steps, so an adapter is never
removed under a running forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..base import EngineError, EngineUnavailable
from .scheduler import Command, Scheduler

__all__ = ["CoreSettings", "DEFAULT_MAX_CONTEXT", "EngineCore"]

DEFAULT_MAX_CONTEXT = 4096  # cap on the config's window: the KV cache of a CPU batch must stay small


@dataclass(frozen=True)
class CoreSettings:
    """What the core needs to load and run (picklable: it is sent to the engine's child process)."""

    model_path: str
    device: str = "cpu"
    dtype: Any = None
    threads: int = 1
    max_batch: int = 16
    max_context: int | None = None  # None: the model's window, capped at DEFAULT_MAX_CONTEXT
    lean_decode: bool = True


class EngineCore:
    """Loads the model in the calling thread, then decodes the scheduler's work until it closes."""

    def __init__(self, settings: CoreSettings, scheduler: Scheduler):
        self.settings, self.sched = settings, scheduler
        self.processor = self.adapters = self.ctx = self.batch = None
        self.max_context = settings.max_context or DEFAULT_MAX_CONTEXT
        self.last_batch_size = self.batches_total = 0

    def load(self) -> None:
        """Load model and processor, or a text-only model and its tokenizer (torch threads are set here,
        in the thread that runs torch)."""
        import torch

        from openvlthinker.models import load

        from ..inputs import tokenizer_of
        from .lora_adapters import AdapterSet
        from .rows import DecodeContext

        s = self.settings
        torch.set_num_threads(s.threads)
        model, processor = load(s.model_path, device=s.device, dtype=s.dtype)
        if s.lean_decode:
            from .lean_layers import linear_patch_embed

            linear_patch_embed(model)
        model_eos = model.generation_config.eos_token_id
        model_eos = model_eos if isinstance(model_eos, list) else [model_eos] if model_eos is not None else []
        if s.max_context is None:
            window = getattr(model.config.get_text_config(), "max_position_embeddings", None)
            self.max_context = min(window or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        self.ctx = DecodeContext.from_tokenizer(tokenizer_of(processor), extra_eos=model_eos)
        self.adapters, self.processor = AdapterSet(model), processor

    def run(self, after: Callable[[], None] | None = None) -> None:
        """Admit jobs, step the running batch and run commands until the scheduler closes.

        `after` runs after every round (the child process reports gauges that changed without an emit).
        """
        from .running_batch import RunningBatch

        batch = self.batch = RunningBatch(self.adapters, self.ctx, self.sched.emit, lean=self.settings.lean_decode)
        try:
            while (work := self.sched.next_work(self.settings.max_batch - batch.size, busy=batch.size > 0)) is not None:
                if isinstance(work, Command):
                    try:
                        work.future.set_result(work.fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                        work.future.set_exception(exc)
                    batch.drop_orphans()
                else:
                    if jobs := [j for j in work if not j.cancelled]:
                        self.last_batch_size = len(jobs)
                        self.batches_total += 1
                    batch.advance(jobs)
                if after is not None:
                    after()
        finally:
            batch.fail_all(EngineUnavailable("engine stopped"))

    def command(self, name: str, *args: Any) -> Any:
        """Run a named command (worker thread only, between steps)."""
        if name == "load_adapter":
            return self.adapters.load(*args)
        if name == "unload_adapter":
            return self.adapters.unload(*args)
        raise EngineError(f"unknown engine command {name!r}")

    def stats(self) -> dict[str, float]:
        """queue_depth, running, last_batch_size, batches_total, tokens_total."""
        batch = self.batch
        running = sum(row.live for row in batch.rows) if batch is not None else 0  # ended rows leave after the emit
        return {"queue_depth": float(self.sched.depth), "running": float(running),
                "last_batch_size": float(self.last_batch_size), "batches_total": float(self.batches_total),
                "tokens_total": float(batch.tokens if batch is not None else 0)}
