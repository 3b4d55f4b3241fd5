"""Incremental detokenisation and stop-string helpers."""

import pytest

from serve.engines.text import IncrementalDetokenizer, find_stop, partial_stop_len


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from openvlthinker.models import load_processor

    return load_processor(tiny_dir).tokenizer


@pytest.mark.parametrize("text", ["hello é 😀 wörld", "<thinking>I count 3</thinking><answer>3</answer>",
                                  "日本語のテキスト", "a\nb  c"])
def test_deltas_are_whole_characters_and_add_up(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    assert "".join(deltas) == text == tokenizer.decode(ids)
    assert not any("\ufffd" in d for d in deltas)
    if len(ids) > len(text.encode("utf-8")) // 2:  # multi-byte chars split over tokens: some deltas wait
        assert "" in deltas[:-1] or not any(ord(c) > 127 for c in text)


def test_special_tokens_add_no_text(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert "".join(detok.push(i) for i in tokenizer.encode("hi", add_special_tokens=False)) == "hi"
    assert detok.push(im_end) == "" and detok.flush() == ""


def test_flush_releases_a_partial_character(tokenizer):
    ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(ids) > 1
    detok = IncrementalDetokenizer(tokenizer)
    assert detok.push(ids[0]) == ""
    assert detok.flush() == "\ufffd"


def test_find_stop_earliest_and_from_start():
    assert find_stop("abcSTOPdefEND", ("END", "STOP")) == 3
    assert find_stop("abcSTOPdefEND", ("END", "STOP"), start=4) == 10
    assert find_stop("abc", ("", "x")) == -1


def test_partial_stop_len():
    assert partial_stop_len("hello </ans", ("</answer>",)) == 5
    assert partial_stop_len("hello", ("</answer>",)) == 0
    assert partial_stop_len("ab", ("abc", "bx")) == 2
    assert partial_stop_len("xyzEN", ("END", "N!")) == 2
    assert partial_stop_len("END", ("END",)) == 0  # a whole stop is find_stop's business
    assert partial_stop_len("x", ()) == 0
