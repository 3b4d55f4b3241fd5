"""G²RPO and baseline advantages, length and entropy shaping, the PPO policy loss (pure tensor code)."""

from .advantages import (
    ADVANTAGES,
    dr_grpo_advantages,
    g2rpo_advantages,
    get_advantage,
    grpo_advantages,
    informative_groups,
    rloo_advantages,
)
from .entropy import entropy_band_penalty, task_entropies, token_entropy
from .length import LengthTargets, length_envelope
from .policy_loss import masked_mean, policy_loss
from .ranks import gaussian_rank

__all__ = [
    "ADVANTAGES", "LengthTargets", "dr_grpo_advantages", "entropy_band_penalty", "g2rpo_advantages",
    "gaussian_rank", "get_advantage", "grpo_advantages", "informative_groups", "length_envelope",
    "masked_mean", "policy_loss", "rloo_advantages", "task_entropies", "token_entropy",
]
