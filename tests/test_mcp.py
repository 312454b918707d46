"""``fscale mcp``: the MCP server, started as a subprocess and driven by the ``mcp`` SDK's own
stdio client against the loopback OpenAI-compatible server (issue 24).

What an agent relies on: the tools are listed with typed inputs and output schemas; each returns
the object the CLI's ``--json`` prints; votes arrive as progress notifications; a cancelled call
cancels its HTTP requests; bad arguments are tool errors with the CLI's message and exit-code
name, and the server stays up; no secret reaches a result; every call is in the call log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp.server.mcpserver", reason="the [mcp] extra (MCP SDK 2.x) is not installed")

import anyio  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

from tests.cli_zygote import write_shim  # noqa: E402
from tests.conftest import REPO, Behaviour, mid, run_cli, the_zygote, write_config  # noqa: E402
from tests.test_readme import _run, parse_readme, reader  # noqa: E402,F401 (reader: a fixture)

TOOLS = {"scale", "verify", "generate", "route", "health", "models"}


@asynccontextmanager
async def mcp_session(errlog: Path, env: dict[str, str] | None = None
                      ) -> AsyncIterator[ClientSession]:
    """``fscale mcp`` in a process of its own (this test's environment: FSCALE_HOME, ...),
    initialised: forked from the worker's zygote that holds the MCP SDK (through the shell shim
    of tests/cli_zygote.py, whose pipes the server gets), or a fresh ``python -m fscale_tui``."""
    full = {**os.environ, **(env or {})}
    command, args = sys.executable, ["-m", "fscale_tui", "mcp"]
    zygote = the_zygote("mcp")
    if zygote is not None:
        command, args = str(errlog.parent / "fscale-shim"), ["mcp"]
        write_shim(command)
        full["FSCALE_TEST_ZYGOTE"] = zygote.path
    params = StdioServerParameters(command=command, args=args, env=full, cwd=str(REPO))
    with open(errlog, "a") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def text_of(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def without_timings(obj: dict[str, Any]) -> dict[str, Any]:
    """A scale object without what differs between two runs of the same call."""
    out = {k: v for k, v in obj.items() if k not in ("id", "elapsed_s")}
    out["votes"] = [{k: v for k, v in vote.items() if k != "latency_s"} for vote in obj["votes"]]
    return out


def history_ids() -> set[str]:
    proc = run_cli("history", "--json", "--limit", "50")
    assert proc.returncode == 0, proc.stderr
    return {row["id"] for row in json.loads(proc.stdout)}


@pytest.fixture
def errlog(tmp_path: Path) -> Path:
    """The server's stderr; a test that ends checks it holds no traceback (nothing crashed)."""
    path = tmp_path / "mcp-stderr.log"
    path.touch()
    yield path
    assert "Traceback" not in path.read_text()


async def test_lists_its_tools_with_typed_inputs_and_output_schemas(stub_config, errlog):
    async with mcp_session(errlog) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == TOOLS
    scale = tools["scale"]
    assert set(scale.input_schema["required"]) == {"question", "answers"}
    props = scale.input_schema["properties"]
    assert {"context", "k", "budget", "models", "panel", "tie_break", "alpha"} <= set(props)
    assert {"type": "integer"} in props["k"]["anyOf"]
    assert any(branch.get("const") == "auto" or branch.get("enum") == ["auto"]
               for branch in props["k"]["anyOf"])
    assert {"answer", "confidence", "status", "votes", "members", "calls_made", "cost_usd"} <= \
        set(scale.output_schema["properties"])
    assert set(tools["verify"].input_schema["required"]) == {"draft", "source"}
    assert "strategy" in tools["generate"].input_schema["properties"]
    assert tools["models"].annotations.read_only_hint is True
    for tool in tools.values():
        assert tool.description and tool.output_schema is not None


async def test_scale_tool_returns_the_cli_json_object_and_both_calls_are_logged(
        server, stub_config, errlog):
    """Acceptance 2: the same question through `fscale scale --json` and the MCP tool gives
    the same object, ids and timings aside; both calls are in `fscale history`, the MCP one
    with its origin."""
    server.script(mid("fast-a"), Behaviour(reply="SAFE"))
    server.script(mid("fast-b"), Behaviour(reply="SAFE", latency=0.02))
    server.script(mid("slow-c"), Behaviour(reply="VULNERABLE", latency=3.0))
    question, context = "Is this code safe?", "eval(input())"
    proc = run_cli("scale", question, "-a", "SAFE,VULNERABLE", "--context", context, "--json")
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout)

    async with mcp_session(errlog) as session:
        result = await session.call_tool("scale", {"question": question,
                                                   "answers": ["SAFE", "VULNERABLE"],
                                                   "context": context})
    assert not result.is_error, text_of(result)
    tool = result.structured_content
    assert json.loads(text_of(result)) == tool  # the text is the JSON the CLI prints
    assert tool["answer"] == "SAFE" and tool["decided_early"] is True
    assert without_timings(tool) == without_timings(cli)
    assert tool["id"] != cli["id"]
    assert result.meta["fscale"] == {"exit_code": 0, "exit": "decided"}

    # The MCP call is logged once its bookkeeping is done (the server waits for it on exit).
    assert {cli["id"], tool["id"]} <= history_ids()
    shown = json.loads(run_cli("history", "show", tool["id"], "--json").stdout)
    assert shown["extra"]["origin"] == "mcp" and shown["answer"] == "SAFE"
    assert "origin" not in json.loads(run_cli("history", "show", cli["id"], "--json").stdout)["extra"]
    assert "origin:    mcp" in run_cli("history", "show", tool["id"]).stdout


async def test_votes_arrive_as_progress_notifications(server, stub_config, errlog):
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(reply="NO", latency=0.2))
    server.script(mid("slow-c"), Behaviour(reply="YES", latency=0.6))
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with mcp_session(errlog) as session:
        result = await session.call_tool("scale", {"question": "2+2=4?", "answers": "YES,NO",
                                                   "k": 3}, progress_callback=on_progress)
    assert result.structured_content["answer"] == "YES", text_of(result)
    assert [p for p, _, _ in seen] == [1, 2, 3]
    assert all(total == 3 for _, total, _ in seen)
    assert [m.split(":")[0] for _, _, m in seen] == ["fast-a", "fast-b", "slow-c"]
    assert seen[1][2].startswith("fast-b: NO (")


async def test_cancelling_a_call_cancels_its_requests_and_the_server_stays_up(
        server, stub_config, errlog):
    """Two members disagree and the third takes 30 s: the client cancels after the two votes;
    the slow request is seen cancelled by the model server, and the next call works."""
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(reply="NO"))
    server.script(mid("slow-c"), Behaviour(reply="YES", latency=30.0))
    two_votes = anyio.Event()
    seen: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")
        if len(seen) == 2:
            two_votes.set()

    async with mcp_session(errlog) as session:
        async with anyio.create_task_group() as tg:
            async def slow_call() -> None:
                await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"]},
                                        progress_callback=on_progress)

            tg.start_soon(slow_call)
            with anyio.fail_after(20):
                await two_votes.wait()
            assert server.count(mid("slow-c")) == 1 and server.cancelled(mid("slow-c")) == 0
            tg.cancel_scope.cancel()
        assert server.wait_until(lambda: server.cancelled(mid("slow-c")) == 1, timeout=10)
        server.script(mid("slow-c"), Behaviour(reply="YES"))
        after = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"]})
        assert not after.is_error and after.structured_content["status"] == "decided"
    assert sorted(m.split(":")[0] for m in seen) == ["fast-a", "fast-b"]


BAD_ARGUMENTS = [
    ("scale", {"question": "q?"}, "bad arguments for scale: answers: Field required"),
    ("scale", {"question": "q?", "answers": ["YES", "NO"], "k": "seven"},
     "bad arguments for scale: k: "),
    ("scale", {"question": "q?", "answers": ["YES", "NO"], "k": 99},
     "-k must be between 1 and 64 (or 'auto'), not 99"),
    ("scale", {"question": "q?", "answers": ["YES"]}, "--answers needs at least two non-empty labels"),
    ("scale", {"question": " ", "answers": ["YES", "NO"]}, "the question is empty"),
    ("scale", {"question": "q?", "answers": ["YES", "NO"], "models": ["nope"]}, "nope"),
    ("scale", {"question": "q?", "answers": ["YES", "NO"], "k": "auto", "budget": "cheap"},
     "write 0.7x (relative to the best single model) or 0.002 (USD per item)"),
    ("verify", {"draft": "", "source": "The sky is blue."}, "the draft is empty"),
    ("generate", {"question": "q?", "strategy": "nope"}, "--strategy must be one of judge"),
    ("route", {"question": "q?"}, "fscale profile"),
    ("health", {"models": ["nope"]}, "nope"),
    ("teleport", {}, "no tool 'teleport'; the tools are scale, verify"),
]


async def test_bad_arguments_are_tool_errors_with_the_cli_message_and_the_server_stays_up(
        server, stub_config, errlog):
    """One server takes every bad call in turn, each followed by a good one that still works."""
    server.set_default(Behaviour(reply="YES"))
    wrong = []
    async with mcp_session(errlog) as session:
        for name, arguments, message in BAD_ARGUMENTS:
            bad = await session.call_tool(name, arguments)
            ok = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"]})
            text = text_of(bad)
            if not (bad.is_error and text.startswith("fscale: error: ") and message in text
                    and text.endswith("(usage_error, exit code 2)") and "\n" not in text
                    and bad.meta["fscale"]["exit"] == "usage_error"
                    and bad.meta["fscale"]["exit_code"] == 2
                    and not ok.is_error and ok.structured_content["answer"] == "YES"):
                wrong.append((name, arguments, text, ok.is_error))
    assert not wrong, wrong
    assert server.count() == len(BAD_ARGUMENTS) * 3  # the good calls only


async def test_no_decision_is_a_result_with_its_exit_code_and_no_provider_is_an_error(
        server, fscale_home, errlog):
    """A tie is a result (the CLI prints its JSON too) whose _meta carries exit 3; with no
    provider at all the CLI's one line and exit 4 come back as a tool error."""
    async with mcp_session(errlog) as session:
        nothing = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"]})
        write_config(fscale_home, server)
        server.script(mid("fast-a"), Behaviour(reply="YES"))
        server.script(mid("fast-b"), Behaviour(reply="NO"))
        tie = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"],
                                                "models": ["fast-a", "fast-b"]})
    assert nothing.is_error and "NVIDIA_API_KEY" in text_of(nothing)
    assert text_of(nothing).endswith("(all_failed, exit code 4)")
    assert not tie.is_error and tie.structured_content["status"] == "tie"
    assert tie.structured_content["answer"] is None
    assert tie.meta["fscale"] == {"exit_code": 3, "exit": "no_decision"}


async def test_the_notes_the_cli_prints_for_people_come_with_the_result(server, stub_config,
                                                                         errlog):
    server.set_default(Behaviour(reply="YES"))
    async with mcp_session(errlog) as session:
        capped = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"],
                                                   "k": 9})
    assert capped.structured_content["answer"] == "YES"
    assert len(capped.structured_content["members"]) == 7
    assert capped.meta["fscale"]["notes"][0].startswith("-k 9: only 7 usable models")


async def test_budget_is_checked_like_the_cli_and_spent_by_the_planner(server, stub_config,
                                                                       errlog):
    """`budget` is the CLI's --budget: checked by the same parser (a bad one is a usage error
    before any model is asked) and handed to -k auto's planner (no profile: its usage error)."""
    from fscale_tui.cli.mcp import budget_option
    from fscale_tui.engine.base.errors import UsageError

    for good, text in (("0.7x", "0.7x"), ("0.002", "0.002"), (0.5, "0.5"), ("2X", "2X")):
        assert budget_option(good) == {"budget": text}
    for bad in ("-1", "0x", "x", "1.5y", ""):
        with pytest.raises(UsageError, match="budget"):
            budget_option(bad)
    assert budget_option(None) == {}
    async with mcp_session(errlog) as session:
        bad = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"],
                                                "k": "auto", "budget": "1.5y"})
        plain = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"],
                                                  "k": 3, "budget": "0.7x"})
    assert bad.is_error and "0.7x" in text_of(bad) and "usage_error" in text_of(bad)
    assert plain.is_error and "-k auto only" in text_of(plain)
    assert server.count() == 0  # refused before any model was asked


async def test_every_tool_answers_with_what_its_cli_command_prints(
        server, stub_config, errlog, fscale_home):
    server.set_default(Behaviour(reply="NO"))
    server.script(mid("fast-a"), Behaviour(reply="The answer is 42."))
    server.script(mid("fast-b"), Behaviour(reply="6*7 = 42, so the answer is 42."))
    progress: list[str] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async with mcp_session(errlog) as session:
        verify = await session.call_tool("verify", {"draft": "The sky is green.",
                                                    "source": "The sky is blue."})
        generate = await session.call_tool(
            "generate", {"question": "What is 6*7?", "k": 2, "strategy": "vote",
                         "models": ["fast-a", "fast-b"]}, progress_callback=on_progress)
        health = await session.call_tool("health", {"models": ["fast-a", "slow-c"]})
        models = await session.call_tool("models", {"usable_only": True})
    for result in (verify, generate, health, models):
        assert not result.is_error, text_of(result)

    assert verify.structured_content["answer"] == "NO"
    assert verify.structured_content["members"] == ["fast-a", "fast-b", "slow-c"]
    assert generate.structured_content["answer"] == "42"
    assert generate.structured_content["strategy"] == "vote"
    assert sorted(p.split(" from ")[1].split(" ")[0] for p in progress) == ["fast-a", "fast-b"]

    cli_health = json.loads(run_cli("health", "--models", "fast-a,slow-c", "--json").stdout)
    tool_health = json.loads(text_of(health))
    assert health.structured_content == {"result": tool_health}
    assert [{k: v for k, v in row.items() if k != "latency_s"} for row in tool_health] == \
        [{k: v for k, v in row.items() if k != "latency_s"} for row in cli_health]
    assert [row["status"] for row in tool_health] == ["ok", "ok"]

    cli_models = json.loads(run_cli("models", "--json", "--usable").stdout)
    assert models.structured_content == {"result": cli_models}
    assert json.loads(text_of(models)) == cli_models

    kinds = {row["id"]: row["kind"] for row in json.loads(run_cli("history", "--json").stdout)}
    assert kinds.get(verify.structured_content["id"]) == "scale"
    assert kinds.get(generate.structured_content["id"]) == "generate"


async def test_route_and_k_auto_through_the_tools(fscale_home, errlog):
    from tests.test_routing import make_tasks, write_replay_setup

    tasks = make_tasks(40)
    path = write_replay_setup(fscale_home, tasks)
    assert run_cli("profile", "--fit-clusters", str(path), "--clusters", "2").returncode == 0
    assert run_cli("profile", str(path), "--models", "mathy,coin,lawyer").returncode == 0
    cli = json.loads(run_cli("route", tasks[1].question, "--json").stdout)
    async with mcp_session(errlog) as session:
        route = await session.call_tool("route", {"question": tasks[1].question})
        auto = await session.call_tool("scale", {"question": tasks[0].question,
                                                 "answers": ["YES", "NO"], "k": "auto"})
    assert route.structured_content == cli and cli["model"] == "lawyer"
    data = auto.structured_content
    assert not auto.is_error and data["answer"] == tasks[0].label
    assert data["calibrated"] is False and data["stages"] and data["calls_made"] == 1


async def test_no_secret_reaches_a_result_a_progress_message_or_an_error(
        server, fscale_home, errlog):
    secret = "sk-mcp0test0secret0value0123456789"
    write_config(fscale_home, server, api_key_env="STUB_KEY")
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(status=400, error_body='{"error": "bad key {authorization}"}'))
    server.script(mid("slow-c"), Behaviour(status=400, error_body='{"error": "bad key {api_key}"}'))
    seen: list[str] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append(message or "")

    async with mcp_session(errlog, env={"STUB_KEY": secret, "FSCALE_RETRIES": "0"}) as session:
        voted = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"]},
                                        progress_callback=on_progress)
        bad = await session.call_tool("scale", {"question": "q?", "answers": ["YES", "NO"],
                                                "k": secret})
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"  # it was sent
    failed = [v for v in voted.structured_content["votes"] if v["error"]]
    assert len(failed) == 2 and all("[redacted]" in v["error"] for v in failed), failed
    for text in (text_of(voted), json.dumps(voted.structured_content), text_of(bad), *seen):
        assert secret not in text and secret[:20] not in text
    assert bad.is_error and "bad arguments for scale: k" in text_of(bad)
    assert secret not in errlog.read_text()


def test_without_the_sdk_the_command_says_how_to_install_it(fscale_home):
    code = ("import sys\nsys.modules['mcp'] = None\nsys.argv = ['fscale', 'mcp']\n"
            "from fscale_tui.cli import main\nmain()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("fscale: error: fscale mcp needs the MCP SDK (2.x): "
                                   "pip install 'fscale[mcp]' (see 'fscale mcp --help')")


def test_the_generate_tool_describes_every_registered_strategy():
    """The description is written out (the registry would import the HTTP stack at start-up);
    a new strategy must be added to it."""
    from fscale_tui.cli.mcp import STRATEGIES
    from fscale_tui.engine.strategies import names

    described = set(re.findall(r"\b([a-z]+) \(", STRATEGIES)) | {"beam", "dvts"}
    assert described == set(names())


def test_json_output_masks_a_secret_that_json_encoding_would_escape(monkeypatch):
    """The CLI's --json and the tools share one encoder: each string is redacted before it is
    encoded, so a key with a quote or a backslash in it (escaped in the JSON text, where
    redacting the text would miss it) is masked too."""
    from fscale_tui.cli.common import json_text
    from fscale_tui.engine.base import redact

    monkeypatch.setattr(redact, "_secrets", set())
    secret = 'q"uo\\te-1234567890'
    redact.register_secrets([secret])
    text = json_text({"votes": [{"error": f"401: bad key {secret}"}], secret: 1})
    data = json.loads(text)
    assert data == {"votes": [{"error": "401: bad key [redacted]"}], "[redacted]": 1}
    assert secret not in text and json.dumps(secret)[1:-1] not in text


# -- SKILL.md: the agent skill's front matter, and every example runs ----------------------------
SKILL = REPO / "SKILL.md"


def skill_front_matter() -> dict[str, str]:
    text = SKILL.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head = text.split("---\n")[1]
    fields = {}
    for line in head.splitlines():
        key, sep, value = line.partition(": ")
        assert sep and re.fullmatch(r"[a-z-]+", key), line
        # A plain YAML scalar: nothing that would end it or start a flow / an alias.
        assert ": " not in value and " #" not in value and value[0] not in "[]{}&*!|>'\"%@`", line
        fields[key] = value
    return fields


def test_skill_front_matter_follows_the_agent_skill_format():
    fields = skill_front_matter()
    assert set(fields) <= {"name", "description", "license", "compatibility", "metadata",
                           "allowed-tools"}
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fields["name"]) and len(fields["name"]) <= 64
    assert 1 <= len(fields["description"]) <= 1024 and "Use when" in fields["description"]
    assert len(fields.get("compatibility", "")) <= 500
    body = SKILL.read_text(encoding="utf-8")
    for heading in ("## When to use it", "### Classify", "### Verify a draft against its source",
                    "### Generate and select", "### Agent self-evaluation"):
        assert heading in body


def skill_tool_calls() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)\n```", SKILL.read_text(encoding="utf-8"), re.S)
    return [json.loads(b) for b in blocks if '"tool"' in b]


SKILL_SH = parse_readme(SKILL.read_text(encoding="utf-8"))


@pytest.mark.parametrize("example", SKILL_SH, ids=[e.id for e in SKILL_SH])
def test_skill_cli_example_runs(reader, example):
    proc = _run(reader, example)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "schema" in json.loads(proc.stdout)


async def test_skill_tool_call_examples_run_through_the_server(reader, errlog):
    calls = skill_tool_calls()
    assert {c["tool"] for c in calls} == {"scale", "verify", "generate"}
    env = {k: v for k, v in reader.env.items()}
    async with mcp_session(errlog, env=env) as session:
        for call in calls:
            result = await session.call_tool(call["tool"], call["arguments"])
            assert not result.is_error, (call, text_of(result))
            assert result.structured_content["status"] == "decided", call


def test_run_by_hand_it_says_what_it_is_and_ctrl_c_stops_it(fscale_home):
    """In a terminal the server says it waits for an MCP client; Ctrl-C ends it with exit 130
    (the SDK's stdin reader would otherwise keep it waiting for a line)."""
    import pty
    import select
    import signal
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fscale_tui", "mcp"], stdin=slave,
                            stdout=subprocess.PIPE, stderr=slave, cwd=REPO)
    os.close(slave)
    shown = b""
    try:
        deadline = time.monotonic() + 30
        while b"Ctrl-C stops it" not in shown and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                shown += os.read(master, 4096)
        # Typed at the terminal: the server answers on stdout, so it is serving (reading stdin).
        os.write(master, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "person", "version": "0"}}}).encode() + b"\n")
        assert json.loads(proc.stdout.readline())["id"] == 1
        time.sleep(0.5)  # back to waiting for the next line
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        while select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            shown += data
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = shown.decode(errors="replace")
    assert "fscale mcp: serving MCP on stdin/stdout for an MCP client" in text
    assert code == 130 and "fscale: interrupted" in text
    assert proc.stdout.read() == b""  # nothing but the protocol's answers on stdout
