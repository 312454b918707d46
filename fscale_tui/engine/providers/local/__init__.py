"""The ``local`` provider type: embedded GGUF models served by llama.cpp (see ``provider.py``)."""

from .provider import (CONTINUATION, DEFAULT_PANEL, EMBEDDINGS, MODEL_OPTIONS, PROVIDER_OPTIONS,
                       SHARES_CPU, TYPE, builtins, make_adapter, usable, what_to_do, why_not)

__all__ = ["TYPE", "PROVIDER_OPTIONS", "MODEL_OPTIONS", "DEFAULT_PANEL", "SHARES_CPU",
           "CONTINUATION", "EMBEDDINGS", "builtins", "make_adapter", "usable", "what_to_do",
           "why_not"]
