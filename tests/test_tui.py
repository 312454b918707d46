"""The TUI driven with Textual's Pilot against the loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import time
import tomllib

import pytest

from fscale_tui.app import FscaleApp
from fscale_tui.widgets.votes import VoteTable
from tests.conftest import Behaviour, earn_shadow_budget, mid, write_config

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def no_challenger(monkeypatch):
    """Most tests look at the panel only; the shadow challenger has its own test."""
    monkeypatch.setenv("FSCALE_CHALLENGER", "0")


async def wait_for(pilot, predicate, timeout: float = 8.0, what: str = "condition") -> None:
    """Let the app run until ``predicate()`` holds (polling, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def banner_text(app) -> str:
    return str(app.screen.query_one("#banner").render())


def statuses(app) -> dict[str, str]:
    return {m: v.status for m, v in app.screen.query_one(VoteTable).members.items()}


async def ask(pilot, question: str = "Is it safe?", answers: str | None = None) -> None:
    app = pilot.app
    app.screen.query_one("#question").value = question
    if answers is not None:
        app.screen.query_one("#answers").value = answers
    app.screen.query_one("#question").focus()
    await pilot.press("enter")


async def test_pending_rows_fill_in_in_arrival_order(server, stub_config):
    # a second between replies, and 1.5 s before the first: a loaded machine can hold a reply
    # back for a few hundred ms, and the rows' first render (0.5 s was once too short in CI)
    server.script(mid("fast-a"), Behaviour(reply="Answer: NO", latency=2.5))
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES", latency=3.5))
    server.script(mid("slow-c"), Behaviour(reply="Answer: YES", latency=1.5,
                                           reasoning_content="The user asks.\nLooks fine."))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        table = app.screen.query_one(VoteTable)
        # Every member gets a pending row at once, before any reply.
        await wait_for(pilot, lambda: len(table.members) == 3, what="three rows")
        assert set(statuses(app).values()) <= {"pending", "streaming"}
        assert list(table.members) == ["fast-a", "fast-b", "slow-c"]  # panel order
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        views = table.members
        assert [views[m].arrival for m in ("slow-c", "fast-a", "fast-b")] == [1, 2, 3]
        assert {m: v.answer for m, v in views.items()} == {"fast-a": "NO", "fast-b": "YES",
                                                           "slow-c": "YES"}
        assert views["slow-c"].note.startswith("thinking: The user asks.")
        assert views["slow-c"].tokens is not None and views["slow-c"].latency_s > 0
        banner = banner_text(app)
        assert "→ YES" in banner and "67%" in banner and "valid 3/3" in banner
        assert "decided early" not in banner
        assert app.screen.query_one("#banner").has_class("-decided")


async def test_early_decision_cancels_the_slow_member(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="YES", latency=0.05))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.1))
    server.script(mid("slow-c"), Behaviour(reply="NO", latency=6.0))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), timeout=4, what="the decision")
        assert statuses(app) == {"fast-a": "answered", "fast-b": "answered", "slow-c": "cancelled"}
        banner = banner_text(app)
        assert "decided early" in banner and "cancelled: slow-c" in banner
        assert server.wait_until(lambda: server.cancelled(mid("slow-c")) == 1, timeout=3)


async def test_failing_member_shows_its_error_and_substitute(server, stub_config):
    server.set_default(Behaviour(reply="YES", latency=0.05))
    server.script(mid("fast-b"), Behaviour(status=401))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        table = app.screen.query_one(VoteTable)
        failed = table.members["fast-b"]
        assert failed.status == "replaced"
        assert "401" in failed.error and failed.note.startswith("auth")
        substitutes = [v for v in table.members.values() if v.substitute_for == "fast-b"]
        assert len(substitutes) == 1 and substitutes[0].model in failed.note
        # The row itself shows the error text.
        row = table.get_row("fast-b")
        assert "401" in str(row[-1])


async def test_error_without_substitute_is_shown_on_its_row(server, fscale_home):
    write_config(fscale_home, server, models={"only-a": ("x/a", "fast", "x"),
                                              "only-b": ("x/b", "fast", "x")},
                 panels={"default": ["only-a", "only-b"]})
    server.script("x/a", Behaviour(reply="YES"))
    server.script("x/b", Behaviour(status=400))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        assert statuses(app)["only-b"] in ("failed", "replaced")
        table = app.screen.query_one(VoteTable)
        assert "400" in str(table.get_row("only-b")[-1])


async def test_escape_cancels_the_run_and_its_requests(server, stub_config):
    server.set_default(Behaviour(reply="YES", latency=8.0))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: server.count() == 3, what="three requests at the server")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen.query_one("#banner").has_class("-cancelled"),
                       what="the cancelled banner")
        assert set(statuses(app).values()) == {"cancelled"}
        assert "cancelled" in banner_text(app)
        for alias in ("fast-a", "fast-b", "slow-c"):
            assert server.wait_until(lambda a=alias: server.cancelled(mid(a)) == 1, timeout=3)


async def test_verify_sends_source_and_draft_as_context(server, stub_config):
    server.set_default(Behaviour(reply="Answer: NO"))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#mode").value = "verify"
        await pilot.pause()
        assert screen.has_class("-verify") and screen.query_one("#draft").display
        assert screen.query_one("#answers").value == "YES,NO"
        screen.query_one("#context").text = "SOURCE-TEXT-42"
        screen.query_one("#draft").text = "DRAFT-TEXT-43"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        assert "→ NO" in banner_text(app)
        system = server.requests[0].body["messages"][0]["content"]
        assert "Source:\nSOURCE-TEXT-42" in system and "Output:\nDRAFT-TEXT-43" in system
        user = server.requests[0].body["messages"][1]["content"]
        assert "not supported by the Source" in user


async def test_bad_form_is_a_notification_not_a_crash(server, stub_config):
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, question="q?", answers="YES")
        await pilot.pause()
        assert server.count() == 0
        assert any("two" in n.message for n in app._notifications)


async def test_state_survives_a_restart(server, stub_config, fscale_home):
    write_config(fscale_home, server, panels={"default": ["fast-a", "fast-b", "slow-c"],
                                              "pair": ["fast-a", "fast-b"]})
    server.set_default(Behaviour(reply="SAFE"))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#panel").value = "pair"
        await ask(pilot, question="Remember me?", answers="SAFE,VULNERABLE")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        await pilot.press("ctrl+l")  # bigger context pane, remembered too
    saved = json.loads((fscale_home / "state" / "tui.json").read_text())
    assert saved["ask"]["question"] == "Remember me?" and saved["context_big"] is True
    app2 = FscaleApp()
    async with app2.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app2.screen
        assert screen.query_one("#question").value == "Remember me?"
        assert screen.query_one("#answers").value == "SAFE,VULNERABLE"
        assert screen.query_one("#panel").value == "pair"
        assert screen.has_class("-big-context")


async def test_health_screen_probes_and_dims_dead_models(server, stub_config):
    server.set_default(Behaviour(reply="OK"))
    server.script(mid("fast-b"), Behaviour(status=410))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HealthScreen", what="health")
        table = app.screen.query_one("#health-table")
        assert table.row_count == 7
        assert str(table.get_cell("fast-a", "status")) == "never"
        await pilot.press("r")
        await wait_for(pilot, lambda: str(table.get_cell("fast-b", "status")) == "dead"
                       and str(table.get_cell("fast-a", "status")) == "ok", what="probes")
        assert "dim" in str(table.get_cell("fast-b", "model").style)
        assert "dim" not in str(table.get_cell("fast-a", "model").style)
        assert str(table.get_cell("fast-a", "checked")) != "never"
        # Re-probe only the highlighted row (the first one).
        before = server.count(mid("fast-a"))
        table.move_cursor(row=0)
        await pilot.press("p")
        await wait_for(pilot, lambda: server.count(mid("fast-a")) == before + 1, what="one probe")
        await pilot.press("a")
        assert app.screen.auto_timer is not None
        await pilot.press("a")
        assert app.screen.auto_timer is None


async def test_panels_screen_edits_config_and_ask_sees_the_new_panel(server, stub_config):
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "PanelsScreen", what="panels")
        await pilot.press("n")
        await pilot.pause()
        await pilot.press(*"duo", "enter")
        await pilot.pause()
        prompt = app.screen.query_one("#prompt")
        prompt.value = "fast-a,fast-d"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "duo" in tomllib.loads(stub_config.read_text())["panels"],
                       what="config written")
        assert tomllib.loads(stub_config.read_text())["panels"]["duo"] == ["fast-a", "fast-d"]
        await pilot.press("f2")
        await pilot.pause()
        options = [value for _label, value in app.screen.query_one("#panel")._options]
        assert "duo" in options


async def test_history_lists_session_calls_and_opens_one(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="Answer: YES"))
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES"))
    server.script(mid("slow-c"), Behaviour(reply="Answer: NO", latency=3))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot, question="History question?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        await pilot.press("f7")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history")
        table = app.screen.query_one("#history-table")
        assert table.row_count == 1
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CallDetail", what="detail")
        text = str(app.screen.query_one("Static").render())
        assert "History question?" in text and "fast-a" in text and "cancelled" in text
        await pilot.press("escape")
        await pilot.pause()
        app.screen.query_one("#history-filter").value = "nothing matches this"
        await pilot.pause()
        assert table.row_count == 0


async def test_help_and_unavailable_screens(server, stub_config):
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        text = str(app.screen.query_one("Static").render())
        assert "Cancel" in text and "Probe all" in text
        await pilot.press("escape")
        for key, name in (("f3", "GenerateScreen"), ("f5", "RatingsScreen")):
            await pilot.press(key)
            await wait_for(pilot, lambda n=name: type(app.screen).__name__ == n, what=name)


def test_palette_has_an_entry_for_every_screen_action(server, stub_config):
    import asyncio

    async def go():
        app = FscaleApp()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            titles = [c.title for c in app.get_system_commands(app.screen)]
            return titles

    titles = asyncio.run(go())
    for wanted in ("Ask: Run", "Ask: Cancel", "Go to health", "Go to history", "Help"):
        assert wanted in titles


async def test_challenger_row_is_shown_apart_from_the_decision(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_CHALLENGER", "1")
    monkeypatch.setenv("FSCALE_CHALLENGERS", "1")  # several: tests/test_tui_estimates.py
    earn_shadow_budget()  # a fresh home has earned no shadow yet
    server.set_default(Behaviour(reply="Answer: NO"))
    for alias in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(alias), Behaviour(reply="Answer: YES"))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        table = app.screen.query_one(VoteTable)

        def shadow():
            return [v for m, v in table.members.items() if m.endswith("(challenger)")]

        # The challenger's vote arrives after the decision (ChallengerAnswered).
        await wait_for(pilot, lambda: any(v.answer == "NO" for v in shadow()), what="the challenger")
        assert len(shadow()) == 1 and "not part of the decision" in shadow()[0].note
        # Whether the third member was cancelled by the early decision depends on arrival
        # order; the challenger's NO is never counted either way.
        banner = banner_text(app)
        assert "→ YES" in banner and ("valid 3/3: YES=3" in banner or "valid 2/3: YES=2" in banner)
        # Once the shadow answered, the banner shows the call's whole spend.
        await wait_for(pilot, lambda: "+ 1 shadow," in banner_text(app),
                       what="the spend with the shadow")
        assert "(running)" not in banner_text(app) and "with shadows" in banner_text(app)


def rating_cells(app) -> dict[str, float]:
    table = app.screen.query_one("#ratings-table")
    return {key.value: float(str(table.get_cell(key, "rating"))) for key in table.rows}


async def test_feedback_in_history_updates_the_ratings_table(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="Answer: YES"))
    server.script(mid("slow-c"), Behaviour(reply="Answer: NO", latency=0.1))
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES", latency=0.3))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        assert "→ YES" in banner_text(app)
        await pilot.press("f5")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RatingsScreen", what="ratings")
        before = rating_cells(app)
        assert set(before) == {"fast-a", "fast-b", "slow-c"}
        seats = app.screen.query_one("#ratings-table")
        assert "panel" in str(seats.get_cell("fast-a", "seat"))
        await pilot.press("f7")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HistoryScreen", what="history")
        assert app.screen.query_one("#history-table").row_count == 1
        history = app.screen
        await pilot.press("x")  # reject: with two labels, NO was right; it asks first
        await wait_for(pilot, lambda: type(app.screen).__name__ == "Confirm", what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: "reject" in str(
            history.query_one("#history-table").get_cell_at((0, 4))), what="the verdict")
        await pilot.press("f5")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "RatingsScreen", what="ratings")
        after = rating_cells(app)
        assert after["slow-c"] > before["slow-c"]
        assert after["fast-a"] < before["fast-a"] and after["fast-b"] < before["fast-b"]
        # Sorting by rating puts the vindicated model first (one verdict is no evidence for
        # the accuracy estimate's order: it stays as the votes put it).
        await pilot.press("s")
        await wait_for(pilot, lambda: app.screen.sort_by == "rating", what="the rating sort")
        keys = [k.value for k in app.screen.query_one("#ratings-table").rows]
        assert keys[0] == "slow-c"


async def test_evolve_dry_run_shows_current_and_proposed(server, stub_config):
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f6")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "PanelsScreen", what="panels")
        await pilot.press("v")
        await pilot.pause()
        text = str(app.screen.query_one("#evolve-diff").render())
        assert "current" in text and "proposed" in text and "fast-a" in text
        assert "no change proposed" in text


async def test_generate_shows_candidates_judges_and_the_winner(server, stub_config):
    server.set_default(Behaviour(reply="Best: Output 1"))
    server.script(mid("fast-a"), Behaviour(reply="The answer is 42."))
    server.script(mid("fast-b"), Behaviour(reply="I think it is 41.", latency=0.1))
    server.script(mid("slow-c"), Behaviour(reply="It is 42.", latency=0.2))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "GenerateScreen", what="generate")
        screen = app.screen
        screen.query_one("#gen-question").value = "What is 6*7?"
        screen.query_one("#gen-question").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.cards) == 3, what="three candidate cards")
        await wait_for(pilot, lambda: "call" in str(screen.query_one("#gen-banner").render()),
                       what="the winner")
        winners = [c for c in screen.cards.values() if c.has_class("-winner")]
        assert len(winners) == 1 and "winner" in winners[0].border_title
        assert screen.query_one("#judges").row_count >= 2
        assert {c.model for c in screen.cards.values()} == {"fast-a", "fast-b", "slow-c"}
        assert "→ #" in str(screen.query_one("#gen-banner").render())


async def test_generate_escape_cancels(server, stub_config):
    server.set_default(Behaviour(reply="slow", latency=8.0))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "GenerateScreen", what="generate")
        screen = app.screen
        screen.query_one("#gen-question").value = "Write a haiku"
        screen.query_one("#gen-question").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: server.count() == 3, what="three requests")
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen.query_one("#gen-banner").has_class("-cancelled"),
                       what="cancelled")
        assert server.wait_until(lambda: sum(server.cancelled(mid(a)) for a in
                                             ("fast-a", "fast-b", "slow-c")) == 3, timeout=3)


async def test_k_auto_runs_the_cascade_and_shows_each_stage(server, stub_config):
    """-k auto on the Ask screen: no panel is sent, every stage is shown as the engine runs it."""
    server.set_default(Behaviour(reply="Answer: YES"))
    server.script(mid("fast-b"), Behaviour(reply="Answer: NO"))
    app = FscaleApp()
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        k = screen.query_one("#k")
        k.focus()
        await pilot.press(*"autox")  # the field takes "auto", nothing more
        assert k.value == "auto" and screen.query_one("#panel").disabled
        await ask(pilot, question="Is 91 prime?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the outcome")
        stages = screen.query_one("#stages")
        assert stages.display and stages.rows
        # Uncalibrated and unprofiled, one model (reliability 0.6) is not enough: two are asked
        # at once; they disagree (YES, NO), so a third settles it; the last stage answers.
        states = [r.state for r in sorted(stages.rows.values(), key=lambda r: r.index)]
        assert states == ["skipped", "escalated", "answered"]
        assert "→ YES" in banner_text(app) and "stage 3" in banner_text(app)
        assert "uncalibrated" in stages.headline


async def test_k_auto_answers_when_a_stage_is_confident(server, stub_config):
    server.set_default(Behaviour(reply="Answer: YES"))
    app = FscaleApp()
    async with app.run_test(size=(120, 36)) as pilot:
        app.screen.query_one("#k").value = "auto"
        await ask(pilot, question="Is 2 prime?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        rows = list(app.screen.query_one("#stages").rows.values())
        assert rows[0].state == "skipped" and rows[1].state == "answered"
        assert rows[1].confidence == pytest.approx(0.6 ** 2 / (0.6 ** 2 + 0.4 ** 2))
        assert "→ YES" in banner_text(app) and "stage 2" in banner_text(app)
        # A plain run afterwards hides the stages again.
        app.screen.query_one("#k").value = "2"
        await ask(pilot, question="Is 3 prime?")
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        assert not app.screen.query_one("#stages").display


def test_banner_and_cli_say_decided_early_only_when_requests_were_cancelled():
    from fscale_tui.cli.render import summary
    from fscale_tui.engine.base.calls import ScaleResult, Vote
    from fscale_tui.widgets.votes import describe_result

    def result(cancelled: bool) -> ScaleResult:
        votes = [Vote("a", "YES", 0.1, status="answered"), Vote("b", "YES", 0.2, status="answered"),
                 Vote("c", None if cancelled else "NO", None if cancelled else 0.3,
                      status="cancelled" if cancelled else "answered")]
        return ScaleResult(id="x", answer="YES", confidence=2 / 3, votes=votes, calls_made=3,
                           elapsed_s=0.4, decided_early=cancelled, counts={"YES": 2},
                           valid_votes=2, members=["a", "b", "c"])

    everyone = result(cancelled=False)
    assert "decided early" not in describe_result(everyone)[0]
    assert "decided early" not in summary(everyone)
    early = result(cancelled=True)
    assert "decided early" in describe_result(early)[0] and "cancelled: c" in describe_result(early)[0]
    assert "decided early" in summary(early)


async def test_every_member_answering_is_not_decided_early(server, stub_config):
    # YES, NO, then the slow YES: nothing is settled before the last reply.
    server.set_default(Behaviour(reply="Answer: YES"))
    server.script(mid("fast-b"), Behaviour(reply="Answer: NO"))
    server.script(mid("slow-c"), Behaviour(reply="Answer: YES", latency=0.3))
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        await ask(pilot)
        await wait_for(pilot, lambda: "call" in banner_text(app), what="the decision")
        assert set(statuses(app).values()) == {"answered"}
        assert "→ YES" in banner_text(app) and "decided early" not in banner_text(app)


async def test_member_card_tells_the_substitution_story(server, stub_config):
    from fscale_tui.engine.base.events import (
        MemberSubstituted,
        VoteFailed,
        VoteReceived,
        VoteStarted,
    )
    from fscale_tui.widgets.votes import member_card

    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one(VoteTable)
        for event in (VoteStarted("c", "fast-b", "vendor-b/fast"),
                      VoteFailed("c", "fast-b", "auth: HTTP 401", "auth", 0.09),
                      MemberSubstituted("c", "fast-b", "fast-c", "auth"),
                      VoteStarted("c", "fast-c", "vendor-c/fast", substitute_for="fast-b"),
                      VoteReceived("c", "fast-c", "NO", 0.52, "I think not.\nAnswer: NO",
                                   "Let me see.", 18)):
            table.apply(event)
        await pilot.pause()
        failed = member_card(table.members["fast-b"])
        assert "replaced by fast-c (auth)" in failed and "HTTP 401" in failed
        sub = member_card(table.members["fast-c"])
        assert "substitute for fast-b" in sub and "vote [b]NO[/b]" in sub
        assert "0.52s" in sub and "18 tokens" in sub and "Let me see." in sub
        assert "I think not. / Answer: NO" in sub
        # Highlighting the row shows that card, titled with the member.
        table.focus()
        table.move_cursor(row=table.get_row_index("fast-c"))
        await pilot.pause()
        card = app.screen.query_one("#detail")
        assert card.border_title == "fast-c (for fast-b)"


async def test_generate_says_when_the_judges_share_the_generators_family(server, fscale_home):
    write_config(fscale_home, server, models={"only-a": ("x/a", "fast", "x"),
                                              "only-b": ("x/b", "fast", "x")},
                 panels={"default": ["only-a", "only-b"]})
    server.set_default(Behaviour(reply="Best: Output 1"))
    app = FscaleApp(start="generate")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#gen-question").value = "What is 6*7?"
        screen.query_one("#gen-k").value = "2"
        screen.query_one("#gen-question").focus()
        await pilot.press("enter")
        banner = screen.query_one("#gen-banner")
        await wait_for(pilot, lambda: "call" in str(banner.render()), what="the outcome")
        text = str(banner.render())
        assert "judges not independent" in text and "only-a (a generator)" in text
        judges = screen.query_one("#judges")
        assert judges.row_count >= 1
        assert all("(same family)" in str(judges.get_row_at(i)[0]) for i in range(judges.row_count))


async def test_panels_evolve_names_the_default_panel_not_the_highlighted_row(server, fscale_home):
    write_config(fscale_home, server, panels={"default": ["fast-a", "fast-b", "slow-c"],
                                              "aaa": ["fast-a", "fast-d"]})
    app = FscaleApp(start="panels")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        table = screen.query_one("#panels-table")
        await wait_for(pilot, lambda: table.row_count > 0, what="the panels")
        assert "'default'" in str(screen.query_one("#evolve-diff").render())
        table.move_cursor(row=table.get_row_index("aaa"))  # highlight another panel
        await pilot.press("x")
        await pilot.pause()
        assert "press v first" in list(app._notifications)[-1].message
        assert "'default'" in list(app._notifications)[-1].message
        await pilot.press("v")
        await wait_for(pilot, lambda: "proposed" in str(screen.query_one("#evolve-diff").render()),
                       what="the proposal")
        diff = str(screen.query_one("#evolve-diff").render())
        assert "evolve default (the default panel" in diff and "fast-d" not in diff
        await pilot.press("x")
        await pilot.pause()
        assert "keeps panel 'default'" in list(app._notifications)[-1].message


async def test_file_picker_goes_up_and_takes_a_typed_path(server, stub_config, tmp_path,
                                                        monkeypatch):
    from fscale_tui.screens.modals import FilePicker

    (tmp_path / "docs" / "deep").mkdir(parents=True)
    (tmp_path / "docs" / "notes.txt").write_text("NOTES-TEXT-77", encoding="utf-8")
    (tmp_path / "top.txt").write_text("TOP-TEXT-88", encoding="utf-8")
    monkeypatch.chdir(tmp_path / "docs" / "deep")
    app = FscaleApp()
    async with app.run_test(size=SIZE) as pilot:
        ask_screen = app.screen
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePicker), what="the picker")
        picker = app.screen
        assert picker.root == tmp_path / "docs" / "deep"
        await pilot.press("backspace")  # up from the tree
        await wait_for(pilot, lambda: picker.root == tmp_path / "docs", what="up one folder")
        assert str(picker.query_one("#tree").path) == str(tmp_path / "docs")
        await pilot.click("#picker-up")  # the .. button
        await wait_for(pilot, lambda: picker.root == tmp_path, what="up again")
        path = picker.query_one("#picker-path")
        path.focus()
        path.value = "nowhere.txt"
        await pilot.press("enter")
        await pilot.pause()
        assert "no such file or folder" in str(picker.query_one("#picker-error").render())
        path.value = "docs"  # a folder: opens it
        await pilot.press("enter")
        await wait_for(pilot, lambda: picker.root == tmp_path / "docs", what="the typed folder")
        path.focus()
        path.value = str(tmp_path / "top.txt")  # a file: picks it
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is ask_screen, what="back on Ask")
        await wait_for(pilot, lambda: ask_screen.query_one("#context").text == "TOP-TEXT-88",
                       what="the context")
        # Next time the picker starts where the last file came from.
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, FilePicker), what="the picker")
        assert app.screen.root == tmp_path
