"""What a run knows about its configuration: the catalogue's entries — a provider (an endpoint
and its limits) and a model (an alias for a provider's model id, with tier, family and cost) —
and :class:`Settings`, every tunable default (:data:`SETTINGS`) resolved with where it came
from. Plain dataclasses every layer shares; ``catalog/config.py`` reads config.toml into them
(the provider modules, below it, use them without importing the loader)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .paths import Paths


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

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key, read from the environment variable this provider names."""
        env = os.environ if env is None else env
        return env.get(self.api_key_env) if self.api_key_env else None


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


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    env: str
    help: str
    #: The config.toml table the key lives in (``[defaults]`` unless said otherwise).
    table: str = "defaults"


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
        Setting("challenger", bool, True, "FSCALE_CHALLENGER", "ask shadow challengers (models outside the panel, not part of the decision) within shadow_budget"),
        Setting("challengers", int, 3, "FSCALE_CHALLENGERS", "most shadow challengers per call (within shadow_budget; only while an outsider that could take a seat is still uncertain)"),
        Setting("challenger_grace", float, 1.0, "FSCALE_CHALLENGER_GRACE", "seconds to wait for the challenger after the decision before cancelling it"),
        Setting("shadow_budget", float, 0.1, "FSCALE_SHADOW_BUDGET", "[learning] shadow challengers may cost at most this share of the decision calls over the last 200 calls (0.1 = 10% extra; 0 = none); spent on uncertain or new outsiders only", table="learning"),
        Setting("challenger_thinking", bool, False, "FSCALE_CHALLENGER_THINKING", "allow thinking-tier models as challengers"),
        Setting("log_calls", bool, True, "FSCALE_LOG_CALLS", "log every call in the data directory and learn ratings from it"),
        Setting("log_text", bool, True, "FSCALE_LOG_TEXT", "store question, context and reply text in the call log (else hashes only)"),
    ]
}


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
