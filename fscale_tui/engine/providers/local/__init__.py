"""The ``local`` provider type: embedded GGUF models served by llama.cpp (see ``provider.py``)."""

from .provider import (DEFAULT_PANEL, MODEL_OPTIONS, PROVIDER_OPTIONS, TYPE, builtins,
                       make_adapter, usable)

__all__ = ["TYPE", "PROVIDER_OPTIONS", "MODEL_OPTIONS", "DEFAULT_PANEL", "builtins",
           "make_adapter", "usable"]
