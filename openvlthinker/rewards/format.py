"""Format and structure rewards (docs/method.md §3): is the response shaped the way the prompt asked?

`format_reward` is strict on purpose: exact lowercase tags, nothing outside the blocks but
whitespace, each tag exactly once. (Accuracy uses the lenient extractor, so a sloppy tag
costs only the 0.1 format share, never the answer.) `structure_reward` only applies to problem
types whose answer is JSON, today just spatial grounding: for every other type it is 0, so the
best overall score is 1.0 for them and 1.5 for grounding.
"""

from __future__ import annotations

from openvlthinker.data.records import check_problem_type
from openvlthinker.rewards.extract import extract_answer
from openvlthinker.rewards.grounding import parse_boxes_json
from openvlthinker.thinking import THINK_CLOSE as _THINK_CLOSE
from openvlthinker.thinking import THINK_OPEN as _THINK_OPEN

JSON_ANSWER_TYPES = frozenset({"spatial grounding"})

_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"


def format_reward(text: str, require_thinking: bool = True) -> float:
    """1.0 iff the whole response is `<thinking>…</thinking><answer>…</answer>` (thinking optional if not required)."""
    if not isinstance(text, str):
        return 0.0
    body = text.strip()
    # Counting tags instead of one big regex keeps this linear on adversarial inputs
    # (a regex with two lazy groups backtracks quadratically over repeated tags).
    if body.count(_ANSWER_OPEN) != 1 or body.count(_ANSWER_CLOSE) != 1:
        return 0.0
    if not body.endswith(_ANSWER_CLOSE):
        return 0.0
    head = body[: body.index(_ANSWER_OPEN)].rstrip()
    if not head:
        return 0.0 if require_thinking else 1.0
    ok = (
        body.count(_THINK_OPEN) == 1
        and body.count(_THINK_CLOSE) == 1
        and head.startswith(_THINK_OPEN)
        and head.endswith(_THINK_CLOSE)
    )
    return 1.0 if ok else 0.0


def structure_reward(text: str, problem_type: str, require_thinking: bool = True) -> float:
    """0.5 iff the format holds and a JSON-answer type's answer parses as `{"boxes": [...]}`; else 0."""
    check_problem_type(problem_type)
    if problem_type not in JSON_ANSWER_TYPES:
        return 0.0
    if format_reward(text, require_thinking) != 1.0:
        return 0.0
    answer = extract_answer(text)
    return 0.5 if answer is not None and parse_boxes_json(answer) is not None else 0.0
