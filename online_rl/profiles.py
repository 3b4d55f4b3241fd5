"""The loop's settings per model: a profile is a partial RLConfig that `rl`, `up` and the benches start from.

Flags and config files override a profile's values. Models without a profile get RLConfig's own
defaults (the paper's, docs/method.md), which suit an 8B model on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openvlthinker.models import DEFAULT_MODEL

# The shipped tiny ShapeWorld model on a 2-core CPU. No value differs from RLConfig's yet: the larger learning
# rates, the stronger entropy band and the cooler rollouts tried made the trainer's versions worse on held-out
# questions (docs/experiments.md#online-learning-loop), and every task family is trained, as in the paper.
TINY: dict[str, Any] = {}

PROFILES: dict[str, dict[str, Any]] = {"tiny": TINY, "none": {}}


def _same(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def profile_for(model: str | None) -> dict[str, Any]:
    """The profile of a base model (folder or name): the tiny one for the shipped model, else none."""
    return dict(TINY) if model and _same(model, DEFAULT_MODEL) else {}
