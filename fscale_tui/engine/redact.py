"""The one redactor: every error text, body excerpt, log line and stored field passes here.

Secrets reach fscale only through the environment variables named by ``api_key_env``. The
values of those variables are registered here when the settings are loaded
(:func:`register_secrets`), and :func:`redact` replaces every occurrence of a registered value,
and anything shaped like a bearer token or a well-known key format, with ``[redacted]``.
Pure and cheap: a few ``str.replace`` calls and one precompiled regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"

#: Values shorter than this are not registered (replacing "a" everywhere would garble text).
MIN_SECRET_LEN = 8
#: A value without a digit is registered only from this length on: placeholders that local
#: servers accept ("ollama", "lm-studio", "EMPTY") are words that also occur in model names and
#: URLs, and masking them would garble output without protecting anything.
MIN_WORD_SECRET_LEN = 16

#: Bearer tokens (8+ token characters with a digit, so prose such as "Bearer authentication"
#: is left alone) and common key shapes (NVIDIA ``nvapi-``, GitHub ``ghp_``/``github_pat_``,
#: OpenAI-style ``sk-``), so a key that was never registered is still removed.
_PATTERNS = re.compile(
    r"(?i)(bearer\s+)(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bnvapi-[A-Za-z0-9_-]{8,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{16,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{16,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
)

_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values (API keys from the environment) so :func:`redact` removes them."""
    for value in values:
        value = (value or "").strip()
        if len(value) >= MIN_SECRET_LEN and (len(value) >= MIN_WORD_SECRET_LEN
                                             or re.search(r"\d", value)):
            _secrets.add(value)


def _sub(match: re.Match[str]) -> str:
    prefix = match.group(1)
    return (prefix or "") + MASK


def redact(text: str | None) -> str | None:
    """``text`` with every registered secret and every token-shaped string masked."""
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return _PATTERNS.sub(_sub, text)


def redact_tree(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, numbers) with every string redacted.

    For structured output: redacting each string before it is encoded also catches a secret
    that JSON encoding would escape (a quote or backslash in it) and so hide from
    :func:`redact` run over the encoded text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_tree(v) for v in value]
    return value


_KEY_PREFIXES = re.compile(r"^((?i:bearer\s+\S|nvapi-|sk-|gh[pousr]_|github_pat_|xox[bap]-)|AKIA[A-Z0-9]{12})")
_RANDOM_RUN = re.compile(r"[A-Za-z0-9]{16,}")


def looks_like_secret(value: str) -> bool:
    """True for a string shaped like a key or token rather than like a variable name.

    A well-known key prefix (``sk-``, ``nvapi-``, ``ghp_``, ``Bearer ...``), a registered secret,
    or a run of 16+ letters and digits with both kinds in it (variable names such as
    ``OPENAI_API_KEY`` are words joined by ``_``; keys are long random runs).
    """
    value = value.strip()
    if not value:
        return False
    if value in _secrets or _KEY_PREFIXES.search(value) or _PATTERNS.fullmatch(value):
        return True
    return any(re.search(r"\d", run) and re.search(r"[A-Za-z]", run)
               for run in _RANDOM_RUN.findall(value))
