"""The walk of one ``fscale scale "Q" -a YES,NO -k 3 --json`` (issue 23): from the command to
the HTTP request and back to the JSON on stdout it visits at most seven modules of fscale_tui,
none more than twice (down once, back up once), going down the layers of ARCHITECTURE.md, and
ARCHITECTURE.md shows the measured walk.

Measured, not described: a profile hook sees every Python call in the process. The walk is the
logical call stack at the moment httpx sends the first request (an asyncio task's stack
continued by the stack that created it), then back up to where that stack meets the one that
writes the JSON to stdout, then down that one; consecutive frames of one module are one visit.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tomllib
from pathlib import Path
from types import FrameType
from typing import Any

from tests.conftest import Behaviour

REPO = Path(__file__).resolve().parent.parent
COMMAND = "fscale_tui.cli.scale"


def _name(frame: FrameType) -> str:
    return frame.f_globals.get("__name__", "")


class Walk:
    """Records the logical stacks at the request and at the printed JSON."""

    def __init__(self) -> None:
        self.created: dict[int, list[FrameType]] = {}  # id(task) -> the stack that made it
        self.keep: list[Any] = []  # the tasks, so their ids stay theirs
        self.send: list[FrameType] | None = None
        self.printed: list[FrameType] | None = None

    def logical(self, frame: FrameType | None) -> list[FrameType]:
        """Frames root -> leaf; a task's own frames follow the stack that created it."""
        chain: list[FrameType] = []
        while frame is not None:
            chain.append(frame)
            frame = frame.f_back
        chain.reverse()
        cut = max((i for i, f in enumerate(chain) if _name(f).startswith("asyncio")), default=None)
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if cut is None or task is None or id(task) not in self.created:
            return chain
        return self.created[id(task)] + chain[cut + 1:]

    def task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task:
        task = asyncio.Task(coro, loop=loop, **kw)
        frame = sys._getframe(1)
        while frame is not None and _name(frame).startswith("asyncio"):
            frame = frame.f_back
        self.created[id(task)] = self.logical(frame)
        self.keep.append(task)
        return task

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        if self.send is None and _name(frame) == "httpx._client" and frame.f_code.co_name == "send":
            self.send = self.logical(frame)
        elif (self.printed is None and _name(frame) == "fscale_tui.engine.base.output"
              and frame.f_code.co_name == "write" and '"schema"' in str(frame.f_locals.get("text"))):
            self.printed = self.logical(frame)


def modules(frames: list[FrameType]) -> list[str]:
    """fscale_tui's modules along the frames, consecutive frames of one module counted once."""
    out: list[str] = []
    for frame in frames:
        name = _name(frame)
        if name.startswith("fscale_tui") and (not out or out[-1] != name):
            out.append(name)
    return out


def measure(monkeypatch, capsys) -> tuple[list[str], list[str]]:
    """(the dispatch before the command, the walk from the command) of one in-process run."""
    from fscale_tui.cli import main

    walk = Walk()
    new_event_loop = asyncio.new_event_loop

    def traced_loop() -> asyncio.AbstractEventLoop:
        loop = new_event_loop()
        loop.set_task_factory(walk.task_factory)
        return loop

    monkeypatch.setattr(asyncio.events, "new_event_loop", traced_loop)
    monkeypatch.setattr(sys, "argv", ["fscale", "scale", "Is it?", "-a", "YES,NO", "-k", "3",
                                      "--json"])
    sys.setprofile(walk.profile)
    try:
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None)
    finally:
        sys.setprofile(None)
    assert json.loads(capsys.readouterr().out)["answer"] == "YES"
    assert walk.send is not None and walk.printed is not None
    send, printed = walk.send, walk.printed
    common = 0
    while common < min(len(send), len(printed)) and send[common] is printed[common]:
        common += 1
    # down to the request, back up to the frame both stacks share, down to the write
    path = modules(send + list(reversed(send[common - 1:-1])) + printed[common:])
    start = path.index(COMMAND)
    return path[:start], path[start:]


def _layer(module: str) -> int:
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in contracts["contracts"] if c["type"] == "layers"]
    for i, layer in enumerate(layers):
        if any(module == m.strip() or module.startswith(m.strip() + ".")
               for m in re.split(r"[|:]", layer)):
            return i
    raise AssertionError(f"{module} is in no layer")


def test_a_scale_question_walks_down_through_at_most_seven_modules(server, stub_config,
                                                                    monkeypatch, capsys):
    server.set_default(Behaviour(reply="Answer: YES"))
    dispatch, walk = measure(monkeypatch, capsys)
    assert len(set(walk)) <= 7, walk
    assert max(walk.count(m) for m in walk) <= 2, walk
    # down to the request without climbing: every step goes to a lower layer
    down = walk[:walk.index("fscale_tui.engine.wire.client") + 1]
    assert [_layer(m) for m in down] == sorted(_layer(m) for m in down)
    assert len(set(down)) == len(down)
    # before the command: the entry point and the error guard, nothing else
    assert dispatch == ["fscale_tui.cli", "fscale_tui.cli.common"]
    # ARCHITECTURE.md shows this walk
    text = (REPO / "ARCHITECTURE.md").read_text()
    shown = re.search(r"<!-- walk -->\n```text\n(.*?)```", text, re.DOTALL)
    assert shown is not None
    assert [w for w in shown.group(1).split() if w != "→"] == \
        [m.removeprefix("fscale_tui.") for m in walk]
