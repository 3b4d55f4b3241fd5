"""Build the tiny embedded Qwen3-VL: tokenizer, config, processor and a randomly initialised folder.

The tiny model is the production architecture (``Qwen3VLForConditionalGeneration``) at toy
size with its own small byte-level BPE vocabulary (a real 151k Qwen vocabulary would make the
embeddings dominate every step). It is saved as an ordinary Hugging Face folder and loaded
by :func:`openvlthinker.models.load`, the same function that loads real Qwen3-VL checkpoints.
Training the weights happens elsewhere; this module only lays out the plumbing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from openvlthinker.tiny.chat_template import CHAT_TEMPLATE

__all__ = [
    "SPECIAL_TOKENS", "REASONING_TOKENS", "IMAGE_MIN_PIXELS", "IMAGE_MAX_PIXELS",
    "train_tokenizer", "tiny_config", "tiny_processor", "init_tiny_model", "save_tiny", "build_tiny",
    "folder_size_mb", "sample_texts",
]

# Qwen special tokens, kept as single special ids so the processor, the model config and the
# chat template use the same names as the real Qwen3-VL tokenizer.
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
]
# Added as normal (non-special) tokens: one id each, but visible when decoding with
# skip_special_tokens=True, so the thinking/answer split still sees them.
REASONING_TOKENS = ["<thinking>", "</thinking>", "<answer>", "</answer>"]

# patch 16 x merge 2 = 32 px per merged token: a 128x128 image gives 4x4 = 16 tokens; larger
# images are scaled down to at most 128*128 pixels (16 tokens), tiny ones up to 2x2 tokens.
IMAGE_MIN_PIXELS = 64 * 64
IMAGE_MAX_PIXELS = 128 * 128
MODEL_MAX_LENGTH = 4096


def train_tokenizer(texts: Iterable[str], vocab_size: int = 3000):
    """Train a Qwen-style byte-level BPE on ``texts``; returns a ``Qwen2Tokenizer`` (a fast tokenizer)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    # Same normalizer/pre-tokenizer as Qwen2Tokenizer: the Qwen regex isolates every digit
    # (\p{N}), so numbers and box coordinates are one token per digit, and the class
    # reloads this tokenizer.json without changing how it splits.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols, so any text (emoji, other scripts) stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    return Qwen2Tokenizer(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=MODEL_MAX_LENGTH,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(tokenizer, **overrides: Any):
    """Return a small ``Qwen3VLConfig`` whose vocabulary and special ids match ``tokenizer``.

    Overrides: ``text_<field>`` / ``vision_<field>`` set sub-config fields (e.g.
    ``text_num_hidden_layers=2``); other keys set top-level fields.
    """
    from transformers import Qwen3VLConfig

    text_hidden = overrides.pop("text_hidden_size", 128)
    head_dim = overrides.pop("text_head_dim", 64)
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, as in the real model
        head_dim=head_dim,
        max_position_embeddings=MODEL_MAX_LENGTH,
        # M-RoPE sections (t, h, w) must sum to head_dim / 2; same 24:20:20 split as Qwen3-VL.
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_interleaved": True,
                         "mrope_section": _mrope_section(head_dim)},
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=256,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=text_hidden,
        # 8x8 learned position grid = the patch grid of a 128x128 image (interpolated otherwise).
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
    )
    for key in list(overrides):
        for prefix, target in (("text_", text), ("vision_", vision)):
            if key.startswith(prefix):
                target[key[len(prefix):]] = overrides.pop(key)
                break
    vision["out_hidden_size"] = text["hidden_size"]
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    top = dict(text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"], **ids)
    top.update(overrides)
    return Qwen3VLConfig(**top)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary pairs over (t, h, w) in Qwen3-VL's 24:20:20 proportion."""
    half = head_dim // 2
    h = w = half * 20 // 64
    return [half - h - w, h, w]


def tiny_processor(tokenizer, min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS):
    """Image-only Qwen3-VL processor over ``tokenizer`` and the PIL image processor."""
    from openvlthinker.models.processor import Qwen3VLImageOnlyProcessor, pil_image_processor

    image_processor = pil_image_processor(min_pixels=min_pixels, max_pixels=max_pixels)
    return Qwen3VLImageOnlyProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     chat_template=CHAT_TEMPLATE)


def init_tiny_model(tokenizer, seed: int = 0, **config_overrides: Any):
    """A randomly initialised (seeded) ``Qwen3VLForConditionalGeneration`` for ``tokenizer``, in eval mode."""
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    config = tiny_config(tokenizer, **config_overrides)
    torch.manual_seed(seed)  # the random init is the only source of randomness here
    model = Qwen3VLForConditionalGeneration(config).eval()
    end, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    # Greedy by default: the tiny model is judged on exact answers; callers pass sampling
    # settings (RL rollouts) explicitly. <|im_end|> ends an assistant turn, as in Qwen3-VL.
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, end], pad_token_id=end, bos_token_id=None, do_sample=False,
    )
    return model


def save_tiny(model, tokenizer, out_dir: str | Path, min_pixels: int = IMAGE_MIN_PIXELS,
              max_pixels: int = IMAGE_MAX_PIXELS) -> Path:
    """Save ``model`` with its tokenizer, chat template and processor as one HF folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tiny_processor(tokenizer, min_pixels=min_pixels, max_pixels=max_pixels).save_pretrained(out)
    _write_video_processor_config(out, min_pixels, max_pixels)
    return out


def build_tiny(out_dir: str | Path, texts: Iterable[str], seed: int = 0, vocab_size: int = 3000,
               min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS,
               **config_overrides: Any) -> Path:
    """Write a complete, randomly initialised tiny Qwen3-VL folder to ``out_dir``; returns the path."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    model = init_tiny_model(tokenizer, seed=seed, **config_overrides)
    return save_tiny(model, tokenizer, out_dir, min_pixels=min_pixels, max_pixels=max_pixels)


def _write_video_processor_config(out: Path, min_pixels: int, max_pixels: int) -> None:
    """Write the hub-style video_preprocessor_config.json that the stock Qwen3VLProcessor wants.

    Our image-only processor ignores it; it lets a machine with torchvision (e.g. vLLM on a
    GPU) load this folder with the stock processor, exactly like a real Qwen3-VL checkpoint.
    """
    import json

    video = {
        "video_processor_type": "Qwen3VLVideoProcessor", "processor_class": "Qwen3VLProcessor",
        "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": min_pixels, "longest_edge": 8 * max_pixels},
    }
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n", encoding="utf-8")


def folder_size_mb(path: str | Path) -> float:
    """Total size of the files in ``path`` in MB (10**6 bytes)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def sample_texts() -> list[str]:
    """A small built-in corpus (questions, reasoning tags, digits, JSON boxes) for smoke builds and tests."""
    colors, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle"]
    texts = [f"What is the bounding box of the small {c} {s}?" for c in colors for s in shapes]
    texts += [f"How many {c} {s}s are there? Answer with a number." for c in colors for s in shapes]
    texts += [f"<thinking>I count {n} shapes and {n % 3} of them are {c}.</thinking><answer>{n}</answer>"
              for n, c in enumerate(colors * 3)]
    texts += ['<answer>{"boxes": [[%d, %d, %d, %d]]}</answer>' % (7 * i, 11 * i, 7 * i + 30, 11 * i + 25)
              for i in range(12)]
    texts += ["0 1 2 3 4 5 6 7 8 9 10 42 128 2024", "Is the circle left of the square? (A) yes (B) no"]
    return texts
