"""The adapters folder under faults: a publisher killed mid-publish, NaN and truncated adapters dropped in.

One gateway serves the whole module with a promoted version, and after every fault the test
checks that nothing partial or broken was loaded and that the served model still answers as
before (greedy, so the same tokens).

Publishing is `openvlthinker.versions.publish`, the function the RL loop's publish stage calls
(`online_rl/rounds.py`): it writes a hidden `.tmp-policy-vNNNN-*` folder, fsyncs it, renames it
into place. The publisher here is a child process running that function, killed with SIGKILL:
- at four chosen points, held there by wrapping the file calls it makes (half of the weights
  written, half of the manifest written, all written but not renamed, renamed but the folder not
  yet fsynced), so each kill lands exactly there;
- at random moments while it publishes version after version (its copies slowed to 4 KiB a
  millisecond), while a watcher loads every version as soon as it appears in the folder.
At its next start the loop removes the hidden folders (`remove_partial`, as `online_rl/loop.py`
does); that is run too.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PUBLISHER = r'''
import os, shutil, sys, time
from pathlib import Path
from openvlthinker import versions

source, root, first, stage, marker = sys.argv[1:6]
real_copy, real_rename, real_write = shutil.copyfile, os.rename, Path.write_text

def hold():
    Path(marker).touch()
    time.sleep(3600)

def copyfile(src, dst, *args, **kwargs):
    data = Path(src).read_bytes()
    with open(dst, "wb") as fh:
        for i in range(0, len(data), 4096):
            fh.write(data[i:i + 4096])
            if stage == "loop":
                fh.flush()
                time.sleep(0.001)
            elif stage == "weights" and str(dst).endswith(".safetensors") and i >= len(data) // 2:
                fh.flush()
                os.fsync(fh.fileno())
                hold()
    return dst

def write_text(self, text, *args, **kwargs):
    if stage == "manifest" and self.name == "manifest.json":
        real_write(self, text[: len(text) // 2], *args, **kwargs)
        hold()
    return real_write(self, text, *args, **kwargs)

def rename(src, dst):
    if stage == "rename":
        hold()
    real_rename(src, dst)
    if stage == "renamed":
        hold()

shutil.copyfile, os.rename, Path.write_text = copyfile, rename, write_text
number = int(first)
while True:
    versions.publish(source, root, number, metrics={"stage": stage})
    Path(marker).touch()
    if stage != "loop":
        break
    number += 1
'''


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@pytest.fixture(scope="module")
def served(module_gateway, tmp_path_factory):
    """(gateway with v0001 promoted, its adapters folder, a good adapter folder, the promoted greedy answer)."""
    from openvlthinker.models import DEFAULT_MODEL, random_lora
    from openvlthinker.versions import publish

    root = tmp_path_factory.mktemp("faults-adapters")
    adapters, good = root / "adapters", root / "good"
    random_lora(DEFAULT_MODEL, good, seed=1, r=4)
    publish(good, adapters, 1)
    server = module_gateway(root / "run", "--adapters-dir", str(adapters))
    assert server.admin("POST", "/adapters/load", json={"version": "v0001"}).status_code == 200
    assert server.admin("POST", "/adapters/promote", json={"version": "v0001"}).status_code == 200
    return server, adapters, good, _greedy(server)


def _greedy(server) -> dict:
    resp = server.chat(temperature=0, max_tokens=16, reasoning_effort="low")
    assert resp.status_code == 200, resp.text
    return {"adapter": resp.json()["adapter_version"], "message": resp.json()["choices"][0]["message"]}


def _unchanged(server, baseline) -> None:
    """The alias still serves v0001, with the same greedy answer; what is loaded is v0001 alone, and whole."""
    from serve.manifest import read_manifest

    listing = server.admin("GET", "/adapters").json()
    assert listing["promoted"] == "v0001", listing
    assert _greedy(server) == baseline
    assert [row["version"] for row in listing["data"] if row["loaded"]] == ["v0001"], listing
    assert read_manifest(server.run_dir.parent / "adapters" / "policy-v0001")["sha256"]  # its files as published


def _publisher(good: Path, adapters: Path, number: int, stage: str, marker: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PUBLISHER, str(good), str(adapters), str(number), stage,
                             str(marker)])


def _wait(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, f"publisher exited with {proc.returncode}"
        time.sleep(0.01)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("stage, number", [("weights", 11), ("manifest", 12), ("rename", 13), ("renamed", 14)])
def test_a_publisher_killed_at_each_step_leaves_no_partial_version(served, tmp_path, stage, number):
    server, adapters, good, baseline = served
    marker = tmp_path / "held"
    proc = _publisher(good, adapters, number, stage, marker)
    _wait(marker, proc)
    _kill(proc)
    version, final = f"v{number:04d}", adapters / f"policy-v{number:04d}"
    hidden = [p.name for p in adapters.glob(f".tmp-policy-{version}-*")]
    listed = {row["version"] for row in server.admin("GET", "/adapters").json()["data"]}
    load = server.admin("POST", "/adapters/load", json={"version": version})
    if stage == "renamed":  # the rename is the publish: what is visible is whole
        assert final.is_dir() and not hidden and version in listed
        assert load.status_code == 200, load.text
        assert server.admin("POST", "/adapters/unload", json={"version": version}).status_code == 200
    else:  # only the hidden folder exists, and the server neither lists nor loads it
        assert not final.exists() and len(hidden) == 1 and version not in listed
        assert load.status_code == 404 and load.json()["error"]["code"] == "adapter_not_found", load.text
        by_path = server.admin("POST", "/adapters/load", json={"path": hidden[0]})
        assert by_path.status_code == 400 and by_path.json()["error"]["code"] == "invalid_version", by_path.text
    _unchanged(server, baseline)


@pytest.mark.slow
def test_a_publisher_killed_at_random_never_gets_a_partial_version_loaded(served):
    from openvlthinker.versions import published_versions, remove_partial

    server, adapters, good, baseline = served
    earlier = {p.name for p in adapters.glob(".tmp-*")}  # left by the test above
    seen: set[str] = set()
    loads: list[tuple[str, int, str]] = []
    stop = threading.Event()

    def watch() -> None:  # the server loads each version the moment it is visible
        while not stop.is_set():
            for folder in sorted(adapters.glob("policy-v*")):
                version = folder.name.removeprefix("policy-")
                if version in seen or version == "v0001":
                    continue
                seen.add(version)
                resp = server.admin("POST", "/adapters/load", json={"version": version})
                loads.append((version, resp.status_code, resp.text[:300]))
                if resp.status_code == 200:
                    server.admin("POST", "/adapters/unload", json={"version": version})
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    rng = random.Random(0)
    try:
        for run in range(6):
            marker = adapters.parent / f"published-{run}"
            proc = _publisher(good, adapters, 100 + 100 * run, "loop", marker)
            _wait(marker, proc)  # at least one version out, then the kill lands anywhere in the next ones
            time.sleep(rng.uniform(0.0, 0.25))
            _kill(proc)
        visible = {p.name.removeprefix("policy-") for p in adapters.glob("policy-v*")} - {"v0001"}
        deadline = time.monotonic() + 30
        while not visible <= seen and time.monotonic() < deadline:  # the watcher tries every one
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(30)
    refused = [entry for entry in loads if entry[1] != 200]
    hidden = {p.name for p in adapters.glob(".tmp-*")}
    print(f"\n{len(loads)} versions published and loaded, {len(refused)} refused; {len(hidden - earlier)} of the "
          "6 kills landed inside a publish (a hidden folder left)")
    assert len(loads) >= 6 and not refused, refused
    assert len(hidden - earlier) >= 3  # the kills did land mid-publish, not only between two
    assert set(remove_partial(adapters)) == hidden  # what the loop does at its next start
    assert not list(adapters.glob(".tmp-*")) and len(published_versions(adapters)) == len(seen) + 1
    _unchanged(server, baseline)


def _nan(tensors: dict) -> dict:
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    return tensors


def _rewrite(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    save_file(edit(load_file(str(path))), str(path), metadata={"format": "pt"})


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rehash(folder: Path) -> None:
    """The manifest a publisher would write for these files: so the weights check has to find the fault."""
    from openvlthinker.versions import sha256_file

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["sha256"] = {name: sha256_file(folder / name) for name in ADAPTER_FILES}
    (folder / "manifest.json").write_text(json.dumps(manifest))


BROKEN = {
    "NaN weights, manifest matching them": (lambda d: (_rewrite(d, _nan), _rehash(d)),
                                            "adapter_model.safetensors contains NaN or infinite values"),
    "NaN weights, no manifest": (lambda d: (_rewrite(d, _nan), (d / "manifest.json").unlink()),
                                 "adapter_model.safetensors contains NaN or infinite values"),
    "weights truncated, manifest listing the whole file": (
        lambda d: _truncate(d / "adapter_model.safetensors"), "adapter_model.safetensors does not match its manifest"),
    "weights truncated, manifest matching them": (
        lambda d: (_truncate(d / "adapter_model.safetensors"), _rehash(d)), "cannot read adapter_model.safetensors"),
    "weights empty, no manifest": (
        lambda d: ((d / "adapter_model.safetensors").write_bytes(b""), (d / "manifest.json").unlink()),
        "cannot read adapter_model.safetensors"),
    "config truncated, manifest matching it": (lambda d: (_truncate(d / "adapter_config.json"), _rehash(d)),
                                               "unreadable adapter_config.json"),
    "manifest truncated": (lambda d: _truncate(d / "manifest.json"), "manifest.json of policy-v"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_adapter_dropped_in_is_refused_naming_its_file(served, case):
    from openvlthinker.versions import publish

    server, adapters, good, baseline = served
    number = 9000 + list(BROKEN).index(case)
    folder = publish(good, adapters, number)  # a whole version, then broken in place
    damage, message = BROKEN[case]
    damage(folder)
    version = f"v{number:04d}"
    resp = server.admin("POST", "/adapters/load", json={"version": version})
    error = resp.json()["error"]
    assert resp.status_code == 400 and message in error["message"], resp.text
    assert error["code"] in ("invalid_adapter", "adapter_checksum_mismatch", "invalid_manifest")
    pinned = server.chat(model=f"openvlthinker@{version}")
    assert pinned.status_code == 404 and pinned.json()["error"]["code"] == "model_not_found"
    _unchanged(server, baseline)
