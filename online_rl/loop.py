"""The online loop: rounds of run_round against a live server, resumable, with metrics on disk.

Prompts come from ShapeWorld's train split (bootstrapping) or a OneThinker-format file, mixed
across tasks. The trainer state (next round, promoted version) is checkpointed after every
round, so a killed loop resumes where it stopped; a publish interrupted mid-way leaves only a
hidden temporary folder, which is removed at start. Round metrics go to metrics.jsonl and to
TensorBoard (out_dir/tensorboard).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Iterator

from openvlthinker.tiny.shapeworld import FAMILIES, generate, split_seed
from openvlthinker.versions import remove_partial

from .client import GatewayClient
from .config import RLConfig
from .harvest import Harvest, harvest
from .policy import LoraPolicy
from .rounds import Prompt, RoundResult, run_round


def shapeworld_prompts(count: int, round_index: int, families=FAMILIES) -> list[Prompt]:
    """`count` train-split questions for a round, families interleaved, never repeated across rounds."""
    out = []
    for i in range(count):
        family = families[i % len(families)]
        seed = split_seed("train", 10_000_000 + round_index * 100_000 + i)  # away from the SFT stream
        sample = generate(family, seed)
        out.append(Prompt(sample.record, [sample.image]))
    return out


def trainable(prompts: list[Prompt], skip_tasks: tuple[str, ...]) -> list[Prompt]:
    """The prompts whose task the loop trains on."""
    return [p for p in prompts if p.record.task not in skip_tasks]


def fill_prompts(stream: Iterator[Prompt] | None, count: int, round_index: int,
                 skip_tasks: tuple[str, ...] = ()) -> list[Prompt]:
    """Prompts that complete a round: the data file's next `count` records (those of skipped tasks dropped,
    so a round may come out short), or `count` ShapeWorld questions of the families not skipped."""
    if count <= 0:
        return []
    if stream is not None:
        return trainable([next(stream) for _ in range(count)], skip_tasks)
    families = tuple(f for f in FAMILIES if f not in skip_tasks)
    return shapeworld_prompts(count, round_index, families) if families else []


def file_prompts(path: str, image_root: str | None, seed: int) -> Iterator[Prompt]:
    """An endless shuffled stream of a OneThinker file's records with their images."""
    from openvlthinker.data import load_records, open_image

    records = load_records(path, image_root)
    rng = random.Random(seed)
    while True:
        for record in rng.sample(records, len(records)):
            yield Prompt(record, [open_image(p) for p in record.images])


def gate_prompts(per_family: int) -> list[Prompt]:
    """The fixed promotion-gate set: the first questions of the ShapeWorld eval split."""
    return [Prompt(s.record, [s.image]) for s in (generate(f, split_seed("eval", i)) for i in range(per_family)
                                                   for f in FAMILIES)]


def _tensorboard(folder: Path):
    """A TensorBoard writer for the round metrics, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the `rl` extra brings it; JSONL metrics are written regardless
        return None
    return SummaryWriter(str(folder))


def served_policy(cfg: RLConfig, promoted: str | None) -> LoraPolicy:
    """The trainable policy on the weights being served: the promoted version's adapter, or a fresh LoRA."""
    adapter = str(Path(cfg.adapters_dir) / f"policy-{promoted}") if promoted else None
    return LoraPolicy.create(cfg.model, cfg.update, adapter_path=adapter, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)


def _wait_for_feedback(client: GatewayClient, cursors: dict, promoted: str | None, cfg: RLConfig, min_new: int,
                       poll_s: float, log) -> Harvest:
    """Poll the exports until at least `min_new` new prompts or rated responses have arrived."""
    found = Harvest(feedback_cursor=cursors["feedback"], interaction_cursor=cursors["interactions"])
    announced = False
    while len(found.prompts) + len(found.logged) < min_new:
        if not announced:
            log(f"waiting for {min_new} new graded interactions or ratings (feedback in the demo counts)")
            announced = True
        time.sleep(poll_s)
        more = harvest(client, found.feedback_cursor, found.interaction_cursor, promoted, cfg.max_staleness)
        found = Harvest(found.prompts + more.prompts, found.logged + more.logged, more.feedback_cursor,
                        more.interaction_cursor)
    return found


def run(cfg: RLConfig, rounds: int, out_dir: str | Path, data: str | None = None, image_root: str | None = None,
        log=print, every: float = 0.0, min_new: int = 0, poll_s: float = 5.0) -> list[RoundResult]:
    """Run `rounds` more rounds (0 = until stopped), resuming from out_dir/state.json.

    Triggers: with `min_new` a round starts once that many new user prompts or ratings have
    arrived; with `every` rounds start at most every `every` seconds. Metrics are appended
    to out_dir/metrics.jsonl.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"next_round": 0}
    cursors = state.get("cursors", {"feedback": None, "interactions": None})
    for name in remove_partial(cfg.adapters_dir):
        log(f"removed a partial publish left by a killed run: {name}")
    client = GatewayClient(cfg.endpoint, cfg.api_key, cfg.admin_key)
    promoted = client.adapters().get("promoted")
    policy = served_policy(cfg, promoted)
    gate = gate_prompts(cfg.gate_per_family)
    stream = file_prompts(data, image_root, cfg.seed) if data else None
    writer = _tensorboard(out / "tensorboard")
    results = []
    index = state["next_round"]
    while rounds == 0 or len(results) < rounds:
        started = time.monotonic()
        if min_new > 0:
            found = _wait_for_feedback(client, cursors, promoted, cfg, min_new, poll_s, log)
        else:
            found = harvest(client, cursors["feedback"], cursors["interactions"], promoted, cfg.max_staleness)
        cursors = {"feedback": found.feedback_cursor, "interactions": found.interaction_cursor}
        user = trainable(found.prompts, cfg.skip_tasks)[: cfg.prompts_per_round]
        prompts = user + fill_prompts(stream, cfg.prompts_per_round - len(user), index, cfg.skip_tasks)
        logged = [r for r in found.logged if r.task not in cfg.skip_tasks]
        result = run_round(client, policy, prompts, gate, cfg, index, logged=logged)
        result.metrics.update(user_prompts=float(len(user)))
        results.append(result)
        row = {"round": index, "version": result.version, "promoted": result.promoted, "note": result.note,
               **result.metrics}
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if writer is not None:
            for key, value in result.metrics.items():
                writer.add_scalar(key, value, index)
            writer.add_scalar("promoted", float(result.promoted), index)
            writer.flush()
        promoted = client.adapters().get("promoted")
        state = {"next_round": index + 1, "promoted": promoted, "cursors": cursors}
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(state_path)  # atomic: a kill never leaves a torn state file
        if result.version and not result.promoted:
            policy = served_policy(cfg, state["promoted"])  # back to the weights that are actually served
        log(f"round {index}: reward {result.metrics.get('reward_mean', 0):.3f} "
            f"accuracy {result.metrics.get('accuracy_mean', 0):.3f} -> {result.version or 'no update'} "
            f"{'promoted' if result.promoted else 'kept ' + str(state['promoted'])} "
            f"({result.metrics.get('wall_s', 0):.1f} s)")
        index += 1
        if every > 0:
            time.sleep(max(0.0, every - (time.monotonic() - started)))
    return results


def plot(out_dir: str | Path) -> Path:
    """PNG learning curves (reward and accuracy per task per round) from out_dir/metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{out / 'metrics.jsonl'} has no rounds yet")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("reward", "accuracy")):
        keys = sorted({k for r in rows for k in r if k.startswith(kind + "/")})
        for key in keys:
            ax.plot([r["round"] for r in rows if key in r], [r[key] for r in rows if key in r], marker="o",
                    label=key.split("/", 1)[1])
        ax.set_xlabel("round")
        ax.set_ylabel(f"rollout {kind}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
