"""The served alias in the database: which adapter version it serves, the ones before it, the loaded set.

Gateway replicas on one database agree through this row: an admin call on any replica changes it
in one transaction, and every replica polls it and makes its engine match (`AdapterRegistry.sync`).
A change holds the row's write lock from its first statement to its commit: the transaction opens
with an UPDATE of the row, which on PostgreSQL locks the row (a second replica's change waits for
the commit, then reads the new row) and on SQLite takes the database's write lock (other processes
on the same file wait in `busy_timeout`). No read happens before that lock, so two replicas
promoting at once run one after the other and end in one state; `revision` counts the changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from sqlalchemy import JSON, Float, Integer, String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from .models import Base


class AdapterAlias(Base):
    __tablename__ = "adapter_aliases"

    alias: Mapped[str] = mapped_column(String(200), primary_key=True)  # the served name (--served-name)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # +1 per change; replicas compare it when polling
    promoted: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: the base model
    history: Mapped[list] = mapped_column(JSON, default=list)  # previously promoted versions, newest last
    loaded: Mapped[list] = mapped_column(JSON, default=list)  # versions every replica keeps loaded
    updated: Mapped[float] = mapped_column(Float, default=0.0)
    updated_by: Mapped[str] = mapped_column(String(64), default="")  # the replica that made the change


@dataclass(frozen=True)
class AliasState:
    """One revision of the alias row."""

    revision: int = 0
    promoted: str | None = None
    history: tuple = ()
    loaded: frozenset = field(default_factory=frozenset)

    def change(self, **fields) -> "AliasState":
        return replace(self, **fields)


class AliasTable:
    """The row of one alias in the store's database; `change` applies a function to it under its lock."""

    def __init__(self, engine, alias: str, replica: str = ""):
        self.engine, self.alias, self.replica = engine, alias, replica

    def read(self) -> AliasState | None:
        """The alias' current row (None: no replica has written it yet)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(AdapterAlias.__table__).where(AdapterAlias.alias == self.alias)).first()
        return None if row is None else _state(row)

    def change(self, fn: Callable[[AliasState], AliasState]) -> AliasState:
        """Apply `fn` (which may raise to refuse) to the current state under the row's lock; the state written."""
        table = AdapterAlias.__table__
        for _ in range(3):
            with self.engine.begin() as conn:
                # The lock first: this UPDATE waits for any other replica's change to commit.
                locked = conn.execute(update(table).where(table.c.alias == self.alias)
                                      .values(revision=table.c.revision)).rowcount
                if locked:
                    before = _state(conn.execute(select(table).where(table.c.alias == self.alias)).one())
                    after = fn(before)
                    if after == before:
                        return before
                    after = after.change(revision=before.revision + 1)
                    conn.execute(update(table).where(table.c.alias == self.alias).values(
                        revision=after.revision, promoted=after.promoted, history=list(after.history),
                        loaded=sorted(after.loaded), updated=time.time(), updated_by=self.replica))
                    return after
            self._create()
        raise RuntimeError(f"the adapter alias row {self.alias!r} could not be locked")  # pragma: no cover

    def _create(self) -> None:
        """Insert the alias' empty row; another process inserting it first is fine."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(AdapterAlias.__table__).values(
                    alias=self.alias, revision=0, promoted=None, history=[], loaded=[], updated=time.time(),
                    updated_by=self.replica))
        except IntegrityError:
            pass


def _state(row) -> AliasState:
    history = tuple(v for v in (row.history or []) if v is None or isinstance(v, str))
    return AliasState(revision=int(row.revision), promoted=row.promoted, history=history,
                      loaded=frozenset(v for v in (row.loaded or []) if isinstance(v, str)))
