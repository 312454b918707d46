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
