"""``posterior``: P(label | ballots) under the one-coin model, from per-model reliabilities
(what the adaptive ``-k auto`` stops on; ``routing/planner.py`` has its vectorised twin)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from . import DEFAULT_SPREAD, RELIABILITY_CAP, Ballot, RuleOptions, Tally, VotingRule, register


@register("posterior")
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

    order = 30

    @classmethod
    def build(cls, options: RuleOptions) -> Posterior:
        return cls(options.reliability, options.default_reliability, options.tie_break,
                   options.rating_of, spread=options.spread, labels=options.labels)

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
