"""Errors and exit codes shared by the engine and its views (design §10)."""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes; scripts rely on them, so they never change meaning."""

    DECIDED = 0
    INTERNAL_ERROR = 1
    USAGE_ERROR = 2
    NO_DECISION = 3  # tie, abstention, or no valid vote
    ALL_FAILED = 4  # every member / provider failed, or none is usable
    INTERRUPTED = 130  # Ctrl-C (SIGINT)
    TERMINATED = 143  # SIGTERM: stopped like Ctrl-C (128 + 15)


def exit_code_for(status: str) -> ExitCode:
    """The exit code of a finished call from its status (scale, generate, batch items)."""
    if status == "decided":
        return ExitCode.DECIDED
    if status in ("all_failed", "error"):
        return ExitCode.ALL_FAILED
    return ExitCode.NO_DECISION


class FscaleError(Exception):
    """An error with a one-line message meant for the user, and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(FscaleError):
    """Bad input from the user: unknown model, bad file, bad option combination."""

    exit_code = ExitCode.USAGE_ERROR


class ConfigError(FscaleError):
    """config.toml is invalid (the message names the file and the key)."""

    exit_code = ExitCode.USAGE_ERROR


class StateError(FscaleError):
    """fscale's home cannot be read or written: a read-only or full file system, permission
    denied, a file where a folder should be, or a symbolic link in place of a state file. The
    message names the file and why (``storage.state_error`` builds it)."""

    exit_code = ExitCode.USAGE_ERROR


class NoProviderError(FscaleError):
    """No provider can be used (no key set, no local models installed)."""

    exit_code = ExitCode.ALL_FAILED


class ProviderError(Exception):
    """One HTTP call to a provider failed after its retries.

    ``kind`` is one of: ``rate_limited`` (429), ``dead`` (410), ``unavailable`` (404),
    ``auth`` (401/403), ``server`` (5xx), ``timeout``, ``network`` (connection refused or reset,
    streams cut mid-way), ``tls`` (the server's certificate did not verify; not retried),
    ``malformed`` (a 200 whose body is not a chat completion), ``bad_request``.
    Messages never contain API keys.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


class BigNumber(str):
    """A JSON number too long to be worth converting (shown by its length)."""


def describe(value: Any, *, text: bool = True) -> str:
    """A value as a few words for an error line (never its whole text; with ``text=False`` a
    string is only "a string": a config value could be a key pasted in the wrong place)."""
    if isinstance(value, BigNumber):
        return f"a {len(value.lstrip('-'))}-digit number"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "a number out of range" if value != value or value in (float("inf"), float("-inf")) \
            else repr(value)
    if isinstance(value, int):
        return str(value) if len(str(value)) <= 30 else f"a {len(str(abs(value)))}-digit number"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        if not text:
            return "a string"
        shown = value if len(value) <= 40 else value[:39] + "…"
        return json.dumps(shown, ensure_ascii=False)
    return type(value).__name__
