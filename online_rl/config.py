"""RLConfig: every knob of the online loop, defaults from docs/method.md §2-§4 (LoRA learning rate)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from openvlthinker.rl import ADVANTAGES

from .policy import UpdateConfig


@dataclass
class RLConfig:
    """One round = prompts_per_round prompts x group_size rollouts -> one LoRA update -> one version."""

    endpoint: str = "http://127.0.0.1:8000"
    api_key: str = "none"
    admin_key: str = ""
    model: str = ""  # base model folder the server serves (the policy trains a LoRA on it)
    adapters_dir: str = "runs/serve/adapters"  # the server's --adapters-dir
    advantage: str = "g2rpo"
    group_size: int = 8  # G rollouts per prompt
    prompts_per_round: int = 16
    rollout_temperature: float = 1.0
    rollout_concurrency: int = 4  # prompts in flight at once while collecting rollouts
    max_new_tokens: int = 128
    lora_r: int = 16
    lora_alpha: int = 32
    update: UpdateConfig = field(default_factory=UpdateConfig)
    gate_per_family: int = 4  # ShapeWorld eval questions per family for the promotion gate
    gate_margin: float = 0.02  # promote unless eval reward drops by more than this
    rollback_check: bool = True  # after promoting, re-run the gate through the alias; roll back on failure
    rollback_margin: float | None = None  # ... failure: served reward below the previous one's by more (None: gate_margin)
    max_staleness: int = 4  # rated logged responses from versions older than this are not trained on
    # Tasks (task_type, else problem type; ShapeWorld family names) the loop does not train on: their prompts
    # are not rolled out and their rated responses not used. None by default, as in the paper.
    skip_tasks: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"unknown advantage {self.advantage!r}; valid: {', '.join(ADVANTAGES)}")
        for name in ("group_size", "prompts_per_round", "max_new_tokens", "lora_r", "gate_per_family",
                     "rollout_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: advantages compare responses within a group")
        if not 0 < self.rollout_temperature <= 2:  # 0 would sample G identical responses: no signal
            raise ValueError(f"rollout_temperature must be in (0, 2], got {self.rollout_temperature}")
        if isinstance(self.skip_tasks, str) or not all(isinstance(t, str) and t.strip() for t in self.skip_tasks):
            raise ValueError(f"skip_tasks must be a list of task names, got {self.skip_tasks!r}")
        self.skip_tasks = tuple(t.strip() for t in self.skip_tasks)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "RLConfig":
        """Build from a flat mapping (YAML / CLI); unknown keys are an error naming them."""
        top = {f.name for f in fields(cls)}
        upd = {f.name for f in fields(UpdateConfig)}
        unknown = set(values) - top - upd
        if unknown:
            raise ValueError(f"unknown RL config keys: {', '.join(sorted(unknown))}")
        update = UpdateConfig(**{k: v for k, v in values.items() if k in upd})
        return cls(update=update, **{k: v for k, v in values.items() if k in top and k != "update"})
