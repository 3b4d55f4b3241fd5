"""One online G²RPO round against a running gateway, in four stages.

1. rollouts (`rollout_stage`): G samples per prompt through the public API, pinned to the version
   the trainer holds; token ids and behaviour logprobs from the interaction export; graded.
   Dynamic sampling keeps the groups with signal and, given a source of more prompts, refills
   the batch (at most `max_refills` more tries, as the paper's release does with 20).
2. update (`update_stage`): advantages (G²RPO: group, then task; rated logged responses ranked
   within their task) and one LoRA update.
3. publish (`publish_stage`): the adapter into the server's adapters folder, atomically, and the
   server loads it. A version the server cannot find there is an error, not a rejection.
4. gate (`gate_stage`): the served version and the candidate answer the same held-out questions
   greedily, and online_rl.gate decides: promote; reject; or keep the served version when the
   difference is inside the noise, while the trainer goes on from the candidate (which stays
   loaded, unpromoted, for the next round's rollouts). A promotion is checked once more through
   the alias and rolled back on evidence of harm.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from openvlthinker.rewards import grade, with_length
from openvlthinker.rl import LengthTargets, g2rpo_advantages, get_advantage, informative_groups
from openvlthinker.versions import next_version, pinned_model, publish, version_name, version_number

from .client import GatewayClient, GatewayError
from .exported import sampled_choices
from .config import RLConfig
from .evaluate import (GateScores, eval_reward, graded_accuracy, messages_for, metadata_for,  # noqa: F401 (re-exported)
                       score_questions)
from .gate import KEEP, PROMOTE, Gate
from .policy import LoraPolicy
from .prompts import Prompt  # noqa: F401 (re-exported: callers build prompts with it)
from .rollout import Rollout

log = logging.getLogger(__name__)


class NotVisible(ValueError):
    """A published version the server does not find in its adapters folder (a setup error: exit with a message)."""


@dataclass
class Target:
    """The server a round runs against and the versions in play."""

    served_name: str  # the alias users call
    base: str  # the base model's name
    adapters_dir: str  # where the loop publishes
    server_adapters_dir: str  # where the server reads (the same folder, perhaps under another path)
    served: str | None  # the promoted version; None: the base model
    working: str | None = None  # the trainer's version when the gate kept the served one (loaded, not promoted)

    def model(self, version: str | None) -> str:
        """The request model name that pins `version` (None: the base model)."""
        return pinned_model(self.served_name, version) if version else self.base

    @property
    def trainer(self) -> str | None:
        """The version whose weights the trainer holds at the start of the round."""
        return self.working or self.served


def target_for(client: GatewayClient, cfg: RLConfig, working: str | None = None, server: dict | None = None) -> Target:
    """The round's target from the server's GET /v1/server and adapter listing."""
    server = server or client.server()
    return Target(server["served_name"], server["model"], cfg.adapters_dir or server["adapters_dir"],
                  server["adapters_dir"], client.adapters().get("promoted"), working)


@dataclass
class RoundResult:
    """What one round did and measured."""

    version: str | None  # the published version (None when nothing was trained)
    promoted: bool
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""  # why a version was not promoted, when it was not
    decision: str = ""  # promote, keep, reject, refused (by the server), rolled_back; "" without an update
    working: str | None = None  # the trainer's unpromoted version after the round (None: the served one)


# ------------------------------------------------------------------ 1. rollouts

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
        for choice in sampled_choices(resp):  # one call: the response carries what the rollout needs
            if not choice.completion_token_ids:
                continue
            score = grade(prompt.record, choice.text, require_thinking=choice.mode == "think")
            out.append(Rollout.from_interaction(choice, images=prompt.images, reward=score.overall,
                                                accuracy=score.accuracy, group_id=resp["id"], task=prompt.record.task))
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
        spread.setdefault(r.group_id, set()).add(round(r.reward if r.base_reward is None else r.base_reward, 9))
    # Continuous graders (IoU, 1 - WER) can carry signal when accuracy is never exactly 0 or 1.
    return [r for r, ok in zip(rollouts, acc_ok.tolist()) if ok or len(spread[r.group_id]) > 1]


CORRECT = 0.5  # accuracy at which a rollout counts as correct for the length targets (IoU 0.5, half the words)


def shape_lengths(rollouts: Sequence[Rollout], targets: LengthTargets, weight: float) -> list[Rollout]:
    """Rollouts with the length term in their reward, from their task's envelope; a task without an envelope
    yet (too few correct rollouts seen) is left unshaped."""
    out = []
    for r in rollouts:
        env = targets.score(r.task, len(r.completion_ids)) if weight > 0 else None
        out.append(r if env is None else dataclasses.replace(
            r, reward=with_length(r.reward, r.accuracy, env, weight), base_reward=r.reward))
    return out


def observe_lengths(rollouts: Sequence[Rollout], targets: LengthTargets) -> None:
    """The correct rollouts' lengths join their task's target (all-correct groups too: they are dropped from
    training, not from what a correct answer's length is)."""
    for r in rollouts:
        targets.observe(r.task, len(r.completion_ids), r.accuracy >= CORRECT)


def first_groups(rollouts: Sequence[Rollout], count: int) -> list[Rollout]:
    """The rollouts of the first `count` groups, in order (a refill may overshoot the batch)."""
    seen: list[str | None] = []
    out = []
    for r in rollouts:
        if r.group_id not in seen:
            if len(seen) == count:
                continue
            seen.append(r.group_id)
        out.append(r)
    return out


def refill_size(missing: int, kept_groups: int, tried: int, cap: int) -> int:
    """How many more prompts to roll out for `missing` groups, by the share of groups kept so far (at most `cap`)."""
    if kept_groups <= 0 or tried <= 0:
        return cap
    return max(1, min(cap, math.ceil(missing * tried / kept_groups)))


def rollout_metrics(rollouts: Sequence[Rollout]) -> dict[str, float]:
    """Mean reward, accuracy and length, overall and per task."""
    n = max(1, len(rollouts))
    metrics = {"reward_mean": sum(r.reward for r in rollouts) / n,
               "accuracy_mean": sum(r.accuracy for r in rollouts) / n, "rollouts": float(len(rollouts))}
    for task in sorted({r.task for r in rollouts}):
        mine = [r for r in rollouts if r.task == task]
        metrics[f"reward/{task}"] = sum(r.reward for r in mine) / len(mine)
        metrics[f"accuracy/{task}"] = sum(r.accuracy for r in mine) / len(mine)
        metrics[f"length/{task}"] = sum(len(r.completion_ids) for r in mine) / len(mine)
    return metrics


def rollout_stage(client: GatewayClient, policy: LoraPolicy, prompts: Sequence[Prompt], cfg: RLConfig, model: str,
                  seed: int, refill: Callable[[int], list[Prompt]] | None = None,
                  lengths: LengthTargets | None = None) -> tuple[list[Rollout], dict[str, float]]:
    """Rollouts of `prompts`, the informative groups kept; with `refill`, more prompts until the batch holds
    prompts_per_round groups or max_refills tries are spent; with `lengths`, the kept rewards length-shaped.
    Returns the kept rollouts and the metrics."""
    rollouts = collect_rollouts(client, prompts, cfg, model, seed)
    usable = policy.usable(rollouts)
    kept = keep_informative(usable)
    wanted = cfg.prompts_per_round if refill is not None else len(prompts)
    tried, refills = len(prompts), 0
    groups = lambda rows: len({r.group_id for r in rows})  # noqa: E731
    while refill is not None and refills < cfg.max_refills and groups(kept) < wanted:
        more = refill(refill_size(wanted - groups(kept), groups(kept), tried, cfg.prompts_per_round))
        if not more:
            break  # the source has nothing more (every task skipped)
        refills += 1
        batch = collect_rollouts(client, more, cfg, model, seed + tried)
        tried += len(more)
        rollouts += batch
        fresh = policy.usable(batch)
        usable += fresh
        kept += keep_informative(fresh)
    kept = first_groups(kept, wanted)
    metrics = rollout_metrics(rollouts)
    if lengths is not None:
        kept = shape_lengths(kept, lengths, cfg.length_weight)  # by the envelopes of the rounds before
        observe_lengths(usable, lengths)
        for task in sorted({r.task for r in rollouts}):
            target = lengths.target(task)
            if target is not None:
                metrics[f"length_target/{task}"] = target
    metrics.update(rollouts_kept=float(len(kept)), groups_kept=float(groups(kept)), refills=float(refills),
                   prompts_rolled_out=float(tried), rollouts_unusable=float(len(rollouts) - len(usable)))
    return kept, metrics


# ------------------------------------------------------------------ 2. update

def update_stage(policy: LoraPolicy, kept: Sequence[Rollout], logged: Sequence[Rollout],
                 cfg: RLConfig) -> dict[str, float] | None:
    """Advantages and one LoRA update on the kept rollouts and the logged ones; None when there is nothing to train."""
    if not kept and not logged:
        return None
    parts = []
    if kept:
        parts.append(get_advantage(cfg.advantage)(torch.tensor([r.reward for r in kept]), [r.group_id for r in kept],
                                                  [r.task for r in kept]))
    if logged:
        # Logged single responses have no group: rank them within their task (both G²RPO stages by task).
        tasks = [r.task for r in logged]
        parts.append(g2rpo_advantages(torch.tensor([r.reward for r in logged]), tasks, tasks))
    adv = torch.cat(parts)
    trained = policy.update([*kept, *logged], adv)
    metrics = {f"train_{k}": v for k, v in trained.items() if k != "version_kl"}
    if "version_kl" in trained:
        metrics["version_kl"] = trained["version_kl"]  # approx KL(previous version || this one), per token
    metrics.update(adv_mean=float(adv.mean()), adv_std=float(adv.std()) if adv.numel() > 1 else 0.0)
    return metrics


# ------------------------------------------------------------------ 3. publish

def publish_stage(client: GatewayClient, policy: LoraPolicy, target: Target,
                  metrics: dict[str, float]) -> tuple[str, str | None]:
    """Publish the adapter as the next version and have the server load it: (version, the server's refusal or None)."""
    # Past the newest version on either side: were the folders different after all, a number the server already
    # has would load its own version and hide that the new one is out of its sight.
    listed = [version_number(a["version"]) or 0 for a in client.adapters().get("data", [])]
    number = max(next_version(target.adapters_dir), max(listed, default=0) + 1)
    version = version_name(number)
    with tempfile.TemporaryDirectory() as tmp:
        policy.save_adapter(tmp)
        publish(tmp, target.adapters_dir, number, parent=target.trainer, metrics=metrics)
    try:
        client.load(version)
    except GatewayError as exc:
        if exc.code == "adapter_not_found":
            raise NotVisible(f"published {version} into {target.adapters_dir}, but the server does not find it in its "
                             f"adapters folder {target.server_adapters_dir}: run the loop with --adapters-dir naming "
                             "the server's folder (or without --adapters-dir)") from None
        if not exc.refused_request:
            raise
        return version, str(exc)[:1000]  # the server refused it (NaN weights, wrong shapes)
    return version, None


# ------------------------------------------------------------------ 4. gate

def _accuracies(answers) -> list[float]:
    return [a.accuracy for a in answers]


def score_gate(client: GatewayClient, target: Target, version: str, questions: Sequence[Prompt], cfg: RLConfig,
               gate: Gate, scores: GateScores):
    """The served and candidate answers, the candidate scored chunk by chunk until the verdict is settled."""
    n, step = len(questions), max(1, cfg.rollout_concurrency)
    current = scores.get(client, target.served, target.model(target.served), questions, range(n), cfg.max_new_tokens,
                         step)
    candidate: list = []
    while len(candidate) < n:
        chunk = range(len(candidate), min(n, len(candidate) + step))
        candidate += scores.get(client, version, target.model(version), questions, chunk, cfg.max_new_tokens, step)
        if not all(a.well_formed for a in candidate):
            break  # a malformed answer rejects the candidate whatever the rest would say
        verdict = gate.decide(_accuracies(current[: len(candidate)]), _accuracies(candidate))
        if gate.settled(verdict.wins, verdict.losses, verdict.ties, n - len(candidate)) is not None:
            break
    return current[: len(candidate)], candidate


def family_scores(questions: Sequence[Prompt], answers, prefix: str) -> dict[str, float]:
    """Per task: the mean accuracy of `answers` ({prefix}/{task}) and how many questions ({prefix}_n/{task})."""
    out: dict[str, float] = {}
    for task in dict.fromkeys(q.record.task for q in questions):
        mine = [a.accuracy for q, a in zip(questions, answers) if q.record.task == task]
        out[f"{prefix}/{task}"], out[f"{prefix}_n/{task}"] = sum(mine) / len(mine), float(len(mine))
    return out


def _unload(client: GatewayClient, version: str | None, keep: Sequence[str | None] = ()) -> None:
    """Unload a version unless it is one to keep; one the server no longer holds is fine."""
    if version is None or version in keep:
        return
    try:
        client.unload(version)
    except GatewayError as exc:
        if exc.status != 404:
            raise


def _check_served(client: GatewayClient, target: Target, questions: Sequence[Prompt], current, candidate,
                  cfg: RLConfig, gate: Gate, metrics: dict[str, float]) -> str:
    """After a promotion: the gate's questions again through the alias; rolls back on harm. Returns a note."""
    served = score_questions(client, questions[: len(candidate)], target.served_name, cfg.max_new_tokens,
                             cfg.rollout_concurrency)
    metrics["gate_served"] = sum(_accuracies(served)) / len(served)
    harm = gate.roll_back(_accuracies(current), _accuracies(candidate), _accuracies(served),
                          all(a.well_formed for a in served))
    if harm is None:
        return ""
    client.rollback()
    metrics["rolled_back"] = 1.0
    return f"rolled back after promotion: served vs previous {harm.describe()}"


def gate_stage(client: GatewayClient, target: Target, version: str, questions: Sequence[Prompt], cfg: RLConfig,
               gate: Gate, scores: GateScores, metrics: dict[str, float]) -> tuple[str, str | None, str]:
    """Score, decide, and act on the server: (decision, the trainer's unpromoted version after it, note)."""
    current, candidate = score_gate(client, target, version, questions, cfg, gate, scores)
    verdict = gate.decide(_accuracies(current), _accuracies(candidate), all(a.well_formed for a in candidate))
    k = len(candidate)
    metrics.update(gate_questions=float(k), gate_size=float(len(questions)),
                   gate_current=sum(_accuracies(current)) / k, gate_candidate=sum(_accuracies(candidate)) / k,
                   gate_wins=float(verdict.wins), gate_losses=float(verdict.losses), gate_p_better=verdict.p_better,
                   gate_p_worse=verdict.p_worse,
                   gate_answers_changed=sum(a.text != b.text for a, b in zip(current, candidate)) / k)
    metrics.update(family_scores(questions[:k], current, "gate_current"))
    metrics.update(family_scores(questions[:k], candidate, "gate_candidate"))
    note = "" if verdict.decision == PROMOTE else f"gate: {verdict.describe()}"
    decision, working = verdict.decision, None
    if decision == PROMOTE:
        client.promote(version)
        if cfg.rollback_check:
            note = _check_served(client, target, questions, current, candidate, cfg, gate, metrics)
        if note:
            decision = "rolled_back"
        else:
            _unload(client, target.served, keep=(version,))
    elif decision == KEEP:
        working = version
    if decision != PROMOTE:
        _unload(client, version, keep=(working,))
    _unload(client, target.working, keep=(version, working, target.served))
    served = version if decision == PROMOTE else target.served
    scores.keep_only((served, working))  # an unloaded version is never scored again
    return decision, working, note


def run_round(client: GatewayClient, policy: LoraPolicy, prompts: Sequence[Prompt], gate_questions: Sequence[Prompt],
              cfg: RLConfig, round_index: int, logged: Sequence[Rollout] = (), *, target: Target | None = None,
              refill: Callable[[int], list[Prompt]] | None = None, gate: Gate | None = None,
              scores: GateScores | None = None, lengths: LengthTargets | None = None) -> RoundResult:
    """Rollouts (+ rated logged responses) -> update -> publish and load -> gate -> promote, keep or reject."""
    if not gate_questions:
        raise ValueError("the gate needs at least one held-out question")
    start = time.time()
    target = target or target_for(client, cfg)
    kept, metrics = rollout_stage(client, policy, prompts, cfg, target.model(target.trainer),
                                  seed=cfg.seed + 1000 * round_index, refill=refill, lengths=lengths)
    logged = policy.usable(logged)
    metrics["logged_rollouts"] = float(len(logged))
    trained = update_stage(policy, kept, logged, cfg)
    if trained is None:
        metrics["wall_s"] = time.time() - start
        return RoundResult(None, False, metrics, working=target.working)
    metrics.update(trained)
    version, refusal = publish_stage(client, policy, target, metrics)
    if refusal is not None:
        _unload(client, target.working, keep=(target.served,))  # the trainer goes back to the served weights
        metrics.update(rejected_by_server=1.0, wall_s=time.time() - start)
        return RoundResult(version, False, metrics, note=refusal, decision="refused")
    decision, working, note = gate_stage(client, target, version, gate_questions, cfg, gate or Gate(cfg.gate_spec()),
                                         scores or GateScores(), metrics)
    metrics["wall_s"] = time.time() - start
    return RoundResult(version, decision == PROMOTE, metrics, note=note, decision=decision, working=working)
