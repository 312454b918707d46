"""Textual screens, one per view (Ask, Generate, Health, Ratings, Panels, History, Profile,
Help).

A module of this package is a screen of the app when it declares itself at the top level::

    SCREEN = {"mode": "ask", "class": "AskScreen", "key": "f2", "label": "Ask",
              "title": "Ask / verify: live votes"}

(``"footer": False`` keeps its key out of the footer.) :data:`SCREENS` is read from those
declarations without importing the modules — each screen is imported only when first shown —
and is the one list of screens: the app's modes and F-key bindings, the footer, the help
screen, the command palette and ``fscale tui --screen`` read it. Adding a screen is one module
here (plus its test).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_DECLARATION = re.compile(r"^SCREEN = ", re.M)


@dataclass(frozen=True)
class ScreenEntry:
    mode: str  # the app's mode name (``switch_mode``)
    module: str  # the module under fscale_tui.screens
    cls: str  # the FscaleScreen subclass in it
    key: str  # its F-key
    label: str  # the footer's word for it
    title: str  # the palette's and the help screen's line
    footer: bool = True


def _declared(text: str) -> dict[str, object] | None:
    """The module's ``SCREEN = {...}`` literal, or None when it declares none."""
    found = _DECLARATION.search(text)
    if found is None:
        return None
    lines = text[found.end():].split("\n")
    for n in range(1, len(lines) + 1):
        try:
            value = ast.literal_eval("\n".join(lines[:n]))
        except SyntaxError:
            continue
        return value if isinstance(value, dict) else None
    return None


def scan(path: Iterable[str] | None = None) -> dict[str, ScreenEntry]:
    """Every declared screen of the package's folders (``path``: its ``__path__``), in F-key
    order (F2, F3, … F10)."""
    entries = []
    for folder in path if path is not None else __path__:
        for file in sorted(Path(folder).glob("*.py")):
            declared = _declared(file.read_text(encoding="utf-8"))
            if declared is not None:
                entries.append(ScreenEntry(
                    mode=str(declared["mode"]), module=file.stem, cls=str(declared["class"]),
                    key=str(declared["key"]), label=str(declared["label"]),
                    title=str(declared["title"]), footer=bool(declared.get("footer", True))))
    entries.sort(key=lambda e: (len(e.key), e.key))
    return {e.mode: e for e in entries}


#: mode name -> its screen, in F-key order.
SCREENS: dict[str, ScreenEntry] = scan()
