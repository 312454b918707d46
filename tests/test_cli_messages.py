"""What the CLI says to a newcomer (issue 22): labelled numbers, messages that name the file and
line to fix, help text that wraps like prose, and output that does what the README says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, Behaviour, mid, run_cli, run_cli_pty, write_config


# -- feedback ------------------------------------------------------------------------------------
def test_feedback_prints_labelled_numbers(server, stub_config):
    """`fscale feedback` printed `local-qwen-0.5b-s +65.6`: a number without a name."""
    server.set_default(Behaviour(reply="YES", latency=0.3))
    server.script(mid("slow-c"), Behaviour(reply="NO"))
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json").stdout)
    proc = run_cli("feedback", data["id"], "--override", "NO", env={"NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = lines[0].split()
    assert header[:1] == ["model"] and "Elo" in lines[0] and "accuracy" in lines[0]
    ratings = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    for line in lines[1:]:
        model, change, *_ = line.split()
        assert model in ratings and re.fullmatch(r"[+-]\d+\.\d", change)
        assert f"{ratings[model]['rating']:.1f}" in line  # the Elo rating it moved to
        assert "±" in line  # and the accuracy estimate, as `fscale ratings` shows it


# -- config messages -----------------------------------------------------------------------------
def test_a_bad_value_in_defaults_names_its_line(server, fscale_home):
    path = write_config(fscale_home, server)
    text = path.read_text() + '\n[defaults]\nmax_tokens = 256\nk = "three"\n'
    path.write_text(text)
    line = text.splitlines().index('k = "three"') + 1
    proc = run_cli("scale", "q?", "-a", "YES,NO")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"fscale: error: {path}:{line}: [defaults] k must be")
    assert "not \"three\"" in proc.stderr
    assert "whole number" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_an_unknown_model_in_a_configured_panel_names_config_toml(server, fscale_home):
    path = write_config(fscale_home, server, panels={"default": ["nosuch-a"]})
    line = next(n for n, x in enumerate(path.read_text().splitlines(), 1) if "nosuch-a" in x)
    proc = run_cli("scale", "q?", "-a", "YES,NO")
    assert proc.returncode == 2
    assert f"{path}:{line}:" in proc.stderr and "panel 'default'" in proc.stderr
    assert "unknown model 'nosuch-a'" in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_local_stop_works_with_a_broken_config(fscale_home, tmp_path):
    """`fscale local stop` refused to run while config.toml was broken: stopping servers needs
    no configuration (their state files name them)."""
    import time

    from fscale_tui.engine.base import storage
    from fscale_tui.engine.base.paths import Paths
    from fscale_tui.engine.providers.local import servers

    paths = Paths.resolve()
    state = servers.state_path(paths, "some-model")
    token = "0123456789abcdef"
    # A stand-in for a local server of this home: a live process with its command line.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m",
                             servers.SERVE_MODULE, "--state", str(state), "--token", token])
    try:
        storage.write_json(state, {"name": "some-model", "pid": proc.pid, "token": token,
                                   "url": "http://127.0.0.1:9", "base_url": "http://127.0.0.1:9/v1"})
        (fscale_home / "config.toml").write_text("[defaults\nk = 3\n")
        out = run_cli("local", "stop")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["some-model"]
        assert "config.toml:1" in out.stderr and "stopped 1 local server" in out.stderr
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is not None and not state.exists()
        # Everything else still says what is wrong with the file (exit 2).
        assert run_cli("local", "status").returncode == 2
    finally:
        proc.kill()
        proc.wait()


def test_calibrate_summary_is_one_line_with_the_models_counted(fscale_home):
    """calibrate printed "at most 1 models → " and the rest on the next line."""
    from tests.test_auto import _profiled

    _, path = _profiled(fscale_home)
    proc = run_cli("calibrate", str(path), "--max-calls", "3", "--budget", "1.5")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("adaptive -k auto"))
    assert re.search(r"at most 1 model → accuracy \d+\.\d% at \d\.\d\d calls per item "
                     r"\(budget 1\.5\)$", line), proc.stdout


# -- help ----------------------------------------------------------------------------------------
def _commands() -> list[list[str]]:
    """Every command and subcommand path (``["history", "show"]``, ...)."""
    from fscale_tui.cli import commands, load_command

    out: list[list[str]] = []
    for name in commands():
        command = load_command(name)
        out.append([name])
        out += [[name, sub] for sub in getattr(command, "commands", {})]
    assert ["history", "show"] in out and ["local", "stop"] in out
    return out


def _prose(doc: str) -> list[str]:
    """The prose paragraphs of a docstring (examples, indented, are not prose), one line each."""
    import inspect

    from rich.text import Text

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return [" ".join(Text.from_markup(p).plain.split()) for p in paragraphs
            if p.strip() and not any(line.startswith(" ") for line in p.splitlines())]


_MARKER = "-- end of help --"
_EVERY_HELP = f"""
import sys
from fscale_tui.cli import main
for line in sys.stdin.read().splitlines():
    sys.argv = ["fscale", *line.split(), "--help"]
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print({_MARKER!r}, flush=True)
"""


def test_help_wraps_prose_at_the_terminal_width_not_at_the_docstring_line_breaks():
    """At a wide terminal every prose paragraph of every --help is one line: a docstring's hard
    line breaks no longer survive ("... or --alpha without" / "a calibration)")."""
    from fscale_tui.cli import load_command

    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
    paths = _commands()
    # One process prints every help (as `fscale PATH --help` would), each followed by a marker.
    proc = subprocess.run([sys.executable, "-c", _EVERY_HELP], env=env, capture_output=True,
                          text=True, cwd=REPO, timeout=120,
                          input="".join(" ".join(path) + "\n" for path in paths))
    assert proc.returncode == 0, proc.stderr
    helps = proc.stdout.split(_MARKER + "\n")
    assert len(helps) == len(paths) + 1 and not helps[-1].strip(), proc.stdout[-500:]
    for path, text in zip(paths, helps):
        command = load_command(path[0])
        if len(path) > 1:
            command = command.commands[path[1]]
        shown = [" ".join(line.split()) for line in text.splitlines()]
        assert shown and any(shown), path
        for paragraph in _prose(command.help or ""):
            if len(paragraph) > 350:
                continue
            assert any(paragraph.rstrip(".") in line for line in shown), (path, paragraph)


# -- what the README says ------------------------------------------------------------------------
def test_batch_in_a_terminal_shows_what_the_readme_says(server, stub_config, tmp_path):
    """README: `fscale scale --batch items.jsonl > results.jsonl` in a terminal writes every
    result to the file while the progress bar shows on the terminal, then a summary."""
    readme = (REPO / "README.md").read_text()
    assert "while the bar and the votes show on the terminal" not in readme
    server.set_default(Behaviour(reply="Answer: YES"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "question": f"q{i}?"}) + "\n"
                             for i in range(3)))
    code, stdout, terminal = run_cli_pty("scale", "--batch", str(items), "-a", "YES,NO",
                                         stdout_path=tmp_path / "results.jsonl")
    assert code == 0, terminal
    assert [json.loads(x)["item_id"] for x in stdout.splitlines()] == ["q0", "q1", "q2"]
    assert "3 items (3 decided)" in terminal


@pytest.mark.parametrize("args", [
    ("generate", "Pick a draft", "-k", "2", "--json"),
    ("scale", "q?", "-a", "YES,NO", "-k", "9", "--json"),  # -k capped: a note for people
])
def test_json_into_a_pipe_leaves_stderr_empty(server, fscale_home, args):
    """README: with --json into a pipe, stderr stays empty (the notes are in the JSON)."""
    write_config(fscale_home, server, models={"only-a": ("x/a", "fast", "x"),
                                              "only-b": ("x/b", "fast", "x")},
                 panels={"default": ["only-a", "only-b"]})
    # A reply every role reads: a label for a vote, a ballot for a judge.
    server.set_default(Behaviour(reply="Best: Output 1\nAnswer: YES"))
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    data = json.loads(proc.stdout)
    if args[0] == "generate":
        assert data["judges_independent"] is False  # what the note said is in the JSON
    else:
        assert data["members"] == ["only-a", "only-b"]  # who votes, instead of the -k note


USAGE_ERRORS = [
    (("scale", "q?"), "scale"),                                   # no --answers
    (("scale",), "scale"),                                        # no question
    (("scale", "q?", "-a", "YES,NO", "-k", "zero"), "scale"),
    (("verify", "--source", "README.md", "--draft", "README.md", "--question", "q?",
      "-k", "0"), "verify"),
    (("generate", "q?", "-s", "nosuch"), "generate"),
    (("feedback", "x"), "feedback"),
    (("evolve", "--dry-run", "--apply"), "evolve"),
    (("history", "export", "out.jsonl"), "history export"),
    (("calibrate", "README.md", "--budget", "0.5"), "calibrate"),
    (("scale", "--nosuch"), "scale"),                             # click's own usage errors
]


@pytest.mark.parametrize("args,command", USAGE_ERRORS)
def test_every_usage_error_points_at_the_commands_help(stub_config, args, command):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(rf"fscale: error: .+ \(see 'fscale {command} --help'\)\n", proc.stderr), \
        proc.stderr


async def test_the_default_panel_is_named_when_config_toml_sets_none(fscale_home):
    """README: the default panel is the first of nim, github (then local) whose key is set.
    `fscale panels` and the Panels screen listed no panel as the default, while evolve spoke
    of "the default panel 'default'"."""
    from fscale_tui.app import FscaleApp
    from tests.test_tui import wait_for

    proc = run_cli("panels", env={"NVIDIA_API_KEY": "nvapi-test-not-a-key"})
    assert proc.returncode == 0, proc.stderr
    starred = [line.split()[0] for line in proc.stdout.splitlines() if line.endswith("★ default")]
    assert starred == ["nim"] and "the 'default' panel is 'nim'" in proc.stderr
    os.environ["NVIDIA_API_KEY"] = "nvapi-test-not-a-key"
    try:
        app = FscaleApp(start="panels")
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one("#panels-table")
            await wait_for(pilot, lambda: table.row_count > 0, what="the panels")
            assert str(table.get_cell_at((0, 0))) == "nim ★"
            assert "(now 'nim')" in str(app.screen.query_one("#evolve-diff").render())
    finally:
        del os.environ["NVIDIA_API_KEY"]
