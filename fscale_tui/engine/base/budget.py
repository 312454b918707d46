"""Budgets people can read: ``--budget 0.7x``, ``--budget 0.002`` (design §8 "Spend").

A budget is the most an item may cost on average, stated either

- relative to the best single model (``0.7x``: 70 % of what asking the most accurate profiled
  model costs per item), or
- in USD per item (``0.002``, ``$0.002``, ``0.002usd``).

``fscale calibrate --budget`` kept its older meaning (calls per item, ``2``); it also takes
``2calls``, and the two forms above. Pure: no numpy, so the CLI can parse and reject a bad
budget before anything is loaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .settings import Settings

KINDS = ("relative", "usd", "calls")
_FORM = re.compile(r"^\s*\$?\s*(?P<num>\d+(?:\.\d*)?|\.\d+)(?:e(?P<exp>[-+]?\d+))?\s*"
                   r"(?P<unit>x|usd|\$|calls?|c)?\s*$", re.IGNORECASE)
HINT = "write 0.7x (relative to the best single model) or 0.002 (USD per item)"


@dataclass(frozen=True)
class Budget:
    """``value`` in ``kind`` units: a multiple of the best single model's price per item
    (``relative``), USD per item (``usd``) or model calls per item (``calls``)."""

    kind: str
    value: float
    text: str

    def amount(self, best_single_cost: float, unit: str) -> float:
        """The budget in the unit of the profile's prices (``usd``, or ``calls`` when no model
        has a price): what a plan's expected cost per item is compared with."""
        if self.kind == "relative":
            return self.value * best_single_cost
        if self.kind != unit:
            if self.kind == "usd":
                raise UsageError(f"--budget {self.text}: no profiled model has a price ('cost' in "
                                 "[models.X]), so spend is counted in calls: write a relative "
                                 "budget such as 0.7x")
            raise UsageError(f"--budget {self.text}: a budget in calls only applies to "
                             f"'fscale calibrate'; {HINT}")
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.text, "kind": self.kind, "value": self.value}


def parse_budget(text: Any, *, bare: str = "usd", option: str = "--budget") -> Budget:
    """Parse a budget; a bare number is ``bare`` (USD per item; ``calls`` for ``calibrate``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(float(text))
    raw = str(text).strip()
    match = _FORM.match(raw)
    if not match:
        raise UsageError(f"{option} {raw!r}: {HINT}")
    value = float(match.group("num")) * (10.0 ** int(match.group("exp") or 0))
    unit = (match.group("unit") or "").lower()
    if raw.startswith("$") or unit in ("usd", "$"):
        kind = "usd"
    elif unit == "x":
        kind = "relative"
    elif unit in ("call", "calls", "c"):
        kind = "calls"
    else:
        kind = bare
    if value <= 0:
        raise UsageError(f"{option} {raw!r} must be more than 0; {HINT}")
    if kind == "calls" and value < 1:
        raise UsageError(f"{option} is in calls per item here: at least 1, not {raw!r} "
                         "(or 0.7x / $0.002 for a price)")
    return Budget(kind, value, raw)


#: The environment twin of ``[routing] budget``.
BUDGET_ENV = "FSCALE_BUDGET"


def configured_budget(settings: Settings) -> Budget | None:
    """The budget from ``FSCALE_BUDGET`` or config.toml's ``[routing] budget`` (the
    environment wins); None when neither is set."""
    env = (getattr(settings, "env", {}) or {}).get(BUDGET_ENV)
    if env not in (None, ""):
        return parse_budget(env, option=BUDGET_ENV)
    table = (getattr(settings, "user_config", {}) or {}).get("routing") or {}
    value = table.get("budget") if isinstance(table, dict) else None
    if value in (None, ""):
        return None
    return parse_budget(value, option="config.toml [routing] budget")
