"""The one redactor: every error text, body excerpt, log line and stored field passes here.

Secrets reach fscale only through the environment variables named by ``api_key_env``. The
values of those variables are registered here when the settings are loaded
(:func:`register_secrets`), and :func:`redact` replaces every occurrence of a registered value,
and anything shaped like a bearer token or a well-known key format, with ``[redacted]``.
Pieces of a registered value are masked too (a preview cut to 60 characters, or an error
excerpt, can end in the first 24 characters of a key): any run of :data:`MIN_FRAGMENT_LEN`
characters or more of a registered value, and any run of :data:`MIN_SECRET_LEN` or more that
starts or ends it. Passwords in URLs (``redis://:pass@host``, ``redis://user:pass@host``,
``?password=...``) are masked by shape, registered or not, however short.
Pure and cheap: a few ``str.find`` calls per registered value and one precompiled regular
expression.

This module is the *what*; :mod:`.output` is the *where*: every byte fscale writes to stdout or
stderr passes :func:`redact` there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, overload

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
#: The password of a URL's user info (redis://:pass@host, redis://user:pass@host) and a
#: credential in its query string (redis://host/0?password=..., &token=...). Separate, and run
#: only on text that has "://" or "=", so the common case pays nothing for them.
#: A value already masked as ``***`` (``coordination.safe_url``) is left as it is.
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/?#@\[\]]*:)(?!\*\*\*@)[^\s/?#@]+(?=@)")
_URL_QUERY = re.compile(r"(?i)([?&;](?:password|passwd|pass|pwd|auth|token|secret|api_?key"
                        r"|access_?token)=)(?!\*\*\*(?:[\s&;#\"'<>]|$))[^\s&;#\"'<>]+")

#: A piece of a registered value this long is masked wherever it appears in the value ...
MIN_FRAGMENT_LEN = 12
#: ... and a piece this long at the start or the end of the value (a cut preview, "…f3a9").
_GRAM = 8
_GRAM_STRIDE = 4

_secrets: set[str] = set()
#: gram -> [(secret, offset of the gram in it)]; every MIN_FRAGMENT_LEN-long piece of a secret
#: contains a gram at a multiple of _GRAM_STRIDE, and the first and last grams start and end it.
_grams: dict[str, list[tuple[str, int]]] = {}
_by_length: list[str] = []
#: What :func:`redact` gave for short strings (a result's keys, labels, model names, statuses
#: recur on every item of a batch): emptied whenever a secret is registered, and when full.
_memo: dict[str, str] = {}
_MEMO_LEN, _MEMO_SIZE = 64, 4096


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values (API keys from the environment) so :func:`redact` removes them."""
    global _by_length
    for value in values:
        value = (value or "").strip()
        if (len(value) >= MIN_SECRET_LEN and value not in _secrets
                and (len(value) >= MIN_WORD_SECRET_LEN or re.search(r"\d", value))):
            _secrets.add(value)
            offsets = set(range(0, len(value) - _GRAM + 1, _GRAM_STRIDE)) | {len(value) - _GRAM}
            for offset in sorted(offsets):
                _grams.setdefault(value[offset:offset + _GRAM], []).append((value, offset))
            _by_length = sorted(_secrets, key=len, reverse=True)
            _memo.clear()


#: Query parameters and environment variables whose value is a credential.
_URL_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd", "auth", "token", "secret",
                                "apikey", "api_key", "access_token", "accesstoken"})


def is_secret_param(name: str) -> bool:
    """Whether a URL query parameter (``?password=…``) carries a credential."""
    return name.lower() in _URL_SECRET_PARAMS or "password" in name.lower()


def url_secrets(url: str | None) -> list[str]:
    """The credentials inside a URL: the password of its user info, and the values of query
    parameters such as ``password=`` (``redis://:p@h``, ``redis://u:p@h``, ``redis://h/0?password=p``)."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    if not url:
        return []
    found: list[str] = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        query = parts.query
    except ValueError:  # a malformed URL (bad port, broken IPv6): take what can be taken
        userinfo = url.split("://", 1)[-1].split("@", 1)
        if len(userinfo) == 2 and ":" in userinfo[0]:
            found.append(userinfo[0].split(":", 1)[1])
        query = url.split("?", 1)[1] if "?" in url else ""
    for name, value in parse_qsl(query, keep_blank_values=False):
        if is_secret_param(name):
            found.append(value)
    return found


def register_url_secrets(url: str | None) -> None:
    """Register the credentials of a URL (e.g. ``FSCALE_REDIS_URL``) with :func:`redact`."""
    register_secrets(url_secrets(url))


def _sub(match: re.Match[str]) -> str:
    prefix = match.group(1)
    return (prefix or "") + MASK


def _fragments(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` that are pieces of a registered secret (see the module docstring)."""
    spans: list[tuple[int, int]] = []
    for gram, owners in _grams.items():
        at = text.find(gram)
        while at >= 0:
            for secret, offset in owners:
                left = 0  # extend to the left while the text goes on matching the secret
                while (left < offset and at - left > 0
                       and text[at - left - 1] == secret[offset - left - 1]):
                    left += 1
                right = 0
                end = offset + _GRAM
                while (end + right < len(secret) and at + _GRAM + right < len(text)
                       and text[at + _GRAM + right] == secret[end + right]):
                    right += 1
                size = left + _GRAM + right
                if size >= MIN_FRAGMENT_LEN or offset - left == 0 or end + right == len(secret):
                    spans.append((at - left, at + _GRAM + right))
            at = text.find(gram, at + 1)
    return spans


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
@overload
def redact(text: str | None) -> str | None: ...
def redact(text: str | None) -> str | None:
    """``text`` with every registered secret, every piece of one, every URL password and
    every token-shaped string masked."""
    if not text:
        return text
    if len(text) <= _MEMO_LEN:
        done = _memo.get(text)
        if done is None:
            if len(_memo) >= _MEMO_SIZE:
                _memo.clear()
            done = _memo[text] = _redact(text)
        return done
    return _redact(text)


def _redact(text: str) -> str:
    for secret in _by_length:
        if secret in text:
            text = text.replace(secret, MASK)
    if _grams:
        spans = _fragments(text)
        if spans:
            spans.sort()
            merged = [list(spans[0])]
            for start, end in spans[1:]:
                if start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            pieces, last = [], 0
            for start, end in merged:
                pieces += [text[last:start], MASK]
                last = end
            text = "".join(pieces) + text[last:]
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(_sub, text)
    if "=" in text:
        text = _URL_QUERY.sub(_sub, text)
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
