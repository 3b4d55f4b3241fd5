"""The store's schema version: one row in the database, checked when a store opens.

A database made by these tables carries `SCHEMA_VERSION`. A database from before the version row
existed gets the columns added since the first release (`feedback.key_hash`, `feedback.trusted`),
then the row. A database of a version in `_UPGRADES` is brought up to this one in place (what was
added since is new tables, which `create_all` makes, or columns it lists). A database whose row
names any other version is refused with `SchemaMismatch`, so a gateway never writes rows that an
older or newer one would misread.
"""

from __future__ import annotations

from sqlalchemy import Integer, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Mapped, mapped_column

from . import registry  # noqa: F401 - its table (adapter_aliases) is one of Base's
from .models import Base

SCHEMA_VERSION = 3  # 1: the first release; 2: feedback.key_hash and feedback.trusted; 3: adapter_aliases

# Columns added after the first release: (table, column). `create_all` makes missing tables but never
# alters an existing one, so a database from before them gets each one added, NULL in its old rows.
_ADDED_COLUMNS = (("feedback", "key_hash"), ("feedback", "trusted"))
# Versions upgraded in place: version -> the columns added since it. 2 -> 3 only added a table.
_UPGRADES: dict[int, tuple[tuple[str, str], ...]] = {2: ()}


class SchemaVersion(Base):
    __tablename__ = "schema_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one row
    version: Mapped[int] = mapped_column(Integer)


class SchemaMismatch(RuntimeError):
    """The database's schema version is not the one this code writes."""

    def __init__(self, where: str, found: int, expected: int):
        self.found, self.expected = found, expected
        newer = found > expected
        advice = ("upgrade this gateway to the release that made it, or point --store at another database"
                  if newer else "migrate it with a release that knows both versions, or point --store at a new database")
        super().__init__(f"The store at {where} has schema version {found}, but this code uses version {expected}: "
                         f"{advice}.")


def check_schema(engine, where: str) -> None:
    """Create missing tables, bring a database from before versioning up to date, and refuse another version."""
    Base.metadata.create_all(engine)
    found = _read(engine)
    if found is None:
        _add_missing_columns(engine)
        try:
            with engine.begin() as conn:
                conn.execute(SchemaVersion.__table__.insert().values(id=1, version=SCHEMA_VERSION))
        except IntegrityError:
            pass  # another process opening the same database wrote it first
        found = _read(engine)
    if found in _UPGRADES:
        _add_missing_columns(engine, _UPGRADES[found])
        with engine.begin() as conn:  # WHERE version = found: two processes upgrading at once both succeed
            conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1, SchemaVersion.version == found)
                         .values(version=SCHEMA_VERSION))
        found = _read(engine)
    if found != SCHEMA_VERSION:
        raise SchemaMismatch(where, found, SCHEMA_VERSION)


def _read(engine) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(select(SchemaVersion.version).where(SchemaVersion.id == 1))


def _add_missing_columns(engine, columns=_ADDED_COLUMNS) -> None:
    """ALTER TABLE ... ADD COLUMN for every one of `columns` (table, name) an existing table lacks."""
    for table, name in columns:
        if name in {c["name"] for c in inspect(engine).get_columns(table)}:
            continue
        column = Base.metadata.tables[table].columns[name]
        ddl = f"ALTER TABLE {table} ADD COLUMN {name} {column.type.compile(engine.dialect)}"
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(ddl)
        except (OperationalError, ProgrammingError):
            # another process opening the same database added it first; anything else is still missing
            if name not in {c["name"] for c in inspect(engine).get_columns(table)}:
                raise
