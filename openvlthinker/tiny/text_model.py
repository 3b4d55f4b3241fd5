"""A tiny text-only Qwen3 (`Qwen3ForCausalLM`) with the project's tokenizer, and LoRA adapters for it.

vLLM's CPU build cannot run Qwen-VL models (their vLLM implementation imports torchvision),
so the real vLLM tests and the CPU benchmark serve this text-only sibling of the embedded
model instead: the same tokenizer, special tokens and chat template, random weights.
vLLM's CPU attention needs head_dim >= 64, hence 2 heads of 64 on a hidden size of 128.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["build_text_model", "text_model_from_shipped", "write_text_adapter"]


def build_text_model(out: str | Path, seed: int = 0, layers: int = 2, max_positions: int = 2048) -> Path:
    """Save a random tiny Qwen3ForCausalLM with the shipped tokenizer and chat template to `out`."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from openvlthinker.models import DEFAULT_MODEL

    out = Path(out)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=max_positions,
                         tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    with torch.no_grad():  # a wider output layer than the init's: greedy text that varies with the prompt
        model.lm_head.weight.normal_(0.0, 0.5)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    return out


def _save_tokenizer(tokenizer, out: Path) -> None:
    """The shipped tokenizer and chat template, minus its image-processor link (a plain causal LM)."""
    tokenizer.save_pretrained(out)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("processor_class", None)
    cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [tokenizer.eos_token_id], "pad_token_id": tokenizer.pad_token_id}), encoding="utf-8")


def text_model_from_shipped(out: str | Path) -> Path:
    """Save the shipped tiny model's language model alone as a Qwen3ForCausalLM (trained weights).

    Qwen3-VL's text decoder is Qwen3's; with text only, its interleaved M-RoPE gets the same
    position on all three axes, which is plain RoPE. So the trained weights keep writing
    `<thinking>…</thinking><answer>…</answer>`, which exercises the reasoning passes for real.
    """
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from openvlthinker.models import DEFAULT_MODEL

    out = Path(out)
    text = json.loads((Path(DEFAULT_MODEL) / "config.json").read_text(encoding="utf-8"))["text_config"]
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps")
    config = Qwen3Config(**{k: text[k] for k in keys}, tie_word_embeddings=False, bos_token_id=None,
                         rope_parameters={"rope_type": "default", "rope_theta": text["rope_parameters"]["rope_theta"]},
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    state = load_file(str(Path(DEFAULT_MODEL) / "model.safetensors"))
    state = {k.replace("model.language_model.", "model."): v for k, v in state.items() if not k.startswith("model.visual")}
    model = Qwen3ForCausalLM(config)
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    return out


def write_text_adapter(base: str | Path, out: str | Path, seed: int, rank: int = 8, scale: float = 0.5) -> Path:
    """Save a PEFT LoRA for `base` with random non-zero B weights (greedy outputs differ from the base)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen3ForCausalLM

    from openvlthinker.models.lora import randomize_lora_b

    model = Qwen3ForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    randomize_lora_b(peft_model, seed=seed, scale=scale)
    peft_model.save_pretrained(out)
    return Path(out)
