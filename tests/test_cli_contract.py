"""The script author's contract (issue 12): stdout is data even when stderr is a terminal,
progress on a terminal (with --json too, off with --quiet), NO_COLOR, one-line usage errors,
exit codes under --debug, shell completion, and start-up that imports only what it needs.

Terminal behaviour is tested on a real pseudo-terminal (stderr) with stdout redirected to a
real file, the way `fscale scale --batch items.jsonl > out.jsonl` runs in a shell.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Behaviour, run_cli, run_cli_pty

#: SGR sequences (colours, bold, dim, ...): what NO_COLOR must remove. Cursor movement of a
#: progress bar is not styling.
SGR = re.compile(r"\x1b\[[0-9;]*m")


def _tasks(path: Path, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"id": f"t{i}", "question": f"Is {i} even?",
                                        "answers": ["YES", "NO"],
                                        "label": "YES" if i % 2 == 0 else "NO"}) + "\n"
                            for i in range(n)))
    return path


# -- finding 1: stdout is data, also when stderr is a terminal ------------------------------------
def test_scale_batch_to_a_file_under_a_terminal_writes_every_line(server, stub_config, tmp_path):
    """`fscale scale --batch items.jsonl > out.jsonl` in a terminal: every result in the file,
    none on the screen (the progress bar used to capture stdout)."""
    server.set_default(Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"q{i}", "question": f"q{i}?"}) + "\n"
                             for i in range(12)))
    out = tmp_path / "out.jsonl"
    code, stdout, stderr = run_cli_pty("scale", "--batch", str(items), "-a", "YES,NO", "-k", "2",
                                       stdout_path=out)
    assert code == 0, stderr
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert [x["index"] for x in lines] == list(range(12))
    assert all(x["answer"] == "YES" for x in lines)
    assert '"schema"' not in stderr and '"index"' not in stderr  # no result on the screen


def test_generate_batch_to_a_file_under_a_terminal_writes_every_line(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="The answer is: 12"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"q{i}", "gold": "12"}) + "\n" for i in range(5)))
    out = tmp_path / "out.jsonl"
    code, stdout, stderr = run_cli_pty("generate", "--batch", str(items), "-s", "vote", "-k", "2",
                                       stdout_path=out)
    assert code == 0, stderr
    assert [json.loads(x)["index"] for x in stdout.splitlines()] == list(range(5))
    assert '"schema"' not in stderr


@pytest.mark.parametrize("command", [
    ["profile", "{tasks}", "--models", "fast-a,fast-b", "--json"],
    ["profile", "{tasks}", "--models", "fast-a,fast-b"],
    ["calibrate", "{tasks}", "--stages", "default", "--alpha", "0.5", "--dry-run", "--json"],
])
def test_profile_and_calibrate_progress_never_captures_stdout(server, stub_config, tmp_path, command):
    server.set_default(Behaviour(reply="YES"))
    tasks = _tasks(tmp_path / "tasks.jsonl")
    out = tmp_path / "out.txt"
    args = [str(tasks) if a == "{tasks}" else a for a in command]
    code, stdout, stderr = run_cli_pty(*args, stdout_path=out)
    assert code == 0, stderr
    if "--json" in args:
        data = json.loads(stdout)  # exactly the JSON, nothing else
        assert data and "{" not in stderr
    else:
        assert "fast-a" in stdout and "accuracy" in stdout and "accuracy" not in stderr


# -- finding 5: progress on a terminal, --json or not; --quiet silences ---------------------------
def test_json_on_a_terminal_still_shows_the_votes_on_stderr(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    out = tmp_path / "out.json"
    code, stdout, stderr = run_cli_pty("scale", "q?", "-a", "YES,NO", "--json", stdout_path=out)
    assert code == 0
    assert json.loads(stdout)["answer"] == "YES"  # stdout: exactly the JSON
    assert "fast-a" in stderr and "fast-b" in stderr and "→ YES" in stderr  # votes on the screen


def test_generate_json_on_a_terminal_shows_candidates(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="The answer is: 12"))
    out = tmp_path / "out.json"
    code, stdout, stderr = run_cli_pty("generate", "q", "-s", "vote", "-k", "2", "--json",
                                       stdout_path=out)
    assert code == 0 and json.loads(stdout)["answer"] == "12"
    assert "generate (vote, k=2)" in stderr


def test_health_json_on_a_terminal(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="OK"))
    out = tmp_path / "out.json"
    code, stdout, stderr = run_cli_pty("health", "--json", stdout_path=out)
    assert code == 0
    assert {r["model"] for r in json.loads(stdout)} >= {"fast-a", "fast-b"}
    assert "fast-a" in stderr and "ok" in stderr and '"model"' not in stderr


def test_quiet_silences_the_terminal(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    out = tmp_path / "out.json"
    code, stdout, stderr = run_cli_pty("scale", "q?", "-a", "YES,NO", "--json", "-q",
                                       stdout_path=out)
    assert code == 0 and json.loads(stdout)["answer"] == "YES" and stderr == ""


def test_json_into_a_pipe_keeps_stderr_empty(server, stub_config):
    """Without a terminal, --json means nobody watches: nothing on stderr (unchanged)."""
    server.set_default(Behaviour(reply="YES"))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json")
    assert proc.returncode == 0 and proc.stderr == ""


# -- finding 9: NO_COLOR, completion, one-line usage errors, --debug exit codes -------------------
def test_no_color_removes_every_style_from_stderr(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="YES"))
    out = tmp_path / "out.txt"
    code, _, styled = run_cli_pty("scale", "q?", "-a", "YES,NO", stdout_path=out)
    assert code == 0 and SGR.search(styled)  # a terminal gets bold/dim/colours by default
    code, stdout, plain = run_cli_pty("scale", "q?", "-a", "YES,NO", stdout_path=out,
                                      env={"NO_COLOR": "1"})
    assert code == 0 and stdout == "YES\n"
    assert "fast-a" in plain and "→ YES" in plain
    assert not SGR.search(plain), repr(plain)


def test_no_color_removes_every_style_from_help(tmp_path):
    code, _, styled = run_cli_pty("--help", stdout_path=None)
    assert code == 0 and SGR.search(styled)
    for args in (["--help"], ["scale", "--help"]):
        code, _, plain = run_cli_pty(*args, stdout_path=None, env={"NO_COLOR": "1"})
        assert code == 0 and "Usage: fscale" in plain and not SGR.search(plain), args


def test_shell_completion_script_and_completions():
    # Typed in bash: typer finds the shell among the process's ancestors.
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m fscale_tui --show-completion; true"],
                          capture_output=True, text=True, cwd=REPO, stdin=subprocess.DEVNULL)
    assert "_FSCALE_COMPLETE=complete_bash" in proc.stdout, proc.stderr
    assert "complete -o default -F _fscale_completion fscale" in proc.stdout
    proc = run_cli(env={"_FSCALE_COMPLETE": "complete_bash", "COMP_WORDS": "fscale sc",
                        "COMP_CWORD": "1"})
    assert proc.returncode == 0 and proc.stdout.split() == ["scale"]
    proc = run_cli(env={"_FSCALE_COMPLETE": "complete_bash", "COMP_WORDS": "fscale scale --ans",
                        "COMP_CWORD": "2"})
    assert proc.returncode == 0 and proc.stdout.split() == ["--answers"]
    proc = run_cli("--help")
    assert "--install-completion" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["verify"], "missing option '--source'"),
    (["route"], "missing QUESTION"),
    (["panels", "show"], "missing argument"),
    (["scale", "q?", "--concurrency", "0"], "--concurrency"),
    (["scale", "q?", "--bogus"], "no such option: --bogus"),
    (["scal"], "no such command 'scal'. Did you mean 'scale'"),
    (["--nope"], "no such option: --nope"),
    (["local", "frob"], "no such command 'frob'"),
])
def test_usage_errors_are_one_line_with_exit_2(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("fscale: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr and "--help" in proc.stderr


@pytest.mark.parametrize("how", [["--debug"], []])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(fscale_home, how):
    env = {} if how else {"FSCALE_DEBUG": "1"}
    proc = run_cli(*how, "scale", "q?", env=env)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == ("fscale: error: missing --answers, e.g. --answers "
                                                     "YES,NO (see 'fscale scale --help')")
    proc = run_cli(*how, "scale", "q?", "-a", "YES,NO", env=env)  # no provider at all
    assert proc.returncode == 4 and "Traceback" in proc.stderr


# -- start-up: what --help, --version, config path and usage errors import -------------------------
IMPORTS = ("import json, sys\nsys.argv = ['fscale', *sys.argv[1:]]\n"
           "from fscale_tui.cli import main\n"
           "try:\n    main()\nexcept SystemExit:\n    pass\n"
           "sys.stderr.write('\\nMODULES ' + json.dumps(sorted(sys.modules)) + '\\n')\n")
#: What a command that asks no model may load from the engine: errors, paths, input parsing
#: (requests and their types: calls, budget, spend), and the redactor every error line passes
#: (standard library only).
LIGHT_ENGINE = {"fscale_tui.engine", "fscale_tui.engine.base", "fscale_tui.engine.base.errors",
                "fscale_tui.engine.base.paths", "fscale_tui.engine.requests",
                "fscale_tui.engine.base.calls", "fscale_tui.engine.base.budget",
                "fscale_tui.engine.base.spend", "fscale_tui.engine.base.redact",
                "fscale_tui.engine.base.output"}  # the output boundary: every write goes through it


@pytest.mark.parametrize("args", [["--version"], ["--help"], [], ["config", "path"],
                                  ["scale", "q?"], ["verify"], ["nope"], ["scale", "--help"],
                                  ["--show-completion"], ["mcp", "--help"]])
def test_start_up_imports_neither_httpx_nor_the_engine_nor_textual(fscale_home, args):
    """Nor the MCP SDK: ``fscale mcp --help`` is as light as any other help."""
    proc = subprocess.run([sys.executable, "-c", IMPORTS, *args], capture_output=True, text=True,
                          cwd=REPO, stdin=subprocess.DEVNULL)
    modules = json.loads(proc.stderr.rsplit("MODULES ", 1)[1])
    assert not [m for m in modules if m.split(".")[0] in ("httpx", "textual", "numpy", "mcp",
                                                          "mcp_types")]
    assert "fscale_tui.engine.session" not in modules
    engine = {m for m in modules if m.startswith("fscale_tui.engine")}
    assert engine <= LIGHT_ENGINE, sorted(engine - LIGHT_ENGINE)


def test_help_lists_every_command_with_the_summary_of_its_docstring():
    """The lazy command table (names, modules, summaries), read from the modules' sources,
    matches what the modules register."""
    import typer

    from fscale_tui import cli

    registered = {}
    for module_name in sorted(set(cli.commands().values())):
        holder = typer.Typer(rich_markup_mode="rich")
        __import__(f"fscale_tui.cli.{module_name}", fromlist=["register"]).register(holder)
        for name, cmd in typer.main.get_group(holder).commands.items():
            registered[name] = (module_name, cmd)
    assert set(registered) == set(cli.commands())
    for name, module_name in cli.commands().items():
        assert registered[name][0] == module_name
        cmd = registered[name][1]
        first = " ".join((cmd.help or "").split("\n\n")[0].split())
        assert first.startswith(cli.summary(name).rstrip(".")), (name, first, cli.summary(name))
    proc = run_cli("--help")
    for name in cli.commands():
        assert f" {name} " in proc.stdout


def test_an_empty_file_name_and_turned_off_local_models_are_said_as_such(fscale_home):
    proc = run_cli("verify", "--source", "", input="a draft")
    assert proc.returncode == 2 and "the file name is empty" in proc.stderr
    assert "directory" not in proc.stderr
    proc = run_cli("scale", "q?", "-a", "YES,NO", env={"FSCALE_LOCAL": "off"})
    assert proc.returncode == 4 and "turned off (FSCALE_LOCAL=off)" in proc.stderr
    assert "pip install" not in proc.stderr
