"""Benchmark: does the online loop make the served model better, within a time budget, per estimator and seed?

For each estimator and seed: a fresh `openvlthinker serve` on the shipped tiny model and the
product's own loop (`online_rl.loop.run`: its prompts, refills, update, publish, statistical gate,
promote and rollback, at the loop's defaults for the model, i.e. its profile) for `--minutes` of
loop time. The model users get (the served alias) answers `--eval-per-family` fresh held-out
ShapeWorld questions per family greedily at the start, every `--eval-every` minutes and at the end;
those questions come from the eval split after the gate's, so the loop never trains or gates on them.
The time spent scoring them is not counted in the budget.

Prints, per estimator and seed, the held-out gain per family and on the mean of families with 95%
bootstrap intervals over questions (paired: the same questions before and after); across seeds, the
estimators' mean gains and the differences between estimators, with intervals; and the policy's
movement (approx KL between consecutive versions, clip fractions, the share of held-out answers that
changed). Writes results.json and PNG curves: held-out score per family over loop time, rollout length
and entropy per task per round.

    .venv/bin/python bench/learning.py [--minutes 30] [--seeds 0,1,2] [--estimators g2rpo,grpo,dr_grpo]
                                       [--eval-per-family 40] [--eval-every 10] [--set KEY=VALUE ...]
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

import numpy as np
import torch
from tqdm import tqdm

from online_rl import loop
from online_rl.client import GatewayClient
from online_rl.config import RLConfig, cli_setting
from online_rl.evaluate import graded_accuracy, messages_for, metadata_for
from online_rl.profiles import profile_for
from online_rl.prompts import Prompt, held_out_prompts
from openvlthinker.models import DEFAULT_MODEL
from openvlthinker.tiny.shapeworld import FAMILIES
from openvlthinker.versions import pinned_model
from serve.launcher import ServerProcess

BOOTSTRAP = 2000


def score(client: GatewayClient, prompts: list[Prompt], max_tokens: int,
          model: str = "openvlthinker") -> tuple[list[float], list[str]]:
    """Greedy accuracy and answer text of `model` (default: the served alias) on each prompt (8 in flight)."""

    def one(prompt: Prompt) -> tuple[float, str]:
        resp = client.chat(messages_for(prompt), model=model, temperature=0.0, max_tokens=max_tokens,
                           metadata=metadata_for(prompt.record, source="rl-gate"))
        message = resp["choices"][0]["message"]
        return graded_accuracy(prompt, message), message.get("content") or ""

    with ThreadPoolExecutor(8) as pool:
        pairs = list(pool.map(one, prompts))
    return [a for a, _ in pairs], [t for _, t in pairs]


def family_means(values: np.ndarray, tasks: np.ndarray) -> dict[str, float]:
    """Per-family mean of per-question values (last axis), and "mean": the mean over families."""
    out = {t: values[..., tasks == t].mean(axis=-1) for t in FAMILIES}
    out["mean"] = np.mean([out[t] for t in FAMILIES], axis=0)
    return out


def resample(n_seeds: int, n_questions: int, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap indices (B, seeds, questions), resampling questions within each family."""
    idx = np.empty((BOOTSTRAP, n_seeds, n_questions), dtype=np.int64)
    for t in FAMILIES:
        where = np.flatnonzero(tasks == t)
        idx[..., where] = rng.choice(where, size=(BOOTSTRAP, n_seeds, where.size))
    return idx


def interval(diffs: np.ndarray, tasks: np.ndarray, rng: np.random.Generator) -> dict[str, tuple[float, float, float]]:
    """Family and mean gains averaged over seeds, with 95% bootstrap intervals: diffs is (seeds, questions)."""
    point = family_means(diffs.mean(axis=0), tasks)
    idx = resample(diffs.shape[0], diffs.shape[1], tasks, rng)
    boot = np.take_along_axis(np.broadcast_to(diffs, idx.shape), idx, axis=-1).mean(axis=1)  # (B, questions)
    draws = family_means(boot, tasks)
    return {k: (float(point[k]), *map(float, np.percentile(draws[k], [2.5, 97.5]))) for k in point}


def run_one(name: str, seed: int, args: argparse.Namespace, run_dir: Path, evalset: list[Prompt]) -> dict:
    """The product's loop with one estimator and seed, against its own fresh server, for args.minutes of loop time."""
    admin = secrets.token_hex(8)
    server = ServerProcess(["--model", args.model, "--run-dir", str(run_dir / "serve"), "--adapters-dir",
                            str(run_dir / "adapters"), "--admin-key", admin, "--max-batch", "16", "--max-queue", "256",
                            "--log-level", "warning"], log_path=run_dir / "serve.log")
    try:
        values = {**profile_for(args.model), **args.overrides, "advantage": name, "seed": seed}
        cfg = RLConfig.from_mapping({**values, "endpoint": server.url, "admin_key": admin})
        client = GatewayClient(server.url, "none", admin)
        evals: list[dict] = []
        working: list[str | None] = [None]  # the trainer's unpromoted version (the gate kept the served one)

        def evaluate(loop_s: float, rounds: int) -> None:
            acc, texts = score(client, evalset, cfg.max_new_tokens)
            row = {"loop_s": loop_s, "rounds": rounds, "accuracy": acc, "texts": texts,
                   "served": client.adapters().get("promoted"), "trainer": working[0]}
            if working[0]:  # what the loop would serve without its gate: a diagnostic, not the product's score
                row["trainer_accuracy"] = score(client, evalset, cfg.max_new_tokens, pinned_model("openvlthinker",
                                                                                                  working[0]))[0]
            evals.append(row)

        evaluate(0.0, 0)
        budget, loop_s, mark = args.minutes * 60, 0.0, time.monotonic()
        next_eval = args.eval_every * 60
        bar = tqdm(total=int(budget), desc=f"{name} seed {seed}", unit="s")

        def after_round(index: int, result) -> bool:
            nonlocal loop_s, mark, next_eval
            loop_s += time.monotonic() - mark
            working[0] = result.working
            bar.update(min(int(loop_s) - bar.n, int(budget) - bar.n))
            done = loop_s >= budget
            if done or loop_s >= next_eval:
                evaluate(loop_s, index + 1)
                next_eval += args.eval_every * 60
            mark = time.monotonic()
            return done

        torch.manual_seed(seed)  # the LoRA initialisation of this seed, the same for every estimator
        loop.run(cfg, 0, run_dir / "rl", log=lambda *a: None, after_round=after_round)
        bar.close()
    finally:
        server.stop()
    rows = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"estimator": name, "seed": seed, "config": dict(values), "evals": evals,
            "rounds": rows}


def _movement(rows: list[dict]) -> str:
    """One line on how far the policy moved per round."""
    mean = lambda key: np.nanmean([r.get(key, np.nan) for r in rows]) if rows else float("nan")  # noqa: E731
    decisions = [r.get("decision", "") for r in rows]
    return (f"{len(rows)} rounds, {decisions.count('promote')} promoted / {decisions.count('keep')} kept / "
            f"{decisions.count('reject')} rejected / {decisions.count('rolled_back')} rolled back; per round: "
            f"version KL {mean('version_kl'):.2e}, clip fraction {mean('train_clip_frac'):.3f}, "
            f"gate answers changed {mean('gate_answers_changed'):.2f}, {mean('wall_s'):.1f} s")


def report(results: list[dict], evalset: list[Prompt], rng: np.random.Generator) -> str:
    """Per run: gains with intervals; per estimator over seeds; differences between estimators."""
    tasks = np.array([p.record.task for p in evalset])
    lines, per_est = [], {}
    for res in results:
        first, last = res["evals"][0], res["evals"][-1]
        diff = np.array(last["accuracy"]) - np.array(first["accuracy"])
        gains = interval(diff[None], tasks, rng)
        base = family_means(np.array(first["accuracy"]), tasks)
        changed = np.mean([a != b for a, b in zip(first["texts"], last["texts"])])
        per_est.setdefault(res["estimator"], []).append(diff)
        lines.append(f"\n== {res['estimator']} seed {res['seed']}: {last['loop_s'] / 60:.1f} min of loop, serving "
                     f"{last['served'] or 'the base model'}; {_movement(res['rounds'])}; held-out answers changed "
                     f"{changed:.2f}")
        trainer = next((e for e in reversed(res["evals"]) if "trainer_accuracy" in e), None)
        if trainer is not None:
            t = interval((np.array(trainer["trainer_accuracy"]) - np.array(first["accuracy"]))[None], tasks, rng)
            lines.append(f"   the trainer's unpromoted {trainer['trainer']} (kept out by the gate) at {trainer['loop_s'] / 60:.1f}"
                         f" min: mean gain {t['mean'][0]:+.3f} [{t['mean'][1]:+.3f}, {t['mean'][2]:+.3f}]; "
                         + ", ".join(f"{k} {t[k][0]:+.3f}" for k in FAMILIES))
        lines.append(f"{'task':<20}{'before':>8}{'after':>8}{'gain':>8}   95% interval")
        for key in [*FAMILIES, "mean"]:
            g, lo, hi = gains[key]
            lines.append(f"{key:<20}{float(base[key]):>8.3f}{float(base[key]) + g:>8.3f}{g:>+8.3f}   [{lo:+.3f}, {hi:+.3f}]")
    lines.append("\n== over seeds (mean gain, 95% bootstrap interval over questions)")
    lines.append(f"{'estimator':<10}{'seeds':>6}{'mean gain':>28}{'worst family':>36}")
    summary = {}
    for name, diffs in per_est.items():
        gains = interval(np.stack(diffs), tasks, rng)
        summary[name] = np.stack(diffs)
        worst = min(FAMILIES, key=lambda t: gains[t][0])
        g, lo, hi = gains["mean"]
        wg, wlo, whi = gains[worst]
        lines.append(f"{name:<10}{len(diffs):>6}{g:>+10.3f} [{lo:+.3f}, {hi:+.3f}]"
                     f"{worst:>18} {wg:+.3f} [{wlo:+.3f}, {whi:+.3f}]")
    names = list(summary)
    for other in names[1:]:
        if summary[other].shape != summary[names[0]].shape:
            continue
        d = interval(summary[names[0]] - summary[other], tasks, rng)["mean"]
        verdict = "inside the noise" if d[1] <= 0 <= d[2] else ("ahead" if d[1] > 0 else "behind")
        lines.append(f"{names[0]} - {other}: {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] on the mean gain ({verdict})")
    return "\n".join(lines)


def plot(results: list[dict], evalset: list[Prompt], path: Path) -> None:
    """Held-out score per family over loop time (mean over seeds) and rollout length/entropy per task per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = np.array([p.record.task for p in evalset])
    names = list(dict.fromkeys(r["estimator"] for r in results))
    fig, axes = plt.subplots(3, len(names), figsize=(5 * len(names), 11), squeeze=False)
    for col, name in enumerate(names):
        runs = [r for r in results if r["estimator"] == name]
        ax = axes[0][col]
        for key in [*FAMILIES, "mean"]:
            curves = [[(e["loop_s"] / 60, float(family_means(np.array(e["accuracy"]), tasks)[key])) for e in r["evals"]]
                      for r in runs]
            for i, curve in enumerate(curves):
                xs, ys = zip(*curve)
                ax.plot(xs, ys, color="black" if key == "mean" else f"C{FAMILIES.index(key)}",
                        linewidth=2 if key == "mean" else 1,
                        alpha=1.0 if key == "mean" else 0.6, marker="o", label=key if i == 0 else None)
        for i, r in enumerate(runs):  # the trainer's version the gate kept out, where there was one (a diagnostic)
            pts = [(0.0, float(family_means(np.array(r["evals"][0]["accuracy"]), tasks)["mean"]))]
            pts += [(e["loop_s"] / 60, float(family_means(np.array(e["trainer_accuracy"]), tasks)["mean"]))
                    for e in r["evals"] if "trainer_accuracy" in e]
            if len(pts) > 1:
                ax.plot(*zip(*pts), color="black", linestyle="--", marker="x",
                        label="mean, trainer's version (not served)" if i == 0 else None)
        ax.set_title(f"{name}: held-out greedy score ({len(runs)} seeds)")
        ax.set_xlabel("loop minutes")
        for row, (prefix, label) in enumerate([("length/", "rollout length (tokens)"),
                                               ("train_entropy/", "token entropy (band 0.2-0.6)")], start=1):
            ax = axes[row][col]
            for key in FAMILIES:
                for i, r in enumerate(runs):
                    pts = [(x["round"], x[prefix + key]) for x in r["rounds"] if prefix + key in x]
                    if pts:
                        xs, ys = zip(*pts)
                        ax.plot(xs, ys, alpha=0.6, color=f"C{FAMILIES.index(key)}", label=key if i == 0 else None)
            if prefix == "train_entropy/":
                ax.axhspan(0.2, 0.6, color="grey", alpha=0.15)
            ax.set_xlabel("round")
            ax.set_ylabel(label)
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--estimators", default="g2rpo,grpo,dr_grpo")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--minutes", type=float, default=30.0, help="loop time per run (scoring the held-out set "
                                                                    "excluded)")
    parser.add_argument("--eval-every", type=float, default=10.0, help="loop minutes between held-out scorings")
    parser.add_argument("--eval-per-family", type=int, default=40)
    parser.add_argument("--set", dest="overrides", action="append", type=cli_setting, default=[],
                        help="an RLConfig field over the profile's value, e.g. --set lr=1e-3 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    args = parser.parse_args()
    if args.minutes <= 0 or args.eval_every <= 0 or args.eval_per_family < 1:
        parser.error("--minutes and --eval-every must be > 0, --eval-per-family >= 1")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")
    args.overrides = dict(args.overrides)
    RLConfig.from_mapping({**profile_for(args.model), **args.overrides})  # a bad --set fails here, not after a run
    torch.set_num_threads(1)

    evalset = held_out_prompts(args.eval_per_family)
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    results = []
    for name in args.estimators.split(","):
        for seed in seeds:
            results.append(run_one(name, seed, args, out / f"{name}-seed{seed}", evalset))
            (out / "results.json").write_text(json.dumps(results))
    print(f"{args.minutes:g} min of loop per run, held-out {args.eval_per_family} per family, seeds {seeds}, "
          f"profile {profile_for(args.model)}, overrides {args.overrides or 'none'}")
    print(report(results, evalset, np.random.default_rng(0)))
    plot(results, evalset, out / "learning.png")
    print(f"\ncurves: {out / 'learning.png'}")


if __name__ == "__main__":
    main()
