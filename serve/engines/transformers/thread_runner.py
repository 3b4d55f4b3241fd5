"""The engine's core in a thread of this process: cheaper to start than a child, and the tests' usual way.

Jobs go straight to the core's `Scheduler`; tokens come back to each request's event loop
through `loop.call_soon_threadsafe` (`Scheduler.emit`), one callback per loop per step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from ..base import EngineError, EngineUnavailable
from .core import CoreSettings, EngineCore
from .scheduler import Command, Job, Scheduler

__all__ = ["ThreadRunner"]


class ThreadRunner:
    """A `runner.Runner` whose core decodes in one daemon thread of the calling process."""

    def __init__(self, settings: CoreSettings, max_queue: int, batch_wait: float):
        self.settings = settings
        self.sched = Scheduler(max_queue, batch_wait)
        self.core = EngineCore(settings, self.sched)
        self.max_context = self.core.max_context
        self.processor: Any = None
        self._thread: threading.Thread | None = None
        self._stopped: concurrent.futures.Future = concurrent.futures.Future()

    @property
    def pid(self) -> None:
        """None: the core decodes in this process."""
        return None

    async def start(self) -> None:
        """Start the thread, which loads the model, and wait until it is ready."""
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._work, args=(ready,), name="transformers-engine", daemon=True)
        self._thread.start()
        try:
            await asyncio.wrap_future(ready)
        except Exception as exc:
            self._thread = None
            raise EngineError(f"cannot load model {self.settings.model_path!r}: {exc}") from exc
        self.processor, self.max_context = self.core.processor, self.core.max_context

    async def stop(self) -> None:
        """Close the scheduler (waiting jobs fail), then wait for the thread to end the running batch."""
        self.sched.close(EngineUnavailable("engine stopped"))
        if self._thread is not None:
            await asyncio.wrap_future(self._stopped)
            self._thread = None

    def _work(self, ready: concurrent.futures.Future) -> None:
        try:
            self.core.load()
        except BaseException as exc:  # noqa: BLE001 - reported to start() through the future
            ready.set_exception(exc)
            self._stopped.set_result(None)
            return
        ready.set_result(None)
        try:
            self.core.run()
        finally:
            self._stopped.set_result(None)

    def check_room(self) -> None:
        """EngineOverloaded when max_queue jobs already wait."""
        self.sched.check_room()

    def admit(self, job: Job) -> None:
        """Queue the job for the next step."""
        self.sched.admit(job)

    def cancel(self, job: Job) -> None:
        """Drop the job from the queue, or its row at the next step."""
        self.sched.cancel(job)

    def command(self, name: str, *args: Any) -> concurrent.futures.Future:
        """Queue a named core command; the future gets its answer (EngineUnavailable once stopped)."""
        core = self.core
        command = Command(lambda: core.command(name, *args))
        try:
            self.sched.submit(command)
        except EngineError as exc:
            command.future.set_exception(exc)
        return command.future

    def loaded_adapters(self) -> list[str]:
        """The core's adapter versions, in load order."""
        return list(self.core.adapters.internal) if self.core.adapters is not None else []

    def stats(self) -> dict[str, float]:
        """The core's gauges, read from this thread (plain numbers the worker updates)."""
        return self.core.stats()
