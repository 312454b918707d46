"""Secrets: never in config.toml, never in any output, file or database row."""

from __future__ import annotations

import json
import sqlite3

import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ConfigError
from fscale_tui.engine.base.redact import MASK, redact, register_secrets
from tests.conftest import Behaviour, mid, run_cli, write_config

LITERAL = "q8Zr2VxK7pLm4NwT9sYb3HcJ6dFg"  # shaped like no well-known key


@pytest.mark.parametrize("toml", [
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "{LITERAL}"\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\ntoken = "{LITERAL}"\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napikey = "{LITERAL}"\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\nheaders = {{Authorization = "Bearer {LITERAL}"}}\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\n[providers.p.headers]\nX-Api-Key = "{LITERAL}"\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\n[models.m]\nprovider = "p"\nid = "x"\nsecret = "{LITERAL}"\n',
    f'[models.m]\nprovider = "nvidia"\nid = "x"\nparams = {{password = "{LITERAL}"}}\n',
    f'hf_token = "{LITERAL}"\n',
    f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "{LITERAL}"\n',
    '[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "sk-proj-abc-123"\n',
    '[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "Bearer abcdef"\n',
])
def test_literal_secrets_are_refused_anywhere_without_printing_them(fscale_home, toml):
    (fscale_home / "config.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "config.toml:" in message and "not shown" in message
    for secret in (LITERAL, "sk-proj", "abcdef"):
        assert secret not in message


def test_key_like_names_with_non_secret_values_are_fine(fscale_home):
    (fscale_home / "config.toml").write_text(
        '[defaults]\nmax_tokens = 64\n[providers.auth-proxy]\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key_env = "MY_PROXY_KEY"\n[panels]\ntokens = ["fast-a"]\n')
    settings = load_settings()
    assert settings.providers["auth-proxy"].api_key_env == "MY_PROXY_KEY"


def test_pasted_key_in_api_key_env_is_exit_2_for_every_command(fscale_home):
    (fscale_home / "config.toml").write_text(
        f'[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "{LITERAL}"\n')
    for args in (("models",), ("config", "show"), ("scale", "q?", "-a", "YES,NO")):
        proc = run_cli(*args)
        assert proc.returncode == 2, args
        assert LITERAL not in proc.stdout + proc.stderr


def test_redactor_masks_registered_values_and_bearer_tokens():
    register_secrets(["zz-registered-value-42"])
    text = 'echo: Authorization: Bearer abc.DEF-123_xyz and zz-registered-value-42 and sk-0123456789abcdefXYZ'
    out = redact(text)
    assert "zz-registered" not in out and "abc.DEF" not in out and "sk-0123" not in out
    assert out.count(MASK) == 3
    prose = "Use Bearer authentication with short-lived tokens."
    assert redact(prose) == prose
    # A placeholder key of a local server is a word, not a secret: model names keep it.
    register_secrets(["ollama", "lm-studio"])
    assert redact("ollama/llama3 via lm-studio") == "ollama/llama3 via lm-studio"


def test_a_short_text_redacted_before_its_secret_was_registered_is_masked_after():
    """Short texts' results are remembered (a batch repeats its keys and labels): registering
    a secret forgets them, so a text seen before is masked now."""
    text = "key zz-later-value-77"
    assert redact(text) == text and redact(text) == text  # seen twice: remembered
    register_secrets(["zz-later-value-77"])
    assert redact(text) == f"key {MASK}"
    long_text = "x" * 100 + " zz-even-later-99"
    assert redact(long_text) == long_text
    register_secrets(["zz-even-later-99"])
    assert redact(long_text).endswith(MASK)


# -- end to end: a server that echoes the key back -------------------------------------------------

def _all_text_in_db(path) -> str:
    conn = sqlite3.connect(path)
    chunks = []
    for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for row in conn.execute(f"SELECT * FROM {table}"):
            chunks.extend(str(v) for v in row if v is not None)
    conn.close()
    return "\n".join(chunks)


def test_an_echoed_key_appears_in_no_output_file_or_row(server, fscale_home):
    secret = "k9Lw2Qz7Xv4Rt8Np3Ym6Bc1Dg5Fh0Js"  # no 'sk-' prefix: only registration can catch it
    write_config(fscale_home, server, api_key_env="ECHO_KEY")
    server.script(mid("fast-a"), Behaviour(status=401, echo_auth=True))
    server.script(mid("fast-b"), Behaviour(status=500, echo_auth=True))
    server.script(mid("slow-c"), Behaviour(reply="YES"))
    env = {"ECHO_KEY": secret, "FSCALE_RETRIES": "0"}
    proc = run_cli("scale", "Is it?", "-a", "YES,NO", "--models", "fast-a,fast-b,slow-c", "--json",
                   env=env)
    # The server really echoed it (the test would be void otherwise).
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    result = json.loads(proc.stdout)
    errors = {v["model"]: v.get("error") or "" for v in result["votes"]}
    assert MASK in errors["fast-a"] and "401" in errors["fast-a"], errors
    assert MASK in errors["fast-b"] and "500" in errors["fast-b"], errors
    health = run_cli("health", "--models", "fast-a,fast-b", "--json", env=env)
    server.script(mid("fast-a"), Behaviour(status=401, echo_auth=True))
    human = run_cli("scale", "Is it?", "-a", "YES,NO", "--models", "fast-a,slow-c", env=env)
    outputs = [proc.stdout, proc.stderr, health.stdout, health.stderr, human.stdout, human.stderr]
    assert not [o for o in outputs if secret in o]
    db = fscale_home / "data" / "learning.db"
    assert db.exists() and secret not in _all_text_in_db(db) and secret[:12] not in _all_text_in_db(db)
    assert MASK in _all_text_in_db(db)
    health_file = fscale_home / "state" / "health.json"
    assert health_file.exists() and secret not in health_file.read_text()
    for path in fscale_home.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_the_refusal_names_the_line_in_the_right_table(fscale_home):
    (fscale_home / "config.toml").write_text(
        '[providers.a]\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "A_KEY"\n\n'
        f'[providers.b]\nbase_url = "http://127.0.0.1:2/v1"\nheaders = {{x = 1, token = "{LITERAL}"}}\n')
    with pytest.raises(ConfigError, match=r"config\.toml:7: \[providers\.b\.headers\] token"):
        load_settings()
