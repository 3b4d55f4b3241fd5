"""Task records and loaders: the real 60-record sample, round trips, clear errors."""

import json
from pathlib import Path

import pytest
from PIL import Image

from openvlthinker.data import PROBLEM_TYPES, RecordError, TaskRecord, load_records, open_image

SAMPLE = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "onethinker_sample_train.json"


@pytest.fixture(scope="module")
def sample_records():
    if not SAMPLE.is_file():  # the shared folder sits beside the checkout in CI and here
        pytest.fail(f"sample data missing: {SAMPLE}")
    return load_records(SAMPLE, check_images=False)


def test_sample_loads_with_every_problem_type(sample_records):
    assert len(sample_records) == 60
    assert {r.problem_type for r in sample_records} == set(PROBLEM_TYPES)
    for r in sample_records:
        assert not r.answer.startswith("<answer>")
        assert all(Path(p).is_absolute() for p in r.images)


def test_round_trip(sample_records):
    raw = json.loads(SAMPLE.read_text())
    for obj, rec in zip(raw, sample_records):
        back = TaskRecord.from_dict(TaskRecord(**{**rec.__dict__, "images": tuple(obj["images"])}).to_dict())
        assert back.answer == rec.answer and back.to_dict()["answer"] == obj["answer"]
        assert back.extra == rec.extra  # unknown fields such as problem_reserved_text survive


def test_jsonl_and_image_root(tmp_path):
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "imgs" / "a.png")
    rec = {"problem": "<image> What colour?", "problem_type": "multiple choice", "answer": "<answer>A</answer>",
           "options": ["A. red", "B. blue"], "images": ["a.png"], "problem_id": 3}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(rec) + "\n\n")
    (loaded,) = load_records(path, image_root=tmp_path / "imgs")
    assert loaded.answer == "A" and loaded.problem_id == "3"
    assert open_image(loaded.images[0]).size == (8, 8)


@pytest.mark.parametrize(
    "obj,match",
    [
        ({"problem": "q", "answer": "a"}, "missing field 'problem_type'"),
        ({"problem": "q", "problem_type": "essay", "answer": "a"}, "unknown problem_type 'essay'"),
        ({"problem": "q", "problem_type": "math"}, "missing field 'answer'"),
        ({"problem": "q", "problem_type": "math", "answer": "1", "images": [3]}, "'images' must be a list of strings"),
        ({"problem": ["q"], "problem_type": "math", "answer": "1"}, "'problem' must be a string"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_records_name_the_field(obj, match):
    with pytest.raises(RecordError, match=match):
        TaskRecord.from_dict(obj, where="data.json[7]")


def test_loader_errors_name_file_and_record(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"problem": "q", "problem_type": "OCR", "answer": "x", "images": ["missing.png"],
                                "problem_id": "p9"}]))
    with pytest.raises(RecordError, match=r"bad.json\[0\] \(problem_id='p9'\): field 'images': file 'missing.png'"):
        load_records(bad)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(RecordError, match="invalid JSON"):
        load_records(tmp_path / "broken.json")
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "nope.json")


def test_open_image_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="cannot read image"):
        open_image(tmp_path / "junk.png")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        open_image(tmp_path / "none.png")
