"""LoRA target modules for Qwen3-VL (tiny and real): the language model's attention and MLP.

In ``Qwen3VLForConditionalGeneration`` the vision tower names its linears ``qkv``, ``proj``
and ``linear_fc1/2``, so the plain list below already selects only language-model layers;
the list form (rather than a regex) is what vLLM's LoRA loader accepts. The regex form pins
the same set by full module path for tools that want it explicit.
"""

from __future__ import annotations

__all__ = ["LORA_TARGET_MODULES", "LORA_TARGET_REGEX", "lora_config"]

LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA_TARGET_REGEX = (
    r"model\.language_model\.layers\.\d+\.(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)"
)


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.0, **kwargs):
    """A PEFT ``LoraConfig`` for causal-LM training of the language model (vision tower untouched)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGET_MODULES),
                      task_type="CAUSAL_LM", **kwargs)


def randomize_lora_b(peft_model, *, seed: int, scale: float = 0.5) -> None:
    """Give a fresh PEFT model's LoRA B weights random values (PEFT starts them at 0, a no-op)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def random_lora(base: str, out, *, seed: int, r: int = 16, scale: float = 0.5):
    """Save a LoRA for the model folder `base` whose B weights are random.

    For exercising the adapter path where what the adapter learned does not matter: tests
    that need outputs to change, swap benchmarks, smoke checks of a deployment.
    """
    from peft import get_peft_model

    from openvlthinker.models.loading import load

    model, _ = load(base)
    peft_model = get_peft_model(model, lora_config(r=r))
    randomize_lora_b(peft_model, seed=seed, scale=scale)
    peft_model.save_pretrained(out)
    return out
