"""The remote OpenAI-compatible provider: NVIDIA NIM, GitHub Models, OpenRouter, Groq, vLLM,
SGLang, Ollama, LM Studio, a llama.cpp server… anything serving ``POST {base_url}/chat/completions``.

The client talks to ``base_url`` directly: no adapter. Usable when the key it names is set
(or it names none). Built-in entries (``nim``, ``github``) come from ``engine/catalog/builtins.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..base.settings import ProviderConfig, Settings

TYPE = "openai"
PROVIDER_OPTIONS: tuple[str, ...] = ()
MODEL_OPTIONS: tuple[str, ...] = ()
NEEDS_BASE_URL = True


def usable(provider: Any, env: Mapping[str, str] | None = None) -> bool:
    from . import api_key

    return bool(api_key(provider, env)) if provider.api_key_env else True


def make_adapter(provider: ProviderConfig, settings: Settings) -> None:
    return None
