"""The transformers engine's core in a child process, so that decoding never waits for the GIL.

On a small model a decoding step is thousands of short torch calls, each of which gives the
GIL up and has to take it back. In one process the gateway's threads (HTTP parsing, JSON,
image decoding, the store) take it in between, and the engine thread waits: measured on two
cores, the whole server never used more than one core. Here the `EngineCore` runs in a
spawned child with its own interpreter; the gateway process keeps the processor (prompt
rendering and token counting) and the vision tower (`gateway_vision.py`: images cross the pipe
as features), and talks to the child over a pipe. `ProcessRunner` is the parent's side, a
`runner.Runner` like the in-process `thread_runner.ThreadRunner`:

    parent -> child   ("job", key, request, prefix, inputs)  ("cancel", key)
                      ("command", key, name, args)  ("stop",)
    child -> parent   ("ready", max_context) | ("failed", message)   once, after loading
                      ("events", [(key, TokenEvent | GenerationResult | EngineError)], stats)
                      ("stats", stats)   after a round that changed the gauges without events
                      ("reply", key, ok, value_or_error)

Events of one decoding step travel as one message. If the child dies, every request in it
fails with EngineUnavailable, a new child is started and the adapters loaded before are loaded
into it again; requests that arrive meanwhile get EngineUnavailable (HTTP 503).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from openvlthinker.models import load_prompt_processor

from ..base import EngineError, EngineOverloaded, EngineUnavailable, GenerationResult
from .core import CoreSettings, EngineCore
from .scheduler import Job, Scheduler

__all__ = ["ProcessRunner"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15
RESTART_DELAY_MAX_S = 30
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the folder holding `serve`, for the child's imports


class ProcessRunner:
    """Parent side: starts the child, routes jobs, cancels, commands and their answers."""

    def __init__(self, settings: CoreSettings, max_queue: int, batch_wait: float):
        self.settings, self.max_queue, self.batch_wait = settings, max_queue, batch_wait
        self.max_context = settings.max_context
        self.processor: Any = None  # this side's copy: renders, counts and encodes prompts
        self.vision = None  # the vision tower on this side of the pipe (gateway_vision.GatewayVision), if any
        self.adapters: dict[str, str] = {}  # loaded versions (name -> folder), reloaded into a restarted child
        self.restarts = 0
        self._keys = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._replies: dict[int, concurrent.futures.Future] = {}
        self._send_lock = threading.Lock()
        self._stats: dict[str, float] = {}
        self._proc = self._conn = self._reader = None
        self._ready = threading.Event()
        self._stopping = False

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load this side's processor (and vision tower), then spawn the child and wait for its model."""
        import torch

        from .gateway_vision import GatewayVision

        name = self.settings.model_path
        try:  # first, so a bad folder starts no child
            processor = await asyncio.to_thread(load_prompt_processor, name)
            vision = None
            if self.settings.lean_decode:  # the vision tower runs here too (the model's forward needs pixels)
                torch.set_num_threads(1)  # small work; the other core belongs to the engine's process
                vision = await asyncio.to_thread(GatewayVision.load, name, self.settings.dtype)
        except Exception as exc:
            raise EngineError(f"cannot load model {name!r}: {exc}") from exc
        await asyncio.to_thread(self._start_child)
        self.processor, self.vision = processor, vision

    async def stop(self) -> None:
        """Ask the child to stop (running requests fail with EngineUnavailable) and wait for it."""
        await asyncio.to_thread(self._stop_child)

    def _start_child(self) -> None:
        """Spawn the child and wait until its model is loaded; EngineError with its reason if it fails."""
        self._stopping = False
        self._spawn()
        self._ready.set()
        self._reader = threading.Thread(target=self._read, name="engine-process-reader", daemon=True)
        self._reader.start()

    def _spawn(self) -> None:
        # A plain `python -m` child on one end of a socket pair, not multiprocessing's spawn: that
        # re-imports the parent's __main__, which breaks any script without a main guard.
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
        proc = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        conn = Connection(ours.detach())
        try:
            conn.send((self.settings, self.max_queue, self.batch_wait))
            message = conn.recv()
        except (EOFError, OSError):
            conn.close()
            raise EngineError(f"the engine process exited while loading the model (exit code {proc.wait(5)})") from None
        if message[0] != "ready":
            conn.close()
            proc.wait(5)
            raise EngineError(message[1])
        self.max_context = message[1]
        self._proc, self._conn = proc, conn

    def _stop_child(self) -> None:
        self._stopping = True
        self._ready.clear()
        try:
            self._send(("stop",))
        except EngineUnavailable:
            pass
        if self._reader is not None:  # it returns on "stopped", on EOF, or after a restart it was in
            self._reader.join(STOP_TIMEOUT_S + RESTART_DELAY_MAX_S)
        self._close_child()
        self._fail_outstanding(EngineUnavailable("engine stopped"))
        self._reader = None

    def _close_child(self) -> None:
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if proc is not None:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if conn is not None:
            conn.close()

    # ---- work ------------------------------------------------------------------------------

    def check_room(self) -> None:
        """EngineOverloaded when max_batch + max_queue jobs are in the child (it checks its own queue too)."""
        if self.in_flight >= self.settings.max_batch + self.max_queue:
            raise EngineOverloaded(f"{self.in_flight} requests are already in the engine "
                                   f"(max_batch {self.settings.max_batch} + max_queue {self.max_queue})")

    def admit(self, job: Job) -> None:
        """Send a job to the child (its images as features when the tower runs here); its events come back
        to the job's loop and queue."""
        if self.vision is not None:
            job.inputs = self.vision.encode(job.inputs)
        job.key = next(self._keys)
        self._jobs[job.key] = job
        request = dataclasses.replace(job.request, messages=[])  # the images travel once, encoded in `inputs`
        try:
            self._send(("job", job.key, request, job.prefix, job.inputs))
        except EngineError:
            self._jobs.pop(job.key, None)
            raise

    def cancel(self, job: Job) -> None:
        """The client left: the child drops the job (waiting or running)."""
        job.cancelled = True
        if self._jobs.pop(job.key, None) is not None:
            try:
                self._send(("cancel", job.key))
            except EngineUnavailable:
                pass

    def command(self, name: str, *args: Any) -> concurrent.futures.Future:
        """Run a named core command in the child between two steps; the future gets its answer.

        The versions loaded are noted here too (before the caller sees the answer), to load them
        again into a restarted child."""
        key = next(self._keys)
        future: concurrent.futures.Future = concurrent.futures.Future()
        if name in ("load_adapter", "unload_adapter"):
            future.add_done_callback(lambda done: self._note_adapter(done, name, args))
        self._replies[key] = future
        try:
            self._send(("command", key, name, args))
        except EngineError as exc:
            self._replies.pop(key, None)
            future.set_exception(exc)
        return future

    def _note_adapter(self, done: concurrent.futures.Future, command: str, args: tuple) -> None:
        if done.exception() is not None:
            return
        if command == "load_adapter":
            self.adapters[args[0]] = args[1]
        else:
            self.adapters.pop(args[0], None)

    def loaded_adapters(self) -> list[str]:
        """Names of the versions loaded into the child, in load order."""
        return list(self.adapters)

    @property
    def pid(self) -> int | None:
        """The child's process id (None when not running)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def in_flight(self) -> int:
        """Jobs sent to the child that have not ended."""
        return len(self._jobs)

    def stats(self) -> dict[str, float]:
        """The child's gauges as of its last step, plus restarts."""
        return {**self._stats, "restarts": float(self.restarts)}

    def _send(self, message: tuple) -> None:
        if not self._ready.is_set() and message[0] != "stop":
            raise EngineUnavailable("the engine process is not running (starting or restarting)")
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError, AttributeError) as exc:
                raise EngineUnavailable(f"the engine process is not reachable: {exc}") from exc

    # ---- the reader thread -----------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError, AttributeError):  # AttributeError: stop() closed it meanwhile
                if self._stopping:
                    return
                self._restart()
                if self._conn is None:
                    return
                continue
            kind = message[0]
            if kind == "events":
                self._stats = message[2]
                self._deliver(message[1])
            elif kind == "stats":
                self._stats = message[1]
            elif kind == "reply":
                future = self._replies.pop(message[1], None)
                if future is not None:
                    (future.set_result if message[2] else future.set_exception)(message[3])
            elif kind == "stopped":
                return

    def _deliver(self, pairs: list[tuple[int, Any]]) -> None:
        routed = []
        for key, item in pairs:
            ended = isinstance(item, (GenerationResult, BaseException))
            job = self._jobs.pop(key, None) if ended else self._jobs.get(key)
            if job is not None:
                routed.append((job, item))
        Scheduler.emit(routed)

    def _fail_outstanding(self, error: EngineError) -> None:
        jobs, self._jobs = list(self._jobs.values()), {}
        Scheduler.emit([(job, error) for job in jobs if not job.cancelled])
        replies, self._replies = list(self._replies.values()), {}
        for future in replies:
            future.set_exception(error)

    def _restart(self) -> None:
        """The child died: fail what it held, start a new one, load the adapters again."""
        self._ready.clear()
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:  # the pipe broke but the process lives on: end it
            self._proc.kill()
            code = self._proc.wait()
        log.error("the engine process exited unexpectedly (exit code %s); restarting it", code)
        self._fail_outstanding(EngineUnavailable(f"the engine process exited (exit code {code}); it is restarting"))
        self._close_child()  # the dead child's end of the pipe is closed too, not leaked per restart
        delay = 1.0
        while not self._stopping:
            try:
                self._spawn()
                break
            except EngineError as exc:  # e.g. out of memory right now: try again, less and less often
                log.error("could not restart the engine process (%s); retrying in %.0f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX_S)
        if self._conn is None:
            return
        if self._stopping:  # stop() came while the new child was loading
            self._conn.send(("stop",))
            return
        for name, path in list(self.adapters.items()):
            try:
                self._conn.send(("command", 0, "load_adapter", (name, path)))
                reply = self._conn.recv()
                while reply[0] != "reply":  # nothing else runs yet, but stay robust
                    reply = self._conn.recv()
                if not reply[2]:
                    raise reply[3]
            except Exception:  # noqa: BLE001 - a version that no longer loads is dropped, not fatal
                log.exception("adapter %s could not be reloaded after the restart; it is dropped", name)
                self.adapters.pop(name, None)
        self.restarts += 1
        self._ready.set()


# ---- the child ---------------------------------------------------------------------------------


def _child_main(conn: Connection) -> None:
    """The engine's child process: settings first, then load, then decode until told to stop."""
    settings, max_queue, batch_wait = conn.recv()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the gateway, which stops us in order
    send_lock = threading.Lock()
    jobs: dict[int, Job] = {}

    def send(message: tuple) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError):
                pass  # the parent is gone; the receiver sees EOF and closes the scheduler

    reported: dict[str, float] = {}

    def emit(items: list[tuple[Job, Any]]) -> None:
        pairs = []
        for job, item in items:
            if isinstance(item, (GenerationResult, BaseException)):
                jobs.pop(job.key, None)
            pairs.append((job.key, item))
        reported.update(core.stats())
        send(("events", pairs, dict(reported)))

    def report_changes() -> None:
        # A row cancelled after a step's emit leaves without another one: say so, or the
        # gateway's gauges would show it running until the next request.
        stats = core.stats()
        if any(stats[k] != reported.get(k) for k in ("running", "queue_depth")):
            reported.update(stats)
            send(("stats", dict(reported)))

    sched = Scheduler(max_queue, batch_wait, emit=emit)
    core = EngineCore(settings, sched)
    try:
        core.load()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        send(("failed", f"cannot load model {settings.model_path!r}: {type(exc).__name__}: {exc}"))
        return
    send(("ready", core.max_context))
    threading.Thread(target=_receive, args=(conn, sched, core, jobs, send), name="engine-receiver",
                     daemon=True).start()
    core.run(after=report_changes)
    send(("stopped",))


def _reply(key: int, future: concurrent.futures.Future) -> tuple:
    """A command's answer as a message; errors become EngineError (any exception may not pickle)."""
    exc = future.exception()
    if exc is None:
        return ("reply", key, True, future.result())
    return ("reply", key, False, exc if isinstance(exc, EngineError) else EngineError(f"{type(exc).__name__}: {exc}"))


def _receive(conn, sched: Scheduler, core: EngineCore, jobs: dict[int, Job], send) -> None:
    """Child side: turn the parent's messages into scheduler work until told to stop or the pipe closes."""
    from .scheduler import Command

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent died: stop decoding for nobody
            sched.close(EngineUnavailable("the gateway went away"))
            return
        kind = message[0]
        if kind == "job":
            _, key, request, prefix, inputs = message
            job = Job(request, None, None, inputs, prefix, key=key)
            jobs[key] = job
            try:
                sched.admit(job)
            except EngineError as exc:
                jobs.pop(key, None)
                send(("events", [(key, exc)], core.stats()))
        elif kind == "cancel":
            job = jobs.pop(message[1], None)
            if job is not None:
                sched.cancel(job)
        elif kind == "command":
            _, key, name, args = message
            command = Command(lambda name=name, args=args: core.command(name, *args))
            command.future.add_done_callback(lambda f, key=key: send(_reply(key, f)))
            try:
                sched.submit(command)
            except EngineError as exc:
                send(("reply", key, False, exc))
        elif kind == "stop":
            sched.close(EngineUnavailable("engine stopped"))
            return


if __name__ == "__main__":
    _child_main(Connection(int(sys.argv[1])))
