"""Turn what users did on the server into training data (read over HTTP from the exports).

- A reference answer in an interaction's metadata, or a correction given as feedback, makes
  its question a *prompt*: it gets fresh groups of rollouts, graded against that answer. A
  harvest returns prompts as `PendingPrompt`s (where the question is stored, and its answer),
  small enough to wait in the loop's state until a round has room for them; `materialize`
  fetches the question and its images when it does.
- Thumbs, 1-5 stars or a score on a logged response make that response a *logged rollout*:
  trained off-policy with truncated importance weights against its behaviour logprobs, if
  the version that produced it is at most `max_staleness` versions old. Because advantages
  are ranks, thumbs, stars and scores mix without hand-tuned scales.
The loop's own rollouts and gate requests (metadata source rl-*) are skipped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from openvlthinker.data import PROBLEM_TYPES, TaskRecord
from openvlthinker.versions import version_number

from .client import GatewayClient, GatewayError
from .exported import Rating, StoredChoice, StoredPart
from .prompts import Prompt
from .rollout import Rollout

# A correction with no known problem type is graded as math: math-verify compares numbers and
# expressions symbolically and falls back to normalised string equality for anything else.
DEFAULT_CORRECTION_TYPE = "math"


@dataclass(frozen=True)
class PendingPrompt:
    """A user's question waiting for rollouts: its stored interaction and choice, its reference answer."""

    interaction_id: str
    choice_index: int
    answer: str
    problem_type: str
    task_type: str = ""

    @property
    def task(self) -> str:
        """task_type, else the problem type: what skip_tasks names."""
        return self.task_type or self.problem_type

    def to_json(self) -> dict[str, Any]:
        """The form kept in the loop's state file."""
        return {"interaction_id": self.interaction_id, "choice_index": self.choice_index, "answer": self.answer,
                "problem_type": self.problem_type, "task_type": self.task_type}

    @classmethod
    def from_json(cls, raw: Any) -> "PendingPrompt":
        """Back from the state file; a malformed entry is an error naming the field."""
        if not isinstance(raw, dict):
            raise ValueError(f"a pending prompt must be an object, got {raw!r}")
        for name, kind in (("interaction_id", str), ("choice_index", int), ("answer", str), ("problem_type", str),
                           ("task_type", str)):
            if not isinstance(raw.get(name), kind):
                raise ValueError(f"pending prompt {raw!r}: {name} must be {'an integer' if kind is int else 'a string'}")
        if raw["problem_type"] not in PROBLEM_TYPES:
            raise ValueError(f"pending prompt {raw!r}: unknown problem_type {raw['problem_type']!r}")
        return cls(raw["interaction_id"], raw["choice_index"], raw["answer"], raw["problem_type"], raw["task_type"])


@dataclass
class Harvest:
    """Prompts and logged rollouts gathered since the last cursors, and the cursors to resume from."""

    prompts: list[PendingPrompt] = field(default_factory=list)
    logged: list[Rollout] = field(default_factory=list)
    feedback_cursor: str | None = None
    interaction_cursor: str | None = None


def feedback_reward(fb: Rating) -> float | None:
    """A rating as a reward in [0, 1]: thumbs up 1 / down 0, stars (r - 1) / 4, or the score itself."""
    if fb.thumbs is not None:
        return 1.0 if fb.thumbs == "up" else 0.0
    if fb.rating is not None:
        return (float(fb.rating) - 1.0) / 4.0
    if fb.score is not None:
        return float(fb.score)
    return None


def staleness_number(version: str | None) -> int:
    """The version's number for staleness (3 for "v0003"); 0 for the base model and unnumbered names."""
    return version_number(version) or 0


def _images(client: GatewayClient, parts: list[StoredPart]) -> list[Any] | None:
    """The image parts' images, fetched by sha256 from the server; None when the server lacks one."""
    images = []
    for p in parts:
        if p.type == "image":
            raw = client.image(p.sha256)
            if raw is None:
                return None
            images.append(Image.open(io.BytesIO(raw)).convert("RGB"))
    return images


def _question_and_images(client: GatewayClient, item: StoredChoice) -> tuple[str, list[Any] | None]:
    """The last user message's text and its images: the question a round asks again, on its own (images None:
    the server no longer has one of them)."""
    users = [m for m in item.request.messages if m.role == "user"]
    parts = users[-1].content if users else []
    text = "\n".join(p.text or "" for p in parts if p.type == "text")
    return text, _images(client, parts)


def conversation_images(client: GatewayClient, item: StoredChoice) -> list[Any] | None:
    """Every image of the conversation, in order: what the logged prompt's token ids hold (None: one is gone)."""
    return _images(client, [p for m in item.request.messages for p in m.content])


def _pending(item: StoredChoice, answer: str) -> PendingPrompt | None:
    """The question of a stored interaction as a prompt graded against `answer` (None: no gradable type)."""
    problem_type = item.problem_type or item.metadata.get("problem_type") or DEFAULT_CORRECTION_TYPE
    if problem_type not in PROBLEM_TYPES:
        return None
    return PendingPrompt(item.id, item.choice_index, answer, problem_type, item.task_type or "")


def materialize(client: GatewayClient, pending: PendingPrompt) -> Prompt | None:
    """The pending prompt's question and images, fetched from the server (None if it no longer has it)."""
    try:
        choices = client.interaction(pending.interaction_id)
    except GatewayError as exc:
        if exc.status == 404:
            return None
        raise
    item = next((c for c in choices if c.choice_index == pending.choice_index), None)
    if item is None:
        return None
    text, images = _question_and_images(client, item)
    if images is None:
        return None  # counted as lost, like an interaction the server no longer has
    record = TaskRecord(problem_id=f"{pending.interaction_id}:{pending.choice_index}",
                        problem="<image>" * len(images) + text, problem_type=pending.problem_type,
                        answer=pending.answer, task_type=pending.task_type, images=())
    return Prompt(record, images)


def harvest(client: GatewayClient, feedback_cursor: str | None, interaction_cursor: str | None,
            current_version: str | None, max_staleness: int, limit: int = 200) -> Harvest:
    """New prompts (references, corrections; pending, not fetched yet) and rated logged responses since the
    given cursors."""
    out = Harvest(feedback_cursor=feedback_cursor, interaction_cursor=interaction_cursor)
    page = client.feedback(after=feedback_cursor, limit=limit)
    newest = staleness_number(current_version)
    for fb in page.data:
        item = fb.interaction
        # feedback sent with a key the gateway does not trust is kept there, never trained on
        if item.loop_traffic or fb.trusted is not True:
            continue
        if fb.correction:
            prompt = _pending(item, fb.correction)
            if prompt is not None:
                out.prompts.append(prompt)
        reward = feedback_reward(fb)
        if reward is None or not item.completion_token_ids:
            continue
        if newest - staleness_number(item.adapter_version) > max_staleness:
            continue  # too stale for importance weights to be trusted
        images = conversation_images(client, item)
        if images is None:
            continue  # an image the server no longer has: the prompt's tokens cannot be scored without it
        out.logged.append(Rollout.from_interaction(
            item, images=images, reward=reward, accuracy=reward, group_id=None,
            task=item.task_type or item.problem_type or "feedback", off_policy=True))
    out.feedback_cursor = page.next_cursor or feedback_cursor
    page = client.interactions(after=interaction_cursor, limit=limit, gradable=True)
    for item in page.data:
        reference = item.metadata.get("reference_answer")
        if reference and not item.loop_traffic and item.choice_index == 0:
            prompt = _pending(item, reference)
            if prompt is not None:
                out.prompts.append(prompt)
    out.interaction_cursor = page.next_cursor or interaction_cursor
    return out
