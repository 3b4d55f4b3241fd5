"""One online G²RPO round against a running gateway.

prompts -> G rollouts each, pinned to the served version, through the public API -> token ids
and behaviour logprobs from the interaction export -> graders -> dynamic sampling (drop
groups without signal) -> advantages (G²RPO: group, then task) -> LoRA update -> atomic
publish -> the server loads it -> gate (canary well-formed, eval reward not worse than the
current version by more than a margin) -> promote, or unload and keep the current one. With
`rollback_check`, the promoted version is checked once more through the served alias and
rolled back automatically if that check fails.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from openvlthinker.data import TaskRecord
from openvlthinker.rewards import grade
from openvlthinker.rl import g2rpo_advantages, get_advantage, informative_groups
from openvlthinker.versions import next_version, publish, version_name

from .client import GatewayClient, GatewayError, image_part
from .config import RLConfig
from .policy import LoraPolicy
from .rollout import Rollout

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """A gradable question and its images (PIL)."""

    record: TaskRecord
    images: list[Any]


@dataclass
class RoundResult:
    """What one round did and measured."""

    version: str | None  # the published version (None when nothing was trained)
    promoted: bool
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why a version was rejected, when it was


def messages_for(prompt: Prompt) -> list[dict[str, Any]]:
    """The user turn a client would send: the images, then the question text."""
    text = prompt.record.problem.replace("<image>", "").strip()
    return [{"role": "user", "content": [*map(image_part, prompt.images), {"type": "text", "text": text}]}]


def metadata_for(record: TaskRecord, source: str = "rl-rollout") -> dict[str, str]:
    """Metadata that makes the interaction gradable and marks it as the loop's own traffic.

    The problem type also selects the prompt's answer-format tail, so rollouts and gate
    requests see the same prompt as users who name their problem type.
    """
    meta = {"problem_type": record.problem_type, "reference_answer": record.answer, "source": source}
    if record.task_type:
        meta["task_type"] = record.task_type
    if record.options:
        meta["options"] = json.dumps(list(record.options))
    return meta


def served_model(client: GatewayClient) -> tuple[str, str | None]:
    """The model name to pin rollouts to, and the promoted version (None = base)."""
    promoted = client.adapters().get("promoted")
    return ("openvlthinker@" + promoted if promoted else "openvlthinker"), promoted


def collect_rollouts(client: GatewayClient, prompts: Sequence[Prompt], cfg: RLConfig, model: str, seed: int) -> list[Rollout]:
    """G graded rollouts per prompt from the endpoint, with the server's token ids and logprobs.

    Several prompts are in flight at once (`cfg.rollout_concurrency`), so the server decodes
    their groups in one running batch; the result keeps the prompts' order.
    """

    def one(i: int) -> list[Rollout]:
        prompt = prompts[i]
        try:
            resp = client.chat(messages_for(prompt), model=model, n=cfg.group_size, temperature=cfg.rollout_temperature,
                               max_tokens=cfg.max_new_tokens, metadata=metadata_for(prompt.record), seed=seed + i)
        except GatewayError as exc:
            if not exc.refused_request:
                raise
            # A user's prompt the server cannot roll out (say, too long for max_new_tokens more): skip it. Raising
            # would end the loop, and its restart would meet the same prompt again.
            log.warning("skipped prompt %s: %s", prompt.record.problem_id, exc)
            return []
        out = []
        for choice in client.interaction(resp["id"]):
            if not choice["completion_token_ids"]:
                continue
            score = grade(prompt.record, choice["text"], require_thinking=choice["mode"] == "think")
            out.append(Rollout(
                prompt_ids=choice["prompt_token_ids"], completion_ids=choice["completion_token_ids"],
                behaviour_logprobs=choice["logprobs"], images=prompt.images, reward=score.overall,
                accuracy=score.accuracy, group_id=resp["id"], task=prompt.record.task, interaction_id=resp["id"],
            ))
        return out

    with ThreadPoolExecutor(max(1, cfg.rollout_concurrency)) as pool:
        return [r for group in pool.map(one, range(len(prompts))) for r in group]


def keep_informative(rollouts: Sequence[Rollout]) -> list[Rollout]:
    """Dynamic sampling: drop groups whose rewards are all equal or whose accuracy is all 0 or all 1."""
    if not rollouts:
        return []
    groups = [r.group_id for r in rollouts]
    acc_ok = informative_groups(torch.tensor([r.accuracy for r in rollouts]), groups)
    spread: dict[str, set[float]] = {}
    for r in rollouts:
        spread.setdefault(r.group_id, set()).add(round(r.reward, 9))
    # Continuous graders (IoU, 1 - WER) can carry signal when accuracy is never exactly 0 or 1.
    return [r for r, ok in zip(rollouts, acc_ok.tolist()) if ok or len(spread[r.group_id]) > 1]


def graded_accuracy(prompt: Prompt, message: dict[str, Any]) -> float:
    """Accuracy of a chat response's message: its thinking and answer back in their tags, graded."""
    text = f"<thinking>{message.get('reasoning_content') or ''}</thinking><answer>{message['content']}</answer>"
    return grade(prompt.record, text, require_thinking=False).accuracy


def eval_reward(client: GatewayClient, prompts: Sequence[Prompt], model: str, max_tokens: int) -> tuple[float, bool]:
    """Mean greedy reward of `model` on the gate prompts, and whether every answer was well-formed."""
    total, well_formed = 0.0, True
    for prompt in prompts:
        resp = client.chat(messages_for(prompt), model=model, temperature=0.0, max_tokens=max_tokens,
                           metadata=metadata_for(prompt.record, source="rl-gate"))
        choice = resp["choices"][0]
        lps = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]
        well_formed &= all(math.isfinite(lp) for lp in lps) and choice["finish_reason"] in ("stop", "length")
        total += graded_accuracy(prompt, choice["message"])
    return total / max(1, len(prompts)), well_formed


def run_round(client: GatewayClient, policy: LoraPolicy, prompts: Sequence[Prompt], gate: Sequence[Prompt],
              cfg: RLConfig, round_index: int, logged: Sequence[Rollout] = ()) -> RoundResult:
    """Rollouts (+ rated logged responses) -> update -> publish -> load -> gate -> promote (or reject)."""
    start = time.time()
    model, promoted = served_model(client)
    rollouts = collect_rollouts(client, prompts, cfg, model, seed=cfg.seed + 1000 * round_index)
    metrics: dict[str, float] = {
        "reward_mean": sum(r.reward for r in rollouts) / max(1, len(rollouts)),
        "accuracy_mean": sum(r.accuracy for r in rollouts) / max(1, len(rollouts)),
        "rollouts": float(len(rollouts)),
    }
    for task in sorted({r.task for r in rollouts}):
        mine = [r for r in rollouts if r.task == task]
        metrics[f"reward/{task}"] = sum(r.reward for r in mine) / len(mine)
        metrics[f"accuracy/{task}"] = sum(r.accuracy for r in mine) / len(mine)
        metrics[f"length/{task}"] = sum(len(r.completion_ids) for r in mine) / len(mine)
    usable = policy.usable(rollouts)
    kept = keep_informative(usable)
    logged = policy.usable(logged)
    metrics.update(rollouts_kept=float(len(kept)), logged_rollouts=float(len(logged)),
                   rollouts_unusable=float(len(rollouts) - len(usable)))
    if not kept and not logged:
        metrics["wall_s"] = time.time() - start
        return RoundResult(None, False, metrics)
    parts = []
    if kept:
        parts.append(get_advantage(cfg.advantage)(torch.tensor([r.reward for r in kept]), [r.group_id for r in kept],
                                                  [r.task for r in kept]))
    if logged:
        # Logged single responses have no group: rank them within their task (both G²RPO stages by task).
        tasks = [r.task for r in logged]
        parts.append(g2rpo_advantages(torch.tensor([r.reward for r in logged]), tasks, tasks))
    adv = torch.cat(parts)
    metrics.update({f"train_{k}": v for k, v in policy.update([*kept, *logged], adv).items()})
    metrics.update(adv_mean=float(adv.mean()), adv_std=float(adv.std()) if adv.numel() > 1 else 0.0)

    number = next_version(cfg.adapters_dir)
    version = version_name(number)
    with tempfile.TemporaryDirectory() as tmp:
        policy.save_adapter(tmp)
        publish(tmp, cfg.adapters_dir, number, parent=promoted, metrics=metrics)
    try:
        client.load(version)
    except GatewayError as exc:
        if not exc.refused_request:
            raise
        # the server refused it (NaN weights, wrong shapes): keep the current one
        metrics.update(rejected_by_server=1.0, wall_s=time.time() - start)
        return RoundResult(version, False, metrics, note=str(exc)[:1000])
    current, _ = eval_reward(client, gate, model, cfg.max_new_tokens)
    candidate, well_formed = eval_reward(client, gate, f"openvlthinker@{version}", cfg.max_new_tokens)
    metrics.update(gate_current=current, gate_candidate=candidate)
    accepted = well_formed and candidate >= current - cfg.gate_margin
    note = "" if accepted else f"gate: candidate {candidate:.3f} vs current {current:.3f}, well-formed={well_formed}"
    if accepted:
        client.promote(version)
        if cfg.rollback_check:
            # The gate again, now through the alias as users call it; the previous version stays
            # loaded until this passes, so a rollback is instant.
            served, served_ok = eval_reward(client, gate, "openvlthinker", cfg.max_new_tokens)
            metrics["gate_served"] = served
            margin = cfg.gate_margin if cfg.rollback_margin is None else cfg.rollback_margin
            if not served_ok or served < current - margin:
                client.rollback()
                accepted = False
                metrics["rolled_back"] = 1.0
                note = (f"rolled back after promotion: served {served:.3f} vs previous {current:.3f}, "
                        f"well-formed={served_ok}")
        if accepted and promoted:
            client.unload(promoted)
    if not accepted:
        client.unload(version)
    metrics["wall_s"] = time.time() - start
    return RoundResult(version, accepted, metrics, note=note)
