"""Finding the members of a registry: every module of a package, imported once.

The extension points (provider types, voting rules, generate strategies) are packages whose
modules register themselves when imported; their registry calls :func:`load_package` on first
use, so adding a member is one new module (plus its tests) and no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection, Iterable
from types import ModuleType


def load_package(name: str, path: Iterable[str], skip: Collection[str] = ()) -> list[ModuleType]:
    """Import every module of package ``name`` (its ``__path__``), but those in ``skip``."""
    return [importlib.import_module(f"{name}.{info.name}")
            for info in pkgutil.iter_modules(list(path)) if info.name not in skip]
