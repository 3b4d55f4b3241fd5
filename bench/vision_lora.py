"""Experiment: can G²RPO improve held-out questions once the vision tower is trainable too?

The shipped tiny model's greedy errors on fresh questions are mostly perception (the counts it
writes in its trace are wrong while its arithmetic on them is right), and the loop's LoRA adapts
only the language model. This runs the same G²RPO rounds in one process with two adapter target
sets, side by side from the same seed: the language model's linears (what the loop ships), and
those plus the whole vision tower (its blocks, mergers and patch embedding). Prompts are the gateway's own (their
token ids come from a short-lived `openvlthinker serve`, so the mode tail and template match what
the loop trains on); rollouts, updates and the greedy held-out scoring then run in-process with
`transformers`' generate. Rewards have no length term. Printed: per arm, the held-out greedy gain
per family and on the mean, with 95% paired bootstrap intervals over questions; the rollout
accuracy of the first and last rounds.

    .venv/bin/python bench/vision_lora.py [--rounds 20] [--seeds 0] [--arms language,vision] [--set lr=1e-3 ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import json
import secrets
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from online_rl.client import GatewayClient
from online_rl.config import cli_setting
from online_rl.evaluate import messages_for, metadata_for
from online_rl.policy import LoraPolicy, UpdateConfig
from online_rl.prompts import HELD_OUT_OFFSET, Prompt
from online_rl.rollout import Rollout
from online_rl.rounds import keep_informative
from openvlthinker.models import DEFAULT_MODEL, LORA_TARGET_MODULES, load
from openvlthinker.rewards import grade
from openvlthinker.rl import get_advantage
from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from serve.launcher import ServerProcess

TRAIN_OFFSET = 7_000_000  # train-split questions no loop run of the benches starts from
VISION_TARGETS = ["qkv", "proj", "linear_fc1", "linear_fc2"]  # the vision blocks', mergers' and patch embedding's
ARMS = {"language": list(LORA_TARGET_MODULES), "vision": list(LORA_TARGET_MODULES) + VISION_TARGETS}
BOOTSTRAP = 2000


def questions(split: str, offset: int, count: int) -> list[Prompt]:
    """`count` ShapeWorld questions of the split, families in turn, one seed each (offset + i).

    Not bench/learning.py's held-out set, which gives each family the same seeds: the eval questions here
    come from the same range but are other ones; the figures in docs/experiments.md were measured on these."""
    return [Prompt(s.record, [s.image]) for s in (generate(FAMILIES[i % len(FAMILIES)], split_seed(split, offset + i))
                                                  for i in range(count))]


def gateway_prompts(prompts: list[Prompt]) -> list[tuple[list[int], str]]:
    """Each prompt's token ids and reasoning mode as the gateway builds them (one token decoded per prompt)."""
    with tempfile.TemporaryDirectory() as tmp:
        admin = secrets.token_hex(8)
        server = ServerProcess(["--model", DEFAULT_MODEL, "--run-dir", f"{tmp}/serve", "--adapters-dir", f"{tmp}/ad",
                                "--admin-key", admin, "--log-level", "warning"], log_path=Path(tmp) / "serve.log")
        try:
            client = GatewayClient(server.url, "none", admin)
            out = []
            for p in tqdm(prompts, desc="prompt ids", leave=False):
                resp = client.chat(messages_for(p), model="openvlthinker", temperature=0.0, max_tokens=1,
                                   metadata=metadata_for(p.record, source="rl-gate"))
                out.append((list(resp["prompt_token_ids"]), resp["mode"]))
            return out
        finally:
            server.stop()


class Sampler:
    """In-process generation from the gateway's prompt ids with a policy's model (left-padded batches)."""

    def __init__(self, policy: LoraPolicy):
        self.policy, self.proc = policy, policy.processor
        tok = self.proc.tokenizer
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        self.pad = policy.pad_id
        self.image_token = tok.convert_tokens_to_ids("<|image_pad|>")

    @torch.inference_mode()
    def run(self, rows: list[tuple[list[int], Prompt]], temperature: float, max_new: int = 128) -> list[list[int]]:
        """Completion ids (through <|im_end|> when it was reached) for each (prompt ids, prompt) row."""
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, (p, _) in enumerate(rows):
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        vis = self.proc.image_processor(images=[img for _, pr in rows for img in pr.images], return_tensors="pt")
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 1.0} if temperature > 0 else {"do_sample": False}
        out = self.policy.model.generate(input_ids=ids, attention_mask=attn, mm_token_type_ids=(ids == self.image_token).long(),
                                         pixel_values=vis["pixel_values"], image_grid_thw=vis["image_grid_thw"],
                                         max_new_tokens=max_new, eos_token_id=self.end, pad_token_id=self.pad, **sampling)
        result = []
        for row in out[:, width:].tolist():
            cut = row.index(self.end) + 1 if self.end in row else len(row)
            result.append([t for t in row[:cut] if t != self.pad] or [self.end])
        return result

    def text(self, completion: list[int]) -> str:
        """The completion as the grader reads it: tags kept, the end-of-turn token dropped."""
        return self.proc.tokenizer.decode([t for t in completion if t != self.end], skip_special_tokens=False)


def held_out_scores(sampler: Sampler, evalset: list[Prompt], ids: list[tuple[list[int], str]]) -> tuple[np.ndarray, list[str]]:
    """Greedy accuracy on each held-out question (8 per batch), and the answers' texts."""
    scores, texts = [], []
    for start in range(0, len(evalset), 8):
        part = list(range(start, min(start + 8, len(evalset))))
        outs = sampler.run([(ids[i][0], evalset[i]) for i in part], temperature=0.0)
        texts += [sampler.text(o) for o in outs]
        scores += [grade(evalset[i].record, t, require_thinking=False).accuracy for i, t in zip(part, texts[start:])]
    return np.array(scores), texts


def run_arm(arm: str, seed: int, args, train: list[Prompt], train_ids, evalset: list[Prompt], eval_ids) -> dict:
    """Rounds of G²RPO with the arm's LoRA targets; held-out greedy scores before and after, rollout accuracy per round."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base, processor = load(DEFAULT_MODEL)
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=ARMS[arm],
                                            task_type="CAUSAL_LM"))
    policy = LoraPolicy(model, processor, args.update)
    policy.model.eval()
    sampler = Sampler(policy)
    before, before_texts = held_out_scores(sampler, evalset, eval_ids)
    advantage = get_advantage("g2rpo")
    curve, by_task, began = [], {}, time.monotonic()
    for r in tqdm(range(args.rounds), desc=f"{arm} seed {seed}"):
        rollouts = []
        for k in range(args.prompts):
            i = (r * args.prompts + k) % len(train)
            prompt, (pids, mode) = train[i], train_ids[i]
            torch.manual_seed(seed * 1_000_003 + r * 1009 + k)
            for comp in sampler.run([(pids, prompt)] * args.group, temperature=1.0):
                score = grade(prompt.record, sampler.text(comp), require_thinking=mode == "think")
                rollouts.append(Rollout(pids, comp, [0.0] * len(comp), images=prompt.images, reward=score.overall,
                                        accuracy=score.accuracy, group_id=f"{r}-{k}", task=prompt.record.task))
        curve.append(float(np.mean([x.accuracy for x in rollouts])))
        for x in rollouts:
            by_task.setdefault(x.task, []).append((r, x.accuracy))
        kept = keep_informative(rollouts)
        if kept:
            adv = advantage(torch.tensor([x.reward for x in kept]), [x.group_id for x in kept], [x.task for x in kept])
            policy.update(kept, adv)
    after, after_texts = held_out_scores(sampler, evalset, eval_ids)
    return {"arm": arm, "seed": seed, "before": before.tolist(), "after": after.tolist(), "rollout_accuracy": curve,
            "rollout_accuracy_by_task": by_task, "before_texts": before_texts, "after_texts": after_texts,
            "train_s": time.monotonic() - began}


def report(results: list[dict], tasks: np.ndarray, rng: np.random.Generator) -> str:
    """Held-out gain per family and on the family mean, with 95% paired bootstrap intervals over questions."""
    lines = [f"{'arm':9s} {'seed':>4s} " + " ".join(f"{t[:10]:>17s}" for t in FAMILIES) + f" {'mean':>22s}  rollouts"]
    for res in results:
        diff = np.array(res["after"]) - np.array(res["before"])
        idx = {t: np.flatnonzero(tasks == t) for t in FAMILIES}
        boots = {t: diff[rng.choice(w, size=(BOOTSTRAP, w.size))].mean(axis=1) for t, w in idx.items()}
        cells = []
        for t in FAMILIES:
            lo, hi = np.percentile(boots[t], [2.5, 97.5])
            cells.append(f"{diff[idx[t]].mean():+.3f}[{lo:+.2f},{hi:+.2f}]")
        mean_boot = np.mean([boots[t] for t in FAMILIES], axis=0)
        lo, hi = np.percentile(mean_boot, [2.5, 97.5])
        point = np.mean([diff[idx[t]].mean() for t in FAMILIES])
        base = np.mean([np.array(res["before"])[idx[t]].mean() for t in FAMILIES])
        curve = res["rollout_accuracy"]
        lines.append(f"{res['arm']:9s} {res['seed']:>4d} " + " ".join(f"{c:>17s}" for c in cells)
                     + f" {base:.3f} {point:+.3f} [{lo:+.3f}, {hi:+.3f}]  {np.mean(curve[:3]):.3f} -> {np.mean(curve[-3:]):.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per round")
    ap.add_argument("--group", type=int, default=8, help="rollouts per prompt")
    ap.add_argument("--set", action="append", type=cli_setting, default=[], metavar="KEY=VALUE",
                    help="an UpdateConfig field for both arms, e.g. lr=1e-3 or updates_per_round=1 (repeatable)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--arms", default="language,vision")
    ap.add_argument("--eval-per-family", type=int, default=40)
    ap.add_argument("--out", default="runs/bench-vision-lora")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or any(a not in ARMS for a in arms):
        ap.error(f"--arms must name some of {', '.join(ARMS)}, got {args.arms!r}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    for name in ("rounds", "prompts", "eval_per_family"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.group < 2:
        ap.error("--group must be >= 2")
    known = {f.name for f in dataclasses.fields(UpdateConfig)}
    unknown = sorted({k for k, _ in args.set} - known)
    if unknown:
        ap.error(f"--set: unknown update settings {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    try:
        args.update = UpdateConfig(**dict(args.set))
    except ValueError as exc:
        ap.error(f"--set: {exc}")
    torch.set_num_threads(2)
    evalset = questions("eval", HELD_OUT_OFFSET, args.eval_per_family * len(FAMILIES))
    train = questions("train", TRAIN_OFFSET, args.rounds * args.prompts)
    ids = gateway_prompts(evalset + train)
    eval_ids, train_ids = ids[: len(evalset)], ids[len(evalset):]
    results = [run_arm(arm, seed, args, train, train_ids, evalset, eval_ids) for seed in seeds for arm in arms]
    tasks = np.array([p.record.task for p in evalset])
    print(f"{args.rounds} rounds x {args.prompts} prompts x G={args.group}, G2RPO, {args.update}, "
          f"{args.eval_per_family} held-out questions per family, greedy; gain after - before [95% CI]")
    print(report(results, tasks, np.random.default_rng(0)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {**vars(args), "update": dataclasses.asdict(args.update)}
    (out / "results.json").write_text(json.dumps({"args": settings, "results": results}, indent=1))


if __name__ == "__main__":
    main()
