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
    def why_not(provider, env) -> str      # why it cannot be used here, in a few words
    def what_to_do(provider, env) -> str   # what would make it usable (after "needs ...: ")
    SHARES_CPU = True                      # its models run on this machine's CPU: shadow votes
                                           #   wait for the decision, and only a panel of such
                                           #   models takes them as shadows
    CONTINUATION = "mode"                  # how step search continues a partial answer
    NEEDS_BASE_URL = True                  # [providers.X] must give base_url
    TAKES_TASK_ID = True                   # requests carry the task id (``calls.TASK_ID_FIELD``
                                           #   in ``metadata``; real APIs may reject it)
    EMBEDDINGS = object                    # embedding servers (``--embedding local:<alias>``):
                                           #   see :class:`EmbeddingHooks`

This module is the one registry: it finds the provider modules of this package on first use,
so adding a provider type is one new module (plus its tests). Nothing else in the engine
special-cases a provider type: what differs is asked through the functions below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, Protocol

from ..base.errors import ConfigError
from ..base.plugins import load_package
from ..base.settings import ModelConfig, ProviderConfig, Settings

_TYPES: dict[str, ModuleType] | None = None


def provider_types() -> dict[str, ModuleType]:
    """type name -> provider module, for every provider module of this package."""
    global _TYPES
    if _TYPES is None:
        found: dict[str, ModuleType] = {}
        for module in load_package(__name__, __path__):
            kind = getattr(module, "TYPE", None)
            if kind:
                found[kind] = module
        _TYPES = found
    return _TYPES


def module_for(kind: str) -> ModuleType:
    module = provider_types().get(kind)
    if module is None:
        raise ConfigError(f"unknown provider type {kind!r} (known: {', '.join(sorted(provider_types()))})")
    return module


def api_key(provider: ProviderConfig, env: Mapping[str, str] | None = None) -> str | None:
    """The provider's key, read from the environment variable it names (never from a file)."""
    env = os.environ if env is None else env
    return env.get(provider.api_key_env) if provider.api_key_env else None


def usable(provider: ProviderConfig, env: Mapping[str, str] | None = None) -> bool:
    """Can it be used here? Its provider type decides (key set, runtime installed, ...)."""
    return bool(module_for(provider.type).usable(provider, env))


def make_adapter(provider: ProviderConfig, settings: Settings) -> Any:
    return module_for(provider.type).make_adapter(provider, settings)


def why_not(provider: ProviderConfig, env: dict[str, str]) -> str:
    """Why an unusable provider cannot be used here, in a few words (``fscale models``)."""
    hook = getattr(module_for(provider.type), "why_not", None)
    if hook is not None:
        return str(hook(provider, env))
    return f"{provider.api_key_env} not set" if provider.api_key_env else "unusable"


def what_to_do(provider: ProviderConfig, env: dict[str, str]) -> str:
    """What would make an unusable provider usable ("model X needs provider P: <this>")."""
    hook = getattr(module_for(provider.type), "what_to_do", None)
    if hook is not None:
        return str(hook(provider, env))
    return f"set {provider.api_key_env}" if provider.api_key_env else "configure it"


def shares_cpu(provider: ProviderConfig) -> bool:
    """Its models run on this machine's CPU (a shadow vote would slow the panel down)."""
    return bool(getattr(module_for(provider.type), "SHARES_CPU", False))


def continuation(provider: ProviderConfig) -> str | None:
    """How step search continues a partial answer on this provider type by default."""
    mode = getattr(module_for(provider.type), "CONTINUATION", None)
    return None if mode is None else str(mode)


def needs_base_url(kind: str) -> bool:
    """Must a ``[providers.X]`` table of type ``kind`` give ``base_url``?"""
    return bool(getattr(provider_types().get(kind), "NEEDS_BASE_URL", False))


def takes_task_id(provider: ProviderConfig) -> bool:
    """Requests to it may carry a task id (replay providers answer by it)."""
    return bool(getattr(module_for(provider.type), "TAKES_TASK_ID", False))


class EmbeddingHooks(Protocol):
    """A provider type that serves embeddings (``--embedding local:<alias>``)."""

    def problem(self) -> str | None:
        """Why embeddings cannot be served here (a runtime missing), or None."""

    def weights_key(self, model: ModelConfig, provider: ProviderConfig,
                    settings: Settings) -> str:
        """What identifies the model's vectors in a cache (the weights' sha256)."""

    def start(self, model: ModelConfig, provider: ProviderConfig, settings: Settings,
              emit: Callable[[Any], None] | None) -> dict[str, Any]:
        """Reuse or start the model's embedding server (blocking): its ``base_url``,
        ``name``, ``pid`` and ``weights_sha256``."""

    def keep_alive(self, settings: Settings, server: dict[str, Any]) -> None:
        """Tell a running server it is still in use."""


def embeddings(provider: ProviderConfig) -> EmbeddingHooks | None:
    """The provider type's embedding servers, or None when it serves none."""
    hooks: EmbeddingHooks | None = getattr(module_for(provider.type), "EMBEDDINGS", None)
    return hooks


def option_keys() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(provider option keys, model option keys) that some provider type reads."""
    prov: list[str] = []
    model: list[str] = []
    for module in provider_types().values():
        prov += list(getattr(module, "PROVIDER_OPTIONS", ()))
        model += list(getattr(module, "MODEL_OPTIONS", ()))
    return tuple(dict.fromkeys(prov)), tuple(dict.fromkeys(model))


def builtins() -> tuple[dict[str, ProviderConfig], dict[str, ModelConfig], dict[str, list[str]]]:
    """Entries every provider type contributes without config.toml."""
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
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
    out: list[tuple[str, str]] = []
    for module in provider_types().values():
        panel = getattr(module, "DEFAULT_PANEL", None)
        if panel:
            out.append((module.TYPE, panel))
    return out
