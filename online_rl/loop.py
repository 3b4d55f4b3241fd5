"""The online loop: rounds of run_round against a live server, resumable, with metrics on disk.

At start the loop asks the server what it serves (GET /v1/server) and takes its base model,
adapters folder and alias from there, refusing settings that disagree (online_rl/server.py).
Prompts are users' harvested questions first (they wait in the state until a round has room),
then ShapeWorld's train split (the text tasks' for a text-only model) or a OneThinker-format
file. The state (next round, cursors, pending prompts, the trainer's unpromoted version) is
checkpointed after every round and keyed to the server and model, so a killed loop resumes where
it stopped and a loop against another server does not; a publish interrupted mid-way leaves
only a hidden temporary folder, removed at start. Round metrics go to metrics.jsonl and to
TensorBoard (out_dir/tensorboard).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from openvlthinker.rl import LengthTargets
from openvlthinker.versions import remove_partial, version_folder

from .client import GatewayClient, GatewayError
from .config import RLConfig
from .evaluate import GateScores
from .gate import KEEP, PROMOTE, Gate
from .harvest import PendingPrompt, harvest, materialize
from .plots import plot  # noqa: F401 (re-exported: `rl plot`)
from .policy import LoraPolicy
from .prompts import (RoundPrompts, fill_prompts, file_prompts, gate_prompts,  # noqa: F401 (re-exported)
                      shapeworld_prompts, trainable)
from .rollout import Rollout
from .rounds import RoundResult, run_round, target_for
from .server import reconcile
from .state import LoopState, identity, load_state, save_state


def _tensorboard(folder: Path):
    """A TensorBoard writer for the round metrics, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the `rl` extra brings it; JSONL metrics are written regardless
        return None
    return SummaryWriter(str(folder))


def served_policy(cfg: RLConfig, version: str | None) -> LoraPolicy:
    """The trainable policy on a version's weights (its adapter), or a fresh LoRA on the base model for None."""
    if cfg.trainer_procs > 1:  # rank 0 of a torchrun trainer: the other ranks build the same policy with it
        from .distributed import lead_policy

        return lead_policy(cfg, version)
    adapter = str(version_folder(cfg.adapters_dir, version)) if version else None
    return LoraPolicy.create(cfg.model, cfg.update, adapter_path=adapter, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                             device=cfg.device, dtype=cfg.dtype, grad_checkpointing=cfg.grad_checkpointing)


def enqueue(pending: list[PendingPrompt], new: list[PendingPrompt], cfg: RLConfig) -> tuple[list[PendingPrompt], int]:
    """Users' prompts waiting after a harvest: the old ones, then the new (skipped tasks and repeats left out),
    at most cfg.max_pending (the oldest dropped); and how many were dropped."""
    seen = {(p.interaction_id, p.choice_index, p.answer) for p in pending}
    out = list(pending)
    for p in new:
        key = (p.interaction_id, p.choice_index, p.answer)
        if p.task not in cfg.skip_tasks and key not in seen:
            seen.add(key)
            out.append(p)
    dropped = max(0, len(out) - cfg.max_pending)
    return out[dropped:], dropped


def gather(client: GatewayClient, state: LoopState, cfg: RLConfig, promoted: str | None, min_new: int,
           poll_s: float, log=print) -> tuple[list[Rollout], int]:
    """Harvest into state.pending (and state.cursors) until at least `min_new` users' prompts or rated responses
    wait; returns the rated logged rollouts and how many pending prompts were dropped for room."""
    logged: list[Rollout] = []
    dropped, announced = 0, False
    while True:
        found = harvest(client, state.cursors["feedback"], state.cursors["interactions"], promoted, cfg.max_staleness)
        state.cursors = {"feedback": found.feedback_cursor, "interactions": found.interaction_cursor}
        state.pending, lost = enqueue(state.pending, found.prompts, cfg)
        dropped += lost
        logged += [r for r in found.logged if r.task not in cfg.skip_tasks]
        if len(state.pending) + len(logged) >= min_new:
            return logged, dropped
        if not announced:
            log(f"waiting for {min_new} new graded interactions or ratings (feedback in the demo counts)")
            announced = True
        time.sleep(poll_s)


def resume_working(client: GatewayClient, cfg: RLConfig, working: str | None, promoted: str | None,
                   log=print) -> str | None:
    """The trainer's unpromoted version from the state, loaded on the server again; None when it cannot be."""
    if working is None or working == promoted:
        return None
    if not version_folder(cfg.adapters_dir, working).is_dir():
        log(f"the trainer's version {working} is gone from {cfg.adapters_dir}; going on from the served version")
        return None
    try:
        client.load(working)
    except GatewayError as exc:
        if not exc.refused_request:
            raise
        log(f"the server would not load the trainer's version {working} ({exc}); going on from the served version")
        return None
    return working


def _record(out: Path, writer, index: int, result: RoundResult) -> None:
    """Append the round to metrics.jsonl and TensorBoard."""
    row = {"round": index, "version": result.version, "promoted": result.promoted, "decision": result.decision,
           "note": result.note, **result.metrics}
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
    if writer is not None:
        for key, value in result.metrics.items():
            writer.add_scalar(key, value, index)
        writer.add_scalar("promoted", float(result.promoted), index)
        writer.flush()


def run(cfg: RLConfig, rounds: int, out_dir: str | Path, data: str | None = None, image_root: str | None = None,
        log=print, every: float = 0.0, min_new: int = 0, poll_s: float = 5.0,
        after_round: Callable[[int, RoundResult], bool] | None = None,
        gate_rule: Gate | None = None) -> list[RoundResult]:
    """Run `rounds` more rounds (0 = until stopped), resuming from out_dir/state.json.

    Triggers: with `min_new` a round starts once that many users' prompts or ratings wait; with
    `every` rounds start at most every `every` seconds. Metrics are appended to out_dir/metrics.jsonl.
    `after_round(index, result)` runs once each round is recorded; it returns True to stop the loop.
    `gate_rule` replaces the gate's rules (None: Gate at cfg's spec; gate.AlwaysPromote promotes every version).
    """
    if rounds < 0 or min_new < 0 or every < 0 or not poll_s > 0:
        raise ValueError("rounds, min_new and every must be >= 0 and poll_s > 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = GatewayClient(cfg.endpoint, cfg.api_key, cfg.admin_key)
    cfg, server = reconcile(client, cfg, log)
    state = load_state(out / "state.json", identity(server), log)
    for name in remove_partial(cfg.adapters_dir):
        log(f"removed a partial publish left by a killed run: {name}")
    promoted = client.adapters().get("promoted")
    working = resume_working(client, cfg, state.working, promoted, log)
    policy = served_policy(cfg, working or promoted)
    text = not policy.vision  # a text-only model cannot see ShapeWorld's images: it trains on the text tasks
    gate = gate_prompts(cfg.gate_spec().questions, text=text)
    stream = file_prompts(data, image_root, cfg.seed) if data else None
    writer, scores, results = _tensorboard(out / "tensorboard"), GateScores(), []
    lengths = LengthTargets(max_length=float(cfg.max_new_tokens))
    lengths.load_state_dict(state.lengths)
    while rounds == 0 or len(results) < rounds:
        started, index = time.monotonic(), state.next_round
        logged, dropped = gather(client, state, cfg, promoted, min_new, poll_s, log)
        source = RoundPrompts(state.pending, lambda p: materialize(client, p), stream, index, cfg.skip_tasks, cfg.seed,
                              text=text)
        prompts = source.take(cfg.prompts_per_round)
        result = run_round(client, policy, prompts, gate, cfg, index, logged=logged,
                           target=target_for(client, cfg, working, server), refill=source.take, scores=scores,
                           lengths=lengths, gate=gate_rule)
        result.metrics.update(user_prompts=float(source.user), pending_prompts=float(len(source.pending)),
                              pending_dropped=float(dropped), pending_lost=float(source.lost))
        results.append(result)
        _record(out, writer, index, result)
        promoted, working = client.adapters().get("promoted"), result.working
        state.pending, state.next_round, state.promoted, state.working = source.pending, index + 1, promoted, working
        state.lengths = lengths.state_dict()
        save_state(out / "state.json", state)
        if result.version and result.decision not in (PROMOTE, KEEP):
            policy = served_policy(cfg, promoted)  # back to the weights that are actually served
        log(f"round {index}: reward {result.metrics.get('reward_mean', 0):.3f} "
            f"accuracy {result.metrics.get('accuracy_mean', 0):.3f} -> {result.version or 'no update'} "
            f"{result.decision or 'not gated'}; serving {promoted or 'the base model'}"
            f"{f', training on from {working}' if working else ''} ({result.metrics.get('wall_s', 0):.1f} s)")
        if after_round is not None and after_round(index, result):
            break
        if every > 0:
            time.sleep(max(0.0, every - (time.monotonic() - started)))
    return results
