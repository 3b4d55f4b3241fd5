"""Cursor paging that never skips a row: a reader hands out only seqs that no open transaction can still add.

On PostgreSQL, seq values come from a sequence when a row is inserted, but rows become visible at
commit: with several writers, seq 7 can commit after seq 8, and a reader that paged up to 8 would
never see 7. So every transaction that takes seq values first holds a shared advisory lock until it
commits (`hold_writer_lock`), and a reader first takes the same lock exclusively, which waits for
the writers in flight, and reads the largest committed seq while holding it (`visible_horizon`).
Every seq at or below that horizon was taken by a transaction that had committed (or rolled back)
by then; a later writer takes its seq after the lock is released, so above the horizon. Pages stop
at the horizon. SQLite has one writer at a time and assigns seqs in commit order: no lock needed.
"""

from __future__ import annotations

from sqlalchemy import func, select, text

_LOCK_KEY = 0x6F766C74  # one advisory lock key for the store's writers ("ovlt")


def hold_writer_lock(session) -> None:
    """In a transaction about to insert rows: hold the shared writer lock until it commits (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock_shared(:k)"), {"k": _LOCK_KEY})


def visible_horizon(engine, seq_column) -> int | None:
    """The largest seq of `seq_column` that no open transaction can still add below (None: no limit, SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.begin() as conn:  # READ COMMITTED: the max below is read after the lock is granted
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        return int(conn.scalar(select(func.coalesce(func.max(seq_column), 0))))
