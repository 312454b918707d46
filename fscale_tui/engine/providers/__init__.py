"""Providers: every backend speaks the OpenAI chat API; a provider *type* is one module here.

A provider module (or package) in this folder defines::

    TYPE = "name"                          # what ``type = "name"`` in config.toml selects
    PROVIDER_OPTIONS = (...)               # extra keys it reads from [providers.X]
    MODEL_OPTIONS = (...)                  # extra keys it reads from [models.X]
    def usable(provider, env) -> bool      # can it be used here (key set, runtime installed)?
    def make_adapter(provider, settings)   # None for a plain HTTP endpoint, else an object with
                                           #   async base_url(model), and optionally transport
                                           #   (in-process httpx transport), extra_body(model,
                                           #   labels=, stream=), async list_models(), aclose()
    # optional:
    def builtins() -> (providers, models, panels)   # entries that exist without config.toml
    DEFAULT_PANEL = "name"                 # a built-in panel to fall back on when no key is set

This module is the one registry: it finds the provider modules of this package on first use,
so adding a provider type is one new module (plus its tests). Nothing else in the engine
special-cases a provider type.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType
from typing import Any

_TYPES: dict[str, ModuleType] | None = None


def provider_types() -> dict[str, ModuleType]:
    """type name -> provider module, for every provider module of this package."""
    global _TYPES
    if _TYPES is None:
        found: dict[str, ModuleType] = {}
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            kind = getattr(module, "TYPE", None)
            if kind:
                found[kind] = module
        _TYPES = found
    return _TYPES


def module_for(kind: str) -> ModuleType:
    from ..base.errors import ConfigError

    module = provider_types().get(kind)
    if module is None:
        raise ConfigError(f"unknown provider type {kind!r} (known: {', '.join(sorted(provider_types()))})")
    return module


def api_key(provider: Any, env: dict[str, str] | None = None) -> str | None:
    """The provider's key, read from the environment variable it names (never from a file)."""
    env = os.environ if env is None else env
    return env.get(provider.api_key_env) if provider.api_key_env else None


def usable(provider: Any, env: dict[str, str] | None = None) -> bool:
    return bool(module_for(provider.type).usable(provider, env))


def make_adapter(provider: Any, settings: Any) -> Any:
    return module_for(provider.type).make_adapter(provider, settings)


def option_keys() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(provider option keys, model option keys) that some provider type reads."""
    prov: list[str] = []
    model: list[str] = []
    for module in provider_types().values():
        prov += list(getattr(module, "PROVIDER_OPTIONS", ()))
        model += list(getattr(module, "MODEL_OPTIONS", ()))
    return tuple(dict.fromkeys(prov)), tuple(dict.fromkeys(model))


def builtins() -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:
    """Entries every provider type contributes without config.toml."""
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    panels: dict[str, list[str]] = {}
    for module in provider_types().values():
        hook = getattr(module, "builtins", None)
        if hook is not None:
            p, m, pan = hook()
            providers.update(p)
            models.update(m)
            panels.update(pan)
    return providers, models, panels


def fallback_panels() -> list[tuple[str, str]]:
    """(provider, panel) pairs tried after the key-based built-in panels (e.g. local models)."""
    out = []
    for module in provider_types().values():
        panel = getattr(module, "DEFAULT_PANEL", None)
        if panel:
            out.append((module.TYPE, panel))
    return out
