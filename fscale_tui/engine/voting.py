"""Voting rules: how ballots become a decision, and when the decision can be made early.

One interface, three rules, used by ``scale`` (every member's vote) and by the ``-k auto``
cascade (each stage's confidence against its threshold):

``Majority``            one vote per member; a final tie is no decision, or is broken by
                        ``tie_break = "order"`` (the panel's listed order) or ``"rating"``
                        (the higher-rated backer) — never by arrival order.
``Weighted``            reliability-weighted agreement: a ballot weighs its model's estimated
                        accuracy on this kind of prompt (1 − Ψ from the router's profile).

A rule's :meth:`VotingRule.decide` gives a :class:`Tally`: the leading label, the vote counts,
the weight behind each label, and two shares — ``confidence`` (the leader's share of the
*valid* weight, what ``scale`` reports) and ``agreement`` (its share of *all* ballots, no
answer and failures included, what a cascade stage compares with its threshold).

:meth:`VotingRule.can_decide_early` says whether the outcome is already settled while some
ballots are still pending: for a plain vote, the leader cannot be caught; for a stage with a
threshold, the accept/escalate verdict cannot change whatever the pending ballots say. Stopping
then gives exactly the result that waiting would have given, so calibrated thresholds stay valid.

Pure: no I/O, no asyncio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

TIE_BREAKS = ("none", "rating", "order")


@dataclass(frozen=True)
class Ballot:
    """One member's say: its label (None = no answer or failed) and its weight."""

    model: str
    answer: str | None
    weight: float = 1.0
    position: int = 0  # the member's place in the panel's listed order (tie-break "order")


@dataclass
class Tally:
    answer: str | None  # the winner (None: no valid ballot, or an unbroken tie)
    leader: str | None  # the label ahead (a tie-break may have chosen it)
    counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    valid: int = 0  # ballots with a label
    valid_weight: float = 0.0
    total_weight: float = 0.0  # every ballot, no answer and failures included
    tied: list[str] = field(default_factory=list)
    tie_broken_by: str | None = None

    @property
    def support(self) -> float:
        return self.weights.get(self.leader, 0.0) if self.leader is not None else 0.0

    @property
    def confidence(self) -> float | None:
        """The winner's share of the valid weight (None when there is no winner)."""
        if self.answer is None or self.valid_weight <= 0:
            return None
        return self.weights[self.answer] / self.valid_weight

    @property
    def agreement(self) -> float:
        """The leader's share of every ballot's weight; 0 for an unbroken tie or no vote."""
        if self.answer is None or self.total_weight <= 0:
            return 0.0
        return self.weights[self.answer] / self.total_weight


class VotingRule:
    """Base rule: ballots are weighed by :meth:`weight`; the heaviest label leads."""

    name = "rule"

    def __init__(self, tie_break: str = "none",
                 rating_of: Callable[[str], float] | None = None) -> None:
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}")
        self.tie_break = tie_break
        self.rating_of = rating_of or (lambda model: 0.0)

    def weight(self, model: str) -> float:
        return 1.0

    def ballot(self, model: str, answer: str | None, position: int = 0) -> Ballot:
        return Ballot(model, answer, self.weight(model), position)

    def decide(self, ballots: Sequence[Ballot], labels: Sequence[str]) -> Tally:
        counts: dict[str, int] = {}
        weights: dict[str, float] = {}
        total = 0.0
        for b in ballots:
            total += max(0.0, b.weight)
            if b.answer is not None and b.answer in labels:
                counts[b.answer] = counts.get(b.answer, 0) + 1
                weights[b.answer] = weights.get(b.answer, 0.0) + max(0.0, b.weight)
        tally = Tally(None, None, counts, weights, sum(counts.values()), sum(weights.values()), total)
        if not weights:
            return tally
        top = max(weights.values())
        tied = [lab for lab in labels if lab in weights and abs(weights[lab] - top) <= 1e-12]
        if len(tied) == 1:
            tally.answer = tally.leader = tied[0]
            return tally
        tally.tied = tied
        winner = self.break_tie(tied, ballots)
        if winner is not None:
            tally.answer = tally.leader = winner
            tally.tie_broken_by = self.tie_break
        return tally

    def break_tie(self, tied: Sequence[str], ballots: Sequence[Ballot]) -> str | None:
        """Deterministic: never arrival order. ``order`` = the panel's listed order."""
        if self.tie_break == "none":
            return None
        backers = [b for b in ballots if b.answer in tied]
        if self.tie_break == "rating":
            backers.sort(key=lambda b: (-self.rating_of(b.model), b.position))
        else:
            backers.sort(key=lambda b: b.position)
        return backers[0].answer if backers else None

    def can_decide_early(self, ballots: Sequence[Ballot], labels: Sequence[str],
                         pending: Sequence[float], threshold: float | None = None) -> bool:
        """True when the pending ballots (their weights) can no longer change the outcome.

        Without a threshold the outcome is the winner: the leader must be ahead of every other
        label by more than the pending weight. With a threshold (a cascade stage) the outcome is
        "accept the leader" or "escalate": settled when the leader is certain and its agreement
        already reaches the threshold whatever the pending ballots say, or when not even
        all pending ballots joining the best label could reach it.
        """
        if not pending:
            return False
        tally = self.decide(ballots, labels)
        rest = sum(max(0.0, w) for w in pending)
        weights = tally.weights
        if threshold is None:
            if tally.leader is None or tally.tied:
                return False
            best_other = max((w for lab, w in weights.items() if lab != tally.leader), default=0.0)
            return weights[tally.leader] > best_other + rest + 1e-12
        total = tally.total_weight + rest
        if total <= 0:
            return False
        best = max(weights.values(), default=0.0)
        if (best + rest) / total < threshold - 1e-12:
            return True  # escalate: nobody can reach the threshold any more
        if tally.leader is not None and not tally.tied:
            best_other = max((w for lab, w in weights.items() if lab != tally.leader), default=0.0)
            certain = weights[tally.leader] > best_other + rest + 1e-12
            return certain and weights[tally.leader] / total >= threshold - 1e-12
        return False


class Majority(VotingRule):
    """One member, one vote."""

    name = "majority"


class Weighted(VotingRule):
    """Reliability-weighted agreement: each ballot weighs its model's estimated accuracy."""

    name = "weighted"

    def __init__(self, reliability: Mapping[str, float], default: float = 0.6,
                 tie_break: str = "none", rating_of: Callable[[str], float] | None = None) -> None:
        super().__init__(tie_break, rating_of)
        self.reliability = dict(reliability)
        self.default = default

    def weight(self, model: str) -> float:
        return max(0.0, float(self.reliability.get(model, self.default)))


def rule_for(signal: str, *, reliability: Mapping[str, float] | None = None,
             tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
             default_reliability: float = 0.6) -> VotingRule:
    """The rule behind a confidence signal name (``agreement``/``votes``/``weighted``)."""
    if signal == "weighted":
        return Weighted(reliability or {}, default_reliability, tie_break, rating_of)
    return Majority(tie_break, rating_of)
