"""evolve: propose the champion panel from ratings, show the diff, write it to config.toml.

The proposal (:func:`propose_panel`) takes the best-rated models that have enough evidence
(``min_calls`` logged calls), one per family first so the panel's errors stay independent, then
fills any seat left with the next best regardless of family. Seats that no qualified model can
fill keep their current member. A current member is only replaced by a model rated at least
``margin`` points higher, so the panel does not flap between near-equal models.

``apply_panel`` writes ``[panels] NAME = [...]`` with ``config.update_user_config`` (atomic,
under the cross-process lock); the registry reads that panel on the next ``scale``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .ratings import ModelRating

DEFAULT_MIN_CALLS = 30
DEFAULT_MARGIN = 10.0


@dataclass
class PanelProposal:
    name: str
    current: list[str]
    proposed: list[str]
    ratings: dict[str, ModelRating] = field(default_factory=dict)
    min_calls: int = DEFAULT_MIN_CALLS
    applied: bool = False

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
        return r.to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {"panel": self.name, "current": self.current, "proposed": self.proposed,
                "added": [self.evidence(m) for m in self.added],
                "removed": [self.evidence(m) for m in self.removed],
                "kept": [self.evidence(m) for m in self.proposed if m in self.current],
                "changed": self.changed, "applied": self.applied, "min_calls": self.min_calls}


def propose_panel(ratings: Mapping[str, ModelRating], current: Sequence[str], *,
                  candidates: Sequence[str], family_of: Callable[[str], str], size: int | None = None,
                  min_calls: int = DEFAULT_MIN_CALLS, margin: float = DEFAULT_MARGIN,
                  name: str = "default") -> PanelProposal:
    """The champion panel of ``size`` seats (default: the current panel's size).

    ``candidates`` are the models that may sit on the panel (usable, not down); only those with
    at least ``min_calls`` logged calls qualify. Current members get a ``margin`` bonus so a
    challenger must be clearly better to take a seat.
    """
    size = size or len(current) or 3
    cur = list(dict.fromkeys(current))

    def score(m: str) -> float:
        r = ratings.get(m)
        base = r.rating if r is not None else float("-inf")
        return base + (margin if m in cur else 0.0)

    qualified = [m for m in dict.fromkeys(candidates)
                 if (ratings.get(m) is not None and ratings[m].calls >= min_calls)]
    ranked = sorted(qualified, key=lambda m: (-score(m), m))
    chosen: list[str] = []
    families: set[str] = set()
    for diverse_only in (True, False):
        for m in ranked:
            if len(chosen) == size:
                break
            fam = family_of(m) or m
            if m in chosen or (diverse_only and fam in families):
                continue
            chosen.append(m)
            families.add(fam)
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
                         ratings=dict(ratings), min_calls=min_calls)


def apply_panel(settings: Any, proposal: PanelProposal) -> None:
    """Write the proposed panel to config.toml (atomic, locked read-modify-write)."""
    from ..config import update_user_config

    def change(doc: dict[str, Any]) -> None:
        panels = doc.setdefault("panels", {})
        panels[proposal.name] = list(proposal.proposed)

    update_user_config(settings.paths, change)
    proposal.applied = True
