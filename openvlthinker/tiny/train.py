"""Train the shipped tiny checkpoint from scratch by supervised learning on ShapeWorld.

Deterministic for a given config: the tokenizer is trained on a seeded corpus, the model is
initialised from the seed, and example i of the stream is `generate(family_i, seed_i)` of the
train split. It runs on two torch threads by default: a run is bit-for-bit reproducible for a
given thread count (the weights differ between thread counts, so the count is part of the
recipe), and two threads train about 1.5x faster than one on the 2-core machine it targets
(`bench/train_threads.py`).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "weights" / "shapeworld-tiny"


@dataclass
class TrainConfig:
    """Settings of one tiny-model training run (defaults produce the shipped checkpoint)."""

    out_dir: Path = DEFAULT_OUT
    steps: int = 2400  # optimizer steps
    batch_size: int = 24
    lr: float = 1e-3  # peak AdamW learning rate (linear warm-up, cosine decay to 10%)
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    vocab_size: int = 3000
    tokenizer_corpus: int = 4000  # ShapeWorld samples whose texts train the tokenizer
    flip_mode: float = 0.2  # fraction of examples taught in the family's other mode
    describe: float = 0.4  # fraction of examples replaced by a dense scene description (see sft.describe)
    image_size: int = 128
    threads: int = 2  # torch threads; part of the recipe (see the module docstring)
    image_pixels: int = 128 * 128  # every image is resized to about this many pixels (16 tokens)
    vision_hidden: int = 64
    vision_depth: int = 2
    families: tuple[str, ...] = field(default_factory=lambda: tuple(FAMILIES))
    see_steps: int = 4000  # vision stage (openvlthinker.tiny.see) before SFT; 0 skips it
    see_batch: int = 32
    see_lr: float = 2e-3
    see_ocr_share: float = 0.5  # share of OCR images in the vision stage (the rest even): words are learnt slowest
    vision_lr_scale: float = 0.0  # SFT learning rate of the vision tower (not its deepstack mergers) / lr; 0 freezes it
    log_every: int = 50

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for name in ("steps", "batch_size", "vocab_size", "threads", "log_every", "see_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.see_steps < 0:
            raise ValueError(f"see_steps must be >= 0, got {self.see_steps}")
        if self.vision_lr_scale < 0:
            raise ValueError(f"vision_lr_scale must be >= 0, got {self.vision_lr_scale}")
        for name in ("flip_mode", "describe", "see_ocr_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        unknown = set(self.families) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown families {sorted(unknown)}; valid: {', '.join(FAMILIES)}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at an optimizer step: linear warm-up, then cosine down to 10% of peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def build_untrained(cfg: TrainConfig):
    """Tokenizer trained on the ShapeWorld corpus plus the prompt templates; seeded model."""
    from openvlthinker.tiny.build import init_tiny_model, tiny_processor, train_tokenizer
    from openvlthinker.tiny.shapeworld import corpus_texts
    from openvlthinker.tiny.sft import template_texts

    texts = list(corpus_texts(cfg.tokenizer_corpus, seed=cfg.seed)) + template_texts() * 50
    tokenizer = train_tokenizer(texts, vocab_size=cfg.vocab_size)
    side = int(cfg.image_pixels**0.5) // 16  # patch grid side of a resized image
    model = init_tiny_model(
        tokenizer, seed=cfg.seed, vision_hidden_size=cfg.vision_hidden, vision_depth=cfg.vision_depth,
        vision_num_heads=max(1, cfg.vision_hidden // 32), vision_intermediate_size=4 * cfg.vision_hidden,
        vision_num_position_embeddings=side * side, vision_deepstack_visual_indexes=list(range(cfg.vision_depth)),
    )
    return model, tokenizer, tiny_processor(tokenizer, min_pixels=cfg.image_pixels, max_pixels=cfg.image_pixels)


def _param_groups(model, vision_scale: float) -> list[dict]:
    """Optimizer groups: the vision tower at `vision_scale` x lr (frozen at 0), everything else at lr.

    The deepstack mergers stay at full rate: the vision stage does not train them.
    """
    vision = [p for n, p in model.model.visual.named_parameters() if "deepstack" not in n]
    ids = {id(p) for p in vision}
    rest = [p for p in model.parameters() if id(p) not in ids]
    if vision_scale == 0:
        for p in vision:
            p.requires_grad_(False)
        return [{"params": rest, "scale": 1.0}]
    return [{"params": rest, "scale": 1.0}, {"params": vision, "scale": vision_scale}]


def sft_optimizer(model, cfg: TrainConfig):
    """The SFT stage's AdamW over `_param_groups` (the vision tower frozen, or at its scaled rate)."""
    import torch

    return torch.optim.AdamW(_param_groups(model, cfg.vision_lr_scale), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             betas=(0.9, 0.98))


def sft_batch(cfg: TrainConfig, processor, pad_id: int, step: int, rng: random.Random) -> dict:
    """Step `step`'s batch of the recipe's example stream; `rng` draws each example's mode and description."""
    from openvlthinker.tiny.sft import collate, encode, pick_mode

    examples = []
    for j in range(cfg.batch_size):
        index = step * cfg.batch_size + j
        family = cfg.families[index % len(cfg.families)]
        sample = generate(family, split_seed("train", index // len(cfg.families)), cfg.image_size)
        examples.append(encode(processor, sample, pick_mode(family, rng, cfg.flip_mode),
                               describe_scene=rng.random() < cfg.describe))
    return collate(examples, pad_id)


def sft_update(model, optim, batch: dict):
    """One optimizer step on `batch`: forward, backward, gradients clipped to norm 1; returns the loss."""
    import torch

    loss = model(**batch).loss
    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optim.step()
    return loss


def train(cfg: TrainConfig) -> dict:
    """Run the training and save the checkpoint to cfg.out_dir; returns the training log."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg)
    finally:  # the caller's setting again (a test module, a notebook)
        torch.set_num_threads(before)


def _train(cfg: TrainConfig) -> dict:
    import torch
    from tqdm import tqdm

    from openvlthinker.tiny.build import save_tiny

    torch.manual_seed(cfg.seed)
    model, tokenizer, processor = build_untrained(cfg)
    start = time.time()
    see_log = []
    if cfg.see_steps:
        from openvlthinker.tiny.see import family_weights, pretrain_vision

        see_log = pretrain_vision(model, processor, cfg.see_steps, cfg.see_batch, cfg.see_lr, cfg.families,
                                  cfg.image_size, cfg.seed, weights=family_weights(cfg.families, cfg.see_ocr_share))
    model.train()
    optim = sft_optimizer(model, cfg)
    rng = random.Random(cfg.seed)
    pad_id = tokenizer.pad_token_id
    history: list[dict] = []
    running = None
    bar = tqdm(range(cfg.steps), desc="train-tiny", unit="step")
    for step in bar:
        batch = sft_batch(cfg, processor, pad_id, step, rng)
        for group in optim.param_groups:
            group["lr"] = lr_at(step, cfg) * group["scale"]
        loss = sft_update(model, optim, batch)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        bar.set_postfix(loss=f"{running:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            history.append({"step": step, "loss": loss.item(), "smoothed": running, "lr": lr_at(step, cfg),
                            "elapsed_s": round(time.time() - start, 1)})
    model.eval()
    out = save_tiny(model, tokenizer, cfg.out_dir, min_pixels=cfg.image_pixels, max_pixels=cfg.image_pixels)
    # The output folder is where, not how: leaving it out keeps logs of the same recipe identical.
    log = {"config": {k: v for k, v in asdict(cfg).items() if k != "out_dir"},
           "wall_time_s": round(time.time() - start, 1), "see": see_log,
           "history": history}
    (Path(out) / "training_log.json").write_text(json.dumps(log, indent=1))
    return log


def plot_history(log: dict, path: Path) -> Path:
    """Write the loss curves as a PNG: the vision stage's (if it ran) beside the SFT loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    see = log.get("see") or []
    fig, axes = plt.subplots(1, 2 if see else 1, figsize=(11 if see else 6, 3.5), squeeze=False)
    if see:
        ax = axes[0, 0]
        steps = [h["step"] for h in see]
        for part in ("kind", "color", "size", "word", "box", "value"):
            if not any(h[part] for h in see):
                continue  # a target no family in this run has (bar values without charts)
            # 0 means the logged batch had no such target (no chart drawn): a gap, not a dive to zero loss
            ax.plot(steps, [h[part] if h[part] > 0 else float("nan") for h in see], label=part)
        ax.set_xlabel("vision-stage step")
        ax.set_ylabel("loss per target")
        ax.set_yscale("log")
        ax.set_title("stage 1: vision tower on cell targets")
        ax.legend(fontsize=7, ncol=2)
    ax = axes[0, -1]
    steps = [h["step"] for h in log["history"]]
    ax.plot(steps, [h["loss"] for h in log["history"]], alpha=0.4, label="batch loss")
    ax.plot(steps, [h["smoothed"] for h in log["history"]], label="smoothed")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (target tokens)")
    ax.set_yscale("log")
    ax.set_title(("stage 2: " if see else "") + "tiny Qwen3-VL on ShapeWorld (SFT)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
