"""What a feature may use of one engine: a small typed context, not the facade.

Routing (profiling, calibration), learning and the generate strategies are handed a
:class:`Context` by the Engine (``engine.context``): the settings, the registry (which models
exist and may be asked) and the one ask path. They never see the facade, so nothing below it
imports it and it can change without them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.settings import Settings
from ..catalog.registry import Registry
from .asker import Asker


@dataclass(frozen=True)
class Context:
    settings: Settings
    registry: Registry
    asker: Asker
