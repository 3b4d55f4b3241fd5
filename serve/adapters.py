"""Adapter versions: load from the adapters folder, the served alias, pinning, rollback, drain.

A version is an immutable folder `policy-vNNNN/` (PEFT files + optional manifest.json with the
sha256 of each file, the parent version and metrics). Every load gets a fresh engine name
(`v0003-<boot>-<k>`), never reused, because engines cache by adapter name.

A request resolves its model once, on arrival (`acquire`), and holds a Lease on that version
until its response is done; flipping the alias affects only later requests. Everything here
runs on the event loop, so resolve-and-count is atomic without locks; admin mutations are
serialised by one asyncio lock. Unload first hides the version from new requests, then waits
until its in-flight count drops to zero, then asks the engine to unload it.
The manifest format and its checks live in `manifest.py`, what a folder holds in `adapter_folders.py`,
and the shared row's transitions in `alias_changes.py`.

With `table` (the alias row in the store's database, `store/registry.py`) the database holds the
alias, its history and the loaded set, so gateway replicas on one database agree: an admin call
changes the row under its lock, then this engine follows; every replica also polls the row
(`watch`, every --registry-poll-s) and loads, unloads and flips its alias to match (`sync`). A
change made through one replica is served by all within one poll interval plus the time to load
the new version. Without `table`, the state lives in one process and a local file (`state_file`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

from .adapter_folders import relative_path, resolve_folder, versions_on_disk
from .alias_changes import after_promote, after_rollback, after_unload
from .errors import APIError, conflict, invalid, not_found
from .manifest import peek_manifest, read_manifest
from .store.registry import AliasState, AliasTable

log = logging.getLogger("serve.adapters")


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
                 state_file: str | os.PathLike | None = None, table: AliasTable | None = None):
        self.engine = engine
        self.root = Path(adapters_dir)
        self.served_name = served_name
        self.base_name = base_names[0]
        self.base_names = set(base_names)
        self.state_file = Path(state_file) if state_file else None
        self.table = table  # the shared alias row; with it, state_file is only read once to seed an empty row
        self.revision = -1  # the row's revision this engine matches (-1: not synced yet)
        self._synced = False  # False while some version of the row could not be matched (retried at each poll)
        self._drains: set[asyncio.Task] = set()
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
        return resolve_folder(self.root, version, path)

    async def load(self, version: str | None = None, path: str | None = None) -> Version:
        async with self._lock:
            entry = await self._load(*self.resolve_folder(version, path))
            if self.table is not None:
                await self._change(lambda s: s.change(loaded=s.loaded | {entry.version}))
            return entry

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
            if self.table is not None:
                await self._change(lambda s: after_promote(s, version))
            elif self.promoted != version:
                self.history.append(self.promoted)
                self.promoted = version
                self._save()
            log.info("alias %s -> %s", self.served_name, version)

    async def rollback(self) -> str | None:
        """Point the alias back at the previously promoted version (reloaded if needed), or the base."""
        async with self._lock:
            if self.table is not None:
                return await self._rollback_shared()
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
            if self.table is not None:
                try:
                    await self._change(lambda s: after_unload(s, version))
                except BaseException:
                    entry.draining = False
                    raise
        try:
            await asyncio.wait_for(entry.idle.wait(), drain_timeout_s)
            await self.engine.unload_adapter(entry.engine_name)
        except BaseException:
            entry.draining = False
            self._synced = False  # with a table: the next poll drains it again, as the row no longer lists it
            raise
        async with self._lock:
            self.loaded.pop(version, None)
            self._save()
        log.info("unloaded adapter %s (%s)", version, entry.engine_name)

    def describe(self) -> list[dict[str, Any]]:
        """Every version on disk or loaded, for GET /v1/adapters."""
        found = versions_on_disk(self.root)
        out = []
        for version in sorted(set(found) | set(self.loaded)):
            entry = self.loaded.get(version)
            folder = entry.path if entry else found[version]
            manifest = entry.manifest if entry else peek_manifest(folder)
            out.append({
                "version": version, "name": self.model_name(version), "path": relative_path(folder, self.root),
                "loaded": entry is not None and not entry.draining, "promoted": version == self.promoted,
                "engine_name": entry.engine_name if entry else None, "in_flight": entry.in_flight if entry else 0,
                "parent": manifest.get("parent"), "metrics": manifest.get("metrics") or {},
            })
        return out

    # ------------------------------------------------------------ persistence

    def _save(self) -> None:
        """Remember loaded/promoted versions so a restarted server serves the same alias."""
        if self.state_file is None or self.table is not None:
            return
        state = {"promoted": self.promoted, "history": self.history, "loaded": sorted(self.loaded)}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    async def restore(self) -> None:
        """Reload the versions of the saved state (skipping ones that fail) and the alias."""
        if self.table is not None:
            await self._restore_shared()
            return
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

    # ------------------------------------------------------------- replicas

    async def _change(self, fn) -> AliasState:
        """Change the shared row with `fn` (under its lock, in a thread), then match this engine to it."""
        state = await asyncio.to_thread(self.table.change, fn)
        await self._match(state)
        return state

    async def _rollback_shared(self) -> str | None:
        state = await asyncio.to_thread(self.table.read) or AliasState()
        if not state.history and state.promoted is None:
            raise conflict("Nothing to roll back: the alias already serves the base model.", None, "no_history")
        target = state.history[-1] if state.history else None
        if target is not None and (target not in self.loaded or self.loaded[target].draining):
            await self._load(*self.resolve_folder(target))  # before the row changes: a failed load changes nothing
        state = await self._change(after_rollback)
        log.info("alias %s rolled back to %s", self.served_name, state.promoted or "base")
        return state.promoted

    async def _restore_shared(self) -> None:
        """Match the shared row; a database without one is seeded from an earlier release's state file."""
        if await asyncio.to_thread(self.table.read) is None and self.state_file and self.state_file.is_file():
            try:
                saved = json.loads(self.state_file.read_text(encoding="utf-8"))
            except ValueError:
                saved = {}
            loaded = frozenset(v for v in saved.get("loaded", []) if isinstance(v, str))
            history = tuple(v for v in saved.get("history", []) if v is None or isinstance(v, str))
            promoted = saved.get("promoted") if saved.get("promoted") in loaded else None

            def seed(state: AliasState) -> AliasState:
                if state.revision:  # another replica wrote the row meanwhile: it wins
                    return state
                return state.change(promoted=promoted, history=history, loaded=loaded)

            await asyncio.to_thread(self.table.change, seed)
        await self.sync()

    async def sync(self) -> None:
        """Read the shared row and, if it changed (or was not matched yet), make this engine match it."""
        state = await asyncio.to_thread(self.table.read)
        if state is None or (state.revision == self.revision and self._synced):
            return
        async with self._lock:
            if state.revision >= self.revision:  # an admin call here may have matched a newer one meanwhile
                await self._match(state)

    async def watch(self, poll_s: float) -> None:
        """Poll the shared row every `poll_s` seconds until cancelled (a failed poll is logged and retried)."""
        while True:
            await asyncio.sleep(poll_s)
            try:
                await self.sync()
            except Exception as exc:  # noqa: BLE001 - the database may be briefly away; serve what we have
                log.warning("could not sync adapter alias %s from the store: %s", self.served_name, exc)

    async def _match(self, state: AliasState) -> None:
        """Load what the row lists and this engine lacks, drain what it no longer lists, then flip the alias.

        Runs under `_lock`. Loading comes first, so the alias flips only to a version this engine serves."""
        synced = True
        for version in sorted(state.loaded - set(self.loaded)):
            try:
                await self._load(*self.resolve_folder(version))
            except APIError as exc:
                synced = False
                log.warning("replica cannot load adapter %s listed in the store: %s", version, exc.message)
        for version, entry in list(self.loaded.items()):
            if version not in state.loaded and not entry.draining:
                entry.draining = True
                task = asyncio.create_task(self._drain(entry))
                self._drains.add(task)
                task.add_done_callback(self._drains.discard)
        target = state.promoted
        if target is None or (target in self.loaded and not self.loaded[target].draining):
            if self.promoted != target:
                log.info("alias %s -> %s (store revision %d)", self.served_name, target or "base", state.revision)
            self.promoted = target
        else:
            synced = False  # keep serving the previous version until this one loads
        self.history = list(state.history)
        self.revision, self._synced = state.revision, synced

    async def _drain(self, entry: Version) -> None:
        """Unload a version another replica unloaded, once this engine's requests on it are done."""
        try:
            await entry.idle.wait()
            await self.engine.unload_adapter(entry.engine_name)
        except Exception as exc:  # noqa: BLE001 - the next poll retries
            entry.draining = False
            self._synced = False
            log.warning("could not unload adapter %s: %s", entry.version, exc)
            return
        if self.loaded.get(entry.version) is entry:
            self.loaded.pop(entry.version)
        log.info("unloaded adapter %s (%s), as the store lists it no more", entry.version, entry.engine_name)
