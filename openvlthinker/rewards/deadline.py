"""Give up on a pure-Python computation that runs too long, from any thread, without signals.

math-verify's timeout uses `signal.alarm`, which only works in the main thread, and sympy's
`simplify` has no bound of its own (`\\sin(362880·999·y)` grinds for minutes). So the work runs
in a throwaway daemon thread; the caller waits at most `seconds`, and on overrun returns
at once and asks CPython (`PyThreadState_SetAsyncExc`) to raise `DeadlineExceeded` inside the
worker at its next bytecode. The caller's own thread is never targeted, so nothing can leak
into it. A single long C call (one huge big-integer power) cannot be interrupted that way and
would keep a core busy until it ends, which is why the math grader also refuses explosive
inputs before they reach sympy. CPython only.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Callable, TypeVar

T = TypeVar("T")


class DeadlineExceeded(BaseException):
    """Raised inside an overrunning worker (BaseException, so `except Exception` won't eat it)."""


def _stop_thread(thread: threading.Thread) -> None:
    """Ask CPython to raise DeadlineExceeded in `thread` at its next bytecode boundary."""
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(DeadlineExceeded)
        )


def call_with_deadline(fn: Callable[[], T], seconds: float) -> tuple[bool, T | None]:
    """(True, fn()) if `fn` returns within `seconds`; (False, None) if it overran or raised."""
    outcome: list = []

    def work() -> None:
        try:
            outcome.append(fn())
        except BaseException:  # noqa: BLE001 - the worker reports through `outcome` only
            pass

    worker = threading.Thread(target=work, name="reward-deadline", daemon=True)
    worker.start()
    worker.join(seconds)
    if outcome:
        return True, outcome[0]
    if worker.is_alive():
        _stop_thread(worker)
    return False, None
