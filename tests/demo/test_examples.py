"""The one-click examples are real ShapeWorld images with their questions, identical on every start."""

from PIL import Image

from demo.examples import EXAMPLES, question, write_examples


def test_examples_are_deterministic_images_with_questions(tmp_path):
    first = write_examples(tmp_path / "a")
    second = write_examples(tmp_path / "b")
    assert len(first) == len(EXAMPLES) >= 3
    for a, b in zip(first, second):
        assert a["text"] == b["text"] and a["text"] and "<image>" not in a["text"]
        assert open(a["files"][0], "rb").read() == open(b["files"][0], "rb").read()
        assert Image.open(a["files"][0]).size == (128, 128)
    assert question("<image> How many?\nA. 1") == "How many?\nA. 1"
