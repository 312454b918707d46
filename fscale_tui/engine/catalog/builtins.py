"""The built-in catalogue: providers, free models in tiers, and named panels.

User entries in config.toml override or extend all of this (see ``config.py``). Model ids change
often on free tiers; ``fscale models refresh`` asks each provider which entries are gone.
"""

from __future__ import annotations

from typing import Any

TIERS = ("fast", "medium", "slow", "thinking")

#: name -> provider fields (design §3). ``rpm`` is the documented free-tier limit.
BUILTIN_PROVIDERS: dict[str, dict[str, Any]] = {
    "nim": {
        "base_url": "https://integrate.api.nvidia.com/v1",
        "api_key_env": "NVIDIA_API_KEY",
        "rpm": 40,
        "concurrency": 8,
    },
    "github": {
        # GitHub Models' official inference endpoint; a fine-grained token with models:read.
        "base_url": "https://models.github.ai/inference",
        "api_key_env": "GITHUB_TOKEN",
        "rpm": 15,
        "concurrency": 4,
    },
}

# alias: (provider, id, tier, family, cost in USD per million tokens; free tiers are 0 but a
# nominal list price keeps routing's cost term meaningful)
_MODELS: list[tuple[str, str, str, str, str, float]] = [
    # --- NVIDIA NIM free tier ---
    ("llama-3.1-8b", "nim", "meta/llama-3.1-8b-instruct", "fast", "llama", 0.2),
    ("mistral-7b", "nim", "mistralai/mistral-7b-instruct-v0.3", "fast", "mistral", 0.2),
    ("gemma-2-9b", "nim", "google/gemma-2-9b-it", "fast", "gemma", 0.2),
    ("phi-3.5-mini", "nim", "microsoft/phi-3.5-mini-instruct", "fast", "phi", 0.1),
    ("qwen2.5-7b", "nim", "qwen/qwen2.5-7b-instruct", "fast", "qwen", 0.2),
    ("granite-3.3-8b", "nim", "ibm/granite-3.3-8b-instruct", "fast", "granite", 0.2),
    ("llama-3.3-70b", "nim", "meta/llama-3.3-70b-instruct", "medium", "llama", 0.9),
    ("mixtral-8x22b", "nim", "mistralai/mixtral-8x22b-instruct-v0.1", "medium", "mistral", 1.2),
    ("gemma-3-27b", "nim", "google/gemma-3-27b-it", "medium", "gemma", 0.5),
    ("qwen2.5-coder-32b", "nim", "qwen/qwen2.5-coder-32b-instruct", "medium", "qwen", 0.8),
    ("nemotron-super-49b", "nim", "nvidia/llama-3.3-nemotron-super-49b-v1", "medium", "nemotron", 0.9),
    ("phi-4", "nim", "microsoft/phi-4-mini-instruct", "medium", "phi", 0.3),
    ("llama-3.1-405b", "nim", "meta/llama-3.1-405b-instruct", "slow", "llama", 3.0),
    ("mistral-large-2", "nim", "mistralai/mistral-large-2-instruct", "slow", "mistral", 3.0),
    ("nemotron-ultra-253b", "nim", "nvidia/llama-3.1-nemotron-ultra-253b-v1", "slow", "nemotron", 2.5),
    ("qwen3-235b", "nim", "qwen/qwen3-235b-a22b", "slow", "qwen", 1.5),
    ("deepseek-r1", "nim", "deepseek-ai/deepseek-r1", "thinking", "deepseek", 2.2),
    ("qwq-32b", "nim", "qwen/qwq-32b", "thinking", "qwen", 0.9),
    ("phi-4-reasoning", "nim", "microsoft/phi-4-mini-flash-reasoning", "thinking", "phi", 0.3),
    # --- GitHub Models ---
    ("gh-gpt-4.1-mini", "github", "openai/gpt-4.1-mini", "fast", "openai", 0.4),
    ("gh-llama-3.3-70b", "github", "meta/llama-3.3-70b-instruct", "medium", "llama", 0.9),
    ("gh-mistral-small", "github", "mistral-ai/mistral-small-2503", "fast", "mistral", 0.3),
    ("gh-phi-4", "github", "microsoft/phi-4", "medium", "phi", 0.3),
    ("gh-gpt-4.1", "github", "openai/gpt-4.1", "slow", "openai", 2.0),
    ("gh-deepseek-r1", "github", "deepseek/deepseek-r1", "thinking", "deepseek", 2.2),
]

BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    alias: {"provider": prov, "id": mid, "tier": tier, "family": fam, "cost": cost}
    for alias, prov, mid, tier, fam, cost in _MODELS
}

#: Named panels. ``default`` is resolved at run time to the first panel whose provider is usable
#: (see ``Registry.default_panel``) unless config.toml defines ``[panels] default``.
BUILTIN_PANELS: dict[str, list[str]] = {
    "nim": ["llama-3.1-8b", "gemma-2-9b", "qwen2.5-7b"],
    "nim-fast": ["llama-3.1-8b", "mistral-7b", "gemma-2-9b", "phi-3.5-mini", "qwen2.5-7b"],
    "nim-strong": ["llama-3.3-70b", "gemma-3-27b", "qwen2.5-coder-32b", "nemotron-super-49b",
                   "mixtral-8x22b"],
    "nim-thinking": ["deepseek-r1", "qwq-32b", "phi-4-reasoning"],
    "github": ["gh-gpt-4.1-mini", "gh-llama-3.3-70b", "gh-mistral-small"],
}

#: Which built-in panel is the default when a provider is usable, in order of preference.
DEFAULT_PANEL_ORDER: list[tuple[str, str]] = [("nim", "nim"), ("github", "github")]


# -- model families -------------------------------------------------------------------------------

#: (family, pattern) in order: the first pattern found anywhere in the lower-cased model id wins,
#: so a fine-tune keeps its base model's family ("hermes-2-theta-llama-3-70b" is llama,
#: "llama-3.3-nemotron-super" is nemotron: NVIDIA's retrained line, listed first on purpose).
_FAMILY_PATTERNS: list[tuple[str, str]] = [
    ("nemotron", r"nemotron"),
    ("mistral", r"mixtral|mistral|mathstral|codestral|ministral|magistral|devstral|pixtral"),
    ("llama", r"llama"),
    ("qwen", r"qwen|qwq"),
    ("gemma", r"gemma"),
    ("gemini", r"gemini"),
    ("deepseek", r"deepseek"),
    ("phi", r"(?<![a-z])phi"),
    ("openai", r"openai|chatgpt|(?<![a-z])gpt|(?<![a-z0-9])o[134](?:-|$)"),
    ("claude", r"claude|anthropic"),
    ("granite", r"granite"),
    ("yi", r"(?<![a-z])yi(?![a-z])"),
    ("cohere", r"cohere|command-r|(?<![a-z])aya(?![a-z])"),
    ("glm", r"glm"),
    ("internlm", r"internlm"),
    ("falcon", r"falcon"),
    ("olmo", r"olmo"),
    ("jamba", r"jamba"),
    ("dbrx", r"dbrx"),
    ("grok", r"grok"),
    ("kimi", r"kimi|moonshot"),
    ("minimax", r"minimax"),
    ("smollm", r"smollm"),
]
_FAMILY_RES = None


def family_of(model_id: str) -> str:
    """The model family of any model id, from one rule (the built-in catalogue follows it).

    Known lines are recognised by name anywhere in the id (vendor prefixes, sizes and fine-tune
    names around them do not matter), so near-identical variants share a family and panels that
    want independent errors can tell them apart. An unknown id falls back to its vendor (the part
    before ``/``) or else the first word of its name.
    """
    import re

    global _FAMILY_RES
    if _FAMILY_RES is None:
        _FAMILY_RES = [(fam, re.compile(pat)) for fam, pat in _FAMILY_PATTERNS]
    low = model_id.strip().lower()
    for fam, rx in _FAMILY_RES:
        if rx.search(low):
            return fam
    if "/" in low:
        return low.split("/", 1)[0].strip() or low
    m = re.match(r"[a-z]+", low.lstrip("-_. "))
    return m.group(0) if m else low
