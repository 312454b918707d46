"""The TUI never falls over, whatever the call log holds (issue 13).

The log is seeded with what older versions and odd runs left there: two calls logged under one
call id, a batch run twice (repeated item ids), a call with no question text, an unknown status,
very long and non-ASCII text, text that looks like markup, a call with no replies. Every screen
is opened over it with Pilot, and under a real pseudo-terminal (tmux) running ``fscale tui``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from typer.testing import CliRunner

from fscale_tui.app import FscaleApp
from tests.conftest import REPO, needs_tmux, write_config

SIZE = (100, 30)
LONG = "Is this long question about " + "very " * 400 + "long inputs fine?"


def seed_odd_log() -> None:
    """A call log holding everything a user's log can hold."""
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.learning.store import (
        CallRecord,
        LearningStore,
        ReplyRecord,
    )

    def replies(a: str, b: str) -> list[ReplyRecord]:
        return [ReplyRecord("fast-a", answer=a, latency_s=0.2, raw=f"Answer: {a}"),
                ReplyRecord("fast-b", answer=b, latency_s=0.3, raw=f"Answer: {b}")]

    with LearningStore.for_settings(load_settings()) as store:
        # Old versions logged a batch item's id as the call id: two calls, one id.
        for answer in ("YES", "NO"):
            store.record_call(CallRecord(id="same", question="Logged twice under one id?",
                                         labels=["YES", "NO"], members=["fast-a", "fast-b"],
                                         answer=answer, replies=replies(answer, answer)))
        # The same batch run twice: item ids repeat across different calls.
        for run in range(2):
            for item in ("q1", "q2"):
                store.record_call(CallRecord(id=f"batch-{run}-{item}", question=f"Batch {item}?",
                                             labels=["YES", "NO"], members=["fast-a", "fast-b"],
                                             answer="YES", replies=replies("YES", "NO"),
                                             extra={"item_id": item}))
        store.record_call(CallRecord(id="no-text", question=None, labels=["YES", "NO"],
                                     members=["fast-a"], answer=None, status="no_votes",
                                     replies=[ReplyRecord("fast-a", answer=None,
                                                          status="no_answer")]))
        store.record_call(CallRecord(id="odd-status", question="Unknown status?",
                                     labels=["A", "B"], members=["fast-a", "fast-b"], answer="A",
                                     status="[b]weird-status", replies=replies("A", "B")))
        store.record_call(CallRecord(id="long", question=LONG, labels=["YES", "NO"],
                                     members=["fast-a", "fast-b"], answer="YES",
                                     replies=[ReplyRecord("fast-a", answer="YES", raw="x" * 50_000),
                                              ReplyRecord("fast-b", answer="YES",
                                                          raw="Answer: YES")]))
        store.record_call(CallRecord(id="unicode", question="Ist «Grüße» 日本語 OK? 🚀 [/] [red]",
                                     labels=["JA", "NEIN"], members=["fast-a", "fast-b"],
                                     answer="JA", replies=replies("JA", "NEIN"),
                                     extra={"item_id": "élément-1"}))
        store.record_call(CallRecord(id="no-replies", question="Nobody answered?", labels=[],
                                     members=[], answer=None, status="all_failed", replies=[]))


@pytest.fixture
def odd_log(fscale_home, server):
    write_config(fscale_home, server)
    seed_odd_log()
    return fscale_home


from tests.test_tui import wait_for  # noqa: E402


async def test_every_screen_stays_up_over_an_odd_call_log(odd_log):
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        for key, name in (("f3", "GenerateScreen"), ("f4", "HealthScreen"),
                          ("f5", "RatingsScreen"), ("f6", "PanelsScreen"),
                          ("f7", "HistoryScreen"), ("f2", "AskScreen")):
            await pilot.press(key)
            await wait_for(pilot, lambda n=name: type(app.screen).__name__ == n, what=name)
        await pilot.press("f1")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        await pilot.press("escape")
        await pilot.press("f7")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history")
        screen = app.screen
        table = screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 11, what="every logged call")
        ids = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert ids.count("same") == 2  # both calls logged under one id are listed
        # Open every call, one after the other: each detail names its own row.
        for row in range(table.row_count):
            table.move_cursor(row=row)
            key = screen._selected_id()
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "CallDetail",
                           what=f"detail of row {row}")
            assert f"#{key[1:]}" in str(app.screen.query_one("Static").render())
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is screen, what="back to history")
        # Filtering by a repeated item id shows both runs of the batch.
        screen.query_one("#history-filter").value = "q1"
        await wait_for(pilot, lambda: table.row_count == 2, what="the two runs of item q1")
        screen.query_one("#history-filter").value = "日本語"
        await wait_for(pilot, lambda: table.row_count == 1, what="the non-ASCII call")
        assert app.is_running and app.return_code is None


async def test_feedback_on_a_repeated_id_asks_first_and_records_on_that_row(odd_log):
    app = FscaleApp(start="history")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 11, what="every logged call")
        # The older of the two calls logged as "same" (answer YES).
        row = next(i for i in range(table.row_count)
                   if str(table.get_row_at(i)[1]) == "same" and str(table.get_row_at(i)[2]) == "YES")
        table.move_cursor(row=row)
        key = screen._selected_id()
        await pilot.press("c")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the question")
        title = str(app.screen.query_one(".dialog-title").render())
        detail = str(app.screen.query_one(".dialog-detail").render())
        assert f"Record confirm for call same ({key}" in title
        assert "the decision YES was right" in detail
        await pilot.press("n")  # no: nothing is recorded
        await wait_for(pilot, lambda: app.screen is screen, what="back to history")
        assert str(table.get_cell(key, "feedback")) == ""
        assert any("nothing recorded" in n.message for n in app._notifications)
        await pilot.press("x")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the question")
        assert "the decision YES was wrong" in str(app.screen.query_one(".dialog-detail").render())
        await pilot.press("y")
        await wait_for(pilot, lambda: str(table.get_cell(key, "feedback")) == "reject",
                       what="the verdict on that row")
        # Only that row got it: the other call logged as "same" has no feedback.
        other = next(k.value for k in table.rows if k.value != key
                     and str(table.get_cell(k, "call")) == "same")
        assert str(table.get_cell(other, "feedback")) == ""
        assert any(f"reject recorded for call same ({key}" in n.message
                   for n in app._notifications)


async def test_a_screen_that_raises_gives_a_nonzero_return_code(odd_log, monkeypatch):
    from fscale_tui.screens.help import HelpScreen

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(HelpScreen, "compose", broken)
    app = FscaleApp()
    with pytest.raises(RuntimeError, match="boom"):  # run_test re-raises what stopped the app
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f1")
            await pilot.pause()
    assert app.return_code == 1


def test_fscale_tui_exits_nonzero_after_a_crash(odd_log, monkeypatch):
    """``app.run()`` returns None after a crash: the CLI must read the return code."""
    from fscale_tui.cli import app as cli

    def crashed_run(self, **_kw):
        self._return_code = 1

    monkeypatch.setattr(FscaleApp, "run", crashed_run)
    result = CliRunner().invoke(cli, ["tui"], env={"FSCALE_HOME": str(odd_log)})
    assert result.exit_code == 1


# -- a real terminal ------------------------------------------------------------------------
class Tmux:
    """``fscale tui`` in a tmux pane: real pseudo-terminal, real keys, the screen as text."""

    def __init__(self, env: dict[str, str], width: int, height: int) -> None:
        self.socket = f"fscale-test-{uuid.uuid4().hex[:8]}"
        self.env = env
        self.width, self.height = width, height

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True,
                              check=check, env=self.env, timeout=20)

    def start(self) -> None:
        command = f"{sys.executable} -m fscale_tui tui; echo EXIT=$?; sleep 30"
        self.tmux("new-session", "-d", "-x", str(self.width), "-y", str(self.height),
                  "-c", str(REPO), command)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p").stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if text in shown:
                return shown
            if "EXIT=" in shown or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on screen; the screen shows:\n{shown}")
            time.sleep(0.1)

    def wait_gone(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} is still on screen:\n{self.screen()}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.tmux("kill-server", check=False)


@needs_tmux
@pytest.mark.parametrize("size", [(160, 45), (80, 24)])
def test_every_screen_stays_up_in_a_real_terminal(odd_log, size):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    env.update(FSCALE_HOME=str(odd_log), TERM="xterm-256color", FSCALE_CHALLENGER="0",
               FSCALE_LOCAL="off", PYTHONPATH=str(REPO))
    term = Tmux(env, *size)
    term.start()
    try:
        term.wait_for("Question")
        for key, text in (("F3", "strategy"), ("F4", "usable models"), ("F5", "rated"),
                          ("F6", "evolve"), ("F7", "same"), ("F1", "everywhere")):
            term.keys(key)
            term.wait_for(text)
        term.keys("Escape")  # a lone Esc: the next key waits, or the two read as alt+key
        term.wait_gone("everywhere")
        shown = term.wait_for("batch-1-q1")
        assert "same" in shown
        for _ in range(10):  # open every call and close it again
            term.keys("Enter")
            term.wait_for("labels:")
            term.keys("Escape")
            term.wait_gone("labels:")
            term.keys("Down")
        term.keys("c")
        term.wait_for("Record confirm for call")
        term.keys("n")
        term.wait_gone("Record confirm for call")
        term.keys("F2")
        term.wait_for("Question")
        assert "EXIT=" not in term.screen()  # still running after all of it
        term.keys("C-q")
        assert "EXIT=0" in term.wait_for("EXIT=", timeout=20)
    finally:
        term.stop()


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 45)])
async def test_the_footer_fits_every_screen(odd_log, size):
    """No key description is cut: the footer's keys fit in the terminal's width."""
    app = FscaleApp()
    async with app.run_test(size=size) as pilot:
        for key, name in (("f2", "AskScreen"), ("f3", "GenerateScreen"), ("f4", "HealthScreen"),
                          ("f5", "RatingsScreen"), ("f6", "PanelsScreen"),
                          ("f7", "HistoryScreen")):
            await pilot.press(key)
            await wait_for(pilot, lambda n=name: type(app.screen).__name__ == n, what=name)
            await pilot.pause()
            footer = app.screen.query_one("FscaleFooter")
            keys = [w for w in footer.children if not w.has_class("-command-palette")]
            palette = footer.query_one(".-command-palette")
            used = sum(w.outer_size.width for w in keys)
            room = palette.region.x  # the palette key is docked at the right end
            assert keys and used <= room, f"{name}: footer needs {used} columns of {room}"
            shown = " ".join(getattr(w, "description", "") for w in keys)
            assert "Help" in shown
            if size[0] >= 160:
                assert "History" in shown  # wide: every screen key is named
            elif size[0] <= 80:
                assert "screens" in shown and "History" not in shown


async def test_probing_status_is_never_cut(server, stub_config):
    """Health sizes its status column for its longest value: "probing…" shows whole."""
    from tests.conftest import Behaviour

    server.set_default(Behaviour(reply="OK", latency=1.5))
    app = FscaleApp(start="health")
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#health-table")
        await wait_for(pilot, lambda: table.row_count == 7, what="the models")
        assert str(table.get_cell("fast-a", "status")) == "never"
        await pilot.press("r")
        await wait_for(pilot, lambda: str(table.get_cell("fast-a", "status")) == "probing…",
                       what="probing")
        await pilot.pause()
        column = next(c for key, c in table.columns.items() if key.value == "status")
        assert column.get_render_width(table) - 2 * table.cell_padding >= len("probing…")
        await wait_for(pilot, lambda: str(table.get_cell("fast-a", "status")) == "ok",
                       what="the verdicts")
