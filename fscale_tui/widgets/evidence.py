"""How a model's evidence reads on screen: the label-free accuracy estimate (what decisions
follow: evolve, the shadow challengers, ``--tie-break rating``) with its uncertainty, beside
the Elo rating (shown for reference). The same text as ``fscale ratings``."""

from __future__ import annotations

from typing import Any


def accuracy_text(estimate: Any) -> str:
    """``"78.1% ±4.2%"``: the posterior mean and sd of P(a reply is right); ``"-"`` when the
    model has no rated reply yet. ``estimate`` is an ``Estimate`` or its ``to_dict()``."""
    if estimate is None:
        return "-"
    if isinstance(estimate, dict):
        accuracy, sd = estimate.get("accuracy"), estimate.get("sd")
    else:
        accuracy, sd = estimate.accuracy, estimate.sd
    if accuracy is None or sd is None:
        return "-"
    return f"{accuracy:.1%} ±{sd:.1%}"


def elo_text(rating: Any) -> str:
    """``"Elo 1532"`` (the Elo rating, for reference); ``"Elo -"`` when unrated."""
    value = rating.get("rating") if isinstance(rating, dict) else getattr(rating, "rating", None)
    return "Elo -" if value is None else f"Elo {value:.0f}"
