"""The promotion gate's decisions, as pure functions of paired scores (no server, no model).

The current (served) version and the candidate answer the same held-out questions greedily;
each question's pair of accuracies is a win (candidate higher), a loss (lower) or a tie. The
decision is McNemar's exact test (for 0/1 accuracies; a sign test for graded ones such as IoU):
one-sided, at confidence 1 - alpha, on the wins among the questions that differ:

- promote: the candidate is better (wins significantly outnumber losses);
- reject: the candidate is worse (losses significantly outnumber wins);
- keep: neither, the difference is inside the noise; the current version stays served.

The gate's size follows from its margin and confidence: `question_count(margin, confidence)` is
the smallest n at which any net win share (wins - losses) / n of at least `margin` is significant,
however many questions tie. For 0/1 accuracies the net win share is the mean accuracy difference.
Because the test's p-value only falls with a win and only rises with a loss, the verdict is settled
before every question is scored when the rest cannot change it (`settled`): scoring stops there,
with exactly the decision the full gate would make.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

PROMOTE, REJECT, KEEP = "promote", "reject", "keep"
MAX_QUESTIONS = 2000  # keeps one round's gate cost bounded; a margin that needs more is a config error
_TIE = 1e-9  # graded accuracies closer than this count as equal (float noise, not a change)


def sign_p_value(wins: int, losses: int) -> float:
    """One-sided exact p-value P(X >= wins), X ~ Binomial(wins + losses, 1/2); 1.0 without differing pairs."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got {wins} and {losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    # Exact integer arithmetic (each binomial coefficient from the previous one), so the comparison with
    # alpha is not at the mercy of rounding.
    term = tail = math.comb(n, wins)
    for k in range(wins, n):
        term = term * (n - k) // (k + 1)
        tail += term
    return tail / 2**n


@dataclass(frozen=True)
class GateSpec:
    """The gate's statistics: the margin it resolves and the confidence of each one-sided decision."""

    margin: float = 0.2
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.margin <= 1:
            raise ValueError(f"gate_margin must be in (0, 1] (a share of the gate questions), got {self.margin}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"gate_confidence must be in [0.5, 1), got {self.confidence}")
        if question_count(self.margin, self.confidence) is None:
            raise ValueError(f"gate_margin {self.margin} at gate_confidence {self.confidence} needs more than "
                             f"{MAX_QUESTIONS} gate questions: raise gate_margin or lower gate_confidence")

    @property
    def alpha(self) -> float:
        """The chance of a wrong promotion (or rejection) when the versions are equally good."""
        return 1.0 - self.confidence

    @property
    def questions(self) -> int:
        """How many gate questions this margin and confidence need."""
        return question_count(self.margin, self.confidence) or MAX_QUESTIONS


@lru_cache(maxsize=64)
def question_count(margin: float, confidence: float, limit: int = MAX_QUESTIONS) -> int | None:
    """Smallest n <= limit such that every outcome with (wins - losses) >= margin * n has p-value
    <= 1 - confidence; None when even `limit` questions are not enough."""
    alpha = 1.0 - confidence
    for n in range(1, limit + 1):
        net = math.ceil(margin * n - 1e-9)
        # With the net fixed, the p-value grows with the number of differing pairs: the worst case is
        # the most losses that still fit in n questions.
        losses = (n - net) // 2
        if sign_p_value(net + losses, losses) <= alpha:
            return n
    return None


@dataclass(frozen=True)
class Verdict:
    """A gate decision and the counts behind it."""

    decision: str  # PROMOTE, REJECT or KEEP
    wins: int
    losses: int
    ties: int
    p_better: float  # p-value of "the candidate is better"
    p_worse: float  # p-value of "the candidate is worse"
    reason: str = ""

    @property
    def mean_difference(self) -> float:
        """Net win share: (wins - losses) / questions (the mean accuracy difference for 0/1 scores)."""
        total = self.wins + self.losses + self.ties
        return (self.wins - self.losses) / total if total else 0.0

    def describe(self) -> str:
        """One line for logs and round notes."""
        text = (f"{self.decision}: {self.wins} better, {self.losses} worse, {self.ties} equal "
                f"(p_better {self.p_better:.3g}, p_worse {self.p_worse:.3g})")
        return f"{text}; {self.reason}" if self.reason else text


def _check_scores(name: str, scores: Sequence[float]) -> None:
    bad = [s for s in scores if not (isinstance(s, (int, float)) and 0.0 <= s <= 1.0)]  # NaN fails both
    if bad:
        raise ValueError(f"{name} scores must be accuracies in [0, 1], got {bad[0]!r}")


def count_pairs(current: Sequence[float], candidate: Sequence[float]) -> tuple[int, int, int]:
    """(wins, losses, ties) of the candidate over the current version, question by question."""
    if len(current) != len(candidate):
        raise ValueError(f"paired scores need the same questions: {len(current)} current, {len(candidate)} candidate")
    _check_scores("current", current)
    _check_scores("candidate", candidate)
    diffs = [b - a for a, b in zip(current, candidate)]
    wins = sum(d > _TIE for d in diffs)
    losses = sum(d < -_TIE for d in diffs)
    return wins, losses, len(diffs) - wins - losses


def verdict_from_counts(wins: int, losses: int, ties: int, spec: GateSpec) -> Verdict:
    """The decision for these counts (the core of `decide`, also used by `settled`)."""
    p_better, p_worse = sign_p_value(wins, losses), sign_p_value(losses, wins)
    if p_better <= spec.alpha:
        decision = PROMOTE
    elif p_worse <= spec.alpha:
        decision = REJECT
    else:
        decision = KEEP
    return Verdict(decision, wins, losses, ties, p_better, p_worse)


def decide(current: Sequence[float], candidate: Sequence[float], spec: GateSpec,
           well_formed: bool = True) -> Verdict:
    """Promote, reject or keep the current version, from paired accuracies on the same questions."""
    wins, losses, ties = count_pairs(current, candidate)
    verdict = verdict_from_counts(wins, losses, ties, spec)
    if not well_formed:  # a malformed answer (non-finite logprobs, no finish) is a broken adapter, whatever it scores
        return Verdict(REJECT, wins, losses, ties, verdict.p_better, verdict.p_worse, "an answer was malformed")
    return verdict


def settled(wins: int, losses: int, ties: int, remaining: int, spec: GateSpec) -> str | None:
    """The decision if the `remaining` unscored questions cannot change it, else None."""
    if remaining < 0:
        raise ValueError(f"remaining must be >= 0, got {remaining}")
    # The extremes: every remaining question a loss, or every one a win. p_better only falls with a win
    # and rises with a loss (p_worse the other way round), so any other outcome lies between these two.
    worst = verdict_from_counts(wins, losses + remaining, ties, spec).decision
    best = verdict_from_counts(wins + remaining, losses, ties, spec).decision
    return worst if worst == best else None


def should_roll_back(current: Sequence[float], candidate: Sequence[float], served: Sequence[float], spec: GateSpec,
                     served_well_formed: bool = True) -> Verdict | None:
    """After a promotion: the reason to roll back (a verdict), or None to keep the promoted version.

    `served` is the gate again through the alias, as users call it. Roll back on evidence of harm:
    the served answers are clearly worse than the previous version's, or clearly worse than the
    candidate's (the alias does not serve what the gate passed), or malformed. A served score that
    is merely no longer significantly better is noise, not harm.
    """
    versus_previous = decide(current, served, spec, served_well_formed)
    if versus_previous.decision == REJECT:
        return versus_previous
    versus_candidate = decide(candidate, served, spec)
    if versus_candidate.decision == REJECT:
        return Verdict(REJECT, versus_candidate.wins, versus_candidate.losses, versus_candidate.ties,
                       versus_candidate.p_better, versus_candidate.p_worse, "the alias serves worse than the candidate")
    return None


@dataclass(frozen=True)
class Gate:
    """The gate's three rules at one spec, as the round applies them (a test may replace one to force an outcome)."""

    spec: GateSpec = GateSpec()

    def decide(self, current: Sequence[float], candidate: Sequence[float], well_formed: bool = True) -> Verdict:
        """See `decide`."""
        return decide(current, candidate, self.spec, well_formed)

    def settled(self, wins: int, losses: int, ties: int, remaining: int) -> str | None:
        """See `settled`."""
        return settled(wins, losses, ties, remaining, self.spec)

    def roll_back(self, current: Sequence[float], candidate: Sequence[float], served: Sequence[float],
                  served_well_formed: bool = True) -> Verdict | None:
        """See `should_roll_back`."""
        return should_roll_back(current, candidate, served, self.spec, served_well_formed)


@dataclass(frozen=True)
class AlwaysPromote(Gate):
    """Promotes every well-formed candidate: for benchmarks that compare estimators, not the gate's noise."""

    def decide(self, current: Sequence[float], candidate: Sequence[float], well_formed: bool = True) -> Verdict:
        """PROMOTE unless an answer was malformed (then REJECT), with the counts of `decide`."""
        verdict = decide(current, candidate, self.spec, well_formed)
        return verdict if not well_formed else Verdict(PROMOTE, verdict.wins, verdict.losses, verdict.ties,
                                                       verdict.p_better, verdict.p_worse, "every version is promoted")

    def settled(self, wins: int, losses: int, ties: int, remaining: int) -> str | None:
        """Never early: every question is scored, as the gate's metrics then cover the whole set."""
        return None if remaining else PROMOTE

    def roll_back(self, current: Sequence[float], candidate: Sequence[float], served: Sequence[float],
                  served_well_formed: bool = True) -> Verdict | None:
        """Only a malformed served answer rolls back."""
        return None if served_well_formed else decide(current, served, self.spec, served_well_formed)
