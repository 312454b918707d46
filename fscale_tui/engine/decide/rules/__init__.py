"""Voting rules: how ballots become a decision, and when the decision can be made early.

One interface, four rules, used by ``scale`` (every member's vote) and by the ``-k auto``
cascade (each stage's confidence against its threshold):

``Majority``            one vote per member; a final tie is no decision, or is broken by
                        ``tie_break = "order"`` (the panel's listed order) or ``"rating"``
                        (the higher-rated backer) — never by arrival order.
``Weighted``            reliability-weighted agreement: a ballot weighs its model's estimated
                        accuracy on this kind of prompt (1 − Ψ from the router's profile).
``Posterior``           naive-Bayes posterior under the one-coin model: a model with reliability
                        r is right with probability r and otherwise picks one of the other
                        labels at random; a ballot weighs its log-odds log(r·(L−1)/(1−r)), and
                        ``agreement``/``confidence`` are P(leader is right | ballots).

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

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ...base.calls import TIE_BREAKS



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
    #: ``Posterior`` only: P(the winner is right | ballots), what both shares report.
    posterior: float | None = None

    @property
    def support(self) -> float:
        return self.weights.get(self.leader, 0.0) if self.leader is not None else 0.0

    @property
    def confidence(self) -> float | None:
        """The winner's share of the valid weight (None when there is no winner)."""
        if self.answer is None or self.valid_weight <= 0:
            return None
        if self.posterior is not None:
            return self.posterior
        return self.weights[self.answer] / self.valid_weight

    @property
    def agreement(self) -> float:
        """The leader's share of every ballot's weight; 0 for an unbroken tie or no vote."""
        if self.answer is None or self.total_weight <= 0:
            return 0.0
        if self.posterior is not None:
            return self.posterior
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


#: ``Posterior``: errors spread over at most this many other labels + 1 by default.
DEFAULT_SPREAD = 10.0
#: Reliabilities are kept inside [chance + ε, RELIABILITY_CAP]: a model no better than chance
#: carries no evidence (weight ~0), and no profile makes a model infallible.
RELIABILITY_CAP = 0.99


class Posterior(VotingRule):
    """P(label | ballots) under the one-coin model, from per-model reliabilities.

    With L effective labels (``min(len(labels), spread)``: wrong answers of real models
    concentrate on a few distractors, ``spread`` says on how many), a ballot of a model with
    reliability r for label l multiplies l's odds by r·(L−1)/(1−r); no answer is no evidence.
    So P(l | ballots) = exp(s_l) / (Σ_voted exp(s) + max(0, L − #voted labels)) with s_l the
    summed log-odds weights behind l. One ballot gives P = r; two reliable models agreeing
    give a high posterior; a disagreement lowers it. The winner is the label with the highest
    score (the more reliable backer wins a 1–1 split); ``agreement`` = ``confidence`` = its
    posterior, which a stage compares with its stopping threshold.
    """

    name = "posterior"

    def __init__(self, reliability: Mapping[str, float], default: float = 0.6,
                 tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
                 spread: float = DEFAULT_SPREAD, labels: int | None = None,
                 families: Mapping[str, str] | None = None, family_rho: float = 0.0) -> None:
        super().__init__(tie_break, rating_of)
        if spread < 2:
            raise ValueError("spread must be at least 2 labels")
        if not 0.0 <= family_rho < 1.0:
            raise ValueError("family_rho must be in [0, 1)")
        self.reliability = dict(reliability)
        self.default = default
        self.spread = float(spread)
        #: The number of labels when known in advance (``weight`` needs it before ``decide``).
        self.labels = labels
        #: Correlated families: the ballots of one family for one label count as the heaviest
        #: one plus (1 − ρ) of the others (ρ = 0: every ballot counts in full).
        self.families = dict(families or {})
        self.family_rho = float(family_rho)

    def effective_labels(self, labels: int | None = None) -> float:
        n = labels if labels is not None else self.labels
        return min(float(n), self.spread) if n else self.spread

    def weight(self, model: str, labels: int | None = None) -> float:
        """The log-odds a ballot of ``model`` adds to its label (≥ 0)."""
        big_l = self.effective_labels(labels)
        r = float(self.reliability.get(model, self.default))
        r = min(RELIABILITY_CAP, max(1.0 / big_l + 1e-3, r))
        return math.log(r * (big_l - 1) / (1 - r))

    def ballot(self, model: str, answer: str | None, position: int = 0) -> Ballot:
        return Ballot(model, answer, self.weight(model), position)

    def discounted(self, ballots: Sequence[Ballot]) -> list[Ballot]:
        """Per (family, label), the heaviest ballot keeps its weight and the others keep
        (1 − ρ) of theirs (order-independent; ballots without an answer are unchanged)."""
        heaviest: dict[tuple[str, str], int] = {}
        for i, b in enumerate(ballots):
            if b.answer is None:
                continue
            key = (self.families.get(b.model, b.model), b.answer)
            j = heaviest.get(key)
            if j is None or b.weight > ballots[j].weight:
                heaviest[key] = i
        keep = set(heaviest.values())
        return [b if b.answer is None or i in keep
                else Ballot(b.model, b.answer, (1 - self.family_rho) * b.weight, b.position)
                for i, b in enumerate(ballots)]

    def posterior_of(self, label: str | None, weights: Mapping[str, float], n_labels: int) -> float:
        if label is None or label not in weights:
            return 0.0
        big_l = self.effective_labels(n_labels)
        top = max(weights.values())
        z = sum(math.exp(w - top) for w in weights.values())
        z += max(0.0, big_l - len(weights)) * math.exp(-top)
        return math.exp(weights[label] - top) / z

    def decide(self, ballots: Sequence[Ballot], labels: Sequence[str]) -> Tally:
        # Weighed for this label set (a ballot made before the labels were known may not be).
        ballots = [Ballot(b.model, b.answer, self.weight(b.model, len(labels)), b.position)
                   for b in ballots]
        if self.family_rho > 0 and self.families:
            ballots = self.discounted(ballots)
        tally = super().decide(ballots, labels)
        if tally.answer is not None:
            tally.posterior = self.posterior_of(tally.answer, tally.weights, len(labels))
        return tally

    def can_decide_early(self, ballots: Sequence[Ballot], labels: Sequence[str],
                         pending: Sequence[float], threshold: float | None = None) -> bool:
        """Settled when no way the pending ballots can vote changes the outcome.

        The weights are non-negative and the posterior is a ratio of sums of exponentials, so
        the worst case for the leader is every pending ballot backing its strongest rival (an
        existing label or a new one) and the best case for any label is every pending ballot
        backing it: two scenarios per label decide both "accept" and "escalate" exactly.
        """
        if not pending or self.labels != len(labels):
            return False  # pending weights were made for another label set: wait (always safe)
        tally = self.decide(ballots, labels)
        rest = sum(max(0.0, w) for w in pending)
        weights = dict(tally.weights)
        n = len(labels)
        new = next((lab for lab in labels if lab not in weights), None)
        candidates = list(weights) + ([new] if new is not None else [])

        def with_rest(label: str) -> dict[str, float]:
            w = dict(weights)
            w[label] = w.get(label, 0.0) + rest
            return w

        if threshold is None:
            if tally.leader is None or tally.tied:
                return False
            best_other = max((w for lab, w in weights.items() if lab != tally.leader), default=0.0)
            return weights[tally.leader] > best_other + rest + 1e-12
        # Escalate: not even every pending ballot joining one label brings it to the threshold.
        best_case = max((self.posterior_of(lab, with_rest(lab), n) for lab in candidates),
                        default=0.0)
        if best_case < threshold - 1e-12:
            return True
        # Accept: the leader stays ahead and above the threshold whoever the rest back.
        if tally.leader is None or tally.tied:
            return False
        leader = tally.leader
        for rival in (lab for lab in candidates if lab != leader):
            w = with_rest(rival)
            if w[rival] >= w[leader] - 1e-12 or self.posterior_of(leader, w, n) < threshold - 1e-12:
                return False
        return True


def rule_for(signal: str, *, reliability: Mapping[str, float] | None = None,
             tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
             default_reliability: float = 0.6, spread: float = DEFAULT_SPREAD,
             labels: int | None = None) -> VotingRule:
    """The rule behind a confidence signal name (``agreement``/``votes``/``weighted``/
    ``posterior``)."""
    if signal == "weighted":
        return Weighted(reliability or {}, default_reliability, tie_break, rating_of)
    if signal == "posterior":
        return Posterior(reliability or {}, default_reliability, tie_break, rating_of,
                         spread=spread, labels=labels)
    return Majority(tie_break, rating_of)
