"""The text tasks: seeded, graded right by the existing graders, train and eval disjoint in content, and what the
loop fills rounds and its gate with for a text-only model."""

import pytest

from online_rl.prompts import RoundPrompts, fill_prompts, gate_prompts, text_prompts
from openvlthinker.rewards import grade
from openvlthinker.tiny.text_tasks import TEXT_FAMILIES, text_task, text_tasks


def test_a_task_is_a_pure_function_of_family_seed_and_split():
    assert text_task("addition", 7) == text_task("addition", 7)
    assert text_task("addition", 7) != text_task("addition", 8)
    assert text_task("larger_number", 3, "eval").problem_id == "text-larger_number-eval-3"
    assert [r.task for r in text_tasks("train", 8)] == list(TEXT_FAMILIES) * 2
    record = text_task("word_length", 0)
    assert record.problem_type == "numerical" and record.data_type == "text" and record.images == ()
    assert "<image>" not in "".join(r.problem for r in text_tasks("eval", 20))


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_the_reference_answer_is_right_and_graded_right(family):
    for seed in range(30):
        record = text_task(family, seed)
        question = record.problem.splitlines()[0]
        words = question.rstrip("?").split()
        if family == "larger_number":  # "Is A larger than B?"
            truth = int(words[1]) > int(words[4])
        elif family == "alphabet_first":  # "Does the word A come before B in alphabetical order?"
            truth = words[3] < words[6]
        elif family == "addition":  # "Is A plus B equal to C?"
            truth = int(words[1]) + int(words[3]) == int(words[6])
        else:  # "How many letters are in the word W?"
            assert record.answer == str(len(words[-1]))
            continue
        options = dict(o.split(". ", 1) for o in record.options)
        assert options[record.answer] == ("yes" if truth else "no") and sorted(options.values()) == ["no", "yes"]
        gold = options[record.answer]
        wrong = next(v for v in options.values() if v != gold)
        # The tiny model answers multiple choice with the option's text (as ShapeWorld taught it), or the letter.
        for said, accuracy in ((gold, 1.0), (record.answer, 1.0), (wrong, 0.0)):
            assert grade(record, f"<answer>{said}</answer>", require_thinking=False).accuracy == accuracy, said


def test_train_and_eval_never_share_a_question():
    train = {r.problem for r in text_tasks("train", 2000)}
    held_out = {r.problem for r in text_tasks("eval", 400)}
    assert len(held_out) > 100 and not train & held_out


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown text task family 'poetry'"):
        text_task("poetry", 0)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        text_task("addition", 0, "test")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        text_task("addition", -1)
    with pytest.raises(ValueError, match="count and start must be >= 0"):
        text_tasks("train", -1)


def test_a_text_model_loop_fills_rounds_and_its_gate_from_the_text_tasks():
    round0, round1 = text_prompts(8, 0), text_prompts(8, 1)
    assert all(p.images == [] for p in round0) and {p.record.task for p in round0} == set(TEXT_FAMILIES)
    assert not {p.record.problem_id for p in round0} & {p.record.problem_id for p in round1}
    filled = fill_prompts(None, 6, 0, skip_tasks=("addition",), text=True)
    assert len(filled) == 6 and "addition" not in {p.record.task for p in filled}
    assert fill_prompts(None, 4, 0, skip_tasks=TEXT_FAMILIES, text=True) == []
    source = RoundPrompts([], lambda p: None, None, 0, text=True)
    assert [p.record.problem_id for p in source.take(3) + source.take(2)] == [
        p.record.problem_id for p in text_prompts(5, 0)]  # a refill goes on where the round stopped
    gate = gate_prompts(13, text=True)
    assert [p.record.problem_id for p in gate] == [r.problem_id for r in text_tasks("eval", 13)]
    assert all(p.record.problem_id.startswith("shapeworld-") for p in gate_prompts(3))  # a VL model: ShapeWorld
