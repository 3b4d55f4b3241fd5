"""ShapeWorld generator API: determinism, splits, record round trips, writing and traces."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
from PIL import Image

from openvlthinker.data.records import PROBLEM_TYPES, TaskRecord
from openvlthinker.rewards.choice import multiple_choice_accuracy, parse_options
from openvlthinker.tiny.sft import target_text
from openvlthinker.tiny.shapeworld import (
    COLORS, EVAL_SEED_BASE, FAMILIES, OCR_WORDS, SHAPEWORLD_VERSION, Sample, corpus_texts, generate,
    split, write_split,
)

REASONING = {"spatial_reasoning", "general_vqa", "math_reasoning", "chart"}
EXPECTED_TYPES = {
    "spatial_grounding": {"spatial grounding"},
    "spatial_reasoning": {"multiple choice", "regression"},
    "general_vqa": {"multiple choice"},
    "math_reasoning": {"math"},
    "chart": {"numerical", "multiple choice"},
    "ocr": {"OCR"},
}


def _key(sample: Sample) -> tuple[str, str]:
    return sample.record.problem, hashlib.sha256(sample.image.tobytes()).hexdigest()


def test_families_and_version():
    assert FAMILIES == ("spatial_grounding", "spatial_reasoning", "general_vqa", "math_reasoning", "chart", "ocr")
    assert SHAPEWORLD_VERSION == "shapeworld-v1"


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_sample_and_seeds_differ(family):
    a, b = generate(family, 7), generate(family, 7)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.record == b.record and a.thinking == b.thinking
    keys = {_key(generate(family, seed)) for seed in range(30)}
    assert len(keys) == 30


@pytest.mark.parametrize("family", FAMILIES)
def test_record_shape(family):
    seen_types = set()
    for seed in range(40):
        s = generate(family, seed)
        r = s.record
        seen_types.add(r.problem_type)
        assert r.problem_type in PROBLEM_TYPES and r.task_type == family
        assert r.problem.startswith("<image> ")
        assert r.images == (f"images/{family}-{seed}.png",)
        assert s.image.mode == "RGB" and s.image.size == (128, 128)
        assert r.extra["thinking"] == s.thinking
        if r.problem_type == "multiple choice":
            # Options are listed one per line after the question, as lettered strings.
            assert r.problem.endswith("\n" + "\n".join(r.options))
            assert 2 <= len(r.options) <= 4
        else:
            assert r.options == ()
    assert seen_types == EXPECTED_TYPES[family]


def test_unknown_family_and_split_name():
    with pytest.raises(ValueError, match="spatial_grounding"):
        generate("nope", 0)
    with pytest.raises(ValueError, match="train"):
        split("test", 1)
    with pytest.raises(ValueError, match="96"):
        generate("spatial_grounding", 0, image_size=64)


@pytest.mark.parametrize("size", [96, 160, 256])
def test_other_image_sizes(size):
    for family in FAMILIES:
        for seed in range(5):
            assert generate(family, seed, image_size=size).image.size == (size, size)


def test_train_eval_disjoint_and_eval_fixed():
    train, evals = split("train", 50), split("eval", 50)
    assert [s.record.task_type for s in train[:6]] == list(FAMILIES)  # interleaved
    train_seeds = {s.record.extra["seed"] for s in train}
    eval_seeds = {s.record.extra["seed"] for s in evals}
    assert max(train_seeds) < EVAL_SEED_BASE <= min(eval_seeds)
    assert not {_key(s) for s in train} & {_key(s) for s in evals}
    assert len({s.record.problem_id for s in train + evals}) == 600
    assert {s.record.extra["split"] for s in evals} == {"eval"}
    again = split("eval", 3)  # fixed: same content on every call, and a prefix of larger splits
    assert [s.record for s in again] == [s.record for s in evals[:18]]
    assert evals[0].record.problem_id == "eval-spatial_grounding-000000"
    assert evals[0].record.images == ("images/eval-spatial_grounding-000000.png",)


# Bump SHAPEWORLD_VERSION (and this digest) whenever a change alters the eval split.
# Only the records are pinned: image bytes also depend on the FreeType build inside Pillow.
# Updated once without a version bump when OCR scenes gained `word_boxes` (metadata only: without
# that key the records hash to the previous digest, e1a1ea73...), and once more when the reference traces
# of multiple-choice questions stopped naming the option letter (`thinking` only: questions, options,
# answers, scenes and images are unchanged; without `thinking` the records hash alike, 172f3fc9...).
EVAL_DIGEST = "2e4ea6dc70ca1f298ee7c1fca7bd0685e95bb14ba09ac0a6aaebb4f6ed3054e5"


def test_eval_split_is_pinned_to_the_version():
    records = [s.record.to_dict() for s in split("eval", 5)]
    digest = hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()
    assert digest == EVAL_DIGEST, f"eval split changed: bump SHAPEWORLD_VERSION, new digest {digest}"


def test_split_subset_of_families():
    out = split("train", 2, families=("chart", "ocr"), image_size=96)
    assert [s.record.task_type for s in out] == ["chart", "ocr", "chart", "ocr"]
    assert out[0].image.size == (96, 96)


@pytest.mark.parametrize("family", FAMILIES)
def test_records_round_trip(family):
    for seed in range(10):
        r = generate(family, seed).record
        assert TaskRecord.from_dict(r.to_dict()) == r
        assert TaskRecord.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_write_split(tmp_path):
    samples = split("eval", 2)
    path = write_split(samples, tmp_path)
    assert path == tmp_path / "eval.json"
    raw = json.loads(path.read_text())
    assert len(raw) == len(samples)
    for item, s in zip(raw, samples):
        assert item["answer"] == f"<answer>{s.record.answer}</answer>"
        assert item["thinking"] == s.thinking
        assert TaskRecord.from_dict(item) == s.record
        with Image.open(tmp_path / item["images"][0]) as im:
            assert im.tobytes() == s.image.tobytes()


def test_write_split_rejects_mixed_splits(tmp_path):
    with pytest.raises(ValueError, match="name="):
        write_split(split("train", 1, ("ocr",)) + split("eval", 1, ("ocr",)), tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_thinking_traces(family):
    for seed in range(40):
        s = generate(family, seed)
        if family not in REASONING:
            assert s.thinking == ""
            continue
        assert s.thinking and len(s.thinking.split()) <= 45
        answer = s.record.answer
        if s.record.problem_type == "multiple choice":  # it names the chosen option's text, never a letter
            chosen = parse_options(s.record.options)[answer]
            assert chosen in s.thinking and "option" not in s.thinking
            assert target_text(s, "think").endswith(f"</thinking><answer>{chosen}</answer>")
            assert multiple_choice_accuracy(chosen, s.record) == 1.0  # the grader takes the text for the letter
        else:  # the last number in the trace is the answer
            assert re.findall(r"\d+(?:\.\d+)?", s.thinking)[-1] == answer


def test_corpus_covers_vocabulary_and_sample_text():
    texts = list(corpus_texts(60, seed=3))
    words = set(re.findall(r"[A-Za-z]+", " ".join(texts)))
    assert set(OCR_WORDS) | set(COLORS) <= words
    assert '{"boxes": [' in " ".join(texts) and set("0123456789") <= set("".join(texts))
    assert texts == list(corpus_texts(60, seed=3))
    # Everything a sample makes the model read or write is made of corpus words.
    for family in FAMILIES:
        s = generate(family, 123)
        seen = s.record.problem + " " + s.thinking + " " + s.record.answer
        assert set(re.findall(r"[A-Za-z]+", seen)) - {"image"} <= words
