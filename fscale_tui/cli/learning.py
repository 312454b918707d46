"""Learning from deployment: evolve, feedback, ratings, history (not yet available)."""

from __future__ import annotations

import typer

from .common import not_yet_available


def register(app: typer.Typer) -> None:
    not_yet_available(app, "evolve", "Propose (and apply) the champion panel from ratings")
    not_yet_available(app, "feedback", "Confirm, reject or override a past call's decision")
    not_yet_available(app, "ratings", "Model ratings from consensus and feedback")
    not_yet_available(app, "history", "Past calls from the call log")
