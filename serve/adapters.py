"""Adapter versions: load from the adapters folder, the served alias, pinning, rollback, drain.

A version is an immutable folder `policy-vNNNN/` (PEFT files + optional manifest.json with the
sha256 of each file, the parent version and metrics). Every load gets a fresh engine name
(`v0003-<boot>-<k>`), never reused, because engines cache by adapter name.

A request resolves its model once, on arrival (`acquire`), and holds a Lease on that version
until its response is done; flipping the alias affects only later requests. Everything here
runs on the event loop, so resolve-and-count is atomic without locks; admin mutations are
serialised by one asyncio lock. Unload first hides the version from new requests, then waits
until its in-flight count drops to zero, then asks the engine to unload it.
The manifest format and its checks live in `manifest.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from openvlthinker.versions import FOLDER_PREFIX

from .errors import APIError, conflict, invalid, not_found
from .manifest import ADAPTER_FILES, peek_manifest, read_manifest

log = logging.getLogger("serve.adapters")

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")


@dataclass
class Version:
    """A loaded adapter version and the requests currently using it."""

    version: str
    engine_name: str
    path: Path
    manifest: dict[str, Any]
    in_flight: int = 0
    draining: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Lease:
    """One request's hold on the version it resolved to; `release()` is idempotent."""

    def __init__(self, model: str, entry: Version | None):
        self.model, self.entry, self._held = model, entry, True
        if entry is not None:
            entry.in_flight += 1
            entry.idle.clear()

    @property
    def version(self) -> str | None:
        return self.entry.version if self.entry else None

    @property
    def engine_name(self) -> str | None:
        return self.entry.engine_name if self.entry else None

    def release(self) -> None:
        if self._held and self.entry is not None:
            self.entry.in_flight -= 1
            if self.entry.in_flight == 0:
                self.entry.idle.set()
        self._held = False


class AdapterRegistry:
    """Versions on disk and in the engine, the alias (promoted version) and its history."""

    def __init__(self, engine, adapters_dir: str | os.PathLike, served_name: str, base_names: list[str],
                 state_file: str | os.PathLike | None = None):
        self.engine = engine
        self.root = Path(adapters_dir)
        self.served_name = served_name
        self.base_name = base_names[0]
        self.base_names = set(base_names)
        self.state_file = Path(state_file) if state_file else None
        self.loaded: dict[str, Version] = {}
        self.promoted: str | None = None
        self.history: list[str | None] = []  # previously promoted versions, newest last
        self._lock = asyncio.Lock()
        self._boot = uuid.uuid4().hex[:6]
        self._counter = count(1)

    # ----------------------------------------------------------- request side

    def acquire(self, model: str) -> Lease:
        """Resolve `model` (alias, alias@version or base name) now and hold that version."""
        if model == self.served_name:
            entry = self.loaded.get(self.promoted) if self.promoted else None
            return Lease(self.model_name(entry.version) if entry else self.base_name, entry)
        if model.startswith(self.served_name + "@"):
            entry = self.loaded.get(model.split("@", 1)[1])
            if entry is None or entry.draining:
                raise not_found(f"Model version {model!r} is not loaded; loaded: "
                                f"{', '.join(self.model_names()) or 'none'}.", "model", "model_not_found")
            return Lease(model, entry)
        if model in self.base_names:
            return Lease(self.base_name, None)
        raise not_found(f"The model {model!r} does not exist; available: {', '.join(self.model_names())}.",
                        "model", "model_not_found")

    def model_name(self, version: str) -> str:
        return f"{self.served_name}@{version}"

    def model_names(self) -> list[str]:
        live = [self.model_name(v) for v, e in sorted(self.loaded.items()) if not e.draining]
        return [self.base_name, self.served_name, *live]

    # ------------------------------------------------------------- admin side

    def resolve_folder(self, version: str | None = None, path: str | None = None) -> tuple[str, Path]:
        """Map a version or a relative path to (version, folder) strictly inside the adapters dir."""
        root = self.root.resolve()
        if version is not None:
            _check_version(version, "version")
            rel, param = f"{FOLDER_PREFIX}{version}", "version"
        else:
            rel, param = str(path), "path"
            if (not rel or PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute()
                    or rel.startswith(("~", "\\")) or ".." in re.split(r"[\\/]", rel) or "\x00" in rel):
                raise invalid("Adapter paths must be relative to the adapters folder, without '..'.", param,
                              "invalid_adapter_path")
        folder = (root / rel).resolve()
        if folder == root or not folder.is_relative_to(root):  # also catches symlinks pointing outside
            raise invalid("Adapter path resolves outside the adapters folder.", param, "invalid_adapter_path")
        if not folder.is_dir():
            raise not_found(f"No adapter folder {rel!r} in the adapters folder.", param, "adapter_not_found")
        missing = [f for f in ADAPTER_FILES if not (folder / f).is_file()]
        if missing:
            raise invalid(f"{rel} is not a PEFT adapter folder (missing {', '.join(missing)}).", param,
                          "invalid_adapter")
        name = folder.name[len(FOLDER_PREFIX):] if folder.name.startswith(FOLDER_PREFIX) else folder.name
        return _check_version(name, param), folder

    async def load(self, version: str | None = None, path: str | None = None) -> Version:
        async with self._lock:
            return await self._load(*self.resolve_folder(version, path))

    async def _load(self, version: str, folder: Path) -> Version:
        existing = self.loaded.get(version)
        if existing is not None:
            if existing.draining:
                raise conflict(f"Version {version} is being unloaded; load it again when that finishes.",
                               "version", "adapter_draining")
            return existing
        manifest = await asyncio.to_thread(read_manifest, folder)
        engine_name = f"{version}-{self._boot}-{next(self._counter)}"
        try:
            await self.engine.load_adapter(engine_name, str(folder))
        except APIError:
            raise
        except Exception as exc:  # EngineError and friends: a bad adapter is the client's problem
            raise invalid(f"The engine could not load {folder.name}: {exc}", "version", "invalid_adapter") from None
        entry = Version(version, engine_name, folder, manifest)
        entry.idle.set()
        self.loaded[version] = entry
        self._save()
        log.info("loaded adapter %s as %s", version, engine_name)
        return entry

    async def promote(self, version: str) -> None:
        async with self._lock:
            entry = self.loaded.get(version)
            if entry is None or entry.draining:
                raise not_found(f"Version {version!r} is not loaded; load it first.", "version", "adapter_not_loaded")
            if self.promoted != version:
                self.history.append(self.promoted)
                self.promoted = version
                self._save()
            log.info("alias %s -> %s", self.served_name, version)

    async def rollback(self) -> str | None:
        """Point the alias back at the previously promoted version (reloaded if needed), or the base."""
        async with self._lock:
            if not self.history and self.promoted is None:
                raise conflict("Nothing to roll back: the alias already serves the base model.", None, "no_history")
            target = self.history.pop() if self.history else None
            if target is not None and (target not in self.loaded or self.loaded[target].draining):
                try:
                    await self._load(*self.resolve_folder(target))
                except APIError:
                    self.history.append(target)
                    raise
            self.promoted = target
            self._save()
            log.info("alias %s rolled back to %s", self.served_name, target or "base")
            return target

    async def unload(self, version: str, drain_timeout_s: float | None = None) -> None:
        async with self._lock:
            entry = self.loaded.get(version)
            if entry is None:
                raise not_found(f"Version {version!r} is not loaded.", "version", "adapter_not_loaded")
            if version == self.promoted:
                raise conflict(f"Version {version} is promoted; promote another version or roll back first.",
                               "version", "adapter_promoted")
            if entry.draining:
                raise conflict(f"Version {version} is already being unloaded.", "version", "adapter_draining")
            entry.draining = True  # new requests can no longer pin it
        try:
            await asyncio.wait_for(entry.idle.wait(), drain_timeout_s)
            await self.engine.unload_adapter(entry.engine_name)
        except BaseException:
            entry.draining = False
            raise
        async with self._lock:
            self.loaded.pop(version, None)
            self._save()
        log.info("unloaded adapter %s (%s)", version, entry.engine_name)

    def describe(self) -> list[dict[str, Any]]:
        """Every version on disk or loaded, for GET /v1/adapters."""
        found: dict[str, Path] = {}
        if self.root.is_dir():
            for folder in sorted(self.root.iterdir()):
                if folder.is_dir() and all((folder / f).is_file() for f in ADAPTER_FILES):
                    name = folder.name[len(FOLDER_PREFIX):] if folder.name.startswith(FOLDER_PREFIX) else folder.name
                    if _VERSION.match(name):
                        found[name] = folder
        out = []
        for version in sorted(set(found) | set(self.loaded)):
            entry = self.loaded.get(version)
            folder = entry.path if entry else found[version]
            manifest = entry.manifest if entry else peek_manifest(folder)
            out.append({
                "version": version, "name": self.model_name(version), "path": _relative(folder, self.root),
                "loaded": entry is not None and not entry.draining, "promoted": version == self.promoted,
                "engine_name": entry.engine_name if entry else None, "in_flight": entry.in_flight if entry else 0,
                "parent": manifest.get("parent"), "metrics": manifest.get("metrics") or {},
            })
        return out

    # ------------------------------------------------------------ persistence

    def _save(self) -> None:
        """Remember loaded/promoted versions so a restarted server serves the same alias."""
        if self.state_file is None:
            return
        state = {"promoted": self.promoted, "history": self.history, "loaded": sorted(self.loaded)}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    async def restore(self) -> None:
        """Reload the versions of the saved state (skipping ones that fail) and the alias."""
        if self.state_file is None or not self.state_file.is_file():
            return
        try:
            state = json.loads(self.state_file.read_text(encoding="utf-8"))
        except ValueError:
            log.warning("ignoring unreadable adapter state %s", self.state_file)
            return
        for version in state.get("loaded", []):
            try:
                await self.load(version=version)
            except APIError as exc:
                log.warning("could not restore adapter %s: %s", version, exc.message)
        promoted = state.get("promoted")
        self.promoted = promoted if promoted in self.loaded else None
        self.history = [v for v in state.get("history", []) if v is None or isinstance(v, str)]
        self._save()


def _check_version(name: str, param: str) -> str:
    if not _VERSION.match(name):
        raise invalid(f"Invalid version name {name[:80]!r} (letters, digits, '.', '_', '-').", param, "invalid_version")
    return name


def _relative(folder: Path, root: Path) -> str:
    try:
        return str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        return folder.name
