"""Config precedence, paths, atomic writes, locking across processes, corrupt files."""

from __future__ import annotations

import json
import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fscale_tui.engine.base import storage
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.errors import ConfigError
from fscale_tui.engine.base.paths import Paths
from tests.conftest import REPO, run_cli, start_cli


def test_fscale_home_puts_everything_under_one_dir(fscale_home):
    paths = Paths.resolve()
    assert paths.config_file == fscale_home / "config.toml"
    assert paths.data_dir == fscale_home / "data"
    assert paths.state_dir == fscale_home / "state"
    assert paths.cache_dir == fscale_home / "cache"


def test_without_fscale_home_platformdirs_are_used(monkeypatch):
    monkeypatch.delenv("FSCALE_HOME")
    paths = Paths.resolve()
    assert "fscale" in str(paths.config_dir) and "fscale" in str(paths.state_dir)


def test_precedence_flag_over_env_over_config_over_default(fscale_home, monkeypatch):
    settings = load_settings()
    assert settings.get("k") == 3 and settings.source("k") == "default"
    (fscale_home / "config.toml").write_text("[defaults]\nk = 5\n")
    settings = load_settings()
    assert settings.get("k") == 5 and settings.source("k") == "config"
    monkeypatch.setenv("FSCALE_K", "7")
    settings = load_settings()
    assert settings.get("k") == 7 and settings.source("k") == "env"
    settings.with_overrides(k=9)
    assert settings.get("k") == 9 and settings.source("k") == "flag"


def test_config_show_says_where_values_come_from(fscale_home):
    (fscale_home / "config.toml").write_text("[defaults]\nmax_tokens = 64\n")
    proc = run_cli("config", "show", "--json", env={"FSCALE_K": "4"})
    data = json.loads(proc.stdout)
    assert data["settings"]["max_tokens"] == {**data["settings"]["max_tokens"], "value": 64, "source": "config"}
    assert data["settings"]["k"]["value"] == 4 and data["settings"]["k"]["source"] == "env"
    assert data["settings"]["temperature"]["source"] == "default"
    assert run_cli("config", "path").stdout.strip() == str(fscale_home / "config.toml")


def test_invalid_config_values_are_clear_errors(fscale_home):
    (fscale_home / "config.toml").write_text('[models.x]\nprovider = "nowhere"\nid = "m"\n')
    with pytest.raises(ConfigError, match="unknown provider"):
        load_settings()
    (fscale_home / "config.toml").write_text('[defaults]\nk = "many"\n')
    with pytest.raises(ConfigError, match="k"):
        load_settings()
    proc = run_cli("models")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_a_broken_config_is_exit_2_naming_file_and_line_and_is_left_alone(fscale_home):
    cfg = fscale_home / "config.toml"
    text = '[providers.mine]\nbase_url = "http://127.0.0.1:1/v1"\n\n[panels\ndefault = ["a"]\n'
    cfg.write_text(text)
    proc = run_cli("panels")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"fscale: error: {cfg}:4: invalid TOML") and proc.stderr.count("\n") == 1
    assert cfg.read_text() == text and not list(fscale_home.glob("config.toml.corrupt-*"))
    # Writers refuse too: a panel edit never rewrites the user's broken file.
    proc = run_cli("panels", "set", "x", "fast-a")
    assert proc.returncode == 2 and cfg.read_text() == text


def test_config_that_is_not_utf8_is_exit_2(fscale_home):
    cfg = fscale_home / "config.toml"
    cfg.write_bytes(b'[defaults]\nk = 3\npanel = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"config\.toml:3: not valid UTF-8"):
        load_settings()
    assert cfg.exists()


def test_unknown_keys_warn_with_the_closest_known_key(fscale_home):
    (fscale_home / "config.toml").write_text(
        '[defautls]\nk = 5\n\n[defaults]\ntie_breakk = "rating"\n\n'
        '[providers.p]\nbase_url = "http://127.0.0.1:1/v1"\nrmp = 60\n'
        '[models.m]\nprovider = "p"\nid = "x"\nteir = "fast"\n')
    proc = run_cli("config", "show", "--json")
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("fscale: warning:")]
    assert len(warnings) == 4, proc.stderr
    joined = "\n".join(warnings)
    assert "config.toml:1: unknown table or key [defautls] ignored (did you mean defaults?)" in joined
    assert "config.toml:5: unknown key tie_breakk in [defaults] ignored (did you mean tie_break?)" in joined
    assert "config.toml:9: unknown key rmp in [providers.p] ignored (did you mean rpm?)" in joined
    assert "config.toml:13: unknown key teir in [models.m] ignored (did you mean tier?)" in joined


def test_corrupt_state_file_is_moved_aside_not_overwritten(fscale_home):
    path = fscale_home / "state" / "x.json"
    path.parent.mkdir()
    path.write_text("{broken")
    storage.update_json(path, lambda d: d.__setitem__("a", 1))
    assert json.loads(path.read_text()) == {"a": 1}
    aside = list(path.parent.glob("x.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == "{broken"


def _bump(path: str, n: int, key: str) -> None:
    for _ in range(n):
        storage.update_json(Path(path), lambda d: d.__setitem__(key, d.get(key, 0) + 1))


def test_several_processes_updating_state_lose_nothing(tmp_path):
    path = tmp_path / "state.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(path), 50, f"p{i % 2}")) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert json.loads(path.read_text()) == {"p0": 150, "p1": 150}


def test_panels_set_from_several_processes_at_once(fscale_home):
    """Concurrent CLI processes writing config.toml: every panel survives."""
    procs = [start_cli(None, "panels", "set", f"p{i}", "llama-3.1-8b,gemma-2-9b")
             for i in range(5)]
    for p in procs:
        assert p.wait(60) == 0
    names = json.loads(run_cli("panels", "--json").stdout)
    assert all(f"p{i}" in names for i in range(5))


_WRITER = """
import sys
from pathlib import Path
from fscale_tui.engine.base import storage
path = Path(sys.argv[1])
big = "x" * 2_000_000
i = 0
while True:
    i += 1
    storage.write_json(path, {"generation": i, "payload": big})
"""


def test_killing_a_writer_mid_write_leaves_previous_state_readable(tmp_path):
    path = tmp_path / "state.json"
    storage.write_json(path, {"generation": 0, "payload": ""})
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], cwd=REPO)
        time.sleep(0.6)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = json.loads(path.read_text())  # never a torn file
        assert data["generation"] >= 0 and isinstance(data["payload"], str)
    # Leftover temp files from the killed writers never replace the real file.
    assert path.exists()


def test_atomic_write_keeps_permissions(tmp_path):
    path = tmp_path / "keys"
    storage.atomic_write_text(path, "x", mode=0o600)
    assert (path.stat().st_mode & 0o777) == 0o600
