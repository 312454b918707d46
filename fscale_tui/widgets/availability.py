"""Features whose engine part may not have landed yet, and the notice shown in their place."""

from __future__ import annotations

import importlib.util

from textual.widgets import Static

#: feature -> the engine module it needs
FEATURE_MODULES = {
    "generate": "fscale_tui.engine.generate",
    "ratings": "fscale_tui.engine.learning.ratings",
    "calllog": "fscale_tui.engine.learning.calllog",
    "evolve": "fscale_tui.engine.learning.evolve",
}


def feature_available(feature: str) -> bool:
    """True when the engine module behind ``feature`` is installed (found without importing it)."""
    name = FEATURE_MODULES[feature]
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


class NotAvailable(Static):
    """A plain notice: this part of fscale is not available in this version yet."""

    DEFAULT_CLASSES = "not-available"

    def __init__(self, what: str, explanation: str = "", **kwargs) -> None:
        text = f"{what} is not available yet in this version."
        if explanation:
            text += f"\n\n{explanation}"
        super().__init__(text, **kwargs)
