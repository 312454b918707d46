"""The one-shot CLI as a script author uses it: stdout is data, exit codes mean something."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Behaviour, mid, run_cli, write_config

COMMANDS = ["scale", "verify", "generate", "health", "models", "panels", "evolve", "profile", "tui"]


def test_help_lists_every_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for name in COMMANDS:
        assert name in proc.stdout


@pytest.mark.parametrize("command", ["scale", "verify", "health", "models", "panels", "config",
                                     "mcp"])
def test_every_command_help_has_an_example(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout


@pytest.mark.parametrize("args", [
    ["scale", "--help"], ["models", "--json"], ["panels"], ["config", "show"], ["health", "--help"],
    ["verify", "--help"], ["mcp", "--help"],
])
def test_one_shot_commands_do_not_import_textual(args):
    """Nor ray or redis (the [ray] and [fleet] extras): only a Redis URL or --ray loads them;
    nor the MCP SDK (the [mcp] extra): only the server ``fscale mcp`` loads it."""
    code = ("import sys\nfrom fscale_tui.cli import app\n"
            "try:\n    app(args=%r)\nexcept SystemExit:\n    pass\n"
            "bad = sorted({m.split('.')[0] for m in sys.modules}\n"
            "             & {'textual', 'ray', 'redis', 'mcp', 'mcp_types'})\n"
            "print(' '.join(bad) if bad else 'CLEAN')"
            % (args,))
    env = {k: v for k, v in os.environ.items() if k != "FSCALE_REDIS_URL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env)
    assert proc.stdout.strip().splitlines()[-1] == "CLEAN"


def test_scale_json_contract(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="SAFE"))
    server.script(mid("fast-b"), Behaviour(reply="SAFE"))
    server.script(mid("slow-c"), Behaviour(reply="VULNERABLE", latency=0.1))
    proc = run_cli("scale", "Is this safe?", "--answers", "SAFE,VULNERABLE", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # exactly one JSON object, nothing else
    for key in ("id", "answer", "confidence", "votes", "calls_made", "elapsed_s", "decided_early"):
        assert key in data
    assert data["answer"] == "SAFE"
    assert {"model", "answer", "latency_s", "error"} <= set(data["votes"][0])
    assert proc.stderr == ""  # --json: nothing for humans


def test_plain_output_is_the_answer_on_stdout_and_votes_on_stderr(server, stub_config):
    server.set_default(Behaviour(reply="NO"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", env={"NO_COLOR": "1"})
    assert proc.returncode == 0 and proc.stdout == "NO\n"
    assert "fast-a" in proc.stderr and "\x1b[" not in proc.stderr  # NO_COLOR / not a TTY


def test_context_from_file_and_from_piped_stdin(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    ctx = tmp_path / "x.py"
    ctx.write_text("FILE-CONTEXT-MARK")
    assert run_cli("scale", "q?", "-a", "YES,NO", "-q", "--context-file", str(ctx)).returncode == 0
    assert "FILE-CONTEXT-MARK" in server.requests[-1].body["messages"][0]["content"]
    assert run_cli("scale", "q?", "-a", "YES,NO", "-q", input="PIPED-CONTEXT-MARK").returncode == 0
    assert "PIPED-CONTEXT-MARK" in server.requests[-1].body["messages"][0]["content"]
    assert run_cli("scale", "q?", "-a", "YES,NO", "-q", "--context-file", "-",
                   input="DASH-CONTEXT").returncode == 0
    assert "DASH-CONTEXT" in server.requests[-1].body["messages"][0]["content"]


def test_verify_reads_draft_from_stdin(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="Answer: YES"))
    src = tmp_path / "paper.txt"
    src.write_text("The sky is blue.")
    proc = run_cli("verify", "--source", str(src), "--json", input="The sky is green and made of cheese.")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "YES"
    ctx = server.requests[-1].body["messages"][0]["content"]
    assert "Source:\nThe sky is blue." in ctx and "Output:\nThe sky is green" in ctx


@pytest.mark.parametrize("args,code,needle", [
    (["scale", "q?"], 2, "--answers"),
    (["scale", "q?", "-a", "YES"], 2, "two"),
    (["scale", "q?", "-a", "YES,NO", "--models", "nope"], 2, "unknown model"),
    (["scale", "q?", "-a", "YES,NO", "--context-file", "/does/not/exist"], 2, "does not exist"),
    (["scale", "q?", "-a", "YES,NO", "-k", "zero"], 2, "-k"),
    (["scale", "q?", "-a", "YES,NO", "--tie-break", "coin"], 2, "tie-break"),
    (["verify", "--source", "/nope"], 2, "does not exist"),
    (["panels", "show", "nope"], 2, "unknown panel"),
])
def test_bad_input_is_one_line_and_exit_2(server, stub_config, args, code, needle):
    proc = run_cli(*args)
    assert proc.returncode == code
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_tie_exits_3_and_json_still_printed(server, fscale_home):
    write_config(fscale_home, server, panels={"default": ["fast-a", "fast-b"]})
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(reply="NO"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["answer"] is None and data["status"] == "tie"
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json", "--tie-break", "order")
    assert proc.returncode == 0 and json.loads(proc.stdout)["answer"] == "YES"


def test_all_failed_exits_4_with_json(server, fscale_home):
    write_config(fscale_home, server, models={"x1": ("x/1", "fast", "x")}, panels={"default": ["x1"]})
    server.set_default(Behaviour(status=500))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json", env={"FSCALE_RETRIES": "0"})
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["status"] == "all_failed"


def test_no_provider_is_a_clear_error(fscale_home):
    proc = run_cli("scale", "q?", "-a", "YES,NO")  # the tests run with FSCALE_LOCAL=off
    assert proc.returncode == 4
    assert "NVIDIA_API_KEY" in proc.stderr and "FSCALE_LOCAL=off" in proc.stderr


@pytest.mark.xdist_group("serial")  # an early decision's time
def test_early_decision_from_the_cli(server, stub_config):
    """Acceptance 3: two fast agreeing models and a 10 s one: returns well under a second of
    model time, the process well before the slow reply (its start-up takes seconds on a busy
    machine), and the slow request is cancelled."""
    server.script(mid("fast-a"), Behaviour(reply="YES", latency=0.01))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.02))
    server.script(mid("slow-c"), Behaviour(reply="NO", latency=10.0))
    t0 = time.monotonic()
    proc = run_cli("scale", "q?", "-a", "YES,NO", "-k", "3", "--json")
    wall = time.monotonic() - t0
    data = json.loads(proc.stdout)
    assert data["decided_early"] and data["elapsed_s"] < 1.0 and wall < 8.0
    assert server.wait_until(lambda: server.cancelled(mid("slow-c")) == 1, timeout=3)


def test_batch_cli_one_result_per_line_and_bad_lines_isolated(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "question": "q1?"}\nnot json\n{"id": "c", "question": "q3?", "answers": ["X", "Y"]}\n')
    server.script(mid("fast-a"), Behaviour(reply_fn=lambda body: "X" if "X, Y" in str(body) else "YES"))
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "-k", "1")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2]
    assert lines[0]["answer"] == "YES" and lines[1]["status"] == "error" and "line 2" in lines[1]["error"]
    assert lines[2]["answer"] == "X"
    assert proc.returncode == 3  # one item had no decision


def test_health_reports_statuses_and_persists_dead(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="OK"))
    server.script(mid("fast-b"), Behaviour(status=410))
    server.script(mid("fast-c"), Behaviour(status=404))
    server.script(mid("fast-d"), Behaviour(status=429, retry_after=30))
    server.script(mid("slow-c"), Behaviour(status=500))
    proc = run_cli("health", "--models", "fast-a,fast-b,fast-c,fast-d,slow-c", "--json")
    assert proc.returncode == 0
    status = {x["model"]: x["status"] for x in json.loads(proc.stdout)}
    assert status == {"fast-a": "ok", "fast-b": "dead", "fast-c": "unavailable",
                      "fast-d": "rate_limited", "slow-c": "error"}
    models = {m["alias"]: m for m in json.loads(run_cli("models", "--json").stdout)}
    assert models["fast-b"]["health"] == "dead" and models["fast-c"]["health"] == "unavailable"


def test_health_ttl_expires_unavailable_but_not_dead(server, stub_config):
    server.script(mid("fast-b"), Behaviour(status=410))
    server.script(mid("fast-c"), Behaviour(status=404))
    run_cli("health", "--models", "fast-b,fast-c", env={"FSCALE_HEALTH_TTL": "0.5"})
    time.sleep(0.6)
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.ask.health import HealthStore

    store = HealthStore(load_settings())
    assert store.verdict("fast-b") == "dead" and store.verdict("fast-c") is None


def test_dead_verdict_clears_when_the_catalogue_entry_changes(server, stub_config, fscale_home):
    server.script(mid("fast-b"), Behaviour(status=410))
    run_cli("health", "--models", "fast-b")
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.ask.health import HealthStore

    assert HealthStore(load_settings()).verdict("fast-b") == "dead"
    text = (fscale_home / "config.toml").read_text().replace('"vendor-b/fast"', '"vendor-b/fast-v2"')
    (fscale_home / "config.toml").write_text(text)
    assert HealthStore(load_settings()).verdict("fast-b") is None


def test_models_json_and_refresh_reports_gone_entries(server, stub_config):
    rows = json.loads(run_cli("models", "--json").stdout)
    stub = [r for r in rows if r["provider"] == "stub"]
    assert {r["alias"] for r in stub} >= {"fast-a", "slow-c"} and all(r["usable"] for r in stub)
    nim = [r for r in rows if r["provider"] == "nim"]
    assert nim and not any(r["usable"] for r in nim)  # no NVIDIA_API_KEY in tests
    server.set_models(["vendor-a/fast", "vendor-b/fast", "brand/new"])
    report = json.loads(run_cli("models", "refresh", "--json").stdout)
    assert "fast-c" in report["stub"]["gone"] and "fast-a" not in report["stub"]["gone"]
    assert report["stub"]["new"] == ["brand/new"]


def test_panels_set_show_rm_and_scale_uses_the_panel(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    assert run_cli("panels", "set", "mine", "fast-c,fast-d").returncode == 0
    shown = json.loads(run_cli("panels", "show", "mine", "--json").stdout)
    assert [m["alias"] for m in shown["members"]] == ["fast-c", "fast-d"]
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--panel", "mine", "--json")
    assert sorted(v["model"] for v in json.loads(proc.stdout)["votes"]) == ["fast-c", "fast-d"]
    assert run_cli("panels", "set", "bad", "nope").returncode == 2
    assert run_cli("panels", "rm", "mine").returncode == 0
    assert run_cli("panels", "show", "mine").returncode == 2
    assert run_cli("panels", "rm", "nim").returncode == 2  # built-in


def test_python_module_entry_point_matches_console_script():
    proc = subprocess.run([sys.executable, "-m", "fscale_tui", "--version"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.startswith("fscale ")
