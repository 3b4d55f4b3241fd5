"""The adapter registry with the alias in the database: the single-process behaviour, and replicas that follow the row."""

import asyncio
import json

import pytest

from serve.adapters import AdapterRegistry
from serve.errors import APIError
from serve.store import Store
from serve.store.registry import AliasTable
from tests.serve.test_adapters import fake_adapter


def served(reg):
    """The version a request to the alias gets now (its lease released at once, so nothing stays in flight)."""
    lease = reg.acquire("openvlthinker")
    lease.release()
    return lease.entry.version if lease.entry else None


@pytest.fixture
def shared(tmp_path, h):
    """`shared(name)` -> a registry on its own engine, every one on the same SQLite alias row and adapters folder."""
    root = tmp_path / "adapters"
    for v in ("v0001", "v0002", "v0003"):
        fake_adapter(root, f"policy-{v}")
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "images")

    def make(name="a", state_file=None):
        return AdapterRegistry(h.ScriptedEngine(), root, "openvlthinker", ["tiny"], state_file=state_file,
                               table=AliasTable(store.engine, "openvlthinker", name))

    yield make
    store.close()


def test_promote_rollback_unload_as_in_one_process(shared):
    reg = shared()

    async def main():
        await reg.restore()
        await reg.load(version="v0001")
        await reg.load(version="v0002")
        await reg.promote("v0001")
        await reg.promote("v0002")
        lease = reg.acquire("openvlthinker")
        assert lease.version == "v0002" and reg.history == [None, "v0001"]
        lease.release()
        with pytest.raises(APIError) as info:
            await reg.unload("v0002")
        assert info.value.status == 409
        assert await reg.rollback() == "v0001"
        await reg.unload("v0002")
        assert set(reg.loaded) == {"v0001"} and len(reg.engine.adapters) == 1
        await reg.load(version="v0003")
        await reg.promote("v0003")
        await reg.unload("v0001")
        assert await reg.rollback() == "v0001" and "v0001" in reg.loaded  # reloaded
        assert await reg.rollback() is None and served(reg) is None
        with pytest.raises(APIError) as info:
            await reg.rollback()
        assert info.value.status == 409 and info.value.code == "no_history"
        row = reg.table.read()
        assert row.promoted is None and row.loaded == {"v0001", "v0003"} and row.history == ()

    asyncio.run(main())


def test_a_second_replica_follows_loads_promotions_rollbacks_and_unloads(shared):
    a, b = shared("a"), shared("b")

    async def main():
        await a.restore()
        await b.restore()
        await a.load(version="v0001")
        await a.promote("v0001")
        assert served(b) is None  # until it polls
        await b.sync()
        assert served(b) == "v0001" and set(b.loaded) == {"v0001"}
        assert b.loaded["v0001"].engine_name != a.loaded["v0001"].engine_name  # each engine its own name
        lease = b.acquire("openvlthinker")  # a request in flight on b keeps its version through the changes
        await b.load(version="v0002")  # through b this time
        await b.promote("v0002")
        await a.sync()
        assert served(a) == "v0002" and a.history == [None, "v0001"]
        await a.rollback()
        await a.unload("v0002")
        await b.sync()
        assert b.promoted == "v0001" and b.loaded["v0002"].draining
        assert lease.version == "v0001"
        await asyncio.sleep(0)  # the drain finishes: nothing in flight on v0002
        await asyncio.sleep(0)
        assert set(b.loaded) == {"v0001"} and len(b.engine.adapters) == 1
        await b.sync()  # nothing changed: nothing to do
        assert b.revision == a.revision == a.table.read().revision

    asyncio.run(main())


def test_a_replica_that_cannot_load_the_promoted_version_keeps_serving_the_previous_one(shared):
    a, b = shared("a"), shared("b")

    async def main():
        await a.load(version="v0001")
        await a.promote("v0001")
        await b.sync()
        await a.load(version="v0002")
        await a.promote("v0002")
        (b.root / "policy-v0002" / "adapter_model.safetensors").write_bytes(b"tampered")  # b cannot verify it now
        await b.sync()
        assert served(b) == "v0001" and not b._synced
        fake_adapter(b.root, "policy-v0002-fixed")
        (b.root / "policy-v0002").rename(b.root / "broken")
        (b.root / "policy-v0002-fixed").rename(b.root / "policy-v0002")
        await b.sync()  # the same revision, retried because it was not matched
        assert served(b) == "v0002" and b._synced

    asyncio.run(main())


def test_two_replicas_promoting_at_once_end_in_one_state(shared):
    a, b = shared("a"), shared("b")

    async def main():
        await a.load(version="v0001")
        await a.load(version="v0002")
        await b.sync()
        await asyncio.gather(*(r.promote(v) for _ in range(5) for r, v in ((a, "v0001"), (b, "v0002"))))
        await a.sync()
        await b.sync()
        row = a.table.read()
        assert a.promoted == b.promoted == row.promoted and row.promoted in ("v0001", "v0002")
        assert a.history == b.history == list(row.history)

    asyncio.run(main())


def test_an_earlier_release_state_file_seeds_an_empty_row_once(shared, tmp_path):
    state = tmp_path / "adapters_state.json"
    state.write_text(json.dumps({"promoted": "v0002", "history": [None], "loaded": ["v0001", "v0002"]}))
    first = shared("a", state_file=state)
    asyncio.run(first.restore())
    assert first.promoted == "v0002" and set(first.loaded) == {"v0001", "v0002"} and first.table.read().revision == 1
    state.write_text(json.dumps({"promoted": "v0001", "history": [], "loaded": ["v0001"]}))
    again = shared("b", state_file=state)
    asyncio.run(again.restore())
    assert again.promoted == "v0002"  # the row wins once it exists
