"""Benchmark: G²RPO vs GRPO vs Dr.GRPO, online rounds from the same checkpoint and seeds.

For each estimator: a fresh `openvlthinker serve` on the shipped tiny model, a fresh LoRA
(same initialisation), then N rounds of the real loop (`online_rl.rounds.run_round`:
rollouts through the API, graders, advantages, update, publish, load, gate, promote) on the
multi-task ShapeWorld mix: a fixed training pool (`--pool` questions per family, the same
draws for every estimator) or new train-split questions every round (`--pool 0`). The served
model is scored greedily on a held-out eval set (per family) and on the pool, before the first
and after the last round, and on the held-out set with `--eval-samples` answers per question
sampled at temperature 1.0 (the API's default temperature, so what a client that sets none gets).
Prints a per-task table (eval accuracy before/after, the worst task's gain, rollout reward,
entropy and length per task over the first and last rounds) and writes learning curves.

    .venv/bin/python bench/learning.py [--rounds 16] [--lr 2e-4] [--pool 0] [--estimators g2rpo,grpo,dr_grpo]
                                       [--eval-per-family 16] [--entropy-coef 0.02] [--kl-coef 0]
                                       [--temperature 1.0] [--updates 4] [--eval-samples 4] [--train-families ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep bench/ off the path: bench/serve.py would shadow the `serve` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm import tqdm

from online_rl.client import GatewayClient
from online_rl.config import RLConfig
from online_rl.gate import AlwaysPromote, Gate
from online_rl.loop import gate_prompts, served_policy, shapeworld_prompts
from online_rl.policy import UpdateConfig
from online_rl.rounds import Prompt, graded_accuracy, messages_for, metadata_for, run_round, target_for
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from serve.launcher import ServerProcess

WINDOW = 3  # rounds averaged at the start and the end of the rollout curves


def pool_prompts(per_family: int) -> list[Prompt]:
    """A fixed training pool (a small dataset): train-split questions of every family."""
    return [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("train", 30_000_000 + i))
                                                  for i in range(per_family) for f in FAMILIES)]


def round_prompts(pool: list[Prompt], count: int, index: int, seed: int) -> list[Prompt]:
    """The round's prompts: families in turn, each a seeded draw from its part of the pool.

    Every estimator gets the same draws; a round's task mix never depends on luck, so the
    per-round mean reward stays comparable across rounds.
    """
    import random

    rng = random.Random(seed * 1_000_003 + index)
    by_family: dict[str, list[Prompt]] = {}
    for prompt in pool:
        by_family.setdefault(prompt.record.task, []).append(prompt)
    draws = {family: rng.sample(items, len(items)) for family, items in by_family.items()}
    families = list(draws)
    return [draws[families[i % len(families)]][(i // len(families)) % len(draws[families[i % len(families)]])]
            for i in range(count)]


def eval_prompts(per_family: int) -> list[Prompt]:
    """A fixed eval set: eval-split questions of every family, after the gate's (no overlap)."""
    offset = 1000
    return [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("eval", offset + i))
                                                  for i in range(per_family) for f in FAMILIES)]


def evaluate(client: GatewayClient, prompts: list[Prompt], model: str, max_tokens: int,
             samples: int = 0) -> dict[str, float]:
    """Accuracy per task of `model` on `prompts` (8 requests in flight): greedy, or with `samples` > 0 the
    mean over that many answers sampled at temperature 1.0 (the API's default), seeded per question."""

    def one(item: tuple[int, Prompt]) -> tuple[str, float]:
        index, prompt = item
        resp = client.chat(messages_for(prompt), model=model, temperature=1.0 if samples else 0.0,
                           n=max(1, samples), seed=index if samples else None, max_tokens=max_tokens,
                           metadata=metadata_for(prompt.record, source="rl-gate"))
        choices = resp["choices"]
        return prompt.record.task, sum(graded_accuracy(prompt, c["message"]) for c in choices) / len(choices)

    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(one, enumerate(prompts)))
    out = {task: sum(s for t, s in scores if t == task) / sum(1 for t, _ in scores if t == task)
           for task in dict.fromkeys(t for t, _ in scores)}
    out["mean"] = sum(out.values()) / len(out)
    return out


def run_estimator(name: str, args: argparse.Namespace, run_dir: Path, evalset: list[Prompt],
                  pool: list[Prompt]) -> dict:
    """N rounds of the loop with one advantage estimator against its own fresh server."""
    admin = secrets.token_hex(8)
    adapters = run_dir / "adapters"
    server = ServerProcess(["--model", args.model, "--run-dir", str(run_dir / "serve"), "--adapters-dir", str(adapters),
                            "--admin-key", admin, "--max-batch", "16", "--max-queue", "256", "--log-level", "warning"],
                           log_path=run_dir / "serve.log")
    try:
        cfg = RLConfig(endpoint=server.url, admin_key=admin, model=args.model, adapters_dir=str(adapters),
                       advantage=name, group_size=args.group_size, prompts_per_round=args.prompts,
                       max_new_tokens=args.max_tokens, gate_margin=args.gate_margin or 1.0, seed=args.seed,
                       rollout_temperature=args.temperature,
                       update=UpdateConfig(lr=args.lr, entropy_coef=args.entropy_coef, kl_coef=args.kl_coef,
                                           updates_per_round=args.updates))
        torch.manual_seed(args.seed)  # the same LoRA initialisation for every estimator
        policy = served_policy(cfg, None)
        client = GatewayClient(server.url, "none", admin)
        # Without --gate-margin every well-formed version is promoted (24 gate questions, as before the loop's gate
        # was sized by statistics); with it, the loop's own gate decides.
        rules = Gate(cfg.gate_spec()) if args.gate_margin else AlwaysPromote(cfg.gate_spec())
        gate = gate_prompts(cfg.gate_spec().questions if args.gate_margin else 24)
        working = None
        before = evaluate(client, evalset, "openvlthinker", args.max_tokens)
        sampled_before = evaluate(client, evalset, "openvlthinker", args.max_tokens, args.eval_samples) \
            if args.eval_samples else None
        pool_before = evaluate(client, pool, "openvlthinker", args.max_tokens) if pool else None
        rounds = []
        for index in tqdm(range(args.rounds), desc=name, unit="round"):
            prompts = (round_prompts(pool, args.prompts, index, args.seed) if pool
                       else shapeworld_prompts(args.prompts, index, args.train_families))
            result = run_round(client, policy, prompts, gate, cfg, index, target=target_for(client, cfg, working),
                               gate=rules)
            rounds.append({"round": index, "promoted": result.promoted, **result.metrics})
            working = result.working
            if result.version and result.decision not in ("promote", "keep"):  # as the loop does
                policy = served_policy(cfg, client.adapters().get("promoted"))
        after = evaluate(client, evalset, "openvlthinker", args.max_tokens)
        sampled_after = evaluate(client, evalset, "openvlthinker", args.max_tokens, args.eval_samples) \
            if args.eval_samples else None
        pool_after = evaluate(client, pool, "openvlthinker", args.max_tokens) if pool else None
    finally:
        server.stop()
    return {"estimator": name, "before": before, "after": after, "rounds": rounds, "pool_before": pool_before,
            "pool_after": pool_after, "sampled_before": sampled_before, "sampled_after": sampled_after}


def _window(rounds: list[dict], key: str, last: bool) -> float:
    rows = rounds[-WINDOW:] if last else rounds[:WINDOW]
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values) if values else float("nan")


def report(results: list[dict]) -> str:
    """The comparison table, one block per estimator."""
    tasks = [t for t in results[0]["before"] if t != "mean"]
    lines = []
    for res in results:
        rounds = res["rounds"]
        gains = {t: res["after"][t] - res["before"][t] for t in tasks}
        worst = min(gains, key=gains.get)
        wall = sum(r.get("wall_s", 0.0) for r in rounds) / max(1, len(rounds))
        promoted = sum(r["promoted"] for r in rounds)
        lines.append(f"\n== {res['estimator']}: eval mean {res['before']['mean']:.3f} -> {res['after']['mean']:.3f} "
                     f"({res['after']['mean'] - res['before']['mean']:+.3f}), worst task {worst} {gains[worst]:+.3f}, "
                     f"{promoted}/{len(rounds)} versions promoted, {wall:.1f} s per round")
        if res.get("pool_before"):
            lines.append(f"   training pool (greedy): {res['pool_before']['mean']:.3f} -> {res['pool_after']['mean']:.3f}"
                         f" ({res['pool_after']['mean'] - res['pool_before']['mean']:+.3f})")
        sb, sa = res.get("sampled_before"), res.get("sampled_after")
        if sb:
            lines.append(f"   held-out sampled at temperature 1.0: {sb['mean']:.3f} -> {sa['mean']:.3f} "
                         f"({sa['mean'] - sb['mean']:+.3f})")
        lines.append(f"{'task':<18}{'eval before':>12}{'eval after':>11}{'gain':>8}"
                     + (f"{'sampled':>16}{'gain':>8}" if sb else "")
                     + f"{'rollout acc':>16}{'rollout reward':>16}{'entropy':>13}{'length':>10}")
        for t in tasks:
            ra = f"{_window(rounds, f'accuracy/{t}', False):.3f}->{_window(rounds, f'accuracy/{t}', True):.3f}"
            rr = f"{_window(rounds, f'reward/{t}', False):.3f}->{_window(rounds, f'reward/{t}', True):.3f}"
            en = f"{_window(rounds, f'train_entropy/{t}', False):.2f}->{_window(rounds, f'train_entropy/{t}', True):.2f}"
            ln = f"{_window(rounds, f'length/{t}', False):.0f}->{_window(rounds, f'length/{t}', True):.0f}"
            sampled = f"{f'{sb[t]:.3f}->{sa[t]:.3f}':>16}{sa[t] - sb[t]:>+8.3f}" if sb else ""
            lines.append(f"{t:<18}{res['before'][t]:>12.3f}{res['after'][t]:>11.3f}{gains[t]:>+8.3f}{sampled}"
                         f"{ra:>16}{rr:>16}{en:>13}{ln:>10}")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    """Rollout reward per round (mean and per task) for every estimator, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), sharey=True, squeeze=False)
    for ax, res in zip(axes[0], results):
        rounds = res["rounds"]
        xs = [r["round"] for r in rounds]
        for key in sorted({k for r in rounds for k in r if k.startswith("reward/")}):
            ax.plot(xs, [r.get(key, float("nan")) for r in rounds], alpha=0.5, label=key.split("/", 1)[1])
        ax.plot(xs, [r["reward_mean"] for r in rounds], color="black", linewidth=2, label="mean")
        ax.set_title(f"{res['estimator']}: eval {res['before']['mean']:.2f} -> {res['after']['mean']:.2f}")
        ax.set_xlabel("round")
    axes[0][0].set_ylabel("rollout reward (the round's prompts)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--estimators", default="g2rpo,grpo,dr_grpo")
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per round")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=UpdateConfig.lr, help="LoRA learning rate (default: the loop's own)")
    parser.add_argument("--kl-coef", type=float, default=UpdateConfig.kl_coef,
                        help="KL to the base model per token (0: none, as in the paper)")
    parser.add_argument("--entropy-coef", type=float, default=UpdateConfig.entropy_coef,
                        help="weight of the entropy band penalty (docs/method.md §4; 0 turns it off)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=RLConfig.rollout_temperature,
                        help="sampling temperature of the rollouts (the held-out eval is greedy, and at 1.0 for "
                             "--eval-samples)")
    parser.add_argument("--updates", type=int, default=UpdateConfig.updates_per_round,
                        help="optimizer steps per round")
    parser.add_argument("--pool", type=int, default=0,
                        help="training pool: questions per family drawn from each round (0 = new questions every round)")
    parser.add_argument("--gate-margin", type=float, default=None,
                        help="gate with the loop's statistical gate at this margin (default: promote every "
                             "well-formed version, so the estimators are compared and not the gate's noise)")
    parser.add_argument("--train-families", default=",".join(FAMILIES),
                        help="task families the rounds train on (comma-separated; the eval covers all six)")
    parser.add_argument("--eval-per-family", type=int, default=16)
    parser.add_argument("--eval-samples", type=int, default=4,
                        help="answers per held-out question sampled at temperature 1.0 (0: greedy eval only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    args = parser.parse_args()
    if args.eval_samples < 0 or args.eval_per_family < 1 or args.rounds < 1:
        parser.error("--eval-samples must be >= 0, --eval-per-family and --rounds >= 1")
    args.train_families = [f.strip() for f in args.train_families.split(",") if f.strip()]
    unknown = sorted(set(args.train_families) - set(FAMILIES))
    if unknown or not args.train_families:
        parser.error(f"--train-families: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(FAMILIES)}")
    torch.set_num_threads(1)

    evalset = eval_prompts(args.eval_per_family)
    pool = [p for p in pool_prompts(args.pool) if p.record.task in args.train_families] if args.pool else []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = [run_estimator(name, args, args.out / stamp / name, evalset, pool) for name in args.estimators.split(",")]
    (args.out / stamp / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{args.rounds} rounds x {args.prompts} prompts x G={args.group_size}, lr {args.lr}, "
          f"{args.updates} updates per round, rollout temperature {args.temperature}, "
          f"entropy coef {args.entropy_coef}, kl coef {args.kl_coef}, "
          f"{'pool of ' + str(args.pool) + ' per family' if args.pool else 'new prompts each round'}, "
          f"training on {'all families' if len(args.train_families) == len(FAMILIES) else ', '.join(args.train_families)}, "
          f"gate margin {args.gate_margin or 'none: every version promoted'}, "
          f"eval {args.eval_per_family} per family (held out), seed {args.seed}")
    print(report(results))
    png = args.out / stamp / "learning.png"
    plot(results, png)
    print(f"\nlearning curves: {png}")


if __name__ == "__main__":
    main()
