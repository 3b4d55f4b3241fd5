"""Shared helpers for the grader tests: a record factory and the 60-record OneThinker sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openvlthinker.data.records import TaskRecord

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "onethinker_sample_train.json"


def _make_record(problem_type: str, answer: str, options: tuple[str, ...] = ()) -> TaskRecord:
    return TaskRecord(problem_id="t", problem="q", problem_type=problem_type, answer=answer, options=options)


@pytest.fixture(scope="session")
def rec():
    """Factory `rec(problem_type, answer, options=())` for a minimal record."""
    return _make_record


@pytest.fixture(scope="session")
def sample_records() -> list[TaskRecord]:
    """The 60 real OneThinker records (shared/ sits beside the checkout, in CI too)."""
    if not SAMPLE.is_file():  # the shared folder sits beside the checkout in CI and here
        pytest.fail(f"sample data not found at {SAMPLE}")
    raw = json.loads(SAMPLE.read_text())
    return [TaskRecord.from_dict(r, where=f"sample[{i}]") for i, r in enumerate(raw)]
