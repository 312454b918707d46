"""``fscale generate``: best-of-k and test-time search strategies (not yet available)."""

from __future__ import annotations

import typer

from .common import not_yet_available


def register(app: typer.Typer) -> None:
    not_yet_available(app, "generate", "Generate k answers and let judges from other families pick the best")
