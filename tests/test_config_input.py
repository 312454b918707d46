"""config.toml through the one input boundary: linear to read, typed, nothing coerced."""

from __future__ import annotations

import cProfile
import pstats

import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ConfigError


def _config_with(models: int) -> str:
    lines = ['[providers.stub]', 'base_url = "http://127.0.0.1:9/v1"', 'api_key_env = "STUB_KEY"']
    for i in range(models):
        lines += [f"[models.m{i}]", 'provider = "stub"', f'id = "vendor/model-{i}"',
                  'tier = "fast"', f'family = "f{i % 7}"', "cost = 0.1"]
    return "\n".join(lines + ['[panels]', 'default = ["m0", "m1"]']) + "\n"


def _calls_to_load(home, models: int) -> int:
    """Function calls (Python and C, regex searches included) made by load_settings: a
    measure of work that does not depend on how busy the machine is."""
    (home / "config.toml").write_text(_config_with(models))
    profile = cProfile.Profile()
    profile.enable()
    load_settings()
    profile.disable()
    return pstats.Stats(profile).total_calls


def test_reading_the_config_is_linear_in_its_size(fscale_home):
    """Finding 8: the secret check looked for the line of every value by scanning the whole
    file, so 1,000 models took 3.8 s, 2,000 took 12 s and 10,000 over 300 s per command
    (bench/trust_io.py measures the seconds)."""
    _calls_to_load(fscale_home, 10)  # imports and first-use caches out of the way
    small, large = _calls_to_load(fscale_home, 300), _calls_to_load(fscale_home, 1200)
    assert large / small < 4.6, (small, large)  # 4x the models: ~4x the work, not ~16x


@pytest.mark.parametrize("toml, line, words", [
    ('[providers.p]\nbase_url = "http://x/v1"\nrpm = 0\n', 3, "rpm must be a number above 0, not 0"),
    ('[providers.p]\nbase_url = "http://x/v1"\nrpm = "fast"\n', 3, "rpm must be a number above 0"),
    ('[providers.p]\nbase_url = "http://x/v1"\nconcurrency = 2.5\n', 3,
     "concurrency must be a whole number of at least 1, not 2.5"),
    ('[providers.p]\nbase_url = "http://x/v1"\nburst = true\n', 3, "burst must be a whole number"),
    ('[providers.p]\nbase_url = 7\n', 2, "base_url must be a string, not 7"),
    ('[models.m]\nprovider = "nim"\nid = "x"\ncost = "cheap"\n', 4,
     "cost must be a number of at least 0, not a string"),
    ('[models.m]\nprovider = "nim"\nid = 12\n', 3, "id must be a string, not 12"),
    ('[models.m]\nprovider = "nim"\nid = "x"\ncost = -1\n', 4, "cost must be a number of at least 0"),
    ('\n[defaults]\nk = 2.5\n', 3, "k must be a whole number from 1 to 64, not 2.5"),
    ('[defaults]\nk = true\n', 2, "k must be a whole number from 1 to 64, not true"),
    ('[defaults]\nchallenger = "yes"\n', 2, 'challenger must be true or false, not "yes"'),
    ('[defaults]\ntemperature = 1e300\n', 2, "temperature must be a number from 0 to 2"),
    ('[defaults]\nmax_tokens = 99999999999999999999\n', 2, "max_tokens must be a whole number"),
])
def test_a_badly_typed_value_is_exit_2_naming_its_line(fscale_home, toml, line, words):
    (fscale_home / "config.toml").write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert f"config.toml:{line}" in message and words in message, message


@pytest.mark.parametrize("name, value, words", [
    ("FSCALE_K", "2.5", 'k must be a whole number from 1 to 64, not "2.5"'),
    ("FSCALE_K", "0", "k must be a whole number from 1 to 64"),
    ("FSCALE_CHALLENGER", "banana", 'challenger must be true or false, not "banana"'),
    ("FSCALE_TEMPERATURE", "nan", "temperature must be a number from 0 to 2"),
    ("FSCALE_TIMEOUT_FAST", "0", "timeout_fast must be a number"),
])
def test_a_bad_environment_value_is_refused_not_coerced(fscale_home, monkeypatch, name, value,
                                                        words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert f"environment {name}" in str(info.value) and words in str(info.value)


def test_good_values_keep_their_types(fscale_home, monkeypatch):
    (fscale_home / "config.toml").write_text(
        '[providers.p]\nbase_url = "http://x/v1"\nrpm = 600\nconcurrency = 4\n'
        '[models.m]\nprovider = "p"\nid = "x"\ncost = 0\n[defaults]\nk = 5\ntemperature = 1\n')
    monkeypatch.setenv("FSCALE_CHALLENGER", "off")
    settings = load_settings()
    assert settings.providers["p"].rpm == 600 and settings.providers["p"].concurrency == 4
    assert settings.get("k") == 5 and settings.get("temperature") == 1.0
    assert settings.get("challenger") is False


@pytest.mark.parametrize("url", ["redis://h:6379/0?password=Zx8Qw3Er7Ty1", "redis://:Zx8Qw3Er7Ty1@h/0",
                                 "redis://h/0?db=0&password=short"])
def test_a_redis_password_in_config_is_refused_in_every_form(fscale_home, url):
    (fscale_home / "config.toml").write_text(f'[fleet]\nredis_url = "{url}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "config.toml:2" in str(info.value) and "Zx8Qw3Er7Ty1" not in str(info.value)
    assert "short" not in str(info.value)
