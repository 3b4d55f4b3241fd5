"""The alias row in the database: changes under its lock, from several processes at once, lose nothing."""

import multiprocessing

import pytest
from sqlalchemy import create_engine

from serve.errors import APIError, conflict
from serve.store import Store
from serve.store.registry import AliasState, AliasTable
from tests.serve.postgres import postgres_server, postgres_url  # noqa: F401 - fixtures

PER_PROCESS = 15


def _append(url: str, who: str) -> None:
    """In a child process: promote `who-k` PER_PROCESS times, each time keeping the one before in the history."""
    engine = create_engine(url)
    table = AliasTable(engine, "openvlthinker", who)
    for k in range(PER_PROCESS):
        version = f"{who}-{k}"
        table.change(lambda s: s.change(promoted=version, history=s.history + (s.promoted,),
                                        loaded=s.loaded | {version}))
    engine.dispose()


def _hammer(url: str) -> AliasState:
    Store(url, "memory://unused").close()  # makes the tables
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(url, f"r{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    engine = create_engine(url)
    state = AliasTable(engine, "openvlthinker").read()
    engine.dispose()
    return state


def _check(state: AliasState) -> None:
    # every change saw the one before it: the history is the chain of promotions, none lost
    chain = [*state.history, state.promoted]
    assert state.revision == 3 * PER_PROCESS and len(chain) == 3 * PER_PROCESS + 1 and chain[0] is None
    assert sorted(chain[1:]) == sorted(f"r{i}-{k}" for i in range(3) for k in range(PER_PROCESS))
    assert len(state.loaded) == 3 * PER_PROCESS
    for i in range(3):  # each process' own promotions in its order
        assert [v for v in chain[1:] if v.startswith(f"r{i}-")] == [f"r{i}-{k}" for k in range(PER_PROCESS)]


@pytest.mark.slow
def test_processes_changing_one_sqlite_file_at_once_lose_no_change(tmp_path):
    _check(_hammer(f"sqlite:///{tmp_path / 'serve.db'}"))


@pytest.mark.slow
def test_processes_changing_one_postgresql_database_at_once_lose_no_change(postgres_url):  # noqa: F811
    _check(_hammer(postgres_url))


def test_a_refused_change_writes_nothing_and_an_unchanged_one_keeps_the_revision(tmp_path):
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    Store(url, tmp_path / "images").close()
    engine = create_engine(url)
    table = AliasTable(engine, "openvlthinker", "a")
    assert table.read() is None
    first = table.change(lambda s: s.change(loaded=s.loaded | {"v0001"}))
    assert first == AliasState(revision=1, loaded=frozenset({"v0001"})) and table.read() == first

    def refuse(state):
        raise conflict("no", None, "nope")

    with pytest.raises(APIError):
        table.change(refuse)
    assert table.change(lambda s: s) == first and table.read() == first
    assert AliasTable(engine, "other").read() is None  # one row per alias
    engine.dispose()
