"""profile, route and calibrate (not yet available)."""

from __future__ import annotations

import typer

from .common import not_yet_available


def register(app: typer.Typer) -> None:
    not_yet_available(app, "profile", "Profile models on a labelled task file")
    not_yet_available(app, "route", "Explain which model a question would be routed to")
    not_yet_available(app, "calibrate", "Calibrate cascade thresholds for a risk level")
