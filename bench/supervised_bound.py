"""Experiment: what do the right answers themselves buy on fresh questions, for as many as the loop sees?

An upper bound for the online loop on the shipped tiny model. The loop learns from a reward on its
own samples of each train question; here the model is shown the reference answer of each one
instead, by continuing the checkpoint's own SFT recipe (`openvlthinker.tiny.train`: the same
example stream, modes, scene descriptions and frozen vision tower) on train questions that neither
the recipe nor the other benches use, at a constant learning rate. Either through the loop's own
adapter (LoRA r=16 on the language model's linears, `--adapter lora`) or on every weight the recipe
trains (`--adapter full`). After each budget of questions, the 240 held-out questions of
bench/vision_lora.py are scored greedily in-process from the gateway's prompt ids, and the gain
over the base is printed per family and on the mean with 95% paired bootstrap intervals.

If the right answers to N fresh questions do not raise the held-out mean by some margin, a reward
on samples of the same N questions (strictly less information per question) is not expected to.

    .venv/bin/python bench/supervised_bound.py [--questions 480,1920,7680] [--adapter lora] [--lr 2e-4]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import importlib.util
import json
import random
import time
from types import SimpleNamespace

import numpy as np
import torch
from tqdm import tqdm

from openvlthinker.models import DEFAULT_MODEL, LORA_TARGET_MODULES, load
from openvlthinker.tiny.shapeworld import FAMILIES
from openvlthinker.tiny.train import TrainConfig, sft_batch, sft_optimizer, sft_update

FIRST_STEP = 500_000  # the recipe's step counter starts here: train seeds from 2 000 000, used by no recipe or bench
SEED_STEPS = 10_000  # --seed s starts s * SEED_STEPS steps later: other questions (40 000 seeds apart)


def _vision_lora():
    """bench/vision_lora.py as a module: its held-out set, gateway prompt ids, sampler and report."""
    spec = importlib.util.spec_from_file_location("bench_vision_lora", Path(__file__).with_name("vision_lora.py"))
    module = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def budgets(text: str, batch: int) -> list[int]:
    """Optimizer steps after which to score: each question count of `text` (comma-separated, rising) over `batch`."""
    counts = [int(c) for c in text.split(",") if c.strip()]
    if not counts or any(c < batch or c % batch for c in counts) or counts != sorted(set(counts)):
        raise ValueError(f"question counts must rise and each be a multiple of the batch size {batch}, got {text!r}")
    return [c // batch for c in counts]


def trainable(adapter: str, cfg: TrainConfig):
    """The shipped model with what this arm trains: the loop's LoRA, or the recipe's own weights (tower frozen)."""
    model, processor = load(DEFAULT_MODEL)
    if adapter == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=list(LORA_TARGET_MODULES), task_type="CAUSAL_LM"))
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        for group in optim.param_groups:
            group["scale"] = 1.0
    else:
        optim = sft_optimizer(model, cfg)
    return model, processor, optim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", default="480,1920,7680", help="question budgets to score after (comma-separated)")
    ap.add_argument("--adapter", choices=("lora", "full"), default="lora")
    ap.add_argument("--lr", type=float, default=2e-4, help="constant learning rate (the loop's is 2e-4)")
    ap.add_argument("--seed", type=int, default=0, help="the train questions' seed (and the modes' and descriptions')")
    ap.add_argument("--eval-per-family", type=int, default=40)
    ap.add_argument("--out", default="runs/bench-supervised-bound")
    args = ap.parse_args()
    cfg = TrainConfig(lr=args.lr, seed=args.seed)
    try:
        marks = budgets(args.questions, cfg.batch_size)
    except ValueError as exc:
        ap.error(f"--questions: {exc}")
    if not 0 < args.lr < 1:
        ap.error(f"--lr must be in (0, 1), got {args.lr}")
    if args.eval_per_family < 1:
        ap.error("--eval-per-family must be >= 1")
    if not 0 <= args.seed < 40:
        ap.error(f"--seed must be in [0, 40), got {args.seed}")  # later seeds would reach vision_lora's questions
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    vl = _vision_lora()
    evalset = vl.questions("eval", vl.HELD_OUT_OFFSET, args.eval_per_family * len(FAMILIES))
    eval_ids = vl.gateway_prompts(evalset)
    model, processor, optim = trainable(args.adapter, cfg)
    pad = processor.tokenizer.pad_token_id
    sampler = vl.Sampler(SimpleNamespace(model=model, processor=processor, pad_id=pad))
    model.eval()
    before, _ = vl.held_out_scores(sampler, evalset, eval_ids)
    rng, results, began = random.Random(args.seed), [], time.monotonic()
    for group in optim.param_groups:
        group["lr"] = args.lr * group["scale"]
    step = 0
    for mark in marks:
        model.train()
        for step in tqdm(range(step, mark), desc=f"sft to {mark * cfg.batch_size} questions", initial=step, total=mark):
            sft_update(model, optim, sft_batch(cfg, processor, pad, FIRST_STEP + args.seed * SEED_STEPS + step, rng))
        step = mark
        model.eval()
        after, texts = vl.held_out_scores(sampler, evalset, eval_ids)
        results.append({"arm": f"{args.adapter} {mark * cfg.batch_size}q", "seed": args.seed, "before": before.tolist(),
                        "after": after.tolist(), "rollout_accuracy": [float("nan")], "after_texts": texts,
                        "train_s": time.monotonic() - began})
    tasks = np.array([p.record.task for p in evalset])
    print(f"SFT continuation of the shipped recipe, {args.adapter}, lr {args.lr} constant, batch {cfg.batch_size}; "
          f"{args.eval_per_family} held-out questions per family, greedy; gain after - before [95% CI]")
    print(vl.report(results, tasks, np.random.default_rng(0)).replace("rollouts", "").replace(" nan -> nan", ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results-{args.adapter}-{args.seed}.json").write_text(json.dumps({"args": vars(args), "results": results},
                                                                            indent=1))


if __name__ == "__main__":
    main()
