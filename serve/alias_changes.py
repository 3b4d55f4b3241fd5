"""How an admin call changes the shared alias row (`store/registry.py`'s AliasState): pure functions of the row.

Each runs under the row's lock, in `AdapterRegistry._change`; an APIError it raises leaves the row as it was.
"""

from __future__ import annotations

from .errors import conflict, not_found
from .store.registry import AliasState


def after_promote(state: AliasState, version: str) -> AliasState:
    """The row with `version` promoted and the previous one on the history; not_found unless it is loaded."""
    if version not in state.loaded:  # another replica unloaded it since
        raise not_found(f"Version {version!r} is not loaded; load it first.", "version", "adapter_not_loaded")
    if state.promoted == version:
        return state
    return state.change(promoted=version, history=state.history + (state.promoted,))


def after_rollback(state: AliasState) -> AliasState:
    """The row with the previously promoted version (listed as loaded again) or the base model promoted."""
    if not state.history and state.promoted is None:
        raise conflict("Nothing to roll back: the alias already serves the base model.", None, "no_history")
    target = state.history[-1] if state.history else None
    loaded = state.loaded | {target} if target is not None else state.loaded
    return state.change(promoted=target, history=state.history[:-1], loaded=loaded)


def after_unload(state: AliasState, version: str) -> AliasState:
    """The row without `version` among the loaded; conflict while it is promoted."""
    if state.promoted == version:
        raise conflict(f"Version {version} is promoted; promote another version or roll back first.",
                       "version", "adapter_promoted")
    return state.change(loaded=state.loaded - {version})
