"""``fscale tui``: the Textual app (not yet available). Textual is imported only here, lazily."""

from __future__ import annotations

import typer

from .common import not_yet_available


def register(app: typer.Typer) -> None:
    not_yet_available(app, "tui", "Interactive terminal UI: live votes, health, ratings, panels, history")
