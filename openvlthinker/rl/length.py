"""Length shaping (docs/method.md §3): a trapezoid envelope and per-task dynamic targets.

`length_envelope` is the pure trapezoid. `LengthTargets` keeps rolling statistics of
the lengths of *correct* responses per task and turns them into envelopes that move:
for reasoning tasks the plateau starts a little above the typical correct length, so
longer (still correct) reasoning is rewarded and the target drifts up; for perception
tasks the plateau ends a little below it, so answers get shorter.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..reasoning import PERCEPTION_PROBLEM_TYPES, PERCEPTION_TASKS

Envelope = tuple[float, float, float, float]
Direction = Literal["long", "short", "hold"]

# Task keys (families or problem types) whose answers are perception, not multi-step.
_PERCEPTION = PERCEPTION_TASKS | PERCEPTION_PROBLEM_TYPES


def length_envelope(lengths: torch.Tensor | float, a: float, b: float, c: float, d: float) -> torch.Tensor:
    """Trapezoid: 0 outside [a, d], linear up on [a, b), 1 on [b, c], linear down on (c, d]."""
    if not a <= b <= c <= d:
        raise ValueError(f"envelope points must satisfy a <= b <= c <= d, got {(a, b, c, d)}")
    x = torch.as_tensor(lengths, dtype=torch.float64)
    rise = (x - a) / (b - a) if b > a else torch.ones_like(x)
    fall = (d - x) / (d - c) if d > c else torch.ones_like(x)
    out = torch.where(x < b, rise, torch.where(x <= c, torch.ones_like(x), fall))
    return torch.where((x < a) | (x > d), torch.zeros_like(x), out.clamp(0.0, 1.0))


@dataclass
class LengthTargets:
    """Per-task rolling target lengths that yield trapezoid envelopes.

    window: how many recent correct lengths each task remembers.
    min_count: below this many observations a task gets no envelope (no shaping yet).
    step: relative push of the target per envelope (0.2 = plateau starts 20% above the
      median for "long" tasks, ends 20% below it for "short" tasks).
    max_length: the far end of every envelope (e.g. the response budget in tokens).
    directions: task -> "long" | "short" | "hold"; unknown tasks use `default_direction`,
      except perception tasks, which default to "short".
    """

    window: int = 256
    min_count: int = 8
    step: float = 0.2
    min_length: float = 1.0
    max_length: float = 4096.0
    directions: dict[str, Direction] = field(default_factory=dict)
    default_direction: Direction = "long"
    _seen: dict[str, deque] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_count < 1:
            raise ValueError("window and min_count must be >= 1")
        if not 0.0 <= self.step < 1.0:
            raise ValueError(f"step must be in [0, 1), got {self.step}")
        if not 0 < self.min_length <= self.max_length:
            raise ValueError("need 0 < min_length <= max_length")

    def direction(self, task: str) -> Direction:
        """The shaping direction of `task`."""
        if task in self.directions:
            return self.directions[task]
        return "short" if task in _PERCEPTION else self.default_direction

    def observe(self, task: str, length: float, correct: bool) -> None:
        """Record one response; only correct responses move the target."""
        if correct:
            self._seen.setdefault(task, deque(maxlen=self.window)).append(float(length))

    def target(self, task: str) -> float | None:
        """The median length of the task's recent correct responses, or None if too few."""
        seen = self._seen.get(task)
        if not seen or len(seen) < self.min_count:
            return None
        return float(statistics.median(seen))

    def envelope(self, task: str) -> Envelope | None:
        """The current (a, b, c, d) of `task`, or None while there is too little data."""
        t = self.target(task)
        if t is None:
            return None
        hi, lo = self.max_length, self.min_length
        kind = self.direction(task)
        if kind == "long":
            b = min(max(t * (1 + self.step), lo), hi)
            return (min(t * 0.5, b), b, hi, hi)
        if kind == "short":
            c = min(max(t * (1 - self.step), lo), hi)
            return (0.0, 0.0, c, min(max(2 * c, c + lo), hi))
        return (min(t * 0.5, t), t, t, min(t * 1.5, hi)) if t <= hi else (hi, hi, hi, hi)

    def score(self, task: str, length: float) -> float | None:
        """Envelope value of one response length, or None when the task has no envelope yet."""
        env = self.envelope(task)
        return None if env is None else float(length_envelope(length, *env))

    def state_dict(self) -> dict[str, list[float]]:
        """The remembered lengths per task (for checkpointing a loop)."""
        return {task: list(seen) for task, seen in self._seen.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore what `state_dict` returned."""
        self._seen = {task: deque(map(float, v), maxlen=self.window) for task, v in state.items()}
