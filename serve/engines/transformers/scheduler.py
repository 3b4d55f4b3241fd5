"""The bounded request queue between the event loop(s) and the engine's single worker thread.

Clients append jobs from their event loop. The worker asks `next_work(room, busy)` between
decoding steps: a command (adapter load/unload) always goes first; while rows are decoding
it gets at once whatever jobs wait (at most `room`, so the running batch stays within
the engine's `max_batch`); when idle it blocks until a job arrives and then waits up to `batch_wait`
seconds for company, so requests sent together are prefilled together. Results travel back
with `loop.call_soon_threadsafe`, one callback per loop per decoding step, so the worker never
touches asyncio objects and the event loop never touches torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..base import EngineError, EngineOverloaded, EngineUnavailable, GenerationRequest

__all__ = ["Command", "Job", "Scheduler"]


@dataclass(eq=False)
class Job:
    """One admitted request, its prompt encoded on the caller's side, and where its output goes."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop | None  # None in the engine's child process, which answers through a pipe
    queue: asyncio.Queue | None
    inputs: dict[str, Any]  # the prompt's model inputs (inputs.encode_one)
    prefix: str  # a continued assistant message, if any
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set from the client side; the worker drops the row
    key: int = 0  # the job's number in the engine's child process (process_runner.py)


@dataclass(eq=False)
class Command:
    """Work other than decoding, run by the worker between batches."""

    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


def _deliver(items: list[tuple[Job, Any]]) -> None:
    """On a request's event loop: hand events, results or errors to its queue."""
    for job, item in items:
        job.queue.put_nowait(item)


class Scheduler:
    """Waiting jobs and commands, guarded by one condition variable."""

    def __init__(self, max_queue: int, batch_wait: float, emit: Callable[[list[tuple[Job, Any]]], None] | None = None):
        self.max_queue, self.batch_wait = max_queue, batch_wait
        if emit is not None:  # the engine's child process sends to its pipe instead of to event loops
            self.emit = emit  # type: ignore[method-assign]
        self._cond = threading.Condition()
        self._pending: deque[Job] = deque()
        self._commands: deque[Command] = deque()
        self.closed = False

    @property
    def depth(self) -> int:
        """Jobs waiting for a batch."""
        return len(self._pending)

    def check_room(self) -> None:
        """EngineOverloaded when max_queue jobs are already waiting."""
        if len(self._pending) >= self.max_queue:
            raise EngineOverloaded(f"{len(self._pending)} requests are already waiting (max_queue {self.max_queue})")

    def admit(self, job: Job) -> None:
        """Queue a job, or raise EngineOverloaded / EngineError (closed)."""
        with self._cond:
            if self.closed:
                raise EngineUnavailable("engine is not running")
            self.check_room()
            self._pending.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """Mark a job abandoned; a waiting one leaves the queue at once, a running row stops next step."""
        with self._cond:
            job.cancelled = True
            try:
                self._pending.remove(job)
            except ValueError:
                pass

    def submit(self, command: Command) -> None:
        """Queue a command for the worker."""
        with self._cond:
            if self.closed:
                raise EngineUnavailable("engine is not running")
            self._commands.append(command)
            self._cond.notify_all()

    def next_work(self, room: int, busy: bool) -> Command | list[Job] | None:
        """Worker side: a command, or up to `room` jobs ([] when busy and none wait); None once closed.

        busy: rows are decoding, so never block; idle: block for the first job, then let it
        wait up to batch_wait for company (until `room` jobs wait).
        """
        with self._cond:
            while not self.closed:
                if self._commands:
                    return self._commands.popleft()
                if busy or room <= 0:
                    return self._take(room)
                if self._pending:
                    wait = self._pending[0].arrival + self.batch_wait - time.monotonic()
                    if len(self._pending) >= room or wait <= 0:
                        return self._take(room)
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
        return None

    def _take(self, room: int) -> list[Job]:
        return [self._pending.popleft() for _ in range(min(max(room, 0), len(self._pending)))]

    def reopen(self) -> None:
        """Accept work again (after close, for a restarted engine)."""
        with self._cond:
            self.closed = False

    def close(self, error: EngineError) -> None:
        """Stop accepting work; fail every waiting job and command with `error`."""
        with self._cond:
            self.closed = True
            waiting, self._pending = list(self._pending), deque()
            commands, self._commands = list(self._commands), deque()
            self._cond.notify_all()
        self.fail(waiting, error)
        for command in commands:
            command.future.set_exception(error)

    @staticmethod
    def emit(items: list[tuple[Job, Any]]) -> None:
        """Push (job, event | result | error) pairs to their loops, one callback per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Job, Any]]] = {}
        for job, item in items:
            by_loop.setdefault(job.loop, []).append((job, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the client's loop is closed: nobody is listening any more
                for job, _ in batch:
                    job.cancelled = True

    def fail(self, jobs: list[Job], error: EngineError) -> None:
        """Deliver `error` to each job whose client is still there."""
        self.emit([(job, error) for job in jobs if not job.cancelled])
