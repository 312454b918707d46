"""Input is UTF-8: undecodable stdin, files or arguments are a one-line exit 2 before any request."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import Behaviour, run_cli

BAD = b"the context \xff\xfe is not UTF-8\n"


def run_bytes(*args: bytes | str, stdin: bytes) -> subprocess.CompletedProcess:
    """``python -m fscale_tui ARGS`` with raw bytes on stdin (and possibly in argv)."""
    return run_cli(*args, input=stdin, text=False)


@pytest.mark.parametrize("args", [
    ("scale", "Is it fine?", "-a", "YES,NO", "-k", "1"),                      # piped context
    ("scale", "Is it fine?", "-a", "YES,NO", "-k", "1", "--context-file", "-"),
    ("scale", "--batch", "-", "-a", "YES,NO", "-k", "1"),                     # whole batch on stdin
    ("generate", "Summarise it", "-k", "1"),
])
def test_invalid_utf8_on_stdin_is_exit_2_before_any_request(server, stub_config, args):
    server.set_default(Behaviour(reply="YES"))
    stdin = BAD if "--batch" not in args else b'{"question": "ok?"}\n' + BAD
    proc = run_bytes(*args, stdin=stdin)
    if "--batch" in args:
        # A batch reads line by line: the bad line is one error result, the good one runs.
        lines = proc.stdout.decode().splitlines()
        assert len(lines) == 2 and '"status": "error"' in lines[1] and "UTF-8" in lines[1]
        assert server.count() == 1
        return
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "not valid UTF-8" in err and "0xff" in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1
    assert server.count() == 0


def test_invalid_utf8_draft_for_verify(server, stub_config, tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("source")
    proc = run_bytes("verify", "--source", str(src), "-k", "1", stdin=BAD)
    assert proc.returncode == 2 and b"draft on stdin is not valid UTF-8" in proc.stderr
    assert server.count() == 0


def test_invalid_utf8_context_file_names_the_file(server, stub_config, tmp_path):
    bad = tmp_path / "ctx.txt"
    bad.write_bytes(BAD)
    proc = run_bytes("scale", "Q?", "-a", "YES,NO", "-k", "1", "--context-file", str(bad), stdin=b"")
    assert proc.returncode == 2 and b"ctx.txt" in proc.stderr and b"offset 12" in proc.stderr
    assert server.count() == 0


def test_invalid_utf8_argument(server, stub_config):
    proc = run_bytes("scale", b"caf\xe9?", "-a", "YES,NO", "-k", "1", stdin=b"")
    assert proc.returncode == 2 and b"not valid UTF-8" in proc.stderr
    assert server.count() == 0


@pytest.mark.parametrize("args", [
    ("scale", "Is this review positive?", "-a", "POSITIVE,NEGATIVE", "-k", "1"),
    ("scale", "Is this review positive?", "-a", "POSITIVE,NEGATIVE", "-k", "1", "--context-file", "-"),
    ("generate", "Summarise the review", "-k", "1"),
])
@pytest.mark.parametrize("stdin", [b"", b"  \n\n"])
def test_empty_piped_context_is_a_usage_error_not_no_context(server, stub_config, args, stdin):
    """`printf "" | fscale scale ...`: an empty file piped by mistake is not "no context"."""
    server.set_default(Behaviour(reply="Answer: NEGATIVE"))
    proc = run_bytes(*args, stdin=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "empty" in err and "--context ''" in err and len(err.strip().splitlines()) == 1
    assert proc.stdout == b"" and server.count() == 0


def test_an_explicit_empty_context_asks_without_context(server, stub_config):
    server.set_default(Behaviour(reply="Answer: NEGATIVE"))
    proc = run_bytes("scale", "Is this review positive?", "-a", "POSITIVE,NEGATIVE", "-k", "1",
                     "--context", "", stdin=b"")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"NEGATIVE\n" and server.count() == 1
    assert "Context:" not in server.requests[0].body["messages"][0]["content"]
