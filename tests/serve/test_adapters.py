"""Adapter registry: path confinement, manifest checks, alias resolution, rollback, drain, restore."""

import asyncio
import hashlib
import json
import os

import pytest

from serve.adapters import AdapterRegistry
from serve.errors import APIError


def fake_adapter(root, name, manifest=True):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(64))
    if manifest:
        sums = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}
        (folder / "manifest.json").write_text(json.dumps({"parent": None, "sha256": sums, "metrics": {"acc": 0.5}}))
    return folder


@pytest.fixture
def reg(tmp_path, h):
    root = tmp_path / "adapters"
    for v in ("v0001", "v0002", "v0003"):
        fake_adapter(root, f"policy-{v}")
    engine = h.ScriptedEngine()
    return AdapterRegistry(engine, root, "openvlthinker", ["tiny", "/models/tiny"], state_file=tmp_path / "state.json")


def err(coro_or_fn) -> APIError:
    with pytest.raises(APIError) as info:
        if asyncio.iscoroutine(coro_or_fn):
            asyncio.run(coro_or_fn)
        else:
            coro_or_fn()
    return info.value


@pytest.mark.parametrize("path", ["/etc", "../outside", "policy-v0001/../../x", "..", "~/x", "C:\\x", "\\\\host\\share",
                                  "a/../../b", ".", ""])
def test_paths_outside_the_adapters_dir_are_400(reg, path):
    e = err(lambda: reg.resolve_folder(path=path))
    assert e.status == 400 and e.param == "path"


def test_symlink_escape_is_400(reg, tmp_path):
    outside = fake_adapter(tmp_path, "elsewhere")
    (reg.root / "policy-v0009").symlink_to(outside)
    assert err(lambda: reg.resolve_folder(path="policy-v0009")).code == "invalid_adapter_path"
    assert err(lambda: reg.resolve_folder(version="v0009")).code == "invalid_adapter_path"


def test_resolve_by_version_and_path(reg):
    assert reg.resolve_folder(version="v0002") == ("v0002", (reg.root / "policy-v0002").resolve())
    assert reg.resolve_folder(path="policy-v0003")[0] == "v0003"
    assert err(lambda: reg.resolve_folder(version="v0404")).status == 404
    assert err(lambda: reg.resolve_folder(version="../v1")).code == "invalid_version"
    (reg.root / "policy-v0005").mkdir()
    assert err(lambda: reg.resolve_folder(version="v0005")).code == "invalid_adapter"


def test_manifest_mismatch_is_refused(reg):
    (reg.root / "policy-v0002" / "adapter_model.safetensors").write_bytes(b"tampered")
    e = err(reg.load(version="v0002"))
    assert e.status == 400 and e.code == "adapter_checksum_mismatch"
    assert reg.engine.adapters == {}


def test_alias_pin_promote_rollback(reg):
    async def main():
        assert reg.acquire("openvlthinker").model == "tiny" and reg.acquire("/models/tiny").version is None
        a = await reg.load(version="v0001")
        b = await reg.load(path="policy-v0002")
        assert a.engine_name != b.engine_name and set(reg.engine.adapters) == {a.engine_name, b.engine_name}
        await reg.promote("v0001")
        old = reg.acquire("openvlthinker")  # resolved at arrival ...
        await reg.promote("v0002")
        assert old.version == "v0001" and old.model == "openvlthinker@v0001"  # ... and kept after the flip
        assert reg.acquire("openvlthinker").version == "v0002"
        assert reg.acquire("openvlthinker@v0001").version == "v0001"
        assert await reg.rollback() == "v0001"
        assert await reg.rollback() is None and reg.acquire("openvlthinker").version is None
        with pytest.raises(APIError) as info:
            await reg.rollback()
        assert info.value.status == 409
        with pytest.raises(APIError) as info:
            reg.acquire("openvlthinker@v0003")
        assert info.value.status == 404 and info.value.code == "model_not_found"
        with pytest.raises(APIError):
            reg.acquire("gpt-4")

    asyncio.run(main())


def test_unload_drains_in_flight_requests_and_never_reuses_names(reg):
    async def main():
        first = await reg.load(version="v0001")
        await reg.promote("v0001")
        with pytest.raises(APIError) as info:
            await reg.unload("v0001")
        assert info.value.status == 409  # the promoted version cannot go
        await reg.load(version="v0002")
        lease = reg.acquire("openvlthinker@v0002")
        await reg.promote("v0002")
        await reg.promote("v0001")
        task = asyncio.create_task(reg.unload("v0002"))
        await asyncio.sleep(0.05)
        assert not task.done() and "v0002" in reg.loaded  # waiting for the in-flight request
        with pytest.raises(APIError):
            reg.acquire("openvlthinker@v0002")  # hidden from new requests while draining
        lease.release()
        await asyncio.wait_for(task, 1)
        assert "v0002" not in reg.loaded and len(reg.engine.adapters) == 1
        again = await reg.load(version="v0002")
        assert again.engine_name not in (first.engine_name,) and again.engine_name.startswith("v0002-")
        # rollback to a version that was unloaded reloads it
        await reg.load(version="v0003")
        await reg.promote("v0003")
        await reg.unload("v0001")
        assert await reg.rollback() == "v0001" and "v0001" in reg.loaded

    asyncio.run(main())


def test_state_is_restored_on_restart(reg, tmp_path, h):
    async def before():
        await reg.load(version="v0001")
        await reg.load(version="v0002")
        await reg.promote("v0002")

    asyncio.run(before())
    fresh = AdapterRegistry(h.ScriptedEngine(), reg.root, "openvlthinker", ["tiny"], state_file=tmp_path / "state.json")
    asyncio.run(fresh.restore())
    assert fresh.promoted == "v0002" and set(fresh.loaded) == {"v0001", "v0002"}
    rows = {r["version"]: r for r in fresh.describe()}
    assert rows["v0002"]["promoted"] and rows["v0003"]["loaded"] is False and rows["v0001"]["metrics"] == {"acc": 0.5}
