"""Give up on a pure-Python computation that runs too long, from any thread, without signals.

math-verify's timeout uses `signal.alarm`, which only works in the main thread, and sympy's
`simplify` has no bound of its own (`\\sin(362880·999·y)` grinds for minutes). So the work runs
in a throwaway daemon thread; the caller waits at most `seconds`, and on overrun returns
at once, and a reaper thread asks CPython (`PyThreadState_SetAsyncExc`) to raise
`DeadlineExceeded` inside the worker at its next bytecode, repeating until the worker is gone.
The caller's own thread is never targeted, so nothing can leak into it. A single long C call
(one huge big-integer power) cannot be interrupted that way and would keep a core busy until
it ends, which is why the math grader also refuses explosive inputs before they reach sympy.
CPython only.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(BaseException):
    """Raised inside an overrunning worker (BaseException, so `except Exception` won't eat it)."""


# Code that swallows the exception (a gc callback can) would keep the worker alive, so the
# shot is repeated this often, up to `_MAX_SHOTS` times, until the worker is gone.
_SHOT_INTERVAL = 0.05
_MAX_SHOTS = 200


def _shoot(ident: int, exc: type[BaseException] | None) -> None:
    """Schedule `exc` in thread `ident` at its next bytecode (None clears a scheduled one)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc) if exc else None)


def call_with_deadline(fn: Callable[[], T], seconds: float) -> tuple[bool, T | None]:
    """(True, fn()) if `fn` returns within `seconds`; (False, None) if it overran or raised."""
    outcome: list = []
    lock = threading.Lock()
    done = threading.Event()

    def work() -> None:
        try:
            try:
                outcome.append(fn())
            finally:
                with lock:  # no shot can be scheduled after this, and none stays pending
                    done.set()
                    _shoot(threading.get_ident(), None)
        except BaseException:  # noqa: BLE001, S110 - the worker reports through `outcome` only
            pass

    def reap() -> None:
        for _ in range(_MAX_SHOTS):
            with lock:
                if done.is_set() or not worker.is_alive():
                    return
                _shoot(worker.ident, DeadlineExceeded)
            if done.wait(_SHOT_INTERVAL):
                return

    worker = threading.Thread(target=work, name="reward-deadline", daemon=True)
    worker.start()
    worker.join(seconds)
    if outcome:
        return True, outcome[0]
    if worker.is_alive():
        threading.Thread(target=reap, name="reward-deadline-reaper", daemon=True).start()
    return False, None
