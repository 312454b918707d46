"""``fscale local``: the embedded local model servers (not yet available)."""

from __future__ import annotations

import typer

from .common import not_yet_available


def register(app: typer.Typer) -> None:
    not_yet_available(app, "local", "Status, start and stop of the embedded local model servers")
