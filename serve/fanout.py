"""Run the `n` engine requests of one chat completion concurrently and merge their events.

Each choice is pumped by its own task into one unbounded queue, so a slow consumer never
stalls the engine and choices interleave as they decode. `start()` returns once every
choice has produced its first event, which is when the engine has admitted it: overload and
engine errors surface there, before a streamed response has sent its 200 headers.
`close()` cancels whatever still runs (client gone, another choice failed), which closes the
engine iterators and frees their slots.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from serve.engines.base import GenerationRequest

_END = object()


class Fanout:
    """Merged `(choice_index, TokenEvent | GenerationResult)` stream of several engine requests."""

    def __init__(self, engine: Any, requests: list[GenerationRequest]):
        self.engine, self.requests = engine, requests
        self.queue: asyncio.Queue = asyncio.Queue()
        self.started = [asyncio.get_running_loop().create_future() for _ in requests]
        self.tasks: list[asyncio.Task] = []
        self.pending = len(requests)

    async def start(self) -> None:
        """Launch every choice and wait until each has decoded its first token (or failed)."""
        self.tasks = [asyncio.create_task(self._pump(i, r)) for i, r in enumerate(self.requests)]
        try:
            for fut in self.started:
                await fut  # re-raises the first choice's failure (EngineOverloaded, EngineError)
        except BaseException:
            await self.close()
            raise

    async def _pump(self, index: int, request: GenerationRequest) -> None:
        started = self.started[index]
        gen = self.engine.generate(request)
        try:
            async for item in gen:
                if not started.done():
                    started.set_result(None)
                self.queue.put_nowait((index, item))
            if not started.done():
                started.set_result(None)
            self.queue.put_nowait((index, _END))
        except asyncio.CancelledError:
            if not started.done():
                started.cancel()
            raise
        except Exception as exc:  # handed to the consumer, which maps it to an HTTP error
            if not started.done():
                started.set_exception(exc)
            else:
                self.queue.put_nowait((index, exc))
        finally:
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # noqa: BLE001 - closing is best effort; the slot is freed by cancellation
                    pass

    async def events(self) -> AsyncIterator[tuple[int, Any]]:
        """Yield events until every choice has finished; re-raise a choice's failure."""
        while self.pending:
            index, item = await self.queue.get()
            if item is _END:
                self.pending -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            yield index, item

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for fut in self.started:  # silence "exception never retrieved" for futures nobody awaited
            if fut.done() and not fut.cancelled():
                fut.exception()
