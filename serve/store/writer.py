"""Group commit: one thread writes the gateway's interactions, every waiting request in one transaction.

SQLite takes one writer at a time. With one worker thread per request, concurrent commits find
the database locked and SQLite's busy handler sleeps in growing steps (up to 100 ms) before it
retries: 16 threads writing rows that take 1 ms each saw 80-180 ms at p99 per write on this machine
(`bench/store_writes.py`), and every chat response waits for its own commit. Here one thread owns
the writes: it takes every submission that is waiting, writes their image files, inserts all their
rows in one transaction (one fsync) and then resolves each caller's future. A submission is
acknowledged only once the transaction that holds it has committed. If a transaction fails, its
submissions are written again one at a time, so only the one at fault fails. Other writes (feedback)
run on the same thread, in order (`call`), so no write of the gateway waits on SQLite's lock.
A failure of the storage itself (disk full, read-only) reaches the caller as `StoreUnavailable`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from .store import Store

__all__ = ["StoreWriter", "WriterClosed"]

log = logging.getLogger("serve.store")


class WriterClosed(RuntimeError):
    """A submission arrived after the writer was closed."""


@dataclass
class _Submission:
    images: list[bytes]
    rows: list[dict[str, Any]]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


_STOP = object()


class StoreWriter:
    """Writes (image files, interaction rows) submissions to `store`, many per transaction, in order."""

    def __init__(self, store: Store, max_batch: int = 256):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.store, self.max_batch = store, max_batch
        self.batches = 0  # transactions committed (the tests read it)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # orders close() against submit()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def submit(self, images: list[bytes], rows: list[dict[str, Any]]) -> concurrent.futures.Future:
        """Queue one request's images and rows; the future gives their cursors once committed."""
        return self._put(_Submission(list(images), list(rows)))

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `fn()` on the writer thread, after what was submitted before it; the future gives its result."""
        return self._put(_Call(fn))

    def _put(self, item: "_Submission | _Call") -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise WriterClosed("the interaction store is closed")
            self._queue.put(item)
        return item.future

    def close(self, timeout: float | None = 30) -> None:
        """Write what was submitted, then stop the thread (later submissions raise WriterClosed)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                items.append(item)
            batch: list[_Submission] = []
            for item in items:  # consecutive submissions share a transaction; a call runs between them
                if isinstance(item, _Call):
                    if batch:
                        self._write(batch)
                        batch = []
                    self._run_call(item)
                    continue
                # From here a future cannot be cancelled. One cancelled before (its caller went away)
                # is still written, as the request it logs was served, but gets no result.
                item.future.set_running_or_notify_cancel()
                batch.append(item)
            if batch:
                self._write(batch)

    def _run_call(self, item: _Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return  # its caller went away before it ran: nothing was acknowledged
        try:
            item.future.set_result(item.fn())
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            item.future.set_exception(self.store.unavailable(exc))

    def _write(self, batch: list[_Submission]) -> None:
        try:
            for item in batch:  # files first: a committed row never points at a missing image
                for data in item.images:
                    self.store.blobs.put(data)
            cursors = self.store.add_interaction_groups([item.rows for item in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                if not batch[0].future.cancelled():
                    batch[0].future.set_exception(self.store.unavailable(exc))
                return
            log.warning("group commit of %d requests failed (%s); writing them one by one", len(batch), exc)
            for item in batch:
                self._write([item])
            return
        self.batches += 1
        for item, seqs in zip(batch, cursors):
            if not item.future.cancelled():
                item.future.set_result(seqs)
