"""Help: the key bindings of the app and of every screen."""

from __future__ import annotations

import importlib

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

INTRO = ("fscale asks several models at once and lets the engine decide: every screen only "
         "shows what the engine reports. ctrl+p opens the command palette (every action is "
         "there); F1 shows this help.")


def bindings_text(app) -> str:
    """Markup listing the global bindings, then each screen's."""
    from . import SCREENS

    def lines(bindings) -> list[str]:
        out = []
        for b in bindings:
            if isinstance(b, Binding) and b.description:
                keys = ", ".join(k.strip() for k in b.key.split(","))
                out.append(f"  [b]{escape(keys):<12}[/b] {escape(b.description)}")
        return out

    parts = [INTRO, "", "[b u]everywhere[/b u]", *lines(type(app).BINDINGS),
             "  [b]ctrl+p      [/b] command palette (every action)"]
    for entry in SCREENS.values():
        screen = getattr(importlib.import_module(f"fscale_tui.screens.{entry.module}"), entry.cls)
        parts += ["", f"[b u]{escape(entry.title)}[/b u]",
                  *(lines(screen.BINDINGS) or ["  (no keys)"])]
    return "\n".join(parts)


class HelpScreen(ModalScreen[None]):
    """Every key binding, per screen (Esc or F1 closes)."""

    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide", id="help"):
            yield Static(bindings_text(self.app))
