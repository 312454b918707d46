"""Typed messages the TUI passes between its workers and its widgets."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvent(Message):
    """One engine event (``fscale_tui.engine.events``) for the screen that started the run.

    ``run`` numbers the runs of one screen so that late events of a superseded run are dropped.
    """

    def __init__(self, event: Any, run: int) -> None:
        super().__init__()
        self.event = event
        self.run = run


class SettingsChanged(Message):
    """config.toml changed (a panel was edited): screens re-read panels and models."""
