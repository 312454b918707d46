"""config.toml: providers, models, panels and defaults, with where each value came from.

Precedence for every setting: command-line flag > environment variable > config file > built-in
default. ``Settings.source(name)`` says which one won, for ``fscale config show``.

The file format is design §3's contract::

    [providers.mystub]
    base_url = "http://127.0.0.1:8089/v1"
    api_key_env = "MYSTUB_KEY"     # the NAME of the env var, never the key
    rpm = 600

    [models.fast-a]
    provider = "mystub"
    id = "vendor/model-a"
    tier = "fast"
    family = "vendor"
    cost = 0.2

    [panels]
    default = ["fast-a", "fast-b", "slow-c"]

    [defaults]                     # optional: any key of SETTINGS below
    k = 3
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import storage
from .catalogue import BUILTIN_MODELS, BUILTIN_PANELS, BUILTIN_PROVIDERS, TIERS
from .errors import ConfigError
from .paths import Paths


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    env: str
    help: str


#: Every tunable default, its environment twin and what it does.
SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        Setting("k", int, 3, "FSCALE_K", "number of voting models when no panel or model list is given"),
        Setting("panel", str, "default", "FSCALE_PANEL", "panel used when neither -k, --panel nor --models is given"),
        Setting("tie_break", str, "none", "FSCALE_TIE_BREAK", "none | rating | order"),
        Setting("max_tokens", int, 1024, "FSCALE_MAX_TOKENS", "reply length limit per call"),
        Setting("temperature", float, 0.0, "FSCALE_TEMPERATURE", "sampling temperature for votes"),
        Setting("health_ttl", float, 300.0, "FSCALE_HEALTH_TTL", "seconds a 404/429 health verdict is honoured"),
        Setting("batch_concurrency", int, 16, "FSCALE_BATCH_CONCURRENCY", "items of a batch in flight at once"),
        Setting("retries", int, 3, "FSCALE_RETRIES", "retries per call on 429/5xx/timeouts"),
        Setting("retry_base", float, 0.5, "FSCALE_RETRY_BASE", "first backoff delay in seconds (doubles per retry, with jitter)"),
        Setting("timeout_fast", float, 30.0, "FSCALE_TIMEOUT_FAST", "per-call timeout for fast-tier models (s)"),
        Setting("timeout_medium", float, 60.0, "FSCALE_TIMEOUT_MEDIUM", "per-call timeout for medium-tier models (s)"),
        Setting("timeout_slow", float, 120.0, "FSCALE_TIMEOUT_SLOW", "per-call timeout for slow-tier models (s)"),
        Setting("timeout_thinking", float, 300.0, "FSCALE_TIMEOUT_THINKING", "per-call timeout for thinking models (s)"),
        Setting("slow_after", float, 10.0, "FSCALE_SLOW_AFTER", "health: a reply slower than this is 'slow' (s)"),
        Setting("challenger", bool, True, "FSCALE_CHALLENGER", "ask one shadow challenger per scale call (outside the panel, not part of the decision)"),
        Setting("challenger_grace", float, 1.0, "FSCALE_CHALLENGER_GRACE", "seconds to wait for the challenger after the decision before cancelling it"),
        Setting("challenger_thinking", bool, False, "FSCALE_CHALLENGER_THINKING", "allow thinking-tier models as challengers"),
        Setting("log_calls", bool, True, "FSCALE_LOG_CALLS", "log every call in the data directory and learn ratings from it"),
        Setting("log_text", bool, True, "FSCALE_LOG_TEXT", "store question, context and reply text in the call log (else hashes only)"),
    ]
}


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    base_url: str
    api_key_env: str | None = None
    rpm: float | None = None
    burst: int | None = None
    concurrency: int = 8
    type: str = "openai"  # openai | local | replay
    options: dict[str, Any] = field(default_factory=dict)  # type-specific (e.g. replay path)
    builtin: bool = False

    def api_key(self, env: dict[str, str] | None = None) -> str | None:
        env = os.environ if env is None else env
        return env.get(self.api_key_env) if self.api_key_env else None

    def usable(self, env: dict[str, str] | None = None) -> bool:
        """Usable when its key is set (if it names one); local models when they are installed."""
        if self.type == "local":
            from .local import provider as local_provider

            return local_provider.is_installed(self)
        if self.api_key_env:
            return bool(self.api_key(env))
        return True


@dataclass(frozen=True)
class ModelConfig:
    alias: str
    provider: str
    id: str
    tier: str = "medium"
    family: str = ""
    cost: float = 0.0
    builtin: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    """Everything a run needs to know, resolved from defaults, config, environment and flags."""

    paths: Paths
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    panels: dict[str, list[str]]
    values: dict[str, Any]
    sources: dict[str, str]
    env: dict[str, str]
    user_config: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.values[name]

    def source(self, name: str) -> str:
        return self.sources[name]

    def with_overrides(self, **flags: Any) -> "Settings":
        """Apply command-line flags (``None`` means 'not given')."""
        for name, value in flags.items():
            if value is not None:
                self.values[name] = SETTINGS[name].type(value)
                self.sources[name] = "flag"
        return self

    def timeout_for(self, tier: str) -> float:
        return float(self.values.get(f"timeout_{tier}", self.values["timeout_medium"]))


def _convert(setting: Setting, raw: Any, origin: str) -> Any:
    try:
        if setting.type is bool and isinstance(raw, str):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return setting.type(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {setting.name} = {raw!r} is not a valid {setting.type.__name__}") from None


def read_user_config(path: Path) -> dict[str, Any]:
    """Parse config.toml; a file that is not valid TOML is moved aside with a warning."""
    return storage.read_parsed(path, lambda raw: tomllib.loads(raw.decode("utf-8")), dict)


def _table(doc: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: [{key}] must be a table")
    return value


def load_settings(paths: Paths | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the Settings for this process (defaults < config file < environment)."""
    env = dict(os.environ if env is None else env)
    paths = paths or Paths.resolve(env)
    doc = read_user_config(paths.config_file)
    cfg_path = paths.config_file

    providers = {name: ProviderConfig(name=name, builtin=True, **fields)
                 for name, fields in BUILTIN_PROVIDERS.items()}
    # The embedded local provider is always listed; it is usable once the [local] extra is in.
    from .local import provider as local_provider

    providers.update(local_provider.builtin_providers())
    for name, fields in _table(doc, "providers", cfg_path).items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{cfg_path}: [providers.{name}] must be a table")
        known = {"base_url", "api_key_env", "rpm", "burst", "concurrency", "type"}
        base = providers.get(name)
        merged: dict[str, Any] = {}
        if base is not None:
            merged = {k: getattr(base, k) for k in known}
            merged["options"] = dict(base.options)
        options = dict(merged.pop("options", {}))
        options.update({k: v for k, v in fields.items() if k not in known})
        merged.update({k: v for k, v in fields.items() if k in known})
        ptype = merged.get("type", "openai")
        if ptype == "openai" and not merged.get("base_url"):
            raise ConfigError(f"{cfg_path}: [providers.{name}] needs base_url")
        if "api_key" in fields:
            raise ConfigError(f"{cfg_path}: [providers.{name}] must not contain a key: "
                              "use api_key_env = \"NAME_OF_ENV_VAR\"")
        providers[name] = ProviderConfig(name=name, base_url=str(merged.get("base_url", "")),
                                         api_key_env=merged.get("api_key_env"),
                                         rpm=merged.get("rpm"), burst=merged.get("burst"),
                                         concurrency=int(merged.get("concurrency") or 8),
                                         type=ptype, options=options,
                                         builtin=base is not None and base.builtin
                                         and "base_url" not in fields)

    models = {alias: ModelConfig(alias=alias, builtin=True, **fields)
              for alias, fields in BUILTIN_MODELS.items()}
    models.update(local_provider.builtin_models())
    for alias, fields in _table(doc, "models", cfg_path).items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{cfg_path}: [models.{alias}] must be a table")
        base = models.get(alias)
        merged = {"provider": base.provider, "id": base.id, "tier": base.tier,
                  "family": base.family, "cost": base.cost} if base else {}
        known = {"provider", "id", "tier", "family", "cost"}
        merged.update({k: v for k, v in fields.items() if k in known})
        for required in ("provider", "id"):
            if required not in merged:
                raise ConfigError(f"{cfg_path}: [models.{alias}] needs {required}")
        if merged["provider"] not in providers:
            raise ConfigError(f"{cfg_path}: [models.{alias}] uses unknown provider {merged['provider']!r}")
        tier = merged.get("tier", "medium")
        if tier not in TIERS:
            raise ConfigError(f"{cfg_path}: [models.{alias}] tier must be one of {', '.join(TIERS)}")
        models[alias] = ModelConfig(alias=alias, provider=merged["provider"], id=str(merged["id"]),
                                    tier=tier, family=str(merged.get("family") or ""),
                                    cost=float(merged.get("cost") or 0.0),
                                    options={k: v for k, v in fields.items() if k not in known})

    panels = {name: list(members) for name, members in BUILTIN_PANELS.items()}
    panels.update(local_provider.builtin_panels())
    for name, members in _table(doc, "panels", cfg_path).items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{cfg_path}: panels.{name} must be a list of model aliases")
        panels[name] = list(members)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    defaults = _table(doc, "defaults", cfg_path)
    for name, setting in SETTINGS.items():
        values[name], sources[name] = setting.default, "default"
        if name in defaults:
            values[name] = _convert(setting, defaults[name], f"{cfg_path} [defaults]")
            sources[name] = "config"
        if env.get(setting.env) not in (None, ""):
            values[name] = _convert(setting, env[setting.env], f"environment {setting.env}")
            sources[name] = "env"
    return Settings(paths=paths, providers=providers, models=models, panels=panels,
                    values=values, sources=sources, env=env, user_config=doc)


def update_user_config(paths: Paths, change) -> None:
    """Read-modify-write config.toml under the cross-process lock (used by panels/evolve)."""
    import tomli_w

    path = paths.config_file
    with storage.locked(path):
        doc = read_user_config(path)
        change(doc)
        storage.atomic_write_text(path, tomli_w.dumps(doc))
