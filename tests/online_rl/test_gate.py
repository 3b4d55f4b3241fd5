"""The promotion gate's decisions as pure functions of paired scores: no server, no model."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from online_rl.gate import (KEEP, PROMOTE, REJECT, AlwaysPromote, Gate, GateSpec, count_pairs, decide,
                            question_count, settled, should_roll_back, sign_p_value, verdict_from_counts)

SPEC = GateSpec()  # margin 0.2, confidence 0.95
N = SPEC.questions
scores = st.lists(st.sampled_from([0.0, 1.0]) | st.floats(0, 1), min_size=1, max_size=80)


def pairs(wins, losses, ties, right=1.0, wrong=0.0):
    """Paired 0/1 accuracies with these counts: (current, candidate)."""
    current = [wrong] * wins + [right] * losses + [right] * ties
    candidate = [right] * wins + [wrong] * losses + [right] * ties
    return current, candidate


def test_the_stated_statistics():
    assert (SPEC.margin, SPEC.confidence, N) == (0.2, 0.95, 71)
    assert question_count(0.25, 0.95) == 45 and question_count(0.2, 0.9) == 46 and question_count(0.1, 0.95) == 281
    assert sign_p_value(5, 0) == 1 / 32 and sign_p_value(0, 0) == 1.0 and sign_p_value(3, 3) == pytest.approx(0.65625)


def test_clearly_better_promotes_clearly_worse_rejects_noise_keeps():
    better = decide(*pairs(20, 2, N - 22), SPEC)
    assert better.decision == PROMOTE and better.p_better < 0.001 and better.mean_difference == pytest.approx(18 / N)
    assert decide(*pairs(2, 20, N - 22), SPEC).decision == REJECT
    for wins, losses in ((4, 3), (3, 0), (10, 7), (0, 0), (0, 4)):
        assert decide(*pairs(wins, losses, N - wins - losses), SPEC).decision == KEEP, (wins, losses)
    # graded accuracies (IoU): only the direction of each difference counts
    assert decide([0.5] * 8, [0.51] * 8, SPEC).decision == PROMOTE
    assert decide([0.5] * 8, [0.5 + 1e-12] * 8, SPEC).decision == KEEP  # float noise is a tie


def test_a_malformed_candidate_is_rejected_whatever_it_scores():
    verdict = decide(*pairs(30, 0, 0), SPEC, well_formed=False)
    assert verdict.decision == REJECT and "malformed" in verdict.describe()


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="same questions"):
        decide([1.0], [1.0, 0.0], SPEC)
    for bad in (float("nan"), 1.5, -0.1, "1"):
        with pytest.raises(ValueError, match="candidate scores must be accuracies"):
            decide([1.0], [bad], SPEC)
    for kw, match in (({"margin": 0}, "gate_margin must be in"), ({"margin": float("nan")}, "gate_margin"),
                      ({"confidence": 1.0}, "gate_confidence must be in"), ({"confidence": 0.3}, "gate_confidence"),
                      ({"margin": 0.01}, "needs more than 2000 gate questions")):
        with pytest.raises(ValueError, match=match):
            GateSpec(**kw)
    with pytest.raises(ValueError, match="wins and losses"):
        sign_p_value(-1, 2)
    with pytest.raises(ValueError, match="remaining"):
        settled(1, 1, 1, -1, SPEC)


@settings(max_examples=200, deadline=None)
@given(scores, st.data())
def test_swapping_the_versions_swaps_promote_and_reject(current, data):
    candidate = data.draw(st.lists(st.floats(0, 1), min_size=len(current), max_size=len(current)))
    forward, backward = decide(current, candidate, SPEC).decision, decide(candidate, current, SPEC).decision
    assert {forward, backward} in ({KEEP}, {PROMOTE, REJECT})


@settings(max_examples=200, deadline=None)
@given(scores)
def test_a_version_against_itself_is_kept(current):
    assert decide(current, current, SPEC).decision == KEEP


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60))
def test_a_win_never_hurts_and_a_loss_never_helps(wins, losses, ties):
    rank = {REJECT: 0, KEEP: 1, PROMOTE: 2}
    here = rank[verdict_from_counts(wins, losses, ties, SPEC).decision]
    assert rank[verdict_from_counts(wins + 1, losses, ties, SPEC).decision] >= here
    assert rank[verdict_from_counts(wins, losses + 1, ties, SPEC).decision] <= here
    assert verdict_from_counts(wins, losses, ties + 5, SPEC).decision == verdict_from_counts(wins, losses, ties, SPEC).decision


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_at_the_derived_size_a_net_win_share_of_the_margin_always_promotes(data):
    net = math.ceil(SPEC.margin * N)
    losses = data.draw(st.integers(0, (N - net) // 2))
    wins = net + losses + data.draw(st.integers(0, max(0, N - net - 2 * losses)))
    assert wins + losses <= N
    assert decide(*pairs(wins, losses, N - wins - losses), SPEC).decision == PROMOTE


@settings(max_examples=200, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.5, 0.99))
def test_the_derived_size_is_the_smallest_that_reaches_the_confidence(margin, confidence):
    n = question_count(margin, confidence)
    if n is None:
        return
    alpha = 1 - confidence

    def worst(size):
        net = math.ceil(margin * size - 1e-9)
        losses = (size - net) // 2
        return sign_p_value(net + losses, losses)

    assert worst(n) <= alpha and (n == 1 or worst(n - 1) > alpha)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from("wlt"), min_size=1, max_size=40), st.integers(0, 40), st.data())
def test_a_settled_verdict_is_what_the_full_gate_decides(scored, remaining, data):
    counts = [scored.count(c) for c in "wlt"]
    early = settled(*counts, remaining, SPEC)
    rest = data.draw(st.lists(st.sampled_from("wlt"), min_size=remaining, max_size=remaining))
    full = verdict_from_counts(*[(scored + rest).count(c) for c in "wlt"], SPEC).decision
    if early is not None:
        assert early == full
    if remaining == 0:
        assert early == full


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(0, 60), st.integers(0, 60))
def test_more_differing_pairs_at_the_same_net_is_weaker_evidence(net, losses, extra):
    # The premise of question_count (whose net is >= 1): with wins - losses fixed, more differing pairs
    # give a larger p-value, so the most losses that fit in n questions is the worst case.
    assert sign_p_value(net + losses + extra, losses + extra) >= sign_p_value(net + losses, losses) - 1e-12


def test_roll_back_only_on_evidence_of_harm():
    current, candidate = pairs(20, 0, N - 20)
    assert should_roll_back(current, candidate, candidate, SPEC) is None  # the alias serves what was gated
    noisy = list(candidate)
    noisy[:3] = [0.0, 0.0, 0.0]  # a few answers differ through the alias: no longer clearly better, not harm
    assert should_roll_back(current, candidate, noisy, SPEC) is None
    harm = should_roll_back(current, candidate, [0.0] * N, SPEC)  # clearly worse than the previous version
    assert harm is not None and harm.decision == REJECT
    assert should_roll_back(current, candidate, candidate, SPEC, served_well_formed=False) is not None
    worse_than_gated = should_roll_back([0.0] * N, [1.0] * N, [1.0] * 40 + [0.0] * (N - 40), SPEC)
    assert worse_than_gated is not None and "worse than the candidate" in worse_than_gated.reason


def test_counts_and_the_rules_objects():
    assert count_pairs([0, 1, 0.5], [1, 0, 0.5]) == (1, 1, 1)
    gate = Gate(SPEC)
    assert gate.decide(*pairs(20, 0, 0)).decision == PROMOTE and gate.settled(20, 0, 0, 0) == PROMOTE
    always = AlwaysPromote(SPEC)
    assert always.decide(*pairs(0, 20, 0)).decision == PROMOTE
    assert always.decide(*pairs(0, 20, 0), well_formed=False).decision == REJECT
    assert always.settled(0, 0, 0, 3) is None and always.roll_back([1.0], [0.0], [0.0]) is None
