"""Greedy answers to held-out questions through the API, graded: what the gate compares.

A version's greedy answers do not change while it is served, so `GateScores` keeps them across
rounds: the served version is scored once, not again in every round that gates a candidate.
"""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from openvlthinker.rewards import grade

from .client import GatewayClient, image_part
from .prompts import Prompt


def messages_for(prompt: Prompt) -> list[dict[str, Any]]:
    """The user message a client would send: the images, then the question text."""
    text = prompt.record.problem.replace("<image>", "").strip()
    return [{"role": "user", "content": [*map(image_part, prompt.images), {"type": "text", "text": text}]}]


def metadata_for(record, source: str = "rl-rollout") -> dict[str, str]:
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


def graded_accuracy(prompt: Prompt, message: dict[str, Any]) -> float:
    """Accuracy of a chat response's message: its thinking and answer back in their tags, graded."""
    text = f"<thinking>{message.get('reasoning_content') or ''}</thinking><answer>{message['content']}</answer>"
    return grade(prompt.record, text, require_thinking=False).accuracy


@dataclass(frozen=True)
class Answer:
    """One greedy answer to a gate question: its accuracy, its text, and whether it was well-formed."""

    accuracy: float
    text: str
    well_formed: bool


def score_questions(client: GatewayClient, questions: Sequence[Prompt], model: str, max_tokens: int,
                    concurrency: int = 4) -> list[Answer]:
    """Greedy answers of `model` to `questions`, graded, several in flight at once (in the questions' order)."""

    def one(prompt: Prompt) -> Answer:
        resp = client.chat(messages_for(prompt), model=model, temperature=0.0, max_tokens=max_tokens,
                           metadata=metadata_for(prompt.record, source="rl-gate"))
        choice = resp["choices"][0]
        lps = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]
        ok = all(math.isfinite(lp) for lp in lps) and choice["finish_reason"] in ("stop", "length")
        return Answer(graded_accuracy(prompt, choice["message"]), choice["message"].get("content") or "", ok)

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        return list(pool.map(one, questions))


def eval_reward(client: GatewayClient, prompts: Sequence[Prompt], model: str, max_tokens: int) -> tuple[float, bool]:
    """Mean greedy accuracy of `model` on `prompts`, and whether every answer was well-formed."""
    answers = score_questions(client, prompts, model, max_tokens)
    return sum(a.accuracy for a in answers) / max(1, len(answers)), all(a.well_formed for a in answers)


class GateScores:
    """Greedy answers per (version, question set, max_tokens), kept across rounds; None is the base model."""

    def __init__(self) -> None:
        self._answers: dict[tuple, dict[int, Answer]] = {}

    def get(self, client: GatewayClient, version: str | None, model: str, questions: Sequence[Prompt],
            indices: Iterable[int], max_tokens: int, concurrency: int = 4) -> list[Answer]:
        """The answers of `version` (called as `model`) to questions[i] for i in `indices`, scoring only new ones."""
        indices = list(indices)
        key = (version, tuple(q.record.problem_id for q in questions), max_tokens)
        known = self._answers.setdefault(key, {})
        missing = [i for i in indices if i not in known]
        if missing:
            scored = score_questions(client, [questions[i] for i in missing], model, max_tokens, concurrency)
            known.update(zip(missing, scored))
        return [known[i] for i in indices]

    def keep_only(self, versions: Iterable[str | None]) -> None:
        """Drop the answers of every version but these (the others are unloaded: never scored again)."""
        keep = set(versions)
        for key in [k for k in self._answers if k[0] not in keep]:
            del self._answers[key]
