"""The catalogue's entries: a provider (an endpoint and its limits) and a model (an alias for a
provider's model id, with tier, family and cost). Plain frozen dataclasses shared by the
configuration and the provider modules (which must not import the configuration loader)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


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
        """The key, read from the environment variable this provider names."""
        env = os.environ if env is None else env
        return env.get(self.api_key_env) if self.api_key_env else None

    def usable(self, env: dict[str, str] | None = None) -> bool:
        """Can it be used here? Its provider type decides (key set, runtime installed, ...)."""
        from ..providers import usable

        return usable(self, env)


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
