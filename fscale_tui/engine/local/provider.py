"""The ``local`` provider: placeholder until the embedded models land (issue: embedded default).

Importing this module must never fail, with or without the ``[local]`` extra installed.
"""

from __future__ import annotations

from typing import Any


def builtin_providers() -> dict[str, Any]:
    return {}


def builtin_models() -> dict[str, Any]:
    return {}


def builtin_panels() -> dict[str, list[str]]:
    return {}


def is_installed(provider: Any = None) -> bool:
    return False
