"""Voting rules: how ballots become a decision, and when the decision can be made early.

One interface (:class:`VotingRule`) and one registry: a rule is a module of this package with a
``@register("name", ...)`` subclass, found on first use, so adding a rule is one module (plus
its tests). ``scale -k N`` votes with ``rule_for("majority")``; a ``-k auto`` stage with the
rule of its confidence signal (``--signal``: :func:`signals`). The rules of this package:

``majority``            one vote per member (signals ``agreement``, ``votes``); a final tie is
                        no decision, or is broken by ``tie_break = "order"`` (the panel's listed
                        order) or ``"rating"`` (the higher-rated backer) — never by arrival order.
``weighted``            reliability-weighted agreement: a ballot weighs its model's estimated
                        accuracy on this kind of prompt (1 − Ψ from the router's profile).
``posterior``           naive-Bayes posterior under the one-coin model: a model with reliability
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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ...base.calls import TIE_BREAKS
from ...base.plugins import load_package

#: ``Posterior``: errors spread over at most this many other labels + 1 by default.
DEFAULT_SPREAD = 10.0
#: Reliabilities are kept inside [chance + ε, RELIABILITY_CAP]: a model no better than chance
#: carries no evidence (weight ~0), and no profile makes a model infallible.
RELIABILITY_CAP = 0.99


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
    #: where its signals come in ``--signal``'s choices (lower first)
    order = 100

    @classmethod
    def build(cls, options: RuleOptions) -> VotingRule:
        """The rule for one call or stage (subclasses with parameters override this)."""
        return cls(options.tie_break, options.rating_of)

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


#: What builds a rule for a call or a stage (every rule takes these; each uses what it needs).
@dataclass(frozen=True)
class RuleOptions:
    reliability: Mapping[str, float] = field(default_factory=dict)
    tie_break: str = "none"
    rating_of: Callable[[str], float] | None = None
    default_reliability: float = 0.6
    spread: float = DEFAULT_SPREAD
    labels: int | None = None


R = TypeVar("R", bound=type[VotingRule])

#: rule or signal name -> the rule class (filled by :func:`register` as the modules load)
_REGISTRY: dict[str, type[VotingRule]] = {}
#: signal name -> the rule class, in registration order (``--signal`` choices)
_SIGNALS: dict[str, type[VotingRule]] = {}
_LOADED = False


def register(name: str, *, signals: Sequence[str] = ()) -> Callable[[R], R]:
    """Register a :class:`VotingRule` subclass as ``name`` and as the rule of ``signals`` (the
    ``-k auto`` confidence signals it computes; its own name when none is given)."""
    def wrap(cls: R) -> R:
        cls.name = name
        _REGISTRY[name] = cls
        for signal in signals or (name,):
            _REGISTRY[signal] = cls
            _SIGNALS[signal] = cls
        return cls

    return wrap


def rules() -> dict[str, type[VotingRule]]:
    """Every registered rule and signal name (importing this package's modules once)."""
    global _LOADED
    if not _LOADED:
        load_package(__name__, __path__)
        _LOADED = True
    return dict(_REGISTRY)


def signals() -> tuple[str, ...]:
    """The confidence signals a ``-k auto`` stage may use (``--signal``), in the registry's
    order (the rules of this package first: majority, weighted, posterior)."""
    rules()
    return tuple(sorted(_SIGNALS, key=lambda s: (_SIGNALS[s].order, list(_SIGNALS).index(s))))


def rule_for(signal: str, *, reliability: Mapping[str, float] | None = None,
             tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
             default_reliability: float = 0.6, spread: float = DEFAULT_SPREAD,
             labels: int | None = None) -> VotingRule:
    """The rule behind a rule or confidence signal name (``majority``, ``agreement``,
    ``votes``, ``weighted``, ``posterior``, or a rule a module of this package registers)."""
    known = rules()
    cls = known.get(signal, known["majority"])
    return cls.build(RuleOptions(reliability or {}, tie_break, rating_of, default_reliability,
                                 spread, labels))
