"""The store's schema version: written on first open, accepted again, another version refused clearly."""

import sqlite3

import pytest

from serve.store import SCHEMA_VERSION, SchemaMismatch, Store
from tests.serve.test_store import row


def _version(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT id, version FROM schema_version").fetchall()


def test_a_new_database_records_the_code_version_and_reopens(tmp_path):
    db = tmp_path / "serve.db"
    Store(f"sqlite:///{db}", tmp_path / "images").close()
    assert _version(db) == [(1, SCHEMA_VERSION)]
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    store.add_interactions([row()])
    store.close()
    assert _version(db) == [(1, SCHEMA_VERSION)]


def test_a_database_from_before_versioning_gets_the_row(tmp_path):
    db = tmp_path / "serve.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    store.add_interactions([row()])
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE schema_version")
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    assert store.count() == 1 and _version(db) == [(1, SCHEMA_VERSION)]
    store.close()


@pytest.mark.parametrize("found", [SCHEMA_VERSION + 1, 1])  # 1: older than any upgrade knows
def test_another_version_is_refused_naming_both_and_what_to_do(tmp_path, found):
    db = tmp_path / "serve.db"
    Store(f"sqlite:///{db}", tmp_path / "images").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (found,))
    with pytest.raises(SchemaMismatch) as err:
        Store(f"sqlite:///{db}", tmp_path / "images")
    message = str(err.value)
    assert f"schema version {found}" in message and f"uses version {SCHEMA_VERSION}" in message
    assert str(db) in message and "--store" in message
    assert (err.value.found, err.value.expected) == (found, SCHEMA_VERSION)
    assert _version(db) == [(1, found)]  # refused, not rewritten


def test_a_version_2_database_is_upgraded_in_place_with_the_alias_table(tmp_path):
    db = tmp_path / "serve.db"
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    store.add_interactions([row()])
    store.close()
    with sqlite3.connect(db) as conn:  # what a version-2 gateway left: no adapter_aliases table, version 2
        conn.execute("DROP TABLE adapter_aliases")
        conn.execute("UPDATE schema_version SET version = 2")
    store = Store(f"sqlite:///{db}", tmp_path / "images")
    assert store.count() == 1 and _version(db) == [(1, SCHEMA_VERSION)] and SCHEMA_VERSION == 3
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM adapter_aliases").fetchone() == (0,)
