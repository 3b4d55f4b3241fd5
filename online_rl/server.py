"""What the server serves (GET /v1/server), and the loop's settings reconciled with it before the first round.

The loop publishes versions by writing into the server's adapters folder, so it must write where
the server reads: without --adapters-dir it takes the server's folder; with one, a probe file
written there must be visible to the server (the same folder, perhaps under another mount path),
or the loop stops with a message naming the folder to pass. Likewise the base model: without
--model the loop trains on the server's own model folder; a different one is refused.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path
from typing import Any

from .client import GatewayClient, GatewayError
from .config import RLConfig

_FIELDS = ("model", "model_path", "engine", "adapters_dir", "served_name", "store")


class ServerMismatch(ValueError):
    """The loop's settings do not match the server it talks to."""


def read_server(client: GatewayClient, probe: str | None = None) -> dict[str, Any]:
    """The server's GET /v1/server answer, checked for the fields the loop relies on."""
    try:
        info = client.server(probe)
    except GatewayError as exc:
        if exc.status == 404:
            raise ServerMismatch(f"the server at {client.http.base_url} has no GET /v1/server (an older version?): "
                                 "upgrade it, the loop needs to know its adapters folder and alias") from None
        raise
    missing = [k for k in _FIELDS if k not in info]
    if missing:
        raise ServerMismatch(f"GET /v1/server answered without {', '.join(missing)}")
    return info


def _check_model(cfg: RLConfig, server: dict[str, Any], log) -> str:
    """The base model folder (or hub id) the policy loads: the server's unless --model names the same one."""
    served_path, name = server["model_path"], server["model"]
    if not cfg.model:
        if served_path and not Path(served_path).is_dir():
            raise ServerMismatch(f"the server's model folder {served_path} is not on this machine: pass --model "
                                 f"with a local copy of it")
        return served_path or name
    given = Path(cfg.model).expanduser()
    if served_path is None:
        if cfg.model == name:
            return cfg.model
    elif given.resolve() == Path(served_path):
        return str(given.resolve())
    elif given.is_dir() and given.resolve().name == Path(served_path).name:
        log(f"--model {cfg.model}: taken as the server's {served_path} (same folder name, another path)")
        return str(given.resolve())
    raise ServerMismatch(f"--model {cfg.model} is not the model the server serves ({name} from "
                         f"{served_path or 'the hub'}): pass --model {served_path or name}, or leave --model out")


def _check_adapters(client: GatewayClient, cfg: RLConfig, server: dict[str, Any], log) -> str:
    """The adapters folder to publish into, after a probe file there proved the server sees it."""
    theirs = server["adapters_dir"]
    folder = Path(cfg.adapters_dir).expanduser() if cfg.adapters_dir else Path(theirs)
    if not folder.is_dir():
        if cfg.adapters_dir and folder.resolve() != Path(theirs):
            raise ServerMismatch(f"--adapters-dir {cfg.adapters_dir} does not exist and is not the server's adapters "
                                 f"folder: pass --adapters-dir {theirs}, or leave it out")
        folder.mkdir(parents=True, exist_ok=True)  # the server's own folder, not created yet
    name = f".probe-{secrets.token_hex(8)}"
    probe = folder / name
    probe.write_text("openvlthinker rl: is this the server's adapters folder?\n", encoding="utf-8")
    try:
        visible = read_server(client, probe=name).get("probe_visible")
    finally:
        probe.unlink(missing_ok=True)
    if not visible:
        if cfg.adapters_dir:
            raise ServerMismatch(f"the server does not see --adapters-dir {cfg.adapters_dir}: its adapters folder is "
                                 f"{theirs}. Pass --adapters-dir {theirs}, or leave it out")
        raise ServerMismatch(f"the server's adapters folder {theirs} exists here but is not the one it reads: run the "
                             "loop where it shares the server's filesystem, and pass --adapters-dir with the path "
                             "of that folder there")
    if folder.resolve() != Path(theirs):
        log(f"publishing into {folder}: the server reads it as {theirs}")
    return str(folder)


def reconcile(client: GatewayClient, cfg: RLConfig, log=print) -> tuple[RLConfig, dict[str, Any]]:
    """The config with the server's base model and adapters folder filled in (or checked), and the server's
    GET /v1/server answer; ServerMismatch, saying what to pass, when they disagree."""
    server = read_server(client)
    model = _check_model(cfg, server, log)
    adapters = _check_adapters(client, cfg, server, log)
    return dataclasses.replace(cfg, model=model, adapters_dir=adapters), server
