"""`openvlthinker rl plot`: the loop's learning curves from its metrics.jsonl, as one PNG.

Four panels over rounds: the served version's score on the gate's held-out questions per task
with a 95% interval (normal approximation over the questions scored), the rollouts' accuracy per
task, their length per task (what length shaping moves) and the trained tokens' entropy per task
with the entropy band shaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

BAND = (0.2, 0.6)  # UpdateConfig's entropy_low/entropy_high defaults, shaded on the entropy panel


def read_rounds(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds of out_dir/metrics.jsonl (a torn last line, being written, is skipped)."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: is {out_dir} the loop's --out folder?")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    if not rows:
        raise ValueError(f"{path} has no rounds yet")
    return rows


def served_scores(row: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """task -> (score, questions) of the version served after this round, on the gate questions it scored."""
    side = "gate_candidate" if row.get("decision") == "promote" else "gate_current"
    return {key.split("/", 1)[1]: (value, row.get(f"{side}_n/{key.split('/', 1)[1]}", 0.0))
            for key, value in row.items() if key.startswith(side + "/")}


def interval(score: float, n: float) -> tuple[float, float]:
    """95% normal-approximation interval of a mean score over n questions, within [0, 1]."""
    if n <= 0:
        return score, score
    half = 1.96 * math.sqrt(max(score * (1 - score), 0.0) / n)
    return max(0.0, score - half), min(1.0, score + half)


def plot(out_dir: str | Path) -> Path:
    """Write out_dir/learning_curves.png and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rounds(out_dir)
    tasks = sorted({k.split("/", 1)[1] for r in rows for k in r if k.startswith(("accuracy/", "gate_current/"))})
    color = {t: f"C{i}" for i, t in enumerate(tasks)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    served = [(r["round"], served_scores(r)) for r in rows]
    for task in tasks:
        pts = [(index, *scores[task]) for index, scores in served if task in scores]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], color=color[task], marker="o", markersize=3, label=task)
        bounds = [interval(p[1], p[2]) for p in pts]
        ax.fill_between(xs, [b[0] for b in bounds], [b[1] for b in bounds], color=color[task], alpha=0.12)
    ax.set_title("served version on the gate's held-out questions (95% interval)")
    ax.set_ylabel("greedy accuracy")
    for ax, prefix, label in ((axes[0][1], "accuracy/", "rollout accuracy"),
                              (axes[1][0], "length/", "rollout length (tokens)"),
                              (axes[1][1], "train_entropy/", "trained tokens' entropy")):
        for task in tasks:
            pts = [(r["round"], r[prefix + task]) for r in rows if prefix + task in r]
            if pts:
                ax.plot(*zip(*pts), color=color[task], marker="o", markersize=3, label=task)
        ax.set_title(label)
    axes[1][1].axhspan(*BAND, color="grey", alpha=0.15, label="entropy band")
    for ax in axes.flat:
        ax.set_xlabel("round")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(out_dir) / "learning_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
