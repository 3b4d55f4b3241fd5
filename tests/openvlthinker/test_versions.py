"""Adapter version folders: atomic publish, manifests, numbering, leftovers of a killed publisher."""

import json
import os

import pytest

from openvlthinker.versions import next_version, publish, published_versions, remove_partial, sha256_file, version_name


@pytest.fixture
def adapter(tmp_path):
    src = tmp_path / "trained"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (src / "adapter_model.safetensors").write_bytes(os.urandom(256))
    return src


def test_publish_writes_a_verified_manifest(adapter, tmp_path):
    root = tmp_path / "adapters"
    folder = publish(adapter, root, 3, parent="v0002", metrics={"reward": 0.5})
    assert folder.name == "policy-v0003"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["version"] == "v0003" and manifest["parent"] == "v0002" and manifest["metrics"] == {"reward": 0.5}
    for name, digest in manifest["sha256"].items():
        assert sha256_file(folder / name) == digest == sha256_file(adapter / name)
    assert published_versions(root) == [3] and next_version(root) == 4


def test_versions_are_immutable_and_sources_checked(adapter, tmp_path):
    root = tmp_path / "adapters"
    publish(adapter, root, 1)
    with pytest.raises(FileExistsError, match="immutable"):
        publish(adapter, root, 1)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing adapter_model.safetensors"):
        publish(adapter, root, 2)
    assert published_versions(root) == [1] and not [p for p in root.iterdir() if p.name.startswith(".")]


def test_a_killed_publish_leaves_no_visible_version(adapter, tmp_path, monkeypatch):
    root = tmp_path / "adapters"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is interrupted just before the rename

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        publish(adapter, root, 1)
    assert published_versions(root) == [] and not any(root.iterdir())  # the temporary folder is gone too
    # A hard kill (no cleanup) leaves a hidden folder: never listed, removed on the next start.
    (root / ".tmp-policy-v0001-123-456").mkdir()
    assert published_versions(root) == [] and next_version(root) == 1
    assert remove_partial(root) == [".tmp-policy-v0001-123-456"] and not any(root.iterdir())


def test_version_names():
    assert version_name(7) == "v0007" and version_name(12345) == "v12345"
    with pytest.raises(ValueError):
        version_name(-1)
