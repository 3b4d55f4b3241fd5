"""RLConfig: every knob of the online loop, defaults from docs/method.md §2-§4 (LoRA learning rate)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import yaml

from openvlthinker.models import check_placement
from openvlthinker.rl import ADVANTAGES

from .gate import GateSpec
from .policy import UpdateConfig

# Keys of older loops, each with what replaced it (a config file that still has one gets this, not "unknown").
_REPLACED = {
    "gate_per_family": "the gate's size now follows from gate_margin and gate_confidence",
    "rollback_margin": "the check after a promotion now rolls back on a significant loss at gate_confidence",
}
_INTS = ("group_size", "prompts_per_round", "rollout_concurrency", "max_new_tokens", "lora_r", "lora_alpha",
         "max_staleness", "max_refills", "max_pending", "seed", "trainer_procs")
SHAPEWORLD_STRIDE = 100_000  # ShapeWorld train questions reserved per round (loop.shapeworld_prompts' seeds)


@dataclass
class RLConfig:
    """One round = prompts_per_round prompts x group_size rollouts -> one LoRA update -> one version."""

    endpoint: str = "http://127.0.0.1:8000"
    api_key: str = "none"
    admin_key: str = ""
    model: str = ""  # base model folder the server serves (the policy trains a LoRA on it); "" = the server's
    adapters_dir: str = ""  # the server's --adapters-dir; "" = the one the server reports
    advantage: str = "g2rpo"
    group_size: int = 8  # G rollouts per prompt
    prompts_per_round: int = 16
    rollout_temperature: float = 1.0
    rollout_concurrency: int = 4  # prompts in flight at once while collecting rollouts
    max_new_tokens: int = 128
    lora_r: int = 16
    lora_alpha: int = 32
    update: UpdateConfig = field(default_factory=UpdateConfig)
    # The gate (online_rl/gate.py): a paired sign test at gate_confidence on as many held-out questions as it
    # takes for a net win share of gate_margin to be significant (0.2 at 0.95: 71 questions).
    gate_margin: float = 0.2
    gate_confidence: float = 0.95
    rollback_check: bool = True  # after promoting, the gate again through the alias; roll back on a clear loss
    # Dynamic sampling drops groups without signal; up to this many more batches of prompts refill the round
    # (0: no refill). The paper's release allows 20; here each retry is a batch of rollouts on the CPU.
    max_refills: int = 4
    max_pending: int = 1000  # users' prompts waiting for a round; beyond this the oldest are dropped
    max_staleness: int = 4  # rated logged responses from versions older than this are not trained on
    # Tasks (task_type, else problem type; ShapeWorld family names) the loop does not train on: their prompts
    # are not rolled out and their rated responses not used. None by default, as in the paper.
    skip_tasks: tuple[str, ...] = ()
    # Length shaping (docs/method.md §3): reward = (0.9 - w)·accuracy + 0.1·format + structure + w·env(length), the
    # envelope per task from the lengths of its recent correct rollouts (perception shorter, reasoning longer).
    # 0 turns it off.
    length_weight: float = 0.1
    seed: int = 0
    # The trainer's torch device (auto, cpu, cuda, cuda:N), its dtype (auto: bfloat16 on CUDA, float32 on the CPU;
    # float32; bfloat16) and gradient checkpointing (None: on for CUDA, off on the CPU); see models/placement.py.
    device: str = "auto"
    dtype: str = "auto"
    grad_checkpointing: bool | None = None
    # Trainer processes under torchrun (online_rl/distributed.py): one device each (rank k on cuda:k), the same
    # update as one process. 1: the loop trains in its own process, without torch.distributed.
    trainer_procs: int = 1

    def __post_init__(self) -> None:
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"unknown advantage {self.advantage!r}; valid: {', '.join(ADVANTAGES)}")
        for name in ("endpoint", "api_key", "admin_key", "model", "adapters_dir"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        for name in _INTS:
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        for name in ("group_size", "prompts_per_round", "max_new_tokens", "lora_r", "lora_alpha",
                     "rollout_concurrency", "max_pending", "trainer_procs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_staleness", "max_refills", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.prompts_per_round * (self.max_refills + 1) > SHAPEWORLD_STRIDE:
            raise ValueError(f"prompts_per_round x (max_refills + 1) must be <= {SHAPEWORLD_STRIDE}, got "
                             f"{self.prompts_per_round} x {self.max_refills + 1}")
        if not isinstance(self.rollback_check, bool):
            raise ValueError(f"rollback_check must be true or false, got {self.rollback_check!r}")
        for name in ("gate_margin", "gate_confidence", "rollout_temperature", "length_weight"):
            if not isinstance(getattr(self, name), (int, float)) or isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not 0 <= self.length_weight <= 0.9:
            raise ValueError(f"length_weight must be in [0, 0.9] (it takes that share from accuracy), got "
                             f"{self.length_weight}")
        self.gate_spec()  # raises, naming the knob, when the gate's margin or confidence is out of range
        if self.group_size < 2:
            raise ValueError("group_size must be >= 2: advantages compare responses within a group")
        if not 0 < self.rollout_temperature <= 2:  # 0 would sample G identical responses: no signal
            raise ValueError(f"rollout_temperature must be in (0, 2], got {self.rollout_temperature}")
        if isinstance(self.skip_tasks, str) or not all(isinstance(t, str) and t.strip() for t in self.skip_tasks):
            raise ValueError(f"skip_tasks must be a list of task names, got {self.skip_tasks!r}")
        self.skip_tasks = tuple(t.strip() for t in self.skip_tasks)
        check_placement(self.device, self.dtype, self.grad_checkpointing)
        if self.trainer_procs > 1 and self.device.startswith("cuda:"):
            raise ValueError(f"trainer_procs {self.trainer_procs} puts rank k on cuda:k: device must be auto, cpu "
                             f"or cuda, got {self.device!r}")

    def gate_spec(self) -> GateSpec:
        """The gate's statistics (margin, confidence; the question count follows)."""
        return GateSpec(margin=float(self.gate_margin), confidence=float(self.gate_confidence))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "RLConfig":
        """Build from a flat mapping (YAML / CLI); unknown keys are an error naming them."""
        top = {f.name for f in fields(cls)}
        upd = {f.name for f in fields(UpdateConfig)}
        replaced = sorted(set(values) & set(_REPLACED))
        if replaced:
            raise ValueError("; ".join(f"RL config key {k} is no longer used: {_REPLACED[k]}" for k in replaced))
        unknown = set(values) - top - upd
        if unknown:
            raise ValueError(f"unknown RL config keys: {', '.join(sorted(unknown))}")
        update = UpdateConfig(**{k: v for k, v in values.items() if k in upd})
        return cls(update=update, **{k: v for k, v in values.items() if k in top and k != "update"})


def cli_setting(text: str) -> tuple[str, Any]:
    """One `--set KEY=VALUE` of a command line: the key and its value, read as a number, else as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (a config field), got {text!r}")
    for kind in (int, float):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), yaml.safe_load(value)
