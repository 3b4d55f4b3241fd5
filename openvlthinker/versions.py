"""Adapter version folders: names, manifests and atomic publishing (shared by the RL loop and the server).

A version is an immutable folder `policy-vNNNN/` holding PEFT files (adapter_config.json,
adapter_model.safetensors) and manifest.json: {"version", "parent", "sha256": {file: hex},
"metrics"}. `publish` writes everything into a hidden temporary folder beside the target,
fsyncs the files and the folder, then renames it into place, so a reader (the server) sees
either no version or a complete one, even if the publisher is killed halfway.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FOLDER_PREFIX = "policy-"
_TMP_PREFIX = ".tmp-"
_NUMBERED = re.compile(r"^policy-v(\d{4,})$")


_VERSION = re.compile(r"^v(\d{4,})$")


def version_name(number: int) -> str:
    """`v0003` for 3."""
    if number < 0:
        raise ValueError(f"version numbers are >= 0, got {number}")
    return f"v{number:04d}"


def version_number(version: str | None) -> int | None:
    """3 for "v0003"; None for the base model (None) or a name that is not a numbered version."""
    match = _VERSION.match(version) if isinstance(version, str) else None
    return int(match.group(1)) if match else None


def folder_name(version: str) -> str:
    """`policy-v0003` for "v0003": the version's folder in an adapters folder."""
    if version_number(version) is None:
        raise ValueError(f"not a version name: {version!r} (expected v followed by 4 or more digits)")
    return f"{FOLDER_PREFIX}{version}"


def version_folder(adapters_dir: str | Path, version: str) -> Path:
    """The folder of `version` inside `adapters_dir`."""
    return Path(adapters_dir) / folder_name(version)


def pinned_model(served_name: str, version: str | None) -> str:
    """The model name that pins a request to `version` (`openvlthinker@v0003`); the alias itself for None."""
    return served_name if version is None else f"{served_name}@{version}"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published_versions(adapters_dir: str | Path) -> list[int]:
    """Numbers of the complete `policy-vNNNN` folders, ascending (temporary folders are ignored)."""
    root = Path(adapters_dir)
    if not root.is_dir():
        return []
    numbers = [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _NUMBERED.match(p.name))]
    return sorted(numbers)


def next_version(adapters_dir: str | Path) -> int:
    """One more than the newest published version (1 for an empty folder)."""
    versions = published_versions(adapters_dir)
    return versions[-1] + 1 if versions else 1


def remove_partial(adapters_dir: str | Path) -> list[str]:
    """Delete temporary folders left by a publisher that was killed; returns their names."""
    root = Path(adapters_dir)
    gone = [p for p in root.glob(f"{_TMP_PREFIX}*") if p.is_dir()] if root.is_dir() else []
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return [p.name for p in gone]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(
    source: str | Path, adapters_dir: str | Path, number: int, *, parent: str | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Copy a PEFT adapter folder to `adapters_dir/policy-vNNNN` atomically, with its manifest."""
    source, root = Path(source), Path(adapters_dir)
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} is not a PEFT adapter folder: missing {', '.join(missing)}")
    version = version_name(number)
    final = root / folder_name(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists: versions are immutable, publish a new number")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{_TMP_PREFIX}{FOLDER_PREFIX}{version}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        for name in ADAPTER_FILES:
            shutil.copyfile(source / name, tmp / name)
        manifest = {"version": version, "parent": parent, "created": time.time(),
                    "sha256": {name: sha256_file(tmp / name) for name in ADAPTER_FILES},
                    "metrics": dict(metrics or {})}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        for child in tmp.iterdir():
            _fsync(child)
        _fsync(tmp)
        os.rename(tmp, final)  # atomic on POSIX: readers never see a half-written version
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
