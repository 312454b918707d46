"""The TUI's forms as a newcomer meets them (issue 22), driven with Textual's Pilot against the
loopback OpenAI-compatible server: what is typed is what the models are asked."""

from __future__ import annotations

import json

from fscale_tui.app import FscaleApp
from tests.conftest import Behaviour
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

