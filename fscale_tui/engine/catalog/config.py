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
import functools
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..base import storage
from .builtins import BUILTIN_MODELS, BUILTIN_PANELS, BUILTIN_PROVIDERS, TIERS
from ..base.errors import ConfigError
from ..base.settings import SETTINGS, ModelConfig, ProviderConfig, Setting, Settings
from ..base.paths import Paths


#: The range each numeric setting must stay in (inclusive; None = unbounded): an absurd value
#: is a config error naming it, never a value the engine trips over later.
SETTING_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "k": (1, 64), "max_tokens": (1, 1_000_000), "temperature": (0, 2), "health_ttl": (0, None),
    "batch_concurrency": (1, 10_000), "retries": (0, 100), "retry_base": (0, 3600),
    "timeout_fast": (1e-3, 86_400), "timeout_medium": (1e-3, 86_400),
    "timeout_slow": (1e-3, 86_400), "timeout_thinking": (1e-3, 86_400), "slow_after": (0, None),
    "challengers": (0, 64), "challenger_grace": (0, 3600),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


def _setting_type(setting: Setting) -> Any:
    """The msgspec type of a setting: its Python type, with its bounds."""
    import msgspec
    from typing import Annotated

    low, high = SETTING_BOUNDS.get(setting.name, (None, None))
    if setting.type in (int, float) and (low is not None or high is not None):
        return Annotated[setting.type, msgspec.Meta(ge=low, le=high)]
    return setting.type


def _located(path: Path, keys: list[str]) -> int | None:
    """The line of ``keys`` in the config file, read again only for an error message."""
    try:
        return TomlIndex(path.read_text(encoding="utf-8")).locate(keys)
    except (OSError, UnicodeDecodeError):
        return None


def _convert(setting: Setting, raw: Any, origin: str | Callable[[], str], *,
             text: bool = False) -> Any:
    """A setting's value from config.toml (a TOML value) or, with ``text``, the environment
    (a string to parse), by the one typed schema: ``k = 2.5`` is not 2, ``challenger = "yes"``
    in TOML is a string (TOML has true), ``FSCALE_CHALLENGER=banana`` is not false."""
    import msgspec

    from ..base.errors import describe

    value = raw
    try:
        if text and isinstance(raw, str) and setting.type is not str:  # the environment
            word = raw.strip().lower()
            if setting.type is bool:
                if word not in _TRUE | _FALSE:
                    raise ValueError
                value = word in _TRUE
            elif setting.type is int:
                value = int(word)
            else:
                value = float(word)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError
        return msgspec.convert(value, _setting_type(setting))
    except (TypeError, ValueError, msgspec.ValidationError):
        low, high = SETTING_BOUNDS.get(setting.name, (None, None))
        bounds = f" from {low:g} to {high:g}" if low is not None and high is not None else \
            f" of at least {low:g}" if low is not None else ""
        raise ConfigError(f"{origin() if callable(origin) else origin} {setting.name} must be "
                          f"{_TYPE_WORDS.get(setting.type, setting.type.__name__)}{bounds}, "
                          f"not {describe(raw)}") from None


#: The types of the keys fscale reads from a [providers.NAME] and a [models.ALIAS] table.
_PROVIDER_TYPES = {"base_url": str, "api_key_env": str, "rpm": "positive", "burst": "count",
                   "concurrency": "count", "type": str}
_MODEL_TYPES = {"provider": str, "id": str, "tier": str, "family": str, "cost": "non-negative"}
_TABLE_WORDS: dict[Any, str] = {str: "a string", "positive": "a number above 0", "count": "a whole number of at least 1",
                "non-negative": "a number of at least 0"}


def _table_schema(types: dict[str, Any]) -> Any:
    import msgspec
    from typing import Annotated

    def field_type(kind: Any) -> Any:
        if kind == "positive":
            return Annotated[int, msgspec.Meta(gt=0)] | Annotated[float, msgspec.Meta(gt=0)]
        if kind == "non-negative":
            return Annotated[int, msgspec.Meta(ge=0)] | Annotated[float, msgspec.Meta(ge=0)]
        if kind == "count":
            return Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
        return kind

    return msgspec.defstruct("Table", [(k, field_type(v) | None, None) for k, v in types.items()])


@functools.cache
def _schemas() -> tuple[Any, Any]:
    return _table_schema(_PROVIDER_TYPES), _table_schema(_MODEL_TYPES)


def _decode_table(fields: dict[str, Any], kind: str, name: str, path: Path) -> None:
    """Check the types of the keys fscale reads from ``[kind.name]`` (the one typed schema):
    a ``ConfigError`` naming ``file:LINE``, the key, what it must be and what it is."""
    import msgspec

    from ..base.errors import describe

    provider_schema, model_schema = _schemas()
    schema, types = (provider_schema, _PROVIDER_TYPES) if kind == "providers" else \
        (model_schema, _MODEL_TYPES)
    try:
        msgspec.convert({k: v for k, v in fields.items() if k in types}, schema)
    except msgspec.ValidationError as exc:
        found = re.search(r"`\$\.(\w+)`", str(exc))
        key = found[1] if found else next(iter(types))
        line = _located(path, [kind, name, key])  # looked up only now, for the message
        raise ConfigError(f"{_where(path, line)}: [{kind}.{name}] {key} must be "
                          f"{_TABLE_WORDS[types[key]]}, not "
                          f"{describe(fields.get(key), text=False)}") from None


def config_line(path: Path, table: str, key: str | None = None, value: str | None = None) -> str:
    """``path:LINE`` of ``[table] key = ...`` (or of the ``[table]`` header) in the user's
    config.toml, for messages; with ``value``, the line of that quoted string from the key on
    (a list written over several lines). Just ``path`` when the line cannot be found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return str(path)
    start = _table_line(text, table) or 0
    line = _line_of(text, key, start) if key is not None else start or None
    if line and value is not None:
        quoted = re.compile("[\"']" + re.escape(value) + "[\"']")
        line = next((n for n, x in enumerate(text.split("\n"), 1)
                     if n >= line and quoted.search(x)), line)
    return _where(path, line)


#: Top-level tables of config.toml, and the keys each kind of table knows. A key that is not here
#: is ignored with a one-line warning naming the closest known key (typos must not go unnoticed).
TOP_LEVEL_KEYS = ("providers", "models", "panels", "defaults", "fleet", "routing", "learning")
#: ``[fleet]``: what several fscale processes share (engine/coordination.py). A redis_url with a
#: password is refused here: it must come from the environment (FSCALE_REDIS_URL).
FLEET_KEYS = ("redis_url",)
#: ``[routing]``: ``budget`` = what ``-k auto`` and ``route`` may spend per item ("0.7x" of the
#: best single model, or USD like "0.002"; ``FSCALE_BUDGET`` overrides it).
ROUTING_KEYS = ("budget",)
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


@functools.lru_cache(maxsize=4096)
def is_secret_key_name(name: str) -> bool:
    words = _key_words(name)
    compact = "".join(words)
    return bool(SECRET_WORDS.intersection(words)) or any(
        w in compact for w in ("apikey", "secret", "password", "authorization", "bearer", "accesskey"))


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]")
_HEADER_PART = re.compile(r'"[^"]*"|\'[^\']*\'|[^.\s]+')
_ASSIGNED = re.compile(r'(?:^|[{,\s.])(?:"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*=(?!=)')


class TomlIndex:
    """Where each ``[table]`` header and each ``key =`` is in config.toml, indexed in one pass
    (for ``file:LINE`` messages). Looking them up by scanning the text for every value made
    the secret check quadratic: 2,000 models took 12 s and 10,000 models over 300 s."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._tables: dict[str, int] | None = None
        self._keys: dict[str, list[int]] = {}

    def _build(self) -> dict[str, int]:
        if self._tables is None:
            self._tables = {}
            for lineno, line in enumerate(self.text.split("\n"), 1):
                header = _HEADER.match(line)
                if header:
                    parts = [p.strip("\"'") for p in _HEADER_PART.findall(header[1])]
                    self._tables.setdefault(".".join(parts), lineno)
                for found in _ASSIGNED.finditer(line):
                    key = next(g for g in found.groups() if g is not None)
                    self._keys.setdefault(key, []).append(lineno)
        return self._tables

    def table_line(self, dotted: str) -> int | None:
        """The line of the ``[dotted]`` header (None if the table is written inline)."""
        return self._build().get(dotted)

    def key_line(self, key: str, after: int = 0) -> int | None:
        """The first line after ``after`` that assigns ``key`` (None if there is none)."""
        import bisect

        self._build()
        lines = self._keys.get(str(key), [])
        at = bisect.bisect_right(lines, after)
        return lines[at] if at < len(lines) else None

    def locate(self, keys: list[str]) -> int | None:
        """The line of the value at ``keys`` (e.g. ``["models", "m", "cost"]``): the key's first
        assignment under the nearest enclosing ``[table]`` header, else anywhere."""
        start = next((line for n in range(len(keys) - 1, 0, -1)
                      if (line := self.table_line(".".join(map(str, keys[:n]))))), 0)
        return self.key_line(keys[-1], start) or self.key_line(keys[-1])


def _line_of(text: str | TomlIndex, key: str, after: int = 0) -> int | None:
    """The 1-based line of ``key = ...`` in the TOML text (for file:line messages)."""
    index = text if isinstance(text, TomlIndex) else TomlIndex(text)
    return index.key_line(key, after)


def _table_line(text: str | TomlIndex, dotted: str) -> int | None:
    index = text if isinstance(text, TomlIndex) else TomlIndex(text)
    return index.table_line(dotted)


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


class _Where:
    """``file:LINE`` of a value, found only if it is printed."""

    def __init__(self, path: Path, index: TomlIndex, keys: list[str]) -> None:
        self.path, self.index, self.keys = path, index, keys

    def __str__(self) -> str:
        return _where(self.path, self.index.locate(self.keys))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


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
        line: int | None = raw[: exc.start].count(b"\n") + 1
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
    index = TomlIndex(text)
    check_no_secrets(doc, index, path)
    warn_unknown_keys(doc, index, path)
    return doc


def check_no_secrets(doc: dict[str, Any], text: str | TomlIndex, path: Path) -> None:
    """Refuse a literal secret anywhere in config.toml (never printing it). Linear in the size
    of the file: the line of a value is looked up only when it is refused."""
    from ..base.redact import looks_like_secret, url_secrets

    index = text if isinstance(text, TomlIndex) else TomlIndex(text)

    def refuse(keys: list[str], why: str) -> None:
        where = _where(path, index.locate(keys))
        table = ".".join(keys[:-1])
        if why == "redis":
            raise ConfigError(f"{where}: [fleet] redis_url contains a password (value not "
                              "shown): put the whole URL in the environment variable "
                              "FSCALE_REDIS_URL instead")
        if why == "env":
            raise ConfigError(f"{where}: [{table}] {keys[-1]} must be the NAME of an environment "
                              "variable, and its value looks like a key: put the key in the "
                              "environment and write its name here (value not shown)")
        raise ConfigError(f"{where}: [{table}] {keys[-1]} looks like a secret (value not shown): "
                          "keys never go in config.toml; set an environment variable and "
                          "name it with api_key_env = \"NAME_OF_ENV_VAR\"")

    def check(node: str, keys: list[str], secret_path: bool) -> None:
        leaf = keys[-1]
        if keys == ["fleet", "redis_url"]:
            if url_secrets(node) or looks_like_secret(node):
                refuse(keys, "redis")
            return
        if leaf.endswith("_env"):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node) or looks_like_secret(node):
                refuse(keys, "env")
            return
        if secret_path or (_is_named(keys, len(keys) - 1) and is_secret_key_name(leaf)):
            refuse(keys, "secret")

    def walk(node: Any, keys: list[str], secret_path: bool) -> None:
        items = node.items() if isinstance(node, dict) else ((None, v) for v in node)
        for k, v in items:
            here = keys if k is None else [*keys, str(k)]
            if isinstance(v, str):
                if v.strip() and here:
                    check(v, here, secret_path)
            elif isinstance(v, (dict, list)):
                walk(v, here, secret_path or (k is not None and _is_named(here, len(here) - 1)
                                              and is_secret_key_name(str(k))))

    walk(doc, [], False)


def _is_named(keys: list[str], position: int) -> bool:
    """Whether the key at ``position`` of a path is a key name, not a name the user chose:
    provider names, model aliases and panel names are the user's words, not keys."""
    top = keys[0]
    if top in ("providers", "models"):
        return position >= 2
    return top != "panels"


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(known)})"


def warn_unknown_keys(doc: dict[str, Any], text: str | TomlIndex, path: Path) -> None:
    text = text if isinstance(text, TomlIndex) else TomlIndex(text)
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            line = _table_line(text, key) or _line_of(text, key)
            _warn(f"{_where(path, line)}: unknown table or key [{key}] ignored"
                  f"{_suggest(key, TOP_LEVEL_KEYS)}")
    from .. import providers as provider_types

    provider_options, model_options = provider_types.option_keys()
    kinds = {"providers": PROVIDER_KEYS + provider_options, "models": MODEL_KEYS + model_options}
    for kind, known in kinds.items():
        tables = doc.get(kind)
        if not isinstance(tables, dict):
            continue
        for name, fields in tables.items():
            if not isinstance(fields, dict):
                continue
            for key in fields:
                if key not in known:
                    start = _table_line(text, f"{kind}.{name}") or 0
                    _warn(f"{_where(path, _line_of(text, key, start))}: unknown key {key} in "
                          f"[{kind}.{name}] ignored{_suggest(key, known)}")
    tables = {"fleet": FLEET_KEYS, "routing": ROUTING_KEYS}
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


def load_settings(paths: Paths | None = None, env: Mapping[str, str] | None = None, *,
                  user_config: bool = True) -> Settings:
    """Build the Settings for this process (defaults < config file < environment).

    ``user_config=False`` leaves config.toml out (built-ins and environment only): for what
    must work while the file is broken, such as stopping the local servers."""
    env = dict(os.environ if env is None else env)
    paths = paths or Paths.resolve(env)
    doc = read_user_config(paths.config_file) if user_config else {}
    cfg_path = paths.config_file

    providers = {name: ProviderConfig(name=name, builtin=True, **fields)
                 for name, fields in BUILTIN_PROVIDERS.items()}
    # Provider types add their own built-in entries (e.g. the embedded local models).
    from .. import providers as provider_types

    extra_providers, extra_models, extra_panels = provider_types.builtins()
    providers.update(extra_providers)
    for name, fields in _table(doc, "providers", cfg_path).items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{cfg_path}: [providers.{name}] must be a table")
        _decode_table(fields, "providers", name, cfg_path)
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
        if provider_types.needs_base_url(ptype) and not merged.get("base_url"):
            raise ConfigError(f"{config_line(cfg_path, f'providers.{name}')}: "
                              f"[providers.{name}] needs base_url")
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
        _decode_table(fields, "models", alias, cfg_path)
        prior = models.get(alias)
        merged = {"provider": prior.provider, "id": prior.id, "tier": prior.tier,
                  "family": prior.family, "cost": prior.cost} if prior else {}
        known = {"provider", "id", "tier", "family", "cost"}
        merged.update({k: v for k, v in fields.items() if k in known})
        for required in ("provider", "id"):
            if required not in merged:
                raise ConfigError(f"{config_line(cfg_path, f'models.{alias}')}: "
                                  f"[models.{alias}] needs {required}")
        if merged["provider"] not in providers:
            raise ConfigError(f"{config_line(cfg_path, f'models.{alias}', 'provider')}: "
                              f"[models.{alias}] uses unknown provider {merged['provider']!r} "
                              f"(providers: {', '.join(sorted(providers))})")
        tier = merged.get("tier", "medium")
        if tier not in TIERS:
            raise ConfigError(f"{config_line(cfg_path, f'models.{alias}', 'tier')}: "
                              f"[models.{alias}] tier must be one of {', '.join(TIERS)}")
        models[alias] = ModelConfig(alias=alias, provider=merged["provider"], id=str(merged["id"]),
                                    tier=tier, family=str(merged.get("family") or ""),
                                    cost=float(merged.get("cost") or 0.0),
                                    options={k: v for k, v in fields.items() if k not in known})

    panels = {name: list(members) for name, members in BUILTIN_PANELS.items()}
    panels.update(extra_panels)
    for name, members in _table(doc, "panels", cfg_path).items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{config_line(cfg_path, 'panels', name)}: [panels] {name} must "
                              "be a list of model aliases")
        panels[name] = list(members)

    routing = _table(doc, "routing", cfg_path)
    if routing.get("budget") not in (None, ""):
        from ..base.errors import UsageError
        from ..base.budget import parse_budget

        try:
            parse_budget(routing["budget"], option="budget")
        except UsageError as exc:
            raise ConfigError(f"{cfg_path} [routing]: {exc}") from None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, setting in SETTINGS.items():
        values[name], sources[name] = setting.default, "default"
        table = _table(doc, setting.table, cfg_path)
        if name in table:
            values[name] = _convert(setting, table[name], lambda: _where(  # called now, if at all
                cfg_path, _located(cfg_path, [setting.table, name])) + f": [{setting.table}]")
            sources[name] = "config"
        if env.get(setting.env) not in (None, ""):
            values[name] = _convert(setting, env[setting.env], f"environment {setting.env}:",
                                    text=True)
            sources[name] = "env"
    budget = values["shadow_budget"]
    if not 0 <= budget < float("inf"):  # NaN and negative shares too
        where = {"env": f"environment {SETTINGS['shadow_budget'].env}",
                 "config": f"{cfg_path} [learning]"}.get(sources["shadow_budget"], "")
        raise ConfigError(f"{where}: shadow_budget = {budget!r} must be 0 or more (the share of "
                          "decision calls shadows may add: 0.1 = 10%, 0 = no shadows)")
    # Every configured key variable's value is removed from all text fscale prints or stores.
    # So are the credentials of the Redis URL (``:pass@``, ``?password=``) and the value of any
    # environment variable whose name says it holds a secret (OPENAI_API_KEY, HF_TOKEN, ...).
    from ..base.redact import register_secrets, register_url_secrets

    register_secrets(p.api_key(env) for p in providers.values())
    register_url_secrets(env.get("FSCALE_REDIS_URL"))
    fleet = doc.get("fleet")
    if isinstance(fleet, dict) and isinstance(fleet.get("redis_url"), str):
        register_url_secrets(fleet["redis_url"])
    register_secrets(value for name, value in env.items() if is_secret_key_name(name))
    return Settings(paths=paths, providers=providers, models=models, panels=panels,
                    values=values, sources=sources, env=env, user_config=doc)


def update_user_config(paths: Paths, change: Callable[[dict[str, Any]], object]) -> None:
    """Edit config.toml in place, keeping the user's file (used by panels set/rm and evolve).

    The file is edited with tomlkit, a style-preserving TOML library: comments, blank lines,
    key order and quoting survive, and ``change(doc)`` only touches what it changes (``doc``
    behaves like a dict). A config.toml that is a symbolic link (dotfiles) stays a link: the
    file it points to is rewritten. The write is atomic and under the cross-process lock; a
    file that is invalid or holds a secret is refused before anything is written (exit 2),
    and a home that cannot be written is a :class:`~.errors.StateError` (exit 2).
    """
    import tomlkit

    link = paths.config_file
    path = storage.resolve_user_file(link)
    try:
        with storage.locked(link):
            read_user_config(path)  # invalid TOML or a secret: refused, nothing written
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            doc = tomlkit.parse(text)
            change(doc)
            mode = path.stat().st_mode & 0o777 & storage.FILE_MODE if path.exists() \
                else storage.FILE_MODE
            storage.atomic_write_text(path, tomlkit.dumps(doc), mode=mode or storage.FILE_MODE)
    except OSError as exc:
        raise storage.state_error(exc, path, f"write {link}") from None
