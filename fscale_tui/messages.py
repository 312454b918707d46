"""Typed messages the TUI passes between its workers and its widgets."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvent(Message):
    """One engine event (``fscale_tui.engine.base.events``) for the screen that started the run.

    ``run`` numbers the runs of one screen so that late events of a superseded run are dropped.
    """

    def __init__(self, event: Any, run: int) -> None:
        super().__init__()
        self.event = redacted(event)
        self.run = run


def redacted(event: Any) -> Any:
    """``event`` with every text field (and a challenger's vote) passed through the redactor:
    the TUI's side of the output boundary (``engine/output.py``). Results are rendered through
    ``widgets.votes.first_lines``, which redacts as well."""
    import dataclasses

    from .engine.base.redact import redact

    if not dataclasses.is_dataclass(event) or isinstance(event, type):
        return event
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str):
            clean = redact(value)
        elif f.name == "vote" and dataclasses.is_dataclass(value):  # ChallengerAnswered
            clean = redacted(value)
        else:
            continue
        if clean is not value and clean != value:
            changes[f.name] = clean
    return dataclasses.replace(event, **changes) if changes else event


class SettingsChanged(Message):
    """config.toml changed (a panel was edited): screens re-read panels and models."""
