"""Task records in the OneThinker / EasyR1 JSON format (docs/method.md §6).

A record is one question with its reference answer. The same type carries the real
OneThinker training data, the synthetic ShapeWorld tasks and logged interactions that
became gradable, so loaders, templates and graders are shared by all of them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

PROBLEM_TYPES = (
    "multiple choice",
    "numerical",
    "regression",
    "OCR",
    "math",
    "spatial grounding",
)

_ANSWER_TAG = re.compile(r"^\s*<answer>(.*)</answer>\s*$", re.DOTALL)


class RecordError(ValueError):
    """A task record is malformed; the message names the record and the field."""


def strip_answer_tag(text: str) -> str:
    """Return the text inside a single surrounding `<answer>...</answer>`, else the text itself."""
    match = _ANSWER_TAG.match(text)
    return (match.group(1) if match else text).strip()


def check_problem_type(problem_type: str) -> str:
    """Return `problem_type` if it is known, else raise a ValueError listing the valid ones."""
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(
            f"unknown problem_type {problem_type!r}; valid: {', '.join(map(repr, PROBLEM_TYPES))}"
        )
    return problem_type


@dataclass(frozen=True)
class TaskRecord:
    """One gradable question. `answer` is the bare gold answer (no `<answer>` tag)."""

    problem_id: str
    problem: str
    problem_type: str
    answer: str
    task_type: str = ""
    data_type: str = "image"
    options: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    data_source: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_problem_type(self.problem_type)

    @property
    def task(self) -> str:
        """The task key used for per-task statistics: task_type, else the problem type."""
        return self.task_type or self.problem_type

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str = "record") -> "TaskRecord":
        """Build a record from one OneThinker JSON object; errors name `where` and the field."""
        if not isinstance(raw, Mapping):
            raise RecordError(f"{where}: expected a JSON object, got {type(raw).__name__}")
        pid = raw.get("problem_id", "")
        label = f"{where} (problem_id={pid!r})" if pid != "" else where

        def text(name: str, *, required: bool) -> str:
            value = raw.get(name)
            if value is None:
                if required:
                    raise RecordError(f"{label}: missing field {name!r}")
                return ""
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise RecordError(f"{label}: field {name!r} must be a string, got {type(value).__name__}")
            return str(value)

        def strings(name: str) -> tuple[str, ...]:
            value = raw.get(name) or []
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RecordError(f"{label}: field {name!r} must be a list of strings")
            return tuple(value)

        problem_type = text("problem_type", required=True)
        try:
            check_problem_type(problem_type)
        except ValueError as exc:
            raise RecordError(f"{label}: field 'problem_type': {exc}") from None
        known = {
            "problem_id", "problem", "problem_type", "answer", "task_type", "data_type",
            "options", "images", "data_source",
        }
        return cls(
            problem_id=text("problem_id", required=False),
            problem=text("problem", required=True),
            problem_type=problem_type,
            answer=strip_answer_tag(text("answer", required=True)),
            task_type=text("task_type", required=False),
            data_type=text("data_type", required=False) or "image",
            options=strings("options"),
            images=strings("images"),
            data_source=text("data_source", required=False),
            extra={k: v for k, v in raw.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The OneThinker JSON object for this record (answer wrapped in `<answer>` tags)."""
        out = asdict(self)
        extra = out.pop("extra")
        out["answer"] = f"<answer>{self.answer}</answer>"
        out["options"] = list(self.options)
        out["images"] = list(self.images)
        out.update(extra)
        return out
