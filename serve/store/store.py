"""The interaction store: SQLAlchemy 2 over any URL, SQLite in WAL mode by default.

SQLite settings, and why:
- `journal_mode=WAL`: readers (the RL loop paging interactions) never block the writer (the
  gateway logging a response), and a commit is one sequential append to the log.
- `synchronous=FULL`: the log is fsynced at every commit. NORMAL would already survive a killed
  process, but may lose the last commits on power loss or an OS crash; we acknowledge an
  interaction (return its id) only after its commit, so the commit must be durable. One fsync
  per response is small next to a model forward pass.
- `busy_timeout`: concurrent writers (threadpool, a second process) wait instead of failing.

Methods are synchronous; the gateway calls them off the event loop: interactions through one writer
thread that commits many requests together (`writer.StoreWriter`), feedback in a worker thread.
"""

from __future__ import annotations

import errno
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import create_engine, delete, event, exists, func, insert, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from ..interaction import FeedbackRecord, InteractionRecord, InteractionUsage
from ..interaction import Interaction as InteractionModel
from .blobs import open_blobs
from .models import Feedback, Interaction
from .horizon import hold_writer_lock, visible_horizon
from .schema import check_schema


class UnknownInteraction(LookupError):
    """Feedback names an interaction id (or choice) the store does not have."""


class StoreUnavailable(RuntimeError):
    """The store could not take a write or answer a read (disk full, read-only, unreachable); `where` names it."""

    def __init__(self, where: str, cause: BaseException):
        self.where = where
        self.reason = str(getattr(cause, "orig", None) or cause).strip() or type(cause).__name__
        # SQLITE_FULL reads "database or disk is full"; a file write says ENOSPC
        self.full = getattr(cause, "errno", None) == errno.ENOSPC or "is full" in self.reason.lower()
        super().__init__(f"{where}: {self.reason}")


class Store:
    """Interactions, feedback and images of one deployment."""

    def __init__(self, url: str, images_dir: str | Path):
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # what a storage failure names: the database file, or the URL without its password
        self.where = (parsed.database if self.is_sqlite and parsed.database and parsed.database != ":memory:"
                      else parsed.render_as_string(hide_password=True))
        self.engine = create_engine(url, future=True)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            check_schema(self.engine, self.where)
        except Exception:  # a refused or unreachable database: leave no pooled connection behind
            self.engine.dispose()
            raise
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.blobs = open_blobs(images_dir)  # a folder, or an fsspec URL (scheme://...)

    def close(self) -> None:
        self.engine.dispose()

    def unavailable(self, exc: BaseException) -> BaseException:
        """`exc` as StoreUnavailable when it is the storage failing (the database, or the image files), else itself."""
        if isinstance(exc, OperationalError):
            return StoreUnavailable(self.where, exc)
        if isinstance(exc, OSError):
            return StoreUnavailable(str(self.blobs.root), exc)
        return exc

    def pragma(self, name: str) -> Any:
        """Read a SQLite PRAGMA (tests check WAL is on)."""
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

    # ------------------------------------------------------------------ writes

    def add_interactions(self, rows: Iterable[dict[str, Any]]) -> list[int]:
        """Insert the choices of one request in one transaction; returns their cursors (seq)."""
        return self.add_interaction_groups([list(rows)])[0]

    def add_interaction_groups(self, groups: list[list[dict[str, Any]]]) -> list[list[int]]:
        """Insert the choices of several requests in one transaction (one commit); each group's cursors.

        One bulk INSERT ... RETURNING for all rows, cursors in the order of the rows (a third of the
        ORM unit of work's time per row)."""
        flat = [row for group in groups for row in group]
        if not flat:
            return [[] for _ in groups]
        statement = insert(Interaction).returning(Interaction.seq, sort_by_parameter_order=True)
        with self.sessions.begin() as session:
            hold_writer_lock(session)
            seqs = list(session.scalars(statement, flat))
        out, start = [], 0
        for group in groups:
            out.append(seqs[start:start + len(group)])
            start += len(group)
        return out

    def add_feedback(self, interaction_id: str, choice_index: int = 0, **fields: Any) -> str:
        """Attach feedback to one choice; returns the feedback id. Raises UnknownInteraction."""
        with self.sessions.begin() as session:
            hold_writer_lock(session)
            row = session.scalar(select(Interaction).where(
                Interaction.id == interaction_id, Interaction.choice_index == choice_index))
            if row is None:
                known = session.scalar(select(Interaction.seq).where(Interaction.id == interaction_id).limit(1))
                what = f"choice_index {choice_index} of {interaction_id!r}" if known else repr(interaction_id)
                raise UnknownInteraction(f"No interaction {what} in the store.")
            fb_id = f"fb-{uuid.uuid4().hex}"
            session.add(Feedback(id=fb_id, interaction_seq=row.seq, created=time.time(), **fields))
            return fb_id

    def delete_interaction(self, interaction_id: str) -> int:
        """Delete every choice of one completion id and the feedback on them; returns how many choices.

        Its images stay: they are content-addressed and other interactions may hold the same bytes."""
        seqs = select(Interaction.seq).where(Interaction.id == interaction_id)
        with self.sessions.begin() as session:
            session.execute(delete(Feedback).where(Feedback.interaction_seq.in_(seqs)))
            return session.execute(delete(Interaction).where(Interaction.id == interaction_id)).rowcount

    # ------------------------------------------------------------------- reads

    def get_interaction(self, interaction_id: str) -> list[dict[str, Any]]:
        """All choices of one completion id (empty if unknown)."""
        with self.sessions() as session:
            rows = session.scalars(select(Interaction).where(Interaction.id == interaction_id)
                                   .order_by(Interaction.choice_index)).all()
            return [to_dict(r) for r in rows]

    def get_interactions(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The choices of several completion ids in one query: id -> its choices (unknown ids are left out)."""
        out: dict[str, list[dict[str, Any]]] = {}
        with self.sessions() as session:
            rows = session.scalars(select(Interaction).where(Interaction.id.in_(ids))
                                   .order_by(Interaction.seq)).all()
            for row in rows:
                out.setdefault(row.id, []).append(to_dict(row))
        return out

    def page_ids(self, prefix: str, after: str | None = None, limit: int = 20, descending: bool = False,
                 model: str | None = None, metadata: dict[str, str] | None = None) -> tuple[list[str], bool]:
        """One page of the completion ids starting with `prefix`, oldest first (or newest), and whether
        more follow; `model` matches the name asked for or the one that answered, `metadata` every
        key's value. Raises UnknownInteraction for an `after` that is not such an id."""
        first_choices = (Interaction.choice_index == 0, Interaction.id.startswith(prefix, autoescape=True))
        query = select(Interaction.seq, Interaction.id).where(*first_choices)
        if model is not None:
            query = query.where(or_(Interaction.model == model,
                                    Interaction.request["params"]["model"].as_string() == model))
        for key, value in (metadata or {}).items():
            query = query.where(Interaction.meta[key].as_string() == value)
        with self.sessions() as session:
            if after is not None:
                seq = session.scalar(select(Interaction.seq).where(Interaction.id == after, *first_choices))
                if seq is None:
                    raise UnknownInteraction(f"No completion {after[:80]!r} in the store.")
                query = query.where(Interaction.seq < seq if descending else Interaction.seq > seq)
            order = Interaction.seq.desc() if descending else Interaction.seq
            rows = session.execute(query.order_by(order).limit(limit + 1)).all()
        return [row.id for row in rows[:limit]], len(rows) > limit

    def list_interactions(self, after: int = 0, limit: int = 100,
                          gradable: bool | None = None) -> tuple[list[dict[str, Any]], int | None, bool]:
        """Page by cursor: rows with seq > after, oldest first; returns (rows, next_cursor, has_more).

        gradable=True keeps rows with a reference answer or at least one feedback row;
        gradable=False the others.
        """
        has_feedback = exists().where(Feedback.interaction_seq == Interaction.seq)
        query = select(Interaction).where(Interaction.seq > after).order_by(Interaction.seq).limit(limit + 1)
        if gradable is True:
            query = query.where(or_(Interaction.has_reference, has_feedback))
        elif gradable is False:
            query = query.where(~Interaction.has_reference, ~has_feedback)
        horizon = visible_horizon(self.engine, Interaction.seq)
        if horizon is not None:
            query = query.where(Interaction.seq <= horizon)
        with self.sessions() as session:
            rows = session.scalars(query).all()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [to_dict(r) for r in rows]
        next_cursor = rows[-1].seq if rows else (after or None)
        return items, next_cursor, more

    def list_feedback(self, after: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], int | None, bool]:
        """Feedback rows with seq > after, oldest first, each with its interaction: how the RL loop
        learns about feedback given long after the interaction itself was paged past."""
        query = select(Feedback).where(Feedback.seq > after).order_by(Feedback.seq).limit(limit + 1)
        horizon = visible_horizon(self.engine, Feedback.seq)
        if horizon is not None:
            query = query.where(Feedback.seq <= horizon)
        with self.sessions() as session:
            rows = session.scalars(query).all()
            more = len(rows) > limit
            rows = rows[:limit]
            items = [{**_feedback_dict(f), "cursor": str(f.seq), "interaction": to_dict(f.interaction)} for f in rows]
        return items, (rows[-1].seq if rows else (after or None)), more

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.count(Interaction.seq))) or 0)


def row_of(record: InteractionRecord, has_reference: bool) -> dict[str, Any]:
    """The table row of one logged choice (`to_dict` reads it back)."""
    fields = record.model_dump(exclude={"metadata", "usage", "request"})
    return {**fields, "request": record.request.model_dump(exclude_unset=True), "meta": record.metadata,
            "has_reference": has_reference, **record.usage.model_dump()}


def interaction_of(row: Interaction) -> InteractionModel:
    """One stored choice, with its feedback, as the export serves it (validated: a row that does not fit
    the model is an error naming the field, not a record the RL loop trips over later)."""
    return InteractionModel(
        id=row.id, choice_index=row.choice_index, cursor=str(row.seq), created=row.created,
        model=row.model, adapter_version=row.adapter_version,
        effort=row.effort, mode=row.mode, budget=row.budget, budget_hit=row.budget_hit,
        request=row.request, metadata=row.meta or {},
        problem_type=row.problem_type, task_type=row.task_type, gradable=bool(row.has_reference or row.feedback),
        thinking=row.thinking, answer=row.answer, text=row.text,
        prompt_token_ids=row.prompt_token_ids, completion_token_ids=row.completion_token_ids,
        logprobs=row.logprobs, finish_reason=row.finish_reason,
        usage=InteractionUsage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens,
                               reasoning_tokens=row.reasoning_tokens),
        latency_s=row.latency_s, stream=row.stream,
        feedback=[_feedback(f) for f in row.feedback],
    )


def to_dict(row: Interaction) -> dict[str, Any]:
    """The JSON shape of one stored choice, with its feedback, as the export endpoint returns it."""
    # exclude_unset: a stored request keeps exactly the keys it was written with (old rows lack some)
    return interaction_of(row).model_dump(exclude_unset=True)


def _feedback(f: Feedback) -> FeedbackRecord:
    return FeedbackRecord(id=f.id, created=f.created, thumbs=f.thumbs, rating=f.rating, score=f.score,
                          correction=f.correction, comment=f.comment, key_hash=f.key_hash, trusted=f.trusted)


def _feedback_dict(f: Feedback) -> dict[str, Any]:
    return _feedback(f).model_dump()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
