"""The TUI's forms as a newcomer meets them (issue 22), driven with Textual's Pilot against the
loopback OpenAI-compatible server: what is typed is what the models are asked."""

from __future__ import annotations

import json

from fscale_tui.app import FscaleApp
from tests.conftest import Behaviour, write_config
from tests.test_tui import SIZE, ask, banner_text, wait_for


async def test_verify_mode_never_sends_the_ask_question(server, stub_config, fscale_home, tmp_path):
    """Ask a question, switch to verify (ctrl+n), load a source (ctrl+o), type a draft, run:
    the models get the verify question, not the Ask screen's question."""
    from fscale_tui.screens.modals import FilePicker

    server.set_default(Behaviour(reply="Answer: YES"))
    source = tmp_path / "source.txt"
    source.write_text("12 * 12 = 144, as every times table says.", encoding="utf-8")
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        await ask(pilot, question="Is 12 * 12 = 144?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the scale decision")
        asked = len(server.requests)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen.has_class("-verify")
        question = screen.query_one("#question")
        # The field is empty, so its placeholder says what an empty question means.
        assert question.value == "" and "does the draft make claims" in question.placeholder
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePicker), what="the picker")
        path = app.screen.query_one("#picker-path")
        path.focus()
        path.value = str(source)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.query_one("#context").text.startswith("12 * 12"),
                       what="the source")
        screen.query_one("#draft").text = "The table says 12 * 12 = 144."
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: len(server.requests) > asked and "call" in banner_text(app)
                       and "Is 12 * 12" not in banner_text(app), what="the verify decision")
        await wait_for(pilot, lambda: app.screen.query_one("#banner").has_class("-decided"),
                       what="the verify decision")
        users = [r.body["messages"][-1]["content"] for r in server.requests[asked:]]
        assert users and all("not supported by the Source" in u for u in users)
        assert not any("Is 12 * 12 = 144?" in u for u in users)
        # Back to scale: the Ask question is still there; verify's own question is kept apart.
        question.value = "Is every number in the draft in the source?"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert question.value == "Is 12 * 12 = 144?"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert question.value == "Is every number in the draft in the source?"
    saved = json.loads((fscale_home / "state" / "tui.json").read_text())
    assert saved["ask"]["question"] == "Is 12 * 12 = 144?"


async def test_tui_calls_show_and_log_their_tokens(server, stub_config):
    """The TUI streams its calls: the tokens column and the call log get the usage the
    provider reports at the end of the stream (asked for with stream_options.include_usage),
    never "-" on screen and 0 + 0 in the log."""
    from fscale_tui.widgets.votes import VoteTable

    server.set_default(Behaviour(reply="Answer: YES"))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, question="Is 12 * 12 = 144?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        table = app.screen.query_one(VoteTable)
        answered = [v for v in table.members.values() if v.status == "answered"]
        assert answered and all(v.tokens and v.tokens > 0 for v in answered)
        assert all(str(table.get_cell(v.model, "tokens")).strip() not in ("", "-") for v in answered)
        call_id = app.screen.query_one("#banner").render().plain.rsplit("call ", 1)[1].strip()
    assert all(r.body.get("stream") and r.body["stream_options"] == {"include_usage": True}
               for r in server.requests)
    from tests.conftest import run_cli

    logged = json.loads(run_cli("history", "show", call_id, "--json").stdout)
    usage = logged["extra"]["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


# -- rough edges (issue 22, finding 6) -----------------------------------------------------------
def screen_text(app) -> list[str]:
    """What the terminal shows, line by line (from the app's own SVG screenshot)."""
    import html
    import re

    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(int(round(x / 12.2))) + text
        lines.append(line.replace("\xa0", " ").rstrip())
    return lines


def dialog_text(app) -> str:
    """The text inside the open dialog's thick border (█ … █), its lines joined by spaces."""
    inside = []
    for line in screen_text(app):
        if line.count("█") >= 2:
            inside.append(line[line.index("█") + 1:line.rindex("█")])
    return " ".join(" ".join(inside).split())


async def test_form_labels_keep_a_space_before_their_fields(server, stub_config):
    """"answersYES,NO" and "strategyjudge": a label ran into its field."""
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        for screen in ("ask", "generate"):
            await pilot.press("f2" if screen == "ask" else "f3")
            await pilot.pause()
            labels = list(app.screen.query(".field-label"))
            assert labels
            for label in labels:
                text = str(label.render())
                assert label.region.width >= len(text) + 1, (screen, text, label.region)
        shown = "\n".join(screen_text(app))
        assert "strategy judge" in shown.replace("  ", " ") or "strategy  judge" in shown


async def test_picker_hint_and_confirm_dialog_are_not_cut_at_120_columns(server, stub_config):
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord
    from fscale_tui.screens.modals import FilePicker

    call_id = "20261121-220843-024957a8c3d2e1f0"  # as long as the ids fscale makes
    with LearningStore.for_settings(load_settings()) as store:
        store.record_call(CallRecord(id=call_id, question="Is it?", labels=["YES", "NO"],
                                     members=["fast-a"], answer="YES", extra={"item_id": "q17"},
                                     replies=[ReplyRecord("fast-a", answer="YES")]))
    app = FscaleApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePicker), what="the picker")
        await pilot.pause()
        assert "type a path above · Esc closes)" in dialog_text(app)
        await pilot.press("escape")
        await pilot.press("f7")
        await wait_for(pilot, lambda: app.screen.query("#history-table")
                       and app.screen.query_one("#history-table").row_count == 1, what="history")
        await pilot.press("c")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the question")
        await pilot.pause()
        assert f"Record confirm for call {call_id} (#1, item q17)?" in dialog_text(app)


async def test_call_detail_says_no_answer_never_none(server, stub_config):
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord
    from fscale_tui.screens.history import detail_markup

    with LearningStore.for_settings(load_settings()) as store:
        store.record_call(CallRecord(
            id="c1", question="Is it?", labels=["YES", "NO"], members=["fast-a", "fast-b"],
            answer="YES", replies=[ReplyRecord("fast-a", answer="YES", raw="Answer: YES"),
                                   ReplyRecord("fast-b", answer=None, status="failed",
                                               error="HTTP 500")]))
    app = FscaleApp(start="history")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#history-table").row_count == 1,
                       what="the call")
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CallDetail", what="the call")
        shown = "\n".join(screen_text(app))
    assert "None" not in shown
    failed = next(line for line in shown.splitlines() if "fast-b" in line)
    assert "no answer" in failed
    assert "None" not in detail_markup(app.engine.calls.call("c1"))


async def test_history_filter_is_left_with_escape_or_down(server, stub_config):
    from fscale_tui.engine.catalog.config import load_settings
    from tests.test_tui_snapshots import seed_call_log

    seed_call_log(load_settings())
    app = FscaleApp(start="history")
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#history-table")
        await wait_for(pilot, lambda: table.row_count == 8, what="the calls")
        for key in ("escape", "down"):
            await pilot.press("slash")
            await pilot.pause()
            assert app.focused is app.screen.query_one("#history-filter")
            await pilot.press("#", "3")
            await wait_for(pilot, lambda: table.row_count == 1, what="the filtered call")
            await pilot.press(key)
            await pilot.pause()
            assert app.focused is table, key
            assert app.screen.query_one("#history-filter").value == ("" if key == "escape" else "#3")
            app.screen.query_one("#history-filter").value = ""
            await wait_for(pilot, lambda: table.row_count == 8, what="every call again")


async def test_generate_at_80_columns_shows_every_candidate_and_the_winner(server, fscale_home):
    """At 80×24 Generate showed only candidate #0, the width of the screen; the winner (#2)
    was off-screen."""
    from tests.test_tui_snapshots import ReplayingEngine, run_recorded_generate

    write_config(fscale_home, server)
    app = FscaleApp(engine_factory=ReplayingEngine, start="generate")
    async with app.run_test(size=(80, 24)) as pilot:
        await run_recorded_generate(pilot)
        await pilot.pause()
        view = app.screen.query_one("#candidates").region
        cards = list(app.screen.query(".candidate"))
        assert len(cards) == 3
        winner = next(c for c in cards if c.has_class("-winner"))
        assert winner.index == 2
        for card in cards:
            assert view.contains_region(card.region), (card.border_title, card.region, view)
        assert "winner" in " ".join(screen_text(app))


async def test_ask_at_80_columns_shows_every_column_header_whole(server, fscale_home):
    """At 80×24 the Ask screen's last header read "reasonin" and its cells were cut short
    without a sign; now the header fits and a cut note ends with "…"; the form's last button
    is on screen."""
    from tests.test_tui_snapshots import ReplayingEngine, run_recorded_call

    write_config(fscale_home, server)
    app = FscaleApp(engine_factory=ReplayingEngine)
    async with app.run_test(size=(80, 24)) as pilot:
        await run_recorded_call(pilot)
        await pilot.pause()
        table = app.screen.query_one("#votes")
        labels = [c.label.plain for c in table.columns.values()]
        shown = screen_text(app)
        header = next(line for line in shown if line.split()[:2] == ["#", "model"])
        assert header.split() == " ".join(labels).split(), header
        row = next(line for line in shown if "fast-b" in line and "replaced" in line)
        assert row.rstrip().endswith("…")
        assert "File…" in next(line for line in shown if "answers" in line)
