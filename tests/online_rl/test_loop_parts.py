"""The loop's parts without a server: pending users' prompts (nothing harvested is lost), refills, the state
file keyed to its server, version names from openvlthinker.versions."""

import json

import pytest

from online_rl.config import RLConfig
from online_rl.harvest import PendingPrompt, staleness_number
from online_rl.loop import enqueue
from online_rl.prompts import Prompt, RoundPrompts, gate_prompts, held_out_prompts
from online_rl.rollout import Rollout
from online_rl.rounds import Target, first_groups, refill_size
from online_rl.state import LoopState, StateMismatch, load_state, save_state
from openvlthinker.tiny.shapeworld import FAMILIES, generate
from openvlthinker.versions import folder_name, pinned_model, version_folder, version_number

SERVER = {"model": "/models/tiny", "adapters_dir": "/srv/adapters", "store": "sqlite:////srv/serve.db"}


def pending(i, task_type="chart"):
    return PendingPrompt(f"chatcmpl-{i}", 0, str(i), "numerical", task_type)


def fetched(p):
    """What materialize would give: a prompt for the pending one (here without the server)."""
    record = generate("chart", 0).record
    return Prompt(type(record)(**{**record.__dict__, "problem_id": p.interaction_id, "answer": p.answer}), [])


def test_users_prompts_beyond_a_round_wait_for_the_next():
    cfg = RLConfig(prompts_per_round=4, max_pending=100, skip_tasks=("ocr",))
    queue, dropped = enqueue([], [pending(i) for i in range(10)] + [pending(99, "ocr")], cfg)
    assert [p.answer for p in queue] == [str(i) for i in range(10)] and dropped == 0  # the OCR one is skipped
    queue, _ = enqueue(queue, [pending(3), pending(10)], cfg)  # a repeat is not queued twice
    assert len(queue) == 11
    first = RoundPrompts(queue, fetched, None, 0)
    assert [p.record.answer for p in first.take(4)] == ["0", "1", "2", "3"] and first.user == 4
    second = RoundPrompts(first.pending, fetched, None, 1)
    taken = second.take(4) + second.take(4)  # a round and its refill
    assert [p.record.answer for p in taken[:7]] == ["4", "5", "6", "7", "8", "9", "10"]
    assert second.user == 7 and second.pending == [] and taken[7].record.task in FAMILIES  # then ShapeWorld


def test_pending_prompts_are_capped_and_lost_ones_counted():
    cfg = RLConfig(max_pending=3)
    queue, dropped = enqueue([pending(0)], [pending(i) for i in range(1, 6)], cfg)
    assert [p.answer for p in queue] == ["3", "4", "5"] and dropped == 3  # the oldest make room
    source = RoundPrompts(queue, lambda p: None if p.answer == "4" else fetched(p), None, 0)
    assert [p.record.answer for p in source.take(2)] == ["3", "5"] and source.lost == 1


def test_pending_prompts_round_trip_through_json_and_bad_ones_are_named():
    p = pending(1)
    assert PendingPrompt.from_json(json.loads(json.dumps(p.to_json()))) == p and p.task == "chart"
    assert PendingPrompt("a", 0, "b", "math").task == "math"
    with pytest.raises(ValueError, match="choice_index must be an integer"):
        PendingPrompt.from_json({**p.to_json(), "choice_index": "0"})
    with pytest.raises(ValueError, match="unknown problem_type"):
        PendingPrompt.from_json({**p.to_json(), "problem_type": "poetry"})


def test_refill_fills_the_missing_groups_by_the_share_kept():
    assert refill_size(missing=4, kept_groups=4, tried=8, cap=16) == 8  # half kept: twice the missing
    assert refill_size(missing=4, kept_groups=0, tried=8, cap=16) == 16  # nothing kept yet: a whole batch
    assert refill_size(missing=30, kept_groups=1, tried=16, cap=16) == 16
    rows = [Rollout([1], [2], [0.0], group_id=g) for g in "aabbccdd"]
    assert [r.group_id for r in first_groups(rows, 3)] == list("aabbcc")
    for bad in ({"max_refills": -1}, {"max_refills": 1.5}, {"max_pending": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RLConfig(**bad)


def test_the_state_belongs_to_one_server_and_model(tmp_path):
    path = tmp_path / "state.json"
    state = load_state(path, SERVER)
    assert state.next_round == 0 and state.server == SERVER
    state.next_round, state.pending, state.working = 3, [pending(1)], "v0002"
    save_state(path, state)
    again = load_state(path, SERVER)
    assert (again.next_round, again.pending, again.working) == (3, [pending(1)], "v0002")
    other = {**SERVER, "adapters_dir": "/elsewhere/adapters"}
    with pytest.raises(StateMismatch, match="another server or base model.*Pass --out"):
        load_state(path, other)
    with pytest.raises(StateMismatch, match="model /models/other"):
        load_state(path, {**SERVER, "model": "/models/other"})
    # A state from before states were keyed is taken as this server's, then keyed.
    path.write_text(json.dumps({"next_round": 5, "promoted": "v0004", "cursors": {"feedback": "2",
                                                                                 "interactions": "7"}}))
    notes = []
    legacy = load_state(path, SERVER, log=notes.append)
    assert legacy.next_round == 5 and legacy.cursors["interactions"] == "7" and legacy.server == SERVER and notes
    for raw, match in (({"next_round": -1}, "next_round"), ({"working": "latest"}, "working must be a version"),
                       ({"cursors": {"feedback": 3}}, "cursors"), ({"server": {"model": "x"}}, "server must be")):
        path.write_text(json.dumps(raw))
        with pytest.raises(ValueError, match=match):
            load_state(path, SERVER)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_state(path, SERVER)
    assert LoopState().to_json()["pending"] == []


def test_version_names_come_from_versions():
    assert version_number("v0012") == 12 and version_number(None) is None and version_number("custom") is None
    assert staleness_number("v0012") == 12 and staleness_number(None) == 0
    assert folder_name("v0003") == "policy-v0003" and version_folder("/a", "v0003").name == "policy-v0003"
    with pytest.raises(ValueError, match="not a version name"):
        folder_name("../etc")
    assert pinned_model("thinker", "v0003") == "thinker@v0003" and pinned_model("thinker", None) == "thinker"
    target = Target("thinker", "tiny", "/a", "/a", served="v0002", working="v0003")
    assert target.model(target.trainer) == "thinker@v0003" and target.model(None) == "tiny"


def test_the_gate_set_is_sized_by_its_statistics():
    questions = gate_prompts(RLConfig().gate_spec().questions)
    assert len(questions) == 71 and {q.record.task for q in questions} == set(FAMILIES)
    assert [q.record.problem_id for q in gate_prompts(12)] == [q.record.problem_id for q in questions[:12]]
    with pytest.raises(ValueError, match="at least one question"):
        gate_prompts(0)


def test_the_held_out_set_shares_no_question_with_the_gate_and_gives_each_family_as_many():
    held = held_out_prompts(3)
    assert [q.record.task for q in held[:len(FAMILIES)]] == list(FAMILIES) and len(held) == 3 * len(FAMILIES)
    gate = {q.record.problem_id for q in gate_prompts(RLConfig().gate_spec().questions)}
    assert not gate & {q.record.problem_id for q in held}
    with pytest.raises(ValueError, match="per_family"):
        held_out_prompts(0)


def rollout(task, length, accuracy, reward, group="g"):
    return Rollout(prompt_ids=[1], completion_ids=[7] * length, behaviour_logprobs=[-0.1] * length, reward=reward,
                   accuracy=accuracy, group_id=group, task=task)


def test_length_shaping_moves_rewards_by_each_tasks_correct_lengths():
    from online_rl.rounds import keep_informative, observe_lengths, shape_lengths
    from openvlthinker.rl import LengthTargets

    targets = LengthTargets(min_count=4, max_length=128)
    unshaped = [rollout("math_reasoning", 30, 1.0, 1.0)]
    assert shape_lengths(unshaped, targets, 0.1) == unshaped  # no envelope before enough correct lengths
    observe_lengths([rollout("math_reasoning", 30, 1.0, 1.0)] * 4 + [rollout("ocr", 10, 1.0, 1.0)] * 4
                    + [rollout("ocr", 90, 0.0, 0.1)] * 20, targets)  # wrong answers do not move a target
    assert targets.target("math_reasoning") == 30 and targets.target("ocr") == 10
    short, long_ = shape_lengths([rollout("math_reasoning", 20, 1.0, 1.0), rollout("math_reasoning", 40, 1.0, 1.0)],
                                 targets, 0.1)
    assert long_.reward > short.reward and short.base_reward == long_.base_reward == 1.0  # reasoning: longer
    quick, slow = shape_lengths([rollout("ocr", 4, 1.0, 1.0), rollout("ocr", 12, 1.0, 1.0)], targets, 0.1)
    assert quick.reward > slow.reward  # perception: shorter
    assert quick.reward == pytest.approx((0.9 - 0.1) * 1.0 + 0.1 + 0.1 * 1.0)  # (0.9 - w)·acc + 0.1·format + w·env
    assert slow.reward == pytest.approx(0.8 + 0.1 + 0.1 * 0.5)  # 12 tokens: halfway down from c = 8 to d = 16
    assert shape_lengths([rollout("ocr", 4, 1.0, 1.0)], targets, 0.0)[0].base_reward is None  # weight 0: off
    # A group whose answers differ only in length has no signal for dynamic sampling.
    same = shape_lengths([rollout("ocr", 4, 0.0, 0.1, "a"), rollout("ocr", 12, 0.0, 0.1, "a")], targets, 0.1)
    assert same[0].reward != same[1].reward and keep_informative(same) == []


def test_the_length_targets_survive_a_restart(tmp_path):
    state = LoopState(server=SERVER, lengths={"ocr": [4.0, 5.0]})
    save_state(tmp_path / "state.json", state)
    assert load_state(tmp_path / "state.json", SERVER).lengths == {"ocr": [4.0, 5.0]}
    (tmp_path / "bad.json").write_text(json.dumps({**state.to_json(), "lengths": {"ocr": ["long"]}}))
    with pytest.raises(ValueError, match="lengths must map task names"):
        load_state(tmp_path / "bad.json", SERVER)


def test_the_shipped_model_has_its_own_loop_profile(tmp_path):
    from online_rl.cli import _profile
    from online_rl.profiles import PROFILES, TINY, profile_for
    from openvlthinker.models import DEFAULT_MODEL

    assert profile_for(DEFAULT_MODEL) == TINY and profile_for(str(tmp_path)) == {} and profile_for(None) == {}
    RLConfig.from_mapping(TINY)  # every value is a valid RLConfig/UpdateConfig field
    assert _profile("auto", RLConfig(model=DEFAULT_MODEL)) == TINY and _profile("none", RLConfig()) == PROFILES["none"]
    # The order is profile < config file < flags: a value given explicitly wins over the profile's.
    merged = RLConfig.from_mapping({**TINY, "lr": 1e-5})
    assert merged.update.lr == 1e-5
