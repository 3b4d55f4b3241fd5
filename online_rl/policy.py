"""The trainable policy: a LoRA adapter on the served base model, scored on rollout tokens.

`LoraPolicy.update` is one G²RPO round: score every rollout once without gradients (the
proximal "old" logprobs), then micro-batched PPO steps with the token-mean clipped loss,
the per-task entropy band penalty and gradient clipping. The vision tower stays frozen
(LoRA targets only the language model's linears). The base is a Qwen3-VL model or any causal LM
(`openvlthinker.models.load` decides from its config.json); it runs on the CPU or a CUDA device in
float32 or bfloat16 (`openvlthinker/models/placement.py`), with gradient checkpointing on CUDA by
default. Token logprobs and entropies come from `online_rl/logprobs.py`, which never makes the
B×T×V logits, and each optimizer step reports its peak memory (`online_rl/memory.py`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from openvlthinker.rl import entropy_band_penalty, policy_loss

from .logprobs import completion_stats
from .memory import StepMemory
from .rollout import Rollout


@dataclass
class UpdateConfig:
    """Optimisation knobs of one round (docs/method.md §2 and §4 defaults, LoRA learning rate)."""

    lr: float = 2e-4
    weight_decay: float = 0.01
    micro_batch: int = 8
    updates_per_round: int = 4  # optimizer steps per round (paper: 4 per rollout step)
    clip_low: float = 0.2
    clip_high: float = 0.3
    dual_clip: float | None = 3.0
    grad_clip: float = 1.0
    entropy_coef: float = 0.02
    entropy_low: float = 0.2
    entropy_high: float = 0.6
    is_cap: float = 2.0
    # KL to the base model (k3, per token): docs/method.md §2 has none; the base is the LoRA's own model with the
    # adapter switched off, so it costs one more forward per micro-batch and no second copy of the weights.
    kl_coef: float = 0.0
    # How the token-mean loss is taken: "step", one mean over every token of an optimizer step's micro-batches
    # (what the release's token-mean does: each token weighs the same, whatever its response's length); "micro",
    # a mean per micro-batch, micro-batches weighed equally (a short answer's tokens then weigh more).
    token_mean: str = "step"

    def __post_init__(self) -> None:
        # Config files and CLI flags land here: say which knob is wrong, not fail mid-round.
        for name in ("lr", "weight_decay", "clip_low", "clip_high", "grad_clip", "entropy_coef", "entropy_low",
                     "entropy_high", "is_cap", "kl_coef"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
        for name in ("kl_coef", "entropy_coef", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "clip_low", "clip_high", "grad_clip", "is_cap"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in ("micro_batch", "updates_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        if self.token_mean not in ("step", "micro"):
            raise ValueError(f"token_mean must be 'step' or 'micro', got {self.token_mean!r}")
        if not 0 <= self.entropy_low <= self.entropy_high:
            raise ValueError(f"need 0 <= entropy_low <= entropy_high, got {self.entropy_low} and {self.entropy_high}")


def _batch(rollouts: Sequence[Rollout], processor, pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-padded model inputs for prompt+completion: with image inputs for a vision-language processor."""
    seqs = [r.prompt_ids + r.completion_ids for r in rollouts]
    width = max(map(len, seqs))
    n = len(seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attn = torch.zeros((n, width), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
    if not hasattr(processor, "image_processor"):  # a causal LM's tokenizer: text rows only (see usable)
        return {"input_ids": ids.to(device), "attention_mask": attn.to(device)}
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    out = {"input_ids": ids, "attention_mask": attn, "mm_token_type_ids": (ids == image_token).long() * attn}
    images = [img for r in rollouts for img in r.images]
    if images:
        vis = processor.image_processor(images=images, return_tensors="pt")
        out["pixel_values"], out["image_grid_thw"] = vis["pixel_values"], vis["image_grid_thw"]
    return {k: v.to(device) for k, v in out.items()}


def _completion_view(rollouts: Sequence[Rollout], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index of the logit predicting each completion token, the targets, and the mask: (B, Tc)."""
    tc = max(len(r.completion_ids) for r in rollouts)
    pos = torch.zeros((len(rollouts), tc), dtype=torch.long)
    tgt = torch.zeros((len(rollouts), tc), dtype=torch.long)
    mask = torch.zeros((len(rollouts), tc), dtype=torch.bool)
    for i, r in enumerate(rollouts):
        p, c = len(r.prompt_ids), len(r.completion_ids)
        pos[i, :c] = torch.arange(p - 1, p + c - 1)
        tgt[i, :c] = torch.tensor(r.completion_ids)
        mask[i, :c] = True
    return pos.clamp(max=width - 1), tgt, mask


def _checkpoint_layers(model) -> None:
    """Recompute each decoder layer's activations in the backward (in train mode only, as transformers does it)."""
    # Non-reentrant checkpointing reaches the LoRA weights inside a layer whether or not the layer's input requires
    # grad (the reentrant kind needs enable_input_require_grads for that, which transformers also calls for PEFT).
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the older name warns there
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class LoraPolicy:
    """A base model with one trainable LoRA adapter, its processor (or a causal LM's tokenizer) and optimizer."""

    def __init__(self, model, processor, cfg: UpdateConfig, device: str | torch.device = "cpu",
                 chunk_tokens: int | None = None):
        self.model, self.processor, self.cfg, self.device = model, processor, cfg, torch.device(device)
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.vision = hasattr(processor, "image_processor")
        # Padding is masked out of attention and loss, so a tokenizer without a pad token may pad with anything.
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.chunk_tokens = chunk_tokens  # tokens per LM-head chunk (None: online_rl.logprobs.CHUNK_BYTES' worth)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters (is the LoRA adapter trainable?)")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    @classmethod
    def create(cls, base_path: str, cfg: UpdateConfig, *, adapter_path: str | None = None, lora_r: int = 16,
               lora_alpha: int = 32, device: str = "cpu", dtype: str = "auto",
               grad_checkpointing: bool | None = None) -> "LoraPolicy":
        """Load the base model and a fresh LoRA, or continue training an existing adapter folder.

        device: auto, cpu, cuda or cuda:N; dtype: auto (bfloat16 on CUDA, float32 on the CPU), float32 or
        bfloat16, the base model's; grad_checkpointing: None is on for CUDA, off on the CPU.
        """
        from peft import PeftModel, get_peft_model

        from openvlthinker.models import check_placement, load, lora_config, resolve_device, resolve_dtype

        check_placement(device, dtype, grad_checkpointing)
        where = resolve_device(device)
        base, processor = load(base_path, device=str(where), dtype=resolve_dtype(dtype, where))
        # PEFT keeps the LoRA weights in float32 on a bf16 base (autocast_adapter_dtype): AdamW's updates of
        # ~lr x 1e-3 would round away in bf16, and the adapter is a sliver of the memory.
        if adapter_path is not None:
            model = PeftModel.from_pretrained(base, adapter_path, is_trainable=True)
        else:
            model = get_peft_model(base, lora_config(r=lora_r, alpha=lora_alpha))
        model.to(where)
        if grad_checkpointing if grad_checkpointing is not None else where.type == "cuda":
            _checkpoint_layers(model.get_base_model())
        return cls(model, processor, cfg, where)

    def usable(self, rollouts: Sequence[Rollout]) -> list[Rollout]:
        """The rollouts this policy can score: none whose completion holds an image placeholder, none whose
        prompt holds another number of images than the rollout carries, and none with images for a text model.

        A placeholder in the completion has no pixels behind it, so the model cannot run on the sequence (a
        server that does not ban them, or an old log, may still hand one in); nor can it when the prompt's
        image blocks and the images disagree (one batch of such a rollout would fail the whole update).
        """
        tok = self.tokenizer
        vision = {tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")}
        vision.discard(tok.unk_token_id)
        vision.discard(None)  # a tokenizer without these tokens and without an unk token
        start = tok.convert_tokens_to_ids("<|vision_start|>")
        return [r for r in rollouts if not vision.intersection(r.completion_ids)
                and (self.vision or not r.images)
                and (start in (tok.unk_token_id, None) or r.prompt_ids.count(start) == len(r.images))]

    def token_stats(self, rollouts: Sequence[Rollout], grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logprobs and entropies of each completion token under the current policy: (B, Tc) x2 (0 off the mask),
        mask."""
        batch = _batch(rollouts, self.processor, self.pad_id, self.device)
        pos, tgt, mask = _completion_view(rollouts, batch["input_ids"].shape[1])
        pos, tgt, mask = pos.to(self.device), tgt.to(self.device), mask.to(self.device)
        with torch.set_grad_enabled(grad):
            logp, ent = self._stats(batch, pos, tgt, mask)
        return logp, ent, mask

    def _stats(self, batch, pos, tgt, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """completion_stats on the model (a data-parallel policy runs its gradient forwards through DDP)."""
        return completion_stats(self.model, batch, pos, tgt, mask, self.chunk_tokens)

    def _trains(self, start: int) -> bool:
        """Whether this process trains the micro-batch beginning at rollout `start` (one process: all of them)."""
        return True

    def update(self, rollouts: Sequence[Rollout], advantages: torch.Tensor) -> dict[str, float]:
        """One round of PPO steps on `rollouts` with per-rollout `advantages`; returns mean metrics."""
        if len(rollouts) != advantages.numel():
            raise ValueError(f"{len(rollouts)} rollouts but {advantages.numel()} advantages")
        cfg = self.cfg
        self.model.train()
        old = []  # None for a micro-batch another data-parallel rank trains (online_rl/distributed.py)
        for start in range(0, len(rollouts), cfg.micro_batch):
            part = rollouts[start : start + cfg.micro_batch]
            old.append(self.token_stats(part, grad=False)[0] if self._trains(start) else None)
        # Split the round into `updates_per_round` optimizer steps of whole micro-batches.
        chunks = list(range(0, len(rollouts), cfg.micro_batch))
        per_step = max(1, math.ceil(len(chunks) / cfg.updates_per_round))
        steps = [chunks[i : i + per_step] for i in range(0, len(chunks), per_step)]
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}  # per key: per-task metrics exist only in micro-batches with that task
        peaks = {"peak_mem_mb": 0.0, "peak_mem_growth_mb": 0.0}  # the round's largest step, not a mean
        for step in steps:
            with StepMemory(self.device) as memory:
                step_metrics = self._optimizer_step(rollouts, [old[chunks.index(s)] for s in step], advantages, step)
            for metrics in step_metrics:
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
            peaks = {"peak_mem_mb": max(peaks["peak_mem_mb"], memory.peak_mb),
                     "peak_mem_growth_mb": max(peaks["peak_mem_growth_mb"], memory.growth_mb)}
        self.model.eval()
        out = {**{k: v / counts[k] for k, v in totals.items()}, **peaks}
        drift = self.version_kl(rollouts[: cfg.micro_batch], old[0])
        if drift is not None:
            out["version_kl"] = drift
        return out

    def _optimizer_step(self, rollouts: Sequence[Rollout], old: list[torch.Tensor], advantages: torch.Tensor,
                        starts: list[int]) -> list[dict[str, float]]:
        """One optimizer step over the micro-batches beginning at `starts`; their metrics, then the step's own."""
        cfg, began = self.cfg, time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = [sum(len(r.completion_ids) for r in rollouts[start : start + cfg.micro_batch]) for start in starts]
        out = []
        for k, start in enumerate(starts):
            part = rollouts[start : start + cfg.micro_batch]
            share = tokens[k] / sum(tokens) if cfg.token_mean == "step" else 1.0 / len(starts)
            out.append(self._micro_step(part, old[k], advantages[start : start + len(part)], loss_scale=share,
                                        penalty_scale=1.0 / len(starts)))
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the step's time includes its kernels, not only their launch
        out.append({"grad_norm": norm, "step_s": time.perf_counter() - began})
        return out

    def version_kl(self, rollouts: Sequence[Rollout], before: torch.Tensor) -> float | None:
        """Approximate KL(previous version || updated policy) per token, on the on-policy rows given.

        The rows were sampled from the previous version and `before` holds their logprobs under it, so
        the k3 estimator E[r - 1 - log r], r = p_new / p_old, is unbiased and never negative. One micro-batch
        is enough for a trend and costs one forward without gradients; None when no row is on-policy.
        """
        rows = [i for i, r in enumerate(rollouts) if not r.off_policy]
        if not rows:
            return None
        with torch.no_grad():
            after, _, mask = self.token_stats([rollouts[i] for i in rows], grad=False)
            old = before[rows, : after.shape[1]].to(self.device)
            log_ratio = after - old
            k3 = torch.exp(log_ratio) - 1.0 - log_ratio
            return float((k3 * mask).sum() / mask.sum().clamp(min=1))

    def _micro_step(self, part: Sequence[Rollout], old_logp: torch.Tensor, adv: torch.Tensor, loss_scale: float,
                    penalty_scale: float) -> dict[str, float]:
        """Backward of one micro-batch: its token-mean loss times `loss_scale` (its share of the step's tokens, or
        1/micro-batches) and its entropy band penalty times `penalty_scale`; returns its metrics."""
        cfg = self.cfg
        logp, ent, mask = self.token_stats(part, grad=True)
        width = logp.shape[1]
        old_logp = old_logp[:, :width].to(self.device)
        behaviour = None
        if any(r.off_policy for r in part):
            behaviour = old_logp.clone()  # on-policy rows: weight exp(0) = 1
            for i, r in enumerate(part):
                if r.off_policy:
                    behaviour[i, : len(r.behaviour_logprobs)] = torch.tensor(r.behaviour_logprobs, device=self.device)
        ref_logp = None
        if cfg.kl_coef > 0:
            with self.model.disable_adapter():
                ref_logp, _, _ = self.token_stats(part, grad=False)
        loss, metrics = policy_loss(
            logp, old_logp, adv.to(self.device, logp.dtype), mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
            dual_clip=cfg.dual_clip, behaviour_logprobs=behaviour, is_cap=cfg.is_cap, ref_logprobs=ref_logp,
            kl_coef=cfg.kl_coef,
        )
        penalty = entropy_band_penalty(ent, mask, [r.task for r in part], cfg.entropy_low, cfg.entropy_high)
        total = loss * loss_scale + cfg.entropy_coef * penalty * penalty_scale
        if not torch.isfinite(total):
            raise FloatingPointError("non-finite loss in the policy update")
        total.backward()
        masked = (ent * mask).detach()
        metrics.update(loss=loss.item(), entropy_penalty=penalty.item(),
                       entropy=(masked.sum() / mask.sum().clamp(min=1)).item())
        for task in sorted({r.task for r in part}):
            rows = torch.tensor([r.task == task for r in part], device=mask.device)
            metrics[f"entropy/{task}"] = (masked[rows].sum() / mask[rows].sum().clamp(min=1)).item()
        return metrics

    def save_adapter(self, folder: str | Path) -> Path:
        """Write the LoRA adapter in PEFT format (adapter_config.json + adapter_model.safetensors)."""
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        return folder
