"""The catalogue as the views see it: models (usable? why not? health), panels, panel edits.

Blocking (it reads health.json and writes config.toml): the CLI calls it directly, the TUI
from thread workers. Panel edits go through ``config.update_user_config`` (atomic, under the
cross-process lock); the engine that made them must be rebuilt to see them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..base.errors import NoProviderError, UsageError
from ..base.settings import ModelConfig, Settings
from ..providers import shares_cpu, usable, why_not
from .config import update_user_config
from .registry import Registry, no_provider_help


class HealthView(Protocol):
    """What the catalogue reads of the health verdicts (``ask.health.HealthStore``)."""

    def verdict(self, alias: str, now: float | None = None) -> str | None: ...

    def entries(self, refresh: bool = False) -> dict[str, Any]: ...


class Catalog:
    def __init__(self, settings: Settings, registry: Registry, health: HealthView) -> None:
        self.settings = settings
        self.registry = registry
        self.health = health

    def shares_cpu(self, alias: str) -> bool:
        """The model runs on this machine's CPU (its provider type says so)."""
        model = self.settings.models.get(alias)
        provider = self.settings.providers.get(model.provider) if model else None
        return provider is not None and shares_cpu(provider)

    def why_not(self, model: ModelConfig) -> str | None:
        """Why a model cannot be used here (its key is not set, local models not
        installed), or None when it can."""
        provider = self.settings.providers.get(model.provider)
        if provider is None:
            return "unknown provider"
        if usable(provider, self.settings.env):
            return None
        return why_not(provider, self.settings.env)

    def models(self) -> list[dict[str, Any]]:
        """Every catalogue entry: alias, provider, id, tier, family, cost, usable, health."""
        rows = []
        for m in self.settings.models.values():
            why = self.why_not(m)
            rows.append({
                "alias": m.alias, "provider": m.provider, "id": m.id, "tier": m.tier,
                "family": m.family, "cost": m.cost, "usable": why is None, "why_not": why,
                "health": (self.health.verdict(m.alias)
                           or (self.health.entries().get(m.alias) or {}).get("status")),
                "source": "builtin" if m.builtin else "config",
            })
        return rows

    def panels(self) -> dict[str, dict[str, Any]]:
        """name -> members and where the panel comes from (config or built in)."""
        user = self.settings.user_config.get("panels", {}) or {}
        return {name: {"members": list(members), "source": "config" if name in user else "builtin"}
                for name, members in self.settings.panels.items()}

    def panel_source(self, name: str) -> str:
        user = self.settings.user_config.get("panels", {}) or {}
        return "config" if name in user else "built-in"

    def panel(self, name: str) -> list[ModelConfig]:
        """A panel's members (the default panel resolved); unknown names are usage errors."""
        return [self.registry.model(a) for a in self.registry.panel(name)]

    def default_panel_name(self) -> str:
        return str(self.settings.get("panel"))

    def default_resolves_to(self) -> str | None:
        """The named panel the default panel is: itself when configured, else the built-in
        panel chosen by the keys that are set (``local`` with none); None if nothing is usable."""
        name = self.default_panel_name()
        if name in self.settings.panels:
            return name
        try:
            members = list(self.registry.panel(name))
        except (NoProviderError, UsageError):
            return None
        return next((n for n, ms in self.settings.panels.items() if list(ms) == members), None)

    def set_panel(self, name: str, members: list[str]) -> Path:
        if not name.strip():
            raise UsageError("a panel needs a name")
        if not members:
            raise UsageError("a panel needs at least one model")
        unknown = [a for a in members if a not in self.settings.models]
        if unknown:
            raise UsageError(f"unknown model(s): {', '.join(unknown)} (see 'fscale models')")
        if len(set(members)) != len(members):
            raise UsageError("a panel lists each model once")
        update_user_config(self.settings.paths,
                           lambda doc: doc.setdefault("panels", {}).__setitem__(name, list(members)))
        return self.settings.paths.config_file

    def remove_panel(self, name: str) -> Path:
        if name not in (self.settings.user_config.get("panels") or {}):
            if name in self.settings.panels:
                raise UsageError(f"panel {name!r} is built in; it can be overridden with "
                                 "'panels set' but not removed")
            raise UsageError(f"unknown panel {name!r}")
        update_user_config(self.settings.paths, lambda doc: doc.get("panels", {}).pop(name, None))
        return self.settings.paths.config_file

    def health_entries(self, refresh: bool = False) -> dict[str, Any]:
        """The stored health verdicts (``health.json``), alias -> entry."""
        return self.health.entries(refresh=refresh)

    def select(self, models: list[str] | None = None, panel: str | None = None,
               k: int | None = None) -> list[ModelConfig]:
        """Models for a call (explicit list, panel, or k), every one usable (else an error)."""
        return self.registry.select(models=models, panel=panel, k=k)

    def probe_targets(self, models: list[str] | None = None,
                      panel: str | None = None) -> list[ModelConfig]:
        """What ``health`` probes: the given models, a panel, or every usable model."""
        if models:
            return [self.registry.model(a) for a in models]
        if panel:
            return self.panel(panel)
        found = [m for m in self.settings.models.values() if self.registry.usable(m)]
        if not found:
            raise NoProviderError(no_provider_help(self.settings.env))
        return found
