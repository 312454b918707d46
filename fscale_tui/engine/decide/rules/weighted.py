"""``weighted``: reliability-weighted agreement (each ballot weighs its model's estimated
accuracy on this kind of prompt, 1 − Ψ from the router's profile)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import RuleOptions, VotingRule, register


@register("weighted")
class Weighted(VotingRule):
    """Reliability-weighted agreement: each ballot weighs its model's estimated accuracy."""

    order = 20

    @classmethod
    def build(cls, options: RuleOptions) -> Weighted:
        return cls(options.reliability, options.default_reliability, options.tie_break,
                   options.rating_of)

    def __init__(self, reliability: Mapping[str, float], default: float = 0.6,
                 tie_break: str = "none", rating_of: Callable[[str], float] | None = None) -> None:
        super().__init__(tie_break, rating_of)
        self.reliability = dict(reliability)
        self.default = default

    def weight(self, model: str) -> float:
        return max(0.0, float(self.reliability.get(model, self.default)))
