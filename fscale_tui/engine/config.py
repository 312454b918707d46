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

The user's file is never moved, rewritten or ignored because it is broken: invalid TOML, bytes
that are not UTF-8, a bad value or a literal secret is a :class:`ConfigError` (exit 2) whose
message starts with ``config.toml:LINE:``. A key fscale does not know is ignored with a one-line
warning naming the closest known key. Secrets: a non-empty string under any key whose name is or
contains a secret-ish word (key, token, secret, password, authorization, auth, bearer, headers,
credential, cookie; whole words, so ``max_tokens`` is fine), anywhere in the file, is refused, and
so is an ``*_env`` value that is not a variable name or looks like a key; the value is never
printed. The values of every provider's ``api_key_env`` variable are registered with the
redactor (:mod:`.redact`) when the settings are loaded.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import storage
from .catalogue import BUILTIN_MODELS, BUILTIN_PANELS, BUILTIN_PROVIDERS, TIERS
from .errors import ConfigError
from .entries import ModelConfig, ProviderConfig
from .paths import Paths


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


def _convert(setting: Setting, raw: Any, origin: str) -> Any:
    try:
        if setting.type is bool and isinstance(raw, str):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return setting.type(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {setting.name} = {raw!r} is not a valid {setting.type.__name__}") from None


#: Top-level tables of config.toml, and the keys each kind of table knows. A key that is not here
#: is ignored with a one-line warning naming the closest known key (typos must not go unnoticed).
TOP_LEVEL_KEYS = ("providers", "models", "panels", "defaults", "fleet", "learning")
#: ``[fleet]``: what several fscale processes share (engine/coordination.py). A redis_url with a
#: password is refused here: it must come from the environment (FSCALE_REDIS_URL).
FLEET_KEYS = ("redis_url",)
#: Provider types add their own option keys (``providers.option_keys``).
PROVIDER_KEYS = ("base_url", "api_key_env", "rpm", "burst", "concurrency", "type",
                 "continuation")
MODEL_KEYS = ("provider", "id", "tier", "family", "cost", "params", "variant", "continuation")

#: Key names under which a string is a literal secret (matched as whole words of the key name,
#: so ``max_tokens`` is not a token and ``api_key_env`` is handled on its own).
SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "passphrase",
                          "authorization", "auth", "bearer", "headers", "credential",
                          "credentials", "cookie"})

_warned: set[str] = set()


def _key_words(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def is_secret_key_name(name: str) -> bool:
    words = _key_words(name)
    compact = "".join(words)
    return bool(SECRET_WORDS.intersection(words)) or any(
        w in compact for w in ("apikey", "secret", "password", "authorization", "bearer", "accesskey"))


def _line_of(text: str, key: str, after: int = 0) -> int | None:
    """Best effort: the 1-based line of ``key = ...`` in the TOML text (for file:line messages)."""
    pattern = re.compile(r'(?:^|[{,\s.])["\']?' + re.escape(str(key)) + r'["\']?\s*=', re.M)
    for lineno, line in enumerate(text.split("\n"), 1):
        if lineno > after and pattern.search(line):
            return lineno
    return None


def _table_line(text: str, dotted: str) -> int | None:
    pattern = re.compile(r"^\s*\[\s*" + re.escape(dotted).replace(r"\.", r"\s*\.\s*") + r"\s*\]", re.M)
    for lineno, line in enumerate(text.split("\n"), 1):
        if pattern.search(line):
            return lineno
    return None


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def _warn(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        storage.warnings.append(f"warning: {message}")


def read_user_config(path: Path) -> dict[str, Any]:
    """Parse config.toml. The user's file is never moved or rewritten because it is broken:
    invalid TOML, bad bytes or a literal secret is a :class:`ConfigError` (exit 2) naming
    ``file:line``; unknown keys get a one-line warning with the closest known key."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if found:
            line, what = int(found[1]), f"{msg[:found.start()]} (column {found[2]})"
        elif msg.endswith("(at end of document)"):
            line, what = text.count("\n") + (0 if text.endswith("\n") else 1), msg
        else:
            line, what = None, msg
        raise ConfigError(f"{_where(path, line)}: invalid TOML: {what}") from None
    check_no_secrets(doc, text, path)
    warn_unknown_keys(doc, text, path)
    return doc


def check_no_secrets(doc: dict[str, Any], text: str, path: Path) -> None:
    """Refuse a literal secret anywhere in config.toml (never printing it)."""
    from .redact import looks_like_secret

    def walk(node: Any, keys: list[str]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, [*keys, str(k)])
            return
        if isinstance(node, list):
            for v in node:
                walk(v, keys)
            return
        if not isinstance(node, str) or not node.strip() or not keys:
            return
        leaf = keys[-1]
        # The nearest enclosing [table] header, so the line is the one in the right table.
        start = next((line for n in range(len(keys) - 1, 0, -1)
                      if (line := _table_line(text, ".".join(keys[:n])))), 0)
        where = _where(path, _line_of(text, leaf, start) or _line_of(text, leaf))
        table = ".".join(keys[:-1])
        if keys == ["fleet", "redis_url"]:
            from urllib.parse import urlsplit

            try:
                has_password = urlsplit(node).password is not None
            except ValueError:
                has_password = True
            if has_password or looks_like_secret(node):
                raise ConfigError(f"{where}: [fleet] redis_url contains a password (value not "
                                  "shown): put the whole URL in the environment variable "
                                  "FSCALE_REDIS_URL instead")
            return
        if leaf.endswith("_env"):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node) or looks_like_secret(node):
                raise ConfigError(f"{where}: [{table}] {leaf} must be the NAME of an environment "
                                  "variable, and its value looks like a key: put the key in the "
                                  "environment and write its name here (value not shown)")
            return
        # Table names (provider names, model aliases, panel names) are the user's words, not keys.
        named = keys[2:] if keys[0] in ("providers", "models") else [] if keys[0] == "panels" else keys
        if any(is_secret_key_name(k) for k in named):
            raise ConfigError(f"{where}: [{table}] {leaf} looks like a secret (value not shown): "
                              "keys never go in config.toml; set an environment variable and "
                              "name it with api_key_env = \"NAME_OF_ENV_VAR\"")

    walk(doc, [])


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"


def warn_unknown_keys(doc: dict[str, Any], text: str, path: Path) -> None:
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            line = _table_line(text, key) or _line_of(text, key)
            _warn(f"{_where(path, line)}: unknown table or key [{key}] ignored"
                  f"{_suggest(key, TOP_LEVEL_KEYS)}")
    from . import providers as provider_types

    provider_options, model_options = provider_types.option_keys()
    kinds = {"providers": PROVIDER_KEYS + provider_options, "models": MODEL_KEYS + model_options}
    for kind, known in kinds.items():
        tables = doc.get(kind)
        if not isinstance(tables, dict):
            continue
        for name, fields in tables.items():
            if not isinstance(fields, dict):
                continue
            start = _table_line(text, f"{kind}.{name}") or 0
            for key in fields:
                if key not in known:
                    _warn(f"{_where(path, _line_of(text, key, start))}: unknown key {key} in "
                          f"[{kind}.{name}] ignored{_suggest(key, known)}")
    tables = {"fleet": FLEET_KEYS}
    for setting in SETTINGS.values():
        tables[setting.table] = (*tables.get(setting.table, ()), setting.name)
    for table, known_keys in tables.items():
        fields = doc.get(table)
        if not isinstance(fields, dict):
            continue
        start = _table_line(text, table) or 0
        for key in fields:
            if key not in known_keys:
                _warn(f"{_where(path, _line_of(text, key, start))}: unknown key {key} in "
                      f"[{table}] ignored{_suggest(key, known_keys)}")


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
    # Provider types add their own built-in entries (e.g. the embedded local models).
    from . import providers as provider_types

    extra_providers, extra_models, extra_panels = provider_types.builtins()
    providers.update(extra_providers)
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
        providers[name] = ProviderConfig(name=name, base_url=str(merged.get("base_url", "")),
                                         api_key_env=merged.get("api_key_env"),
                                         rpm=merged.get("rpm"), burst=merged.get("burst"),
                                         concurrency=int(merged.get("concurrency") or 8),
                                         type=ptype, options=options,
                                         builtin=base is not None and base.builtin
                                         and "base_url" not in fields)

    models = {alias: ModelConfig(alias=alias, builtin=True, **fields)
              for alias, fields in BUILTIN_MODELS.items()}
    models.update(extra_models)
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
    panels.update(extra_panels)
    for name, members in _table(doc, "panels", cfg_path).items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{cfg_path}: panels.{name} must be a list of model aliases")
        panels[name] = list(members)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, setting in SETTINGS.items():
        values[name], sources[name] = setting.default, "default"
        table = _table(doc, setting.table, cfg_path)
        if name in table:
            values[name] = _convert(setting, table[name], f"{cfg_path} [{setting.table}]")
            sources[name] = "config"
        if env.get(setting.env) not in (None, ""):
            values[name] = _convert(setting, env[setting.env], f"environment {setting.env}")
            sources[name] = "env"
    budget = values["shadow_budget"]
    if not 0 <= budget < float("inf"):  # NaN and negative shares too
        where = {"env": f"environment {SETTINGS['shadow_budget'].env}",
                 "config": f"{cfg_path} [learning]"}.get(sources["shadow_budget"], "")
        raise ConfigError(f"{where}: shadow_budget = {budget!r} must be 0 or more (the share of "
                          "decision calls shadows may add: 0.1 = 10%, 0 = no shadows)")
    # Every configured key variable's value is removed from all text fscale prints or stores.
    from .redact import register_secrets

    register_secrets(p.api_key(env) for p in providers.values())
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
