"""The loop's state file (`<out>/state.json`), written atomically after every round.

It holds the next round's number, the export cursors, the users' prompts still waiting for a
round, the trainer's unpromoted version (when the gate kept the served one), the length shaping's
recent correct lengths per task, and the server and
base model it belongs to: a state folder serves one server and one model, and a loop started
against another is refused, not resumed from someone else's round counter and cursors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openvlthinker.versions import version_number

from .harvest import PendingPrompt

IDENTITY_KEYS = ("model", "adapters_dir", "store")


class StateMismatch(ValueError):
    """The state folder belongs to another server or base model."""


@dataclass
class LoopState:
    """What a loop resumes from."""

    next_round: int = 0
    cursors: dict[str, str | None] = field(default_factory=lambda: {"feedback": None, "interactions": None})
    pending: list[PendingPrompt] = field(default_factory=list)
    promoted: str | None = None  # the served version after the last round (for the record)
    working: str | None = None  # the trainer's version when the gate kept the served one; None: the served one
    server: dict[str, str] | None = None  # identity of the server and model (see identity())
    lengths: dict[str, list[float]] = field(default_factory=dict)  # recent correct rollout lengths per task


    def to_json(self) -> dict[str, Any]:
        """The state file's content."""
        return {"next_round": self.next_round, "cursors": self.cursors, "pending": [p.to_json() for p in self.pending],
                "promoted": self.promoted, "working": self.working, "server": self.server, "lengths": self.lengths}


def identity(server: dict[str, Any]) -> dict[str, str]:
    """What a state folder is keyed to: the base model (its folder, else its name), the adapters folder, the store."""
    return {"model": server.get("model_path") or server["model"], "adapters_dir": server["adapters_dir"],
            "store": server["store"]}


def _version(raw: Any, name: str, where: Path) -> str | None:
    if raw is not None and version_number(raw) is None:
        raise ValueError(f"{where}: {name} must be a version name like v0003 or null, got {raw!r}")
    return raw


def parse_state(raw: Any, where: Path) -> LoopState:
    """A LoopState from a state file's JSON; a malformed file is an error naming the field."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object")
    index = raw.get("next_round", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"{where}: next_round must be an integer >= 0, got {index!r}")
    cursors = raw.get("cursors") or {"feedback": None, "interactions": None}
    if not isinstance(cursors, dict) or not all(cursors.get(k) is None or isinstance(cursors.get(k), str)
                                                for k in ("feedback", "interactions")):
        raise ValueError(f"{where}: cursors must map feedback and interactions to a cursor string or null")
    pending = raw.get("pending") or []
    if not isinstance(pending, list):
        raise ValueError(f"{where}: pending must be a list")
    server = raw.get("server")
    if server is not None and (not isinstance(server, dict) or set(server) != set(IDENTITY_KEYS)):
        raise ValueError(f"{where}: server must be an object with {', '.join(IDENTITY_KEYS)}")
    lengths = raw.get("lengths") or {}
    if not isinstance(lengths, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                               and x >= 0 for x in v) for k, v in lengths.items()):
        raise ValueError(f"{where}: lengths must map task names to lists of lengths >= 0")
    return LoopState(index, {"feedback": cursors.get("feedback"), "interactions": cursors.get("interactions")},
                     [PendingPrompt.from_json(p) for p in pending], _version(raw.get("promoted"), "promoted", where),
                     _version(raw.get("working"), "working", where), server,
                     {k: [float(x) for x in v] for k, v in lengths.items()})


def load_state(path: Path, server: dict[str, str], log=print) -> LoopState:
    """The state in `path` for this server and model (a fresh one when there is none); StateMismatch when the
    state belongs to another server or model."""
    if not path.is_file():
        return LoopState(server=server)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); move it away to start afresh") from None
    state = parse_state(raw, path)
    if state.server is None:
        # Written by a loop from before states were keyed: nothing to check it against; from now on it is keyed.
        log(f"{path} names no server; taking it as this server's ({server['adapters_dir']})")
        state.server = server
    elif state.server != server:
        theirs = ", ".join(f"{k} {state.server[k]}" for k in IDENTITY_KEYS)
        ours = ", ".join(f"{k} {server[k]}" for k in IDENTITY_KEYS)
        raise StateMismatch(f"{path} is the loop state of another server or base model ({theirs}); this server has "
                            f"{ours}. Pass --out with a folder of its own for this server (or remove {path} to "
                            f"start over against it).")
    return state


def save_state(path: Path, state: LoopState) -> None:
    """Write the state atomically: a kill never leaves a torn file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json()), encoding="utf-8")
    tmp.replace(path)
