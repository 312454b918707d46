"""One input boundary: every batch line and API item is decoded by one typed schema; a bad one is
one error line (with its item_id) and the rest runs; nothing is coerced; input is streamed."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fscale_tui.engine.base.errors import UsageError
from fscale_tui.engine.items import (GenerateItem, ItemError, ScaleItem, decode_item,
                                     generate_from_item, scale_from_item)
from tests.conftest import REPO, Behaviour, run_cli

DEEP = 100_000
#: (kind, the line, a word its error must name, the item_id the error line must carry)
BAD_LINES = [
    ("context float", '{"id": "b1", "question": "q", "context": 12.5}', "context", "b1"),
    ("context list", '{"id": "b2", "question": "q", "context": ["a"]}', "context", "b2"),
    ("context object", '{"id": "b3", "question": "q", "context": {"a": 1}}', "context", "b3"),
    ("k 1e999", '{"id": "b4", "question": "q", "k": 1e999}', "k must be", "b4"),
    ("k -1e999", '{"id": "b5", "question": "q", "k": -1e999}', "k must be", "b5"),
    ("k 5000 digits", '{"id": "b6", "question": "q", "k": ' + "9" * 5000 + "}", "5000-digit", "b6"),
    ("nested 100000 deep", '{"id": "b7", "question": "q", "x": ' + "[" * DEEP + "]" * DEEP + "}",
     "nested too deeply", None),
    ("context nested deep", '{"id": "b8", "question": "q", "context": ' + "[" * DEEP + "]" * DEEP
     + "}", "context", None),
    ("k 2.5", '{"id": "b9", "question": "q", "k": 2.5}', "not 2.5", "b9"),
    ("k true", '{"id": "b10", "question": "q", "k": true}', "not true", "b10"),
    ("id object", '{"id": {"a": 1}, "question": "q"}', "id must be", None),
    ("answers empty and comma", '{"id": "b12", "question": "q", "answers": ["", "A,B", "C"]}',
     "answers[0] must be a non-empty string", "b12"),
    ("answers comma", '{"id": "b13", "question": "q", "answers": ["A,B", "C"]}', "comma", "b13"),
    ("lone high surrogate", '{"id": "b14", "question": "q \\ud800"}', "lone surrogate", "b14"),
    ("lone low surrogate", '{"id": "b15", "question": "q", "context": "\\udc00x"}', "lone surrogate",
     "b15"),
    ("not JSON", "this is not json", "invalid JSON", None),
    ("truncated JSON", '{"id": "b17", "question": "q', "invalid JSON", None),
    ("NaN", '{"id": "b18", "question": "q", "k": NaN}', "invalid JSON", "b18"),
    ("an array", '["q", "YES"]', "not a JSON object", None),
    ("a string", '"just a question"', "not a JSON object", None),
    ("a number", "42", "not a JSON object", None),
    ("null", "null", "not a JSON object", None),
    ("no question", '{"id": "b23", "answers": ["YES", "NO"]}', "no question", "b23"),
    ("empty question", '{"id": "b24", "question": ""}', "question is empty", "b24"),
    ("blank question", '{"id": "b25", "question": "   "}', "question is empty", "b25"),
    ("question a number", '{"id": "b26", "question": 7}', "question must be", "b26"),
    ("answers a number", '{"id": "b27", "question": "q", "answers": 2}', "answers must be", "b27"),
    ("one label", '{"id": "b28", "question": "q", "answers": ["YES"]}', "at least two", "b28"),
    ("same label twice", '{"id": "b29", "question": "q", "answers": ["YES", "yes"]}', "repeats",
     "b29"),
    ("label not a string", '{"id": "b30", "question": "q", "answers": ["YES", 1]}', "answers[1]",
     "b30"),
    ("k 0", '{"id": "b31", "question": "q", "k": 0}', "k must be", "b31"),
    ("k 65", '{"id": "b32", "question": "q", "k": 65}', "k must be", "b32"),
    ("k as a string", '{"id": "b33", "question": "q", "k": "3"}', 'not "3"', "b33"),
    ("models not strings", '{"id": "b34", "question": "q", "models": [1]}', "models[0]", "b34"),
    ("models empty name", '{"id": "b35", "question": "q", "models": [""]}', "models[0]", "b35"),
    ("panel a number", '{"id": "b36", "question": "q", "panel": 7}', "panel must be", "b36"),
    ("id true", '{"id": true, "question": "q"}', "id must be", None),
    ("id float", '{"id": 1.5, "question": "q"}', "id must be", None),
    ("models and panel", '{"id": "b39", "question": "q", "models": ["fast-a"], "panel": "default"}',
     "at most one", "b39"),
    ("unknown panel", '{"id": "b40", "question": "q", "panel": "nope"}', "unknown panel", "b40"),
]
BAD_BYTES = [("not UTF-8", b'{"id": "b41", "question": "caf\xe9"}', "not valid UTF-8", None)]


def _write_batch(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _run_batch(path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("scale", "--batch", str(path), "-a", "YES,NO", "--models", "fast-a",
                   "--quiet", *args, timeout=600)


def test_each_kind_of_bad_line_is_one_error_line_and_the_next_line_still_runs(
        server, stub_config, tmp_path):
    """Finding 6 (and 7): one bad line never stops the batch; its error names the field."""
    server.set_default(Behaviour(reply="YES"))
    kinds = [(k, line.encode(), word, item_id) for k, line, word, item_id in BAD_LINES] + BAD_BYTES
    lines = []
    for i, (_, line, _, _) in enumerate(kinds):
        lines += [line, json.dumps({"id": f"g{i}", "question": f"good {i}?"}).encode()]
    batch = tmp_path / "items.jsonl"
    _write_batch(batch, lines)
    proc = _run_batch(batch)
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [o["index"] for o in out] == list(range(len(lines)))
    for i, (kind, _, word, item_id) in enumerate(kinds):
        bad, good = out[2 * i], out[2 * i + 1]
        assert bad["status"] == "error", (kind, bad)
        # A line that decodes but names an unknown panel fails when it runs: no line number.
        prefix = "" if kind == "unknown panel" else f"line {2 * i + 1}: "
        assert bad["error"].startswith(prefix) and word in bad["error"], (kind, bad)
        assert "Traceback" not in bad["error"] and "\n" not in bad["error"]
        assert bad["item_id"] == item_id, (kind, bad)
        assert good["status"] == "decided" and good["item_id"] == f"g{i}", (kind, good)
    assert proc.returncode == 3  # some line had no decision (README: batch exit codes)
    assert "Traceback" not in proc.stderr


def test_nothing_is_coerced(server, stub_config, tmp_path):
    """k 2.5 is not 2, k true is not 1, an object id is not its repr, 3 is "3" only as an id."""
    server.set_default(Behaviour(reply="YES"))
    batch = tmp_path / "items.jsonl"
    _write_batch(batch, [b'{"question": "q", "k": 2.5}', b'{"question": "q", "k": true}',
                         b'{"question": "q", "id": {"a": 1}}', b'{"question": "q", "id": 3}'])
    out = [json.loads(x) for x in _run_batch(batch).stdout.splitlines()]
    assert [o["status"] for o in out] == ["error", "error", "error", "decided"]
    assert "not 2.5" in out[0]["error"] and "not true" in out[1]["error"]
    assert "{'a': 1}" not in json.dumps(out) and out[2]["item_id"] is None
    assert out[3]["item_id"] == "3"
    assert server.count() == 1  # only the good line was asked


def test_a_lone_surrogate_is_refused_not_answered_and_silently_unlogged(server, stub_config,
                                                                          fscale_home, tmp_path):
    """Finding 7: it used to be answered and printed, but never reached the call log."""
    server.set_default(Behaviour(reply="YES"))
    batch = tmp_path / "items.jsonl"
    _write_batch(batch, [b'{"id": "s", "question": "is \\ud800 text?"}', b'{"id": "t", "question": "ok?"}'])
    out = [json.loads(x) for x in _run_batch(batch).stdout.splitlines()]
    assert out[0]["status"] == "error" and "lone surrogate" in out[0]["error"]
    assert out[0]["item_id"] == "s" and out[1]["status"] == "decided"
    conn = sqlite3.connect(fscale_home / "data" / "learning.db")
    logged = [r[0] for r in conn.execute("SELECT json_extract(extra, '$.item_id') FROM calls")]
    conn.close()
    assert logged == ["t"]  # every printed decision is in the log, and nothing else
    assert server.count() == 1


def test_the_python_api_uses_the_same_schema(server, stub_config):
    from fscale_tui import generate_batch, scale, scale_batch

    server.set_default(Behaviour(reply="YES"))
    for bad in ({"k": 2.5}, {"k": True}, {"context": 12.5}, {"models": [1]}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            scale("q?", ["YES", "NO"], **bad)
    with pytest.raises(UsageError, match="lone surrogate"):
        scale("q \ud800?", ["YES", "NO"])
    out = scale_batch([{"question": "a", "answers": ["YES", "NO"], "id": 1},
                       {"question": "b", "answers": ["YES", "NO"], "k": 2.5, "id": "x"},
                       {"question": "c\udc00", "answers": ["YES", "NO"]},
                       "not a dict",
                       {"question": "d", "answers": ["", "A,B", "C"]}], k=1, models=["fast-a"])
    assert out[0].answer == "YES" and out[0].item_id == "1"
    assert isinstance(out[1], ItemError) and out[1].item_id == "x" and "not 2.5" in str(out[1])
    assert "lone surrogate" in str(out[2]) and "not a JSON object" in str(out[3])
    assert "answers[0]" in str(out[4])
    gen = generate_batch([{"question": "a", "k": 1.5}, {"question": "b", "temperature": 1e308}],
                         strategy="vote", k=1, models=["fast-a"])
    assert "k must be" in str(gen[0]) and "temperature must be" in str(gen[1])


def test_stdin_is_streamed_the_first_result_comes_before_stdin_ends(server, stub_config, fscale_home):
    """A producer that is still writing gets results as its lines arrive (the whole input used
    to be read first: 50 MB on stdin cost 705 MB of memory)."""
    import os

    server.set_default(Behaviour(reply="YES"))
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", "scale", "--batch", "-", "-a",
                             "YES,NO", "--models", "fast-a", "--quiet"], cwd=REPO,
                            env=dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b'{"id": "first", "question": "q?"}\n')
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())  # stdin is still open here
        assert first["item_id"] == "first" and first["status"] == "decided"
        proc.stdin.write(b'{"id": "second", "question": "q?"}\n')
        proc.stdin.close()
        second = json.loads(proc.stdout.readline())
        assert second["item_id"] == "second" and proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_batch_of_only_bad_lines_is_exit_2(server, stub_config, tmp_path):
    batch = tmp_path / "items.jsonl"
    _write_batch(batch, [b"nope", b'{"question": 1}'])
    proc = _run_batch(batch)
    assert proc.returncode == 2 and len(proc.stdout.splitlines()) == 2
    assert server.count() == 0


@pytest.mark.slow
def test_ten_thousand_lines_with_ten_percent_bad_of_thirty_kinds(server, stub_config, fscale_home,
                                                                   tmp_path):
    """Acceptance 2: one error line per bad line, every good line decided and logged, exit 3."""
    server.set_default(Behaviour(reply="YES"))
    kinds = [line.encode() for _kind, line, _word, _id in BAD_LINES] + [BAD_BYTES[0][1]]
    assert len(kinds) >= 30
    lines, bad = [], set()
    for i in range(10_000):
        if i % 10 == 3:
            bad.add(i)
            lines.append(kinds[(i // 10) % len(kinds)])
        else:
            lines.append(json.dumps({"id": f"g{i}", "question": f"is {i} even?"}).encode())
    batch = tmp_path / "items.jsonl"
    _write_batch(batch, lines)
    proc = _run_batch(batch, "--concurrency", "32", "-k", "1")  # one request per good line
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert server.count() == 9_000
    assert len(out) == 10_000 and [o["index"] for o in out] == list(range(10_000))
    errors = {o["index"] for o in out if o["status"] == "error"}
    assert errors == bad
    assert all(o["error"].startswith(f"line {o['index'] + 1}: ") or "unknown panel" in o["error"]
               for o in out if o["index"] in bad)
    decided = {o["id"]: o["item_id"] for o in out if o["index"] not in bad}
    assert all(o["status"] == "decided" for o in out if o["index"] not in bad)
    conn = sqlite3.connect(fscale_home / "data" / "learning.db")
    logged = dict(conn.execute("SELECT id, json_extract(extra, '$.item_id') FROM calls"))
    conn.close()
    assert logged == decided and len(logged) == 9_000
    assert proc.returncode == 3


# -- properties: random JSON values in every field ---------------------------------------------
TEXT = st.text(max_size=8) | st.sampled_from(["", " ", "YES,NO", "auto", "\ud800", "a\udfffb",
                                              "fast-a", "default"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-10, max_value=70)
    | st.floats(allow_nan=False) | st.sampled_from([10**400, 1e308, -0.0, 2.5]) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=3),
    max_leaves=8)
SCALE_FIELDS = ["question", "answers", "context", "models", "panel", "k", "id"]
GENERATE_FIELDS = ["question", "context", "gold", "k", "strategy", "judges", "panel", "models",
                   "judge_models", "max_tokens", "max_steps", "width", "seed", "temperature",
                   "verifier", "id"]


def _line(obj: dict, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _accepted_exactly(field: str, value, request) -> None:
    """An accepted value reaches the request as it was given: never converted."""
    if field == "k":
        auto = getattr(request, "auto", False)  # scale only
        assert (value is None and request.k is None and not auto
                or value == "auto" and auto or _is_int(value) and request.k == value)
    elif field == "id":
        assert value is None and request.item_id is None \
            or (isinstance(value, str) or _is_int(value)) and request.item_id == str(value)
    elif field in ("context", "question", "gold", "panel", "strategy", "verifier"):
        assert value is None or isinstance(value, str)
        if field in ("question", "gold", "panel", "strategy", "verifier") and value is not None:
            assert getattr(request, field) == value
    elif field in ("judges", "max_tokens", "max_steps", "width", "seed"):
        assert value is None or _is_int(value) and getattr(request, field) == value
    elif field == "temperature":
        assert value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                 and math.isfinite(value) and request.temperature == value)
    elif field in ("answers", "models", "judge_models"):
        assert value is None or isinstance(value, (str, list))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(SCALE_FIELDS), value=JSON_VALUES, ascii_only=st.booleans())
def test_any_json_value_in_any_scale_field_is_a_request_or_one_item_error(field, value, ascii_only):
    item = {"question": "Is it?", "answers": ["YES", "NO"], "id": "p", field: value}
    defaults = {"answers": None, "models": None, "panel": None, "k": None, "tie_break": None}
    try:
        request = scale_from_item(decode_item(_line(item, ascii_only), ScaleItem), defaults)
    except ItemError as exc:
        message = str(exc)
        assert message and "\n" not in message and "Traceback" not in message
        assert exc.item_id in (None, "p", str(value) if field == "id" else "p")
        return
    _accepted_exactly(field, value, request)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(GENERATE_FIELDS), value=JSON_VALUES, ascii_only=st.booleans())
def test_any_json_value_in_any_generate_field_is_a_request_or_one_item_error(field, value,
                                                                           ascii_only):
    item = {"question": "What is 6*7?", "id": "p", field: value}
    try:
        request = generate_from_item(decode_item(_line(item, ascii_only), GenerateItem),
                                     {"strategy": "vote"})
    except ItemError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _accepted_exactly(field, value, request)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.sampled_from(SCALE_FIELDS), JSON_VALUES), min_size=1,
                     max_size=12))
def test_every_line_of_a_random_batch_gets_exactly_one_result(rows, tmp_path_factory):
    """The streamed reader: N non-blank lines in, N outcomes out, in order."""
    from fscale_tui.engine.items import scale_items

    path = tmp_path_factory.mktemp("batch") / "items.jsonl"
    _write_batch(path, [_line({"question": "q?", "answers": ["YES", "NO"], f: v}, False)
                        for f, v in rows])
    outcomes = list(scale_items(str(path), {"k": None, "tie_break": None}))
    assert len(outcomes) == len(rows)
    for lineno, outcome in enumerate(outcomes, 1):
        if isinstance(outcome, Exception):
            assert isinstance(outcome, ItemError) and str(outcome).startswith(f"line {lineno}: ")
