"""Where the engine's core runs: a thread of the gateway's process or a child process, behind one interface.

`TransformersEngine` (engine.py) holds one `Runner` and never asks which kind it is.
`ThreadRunner` (thread_runner.py) runs `core.EngineCore` in a thread of this process;
`ProcessRunner` (process_runner.py) runs it as the main thread of a child process, behind a
pipe, and restarts the child if it dies. Both are built from the same arguments, started and
stopped on the event loop, and take jobs, cancels and adapter commands from it.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Protocol

from .core import CoreSettings
from .scheduler import Job

__all__ = ["Runner"]


class Runner(Protocol):
    """What the engine asks of the place its core runs (see the module docstring)."""

    processor: Any  # renders and counts prompts on the caller's side (a text-only model's tokenizer); set by start()
    max_context: int  # prompt + completion tokens, known once the model is loaded

    def __init__(self, settings: CoreSettings, max_queue: int, batch_wait: float) -> None:
        """Nothing loads yet: start() does."""

    @property
    def pid(self) -> int | None:
        """The process decoding (None for a thread of this process)."""

    async def start(self) -> None:
        """Load the model and start decoding; EngineError (`cannot load model ...`) if it cannot."""

    async def stop(self) -> None:
        """Fail waiting and running requests with EngineUnavailable and end the core."""

    def check_room(self) -> None:
        """EngineOverloaded when no more requests fit (answered before a prompt is encoded)."""

    def admit(self, job: Job) -> None:
        """Queue an encoded job; its events reach `job.queue` on `job.loop`. EngineError if refused."""

    def cancel(self, job: Job) -> None:
        """The client left: drop the job, waiting or running."""

    def command(self, name: str, *args: Any) -> concurrent.futures.Future:
        """Run a named core command (`load_adapter`, `unload_adapter`) between two steps; its answer."""

    def loaded_adapters(self) -> list[str]:
        """Names of the loaded adapter versions, in load order."""

    def stats(self) -> dict[str, float]:
        """The core's gauges (queue_depth, running, last_batch_size, batches_total, tokens_total, ...)."""
