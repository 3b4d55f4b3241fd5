"""The unit of training data: one sampled (or logged) completion with its reward.

Token ids come from the server that sampled them (never re-tokenised), so the trainer
scores exactly the tokens the behaviour policy produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from openvlthinker.versions import version_number

from .exported import SampledChoice


@dataclass
class Rollout:
    """One completion: prompt and completion token ids, images, behaviour logprobs, reward.

    group_id: responses sampled together for one prompt share it (None for a logged single
      response, which is ranked within its task only).
    task: the task key for the second G²RPO stage and per-task shaping.
    version: the adapter version that produced it (staleness = current - version).
    off_policy: logged by users' traffic rather than sampled this round: trained with
      truncated importance weights against `behaviour_logprobs`.
    base_reward: the reward before length shaping (None: `reward` has no length term); dynamic
      sampling judges a group's signal on it, so a group is not kept for its lengths alone.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    images: list[Any] = field(default_factory=list)  # PIL images, in prompt order
    reward: float = 0.0
    accuracy: float = 0.0
    group_id: str | None = None
    task: str = "default"
    version: int = 0
    off_policy: bool = False
    interaction_id: str = ""
    base_reward: float | None = None

    def __post_init__(self) -> None:
        if not self.completion_ids:
            raise ValueError("a rollout needs at least one completion token")
        if len(self.behaviour_logprobs) != len(self.completion_ids):
            raise ValueError(
                f"behaviour_logprobs has {len(self.behaviour_logprobs)} entries for "
                f"{len(self.completion_ids)} completion tokens"
            )

    @classmethod
    def from_interaction(cls, interaction: SampledChoice | Sequence[SampledChoice], choice_index: int | None = None,
                         **fields: Any) -> "Rollout":
        """A sampled or stored choice (or choice `choice_index` of an interaction's choices) as a rollout: the
        server's prompt and completion token ids, its behaviour logprobs, the version that sampled it and its
        id; `fields` give the rest (images, reward, accuracy, group_id, task, off_policy, ...)."""
        if isinstance(interaction, SampledChoice):
            choice = interaction
            if choice_index is not None and choice.choice_index != choice_index:
                raise ValueError(f"asked for choice {choice_index} of {choice.id!r}, given choice {choice.choice_index}")
        else:
            choice = next((c for c in interaction if c.choice_index == choice_index), None)
            if choice is None:
                raise ValueError(f"no choice {choice_index} among {[c.choice_index for c in interaction]}")
        return cls(prompt_ids=list(choice.prompt_token_ids), completion_ids=list(choice.completion_token_ids),
                   behaviour_logprobs=list(choice.logprobs), version=version_number(choice.adapter_version) or 0,
                   interaction_id=choice.id, **fields)
