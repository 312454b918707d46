"""evolve: propose the champion panel from the evidence, show the diff, write it to config.toml.

The proposal (:func:`propose_panel`) takes the best models that have enough evidence
(``min_calls`` rated replies), seat by seat; a model whose family already holds a seat counts
``family_margin`` (:data:`FAMILY_MARGIN`, per seat its family holds) less. The old rule, "one
per family first", cost the MMLU-Pro replay's best panel: gemini-1.5-flash beside
gemini-1.5-pro beats any other third member by 1.4 points, and the rule seated a model 16
points worse. Seats that no qualified model can fill keep their current member. A current member is only replaced by a clearly better model
(by ``margin``), so the panel does not flap between near-equal models.

"Best" is the label-free accuracy estimate (:mod:`.reliability`, Dawid–Skene over the call log)
when ``estimates`` are given — the engine always gives them: its lower bound ``mean − z·sd``,
so a model with little evidence does not take a seat on one lucky streak, and ``margin`` is in
accuracy (:data:`ACCURACY_MARGIN`, one point). Without estimates (older callers) it is the Elo
rating, ``margin`` in rating points. The Elo ratings stay in the proposal for display.

``apply_panel`` writes ``[panels] NAME = [...]`` with ``config.update_user_config`` (atomic,
under the cross-process lock); the registry reads that panel on the next ``scale``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ratings import ModelRating
from .reliability import Estimate, Z

if TYPE_CHECKING:
    from ..base.settings import Settings

DEFAULT_MIN_CALLS = 30
DEFAULT_MARGIN = 10.0
#: A challenger must beat a member's lower bound by this much accuracy to take its seat.
ACCURACY_MARGIN = 0.01
#: What a seat already held by a model's family costs it (accuracy; Elo: × 400). 0: on the
#: tuning streams of bench/learning.py (seeds 100-104) every penalty seated worse panels — the
#: estimate already scores each model without its family's votes, so a family's shared
#: mistakes do not inflate it.
FAMILY_MARGIN = 0.0
#: Families a panel of two or more seats must span when a qualified model of another family
#: exists: a panel of one family is one voter (its members share their mistakes), the estimate
#: cannot score its calls, and on the tuning streams of bench/learning.py such panels locked
#: themselves in (all-Llama panels 12-22 points below the best with per-call random numbers).
#: 1: no rule.
MIN_FAMILIES = 2


@dataclass
class PanelProposal:
    name: str
    current: list[str]
    proposed: list[str]
    ratings: dict[str, ModelRating] = field(default_factory=dict)
    min_calls: int = DEFAULT_MIN_CALLS
    applied: bool = False
    #: The label-free estimates the proposal ranked by (empty: it ranked by Elo rating).
    estimates: dict[str, Estimate] = field(default_factory=dict)

    @property
    def added(self) -> list[str]:
        return [m for m in self.proposed if m not in self.current]

    @property
    def removed(self) -> list[str]:
        return [m for m in self.current if m not in self.proposed]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def evidence(self, model: str) -> dict[str, Any]:
        r = self.ratings.get(model) or ModelRating(model)
        e = self.estimates.get(model)
        return {**r.to_dict(), "estimate": None if e is None else e.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        return {"panel": self.name, "current": self.current, "proposed": self.proposed,
                "added": [self.evidence(m) for m in self.added],
                "removed": [self.evidence(m) for m in self.removed],
                "kept": [self.evidence(m) for m in self.proposed if m in self.current],
                "changed": self.changed, "applied": self.applied, "min_calls": self.min_calls,
                "ranked_by": "estimate" if self.estimates else "rating"}


def propose_panel(ratings: Mapping[str, ModelRating], current: Sequence[str], *,
                  candidates: Sequence[str], family_of: Callable[[str], str], size: int | None = None,
                  min_calls: int = DEFAULT_MIN_CALLS, margin: float | None = None,
                  name: str = "default", estimates: Mapping[str, Estimate] | None = None,
                  z: float = Z, family_margin: float | None = None) -> PanelProposal:
    """The champion panel of ``size`` seats (default: the current panel's size).

    ``candidates`` are the models that may sit on the panel (usable, not down); only those with
    at least ``min_calls`` rated replies qualify. With ``estimates`` the ranking is each model's
    accuracy lower bound (mean − ``z``·sd); without, its Elo rating. Current members get a
    ``margin`` bonus (default :data:`ACCURACY_MARGIN` / :data:`DEFAULT_MARGIN`) so a challenger
    must be clearly better to take a seat.
    """
    size = size or len(current) or 3
    cur = list(dict.fromkeys(current))
    est = dict(estimates or {})

    if est:
        bonus = ACCURACY_MARGIN if margin is None else margin
        same = FAMILY_MARGIN if family_margin is None else family_margin

        def value(m: str) -> float | None:
            e = est.get(m)
            return None if e is None else e.lower(z)

        def evidence(m: str) -> int:
            return est[m].replies if m in est else 0
    else:
        bonus = DEFAULT_MARGIN if margin is None else margin
        same = FAMILY_MARGIN * 400 if family_margin is None else family_margin

        def value(m: str) -> float | None:
            r = ratings.get(m)
            return None if r is None else r.rating

        def evidence(m: str) -> int:
            return ratings[m].calls if m in ratings else 0

    def score(m: str) -> float:
        base = value(m)
        return (float("-inf") if base is None else base) + (bonus if m in cur else 0.0)

    qualified = [m for m in dict.fromkeys(candidates)
                 if value(m) is not None and evidence(m) >= min_calls]
    ranked = sorted(qualified, key=lambda m: (-score(m), m))
    def family(m: str) -> str:
        return family_of(m) or m

    chosen: list[str] = []
    seats: dict[str, int] = {}  # family -> seats it holds
    while len(chosen) < size:
        best: tuple[float, str] | None = None
        # The last seat of a panel so far of one family goes to another family when one
        # qualifies.
        lone = (MIN_FAMILIES > 1 and size > 1 and len(chosen) == size - 1 and len(seats) == 1
                and any(family(m) not in seats for m in ranked))
        for m in ranked:
            if m in chosen or (lone and family(m) in seats):
                continue
            held = seats.get(family(m), 0)
            worth = score(m) - (same * held if held else 0.0)
            if best is None or worth > best[0]:
                best = (worth, m)
        if best is None:
            break
        chosen.append(best[1])
        seats[family(best[1])] = seats.get(family(best[1]), 0) + 1
    # Seats nobody qualified for keep their current holders (best-rated first).
    for m in sorted(cur, key=lambda m: -score(m) if score(m) != float("-inf") else 0.0):
        if len(chosen) >= size:
            break
        if m not in chosen:
            chosen.append(m)
    # Keep members that stay in their old seats, so the diff reads naturally.
    kept = [m for m in cur if m in chosen]
    new = [m for m in chosen if m not in cur]
    proposed: list[str] = []
    for m in cur:
        if m in kept:
            proposed.append(m)
        elif new:
            proposed.append(new.pop(0))
    proposed += new
    return PanelProposal(name=name, current=cur, proposed=proposed[:size],
                         ratings=dict(ratings), min_calls=min_calls, estimates=est)


def apply_panel(settings: Settings, proposal: PanelProposal) -> None:
    """Write the proposed panel to config.toml (atomic, locked read-modify-write)."""
    from ..catalog.config import update_user_config

    def change(doc: dict[str, Any]) -> None:
        panels = doc.setdefault("panels", {})
        panels[proposal.name] = list(proposal.proposed)

    update_user_config(settings.paths, change)
    proposal.applied = True
