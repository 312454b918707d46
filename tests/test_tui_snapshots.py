"""SVG snapshots of every TUI screen at 100x30 (plus the Ask screen at 80x24 and 200x60).

Deterministic by construction: the Ask and History screens are fed a fixed event stream
(a real Engine whose ``scale_events`` replays recorded events, so no clock, latency or random
call id reaches the picture), Health reads a fixed ``health.json``, the rest read the stub
config. Update with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from fscale_tui.app import FscaleApp
from fscale_tui.engine.base import storage
from fscale_tui.engine.base.events import (Cancelled, Decided, MemberSubstituted, StageFinished,
                                      StageStarted, VoteFailed, VoteReceived, VoteStarted)
from fscale_tui.engine.ask.health import fingerprint
from fscale_tui.engine.session import Engine
from fscale_tui.engine.base.calls import ScaleResult, StageOutcome, Vote
from tests.conftest import write_config

CALL = "20250102-030405-0badcafe"
SIZE = (100, 30)
THINKING = ("The function escapes its input before it builds the query.\n"
            "No user-controlled string reaches the SQL text.")


def recorded_events() -> list[Any]:
    """One call as the engine reported it: a thinking model, a failure with its substitute,
    an early decision that cancelled the slow member."""
    votes = [
        Vote("fast-a", "SAFE", 0.41, status="answered", raw="Answer: SAFE", tokens=12),
        Vote("fast-b", None, 0.09, status="replaced",
             error="auth: HTTP 401: invalid API key for vendor-b/fast"),
        Vote("slow-c", None, None, status="cancelled"),
        Vote("think-e", "SAFE", 2.87, status="answered", raw="Answer: SAFE", thinking=THINKING,
             tokens=311),
        Vote("fast-c", "SAFE", 0.52, status="answered", substitute_for="fast-b",
             raw="It parametrises the query.\nAnswer: SAFE", tokens=18),
    ]
    result = ScaleResult(id=CALL, answer="SAFE", confidence=1.0, votes=votes, calls_made=5,
                         elapsed_s=2.91, decided_early=True, counts={"SAFE": 3}, valid_votes=3,
                         members=["fast-a", "fast-c", "slow-c", "think-e"], question="Is this function safe from SQL injection?",
                         answers=["SAFE", "VULNERABLE"])
    result.challenger = Vote("fast-d", "VULNERABLE", 0.77, status="answered",
                             raw="Answer: VULNERABLE", tokens=9)
    result.challenger_calls = 1
    return [
        VoteStarted(CALL, "fast-a", "vendor-a/fast"),
        VoteStarted(CALL, "fast-b", "vendor-b/fast"),
        VoteStarted(CALL, "slow-c", "vendor-c/slow"),
        VoteStarted(CALL, "think-e", "vendor-e/think"),
        VoteReceived(CALL, "fast-a", "SAFE", 0.41, "Answer: SAFE", "", 12),
        VoteFailed(CALL, "fast-b", "auth: HTTP 401: invalid API key for vendor-b/fast", "auth", 0.09),
        MemberSubstituted(CALL, "fast-b", "fast-c", "auth"),
        VoteStarted(CALL, "fast-c", "vendor-c/fast", substitute_for="fast-b"),
        VoteReceived(CALL, "fast-c", "SAFE", 0.52, "It parametrises the query.\nAnswer: SAFE", "", 18),
        VoteReceived(CALL, "think-e", "SAFE", 2.87, "Answer: SAFE", THINKING, 311),
        Cancelled(CALL, "slow-c"),
        Decided(CALL, result),
    ]


def recorded_generate_events() -> list[Any]:
    """One judge-strategy generate call as the engine reported it: the last candidate wins
    (at 80 columns the winner must be on screen, not only the first card)."""
    from fscale_tui.engine.base.events import CandidateGenerated, GenerateStarted, Generated, JudgeVoted
    from fscale_tui.engine.base.calls import Candidate, GenerateResult, JudgeVote

    texts = ["17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\nAnswer: 391",
             "17 * 23 is about 400; precisely 389.\nAnswer: 389",
             "23 * 17: 23 * 10 = 230, 23 * 7 = 161, total 391.\nAnswer: 391"]
    gens = ("fast-a", "fast-b", "slow-c")
    cands = [Candidate(i, gens[i], texts[i], answer=texts[i][-3:], latency_s=0.4 + i / 10,
                       votes=(1, 0, 2)[i]) for i in range(3)]
    judges = ("fast-d", "think-e", "fast-a2")
    choices = (2, 0, 2)
    ballots = [JudgeVote(judge=j, choice_index=c, choice_model=gens[c], raw=f"Best: Output {c + 1}")
               for j, c in zip(judges, choices)]
    result = GenerateResult(id=CALL, strategy="judge", status="decided", output=texts[2],
                            answer="391", winner_model="slow-c", winner_index=2,
                            all_outputs=cands, judge_votes=ballots,
                            counts={"2": 2, "0": 1}, selected_by="judges", calls_made=6,
                            elapsed_s=1.84, question="What is 17*23?", generators=list(gens),
                            judges=list(judges), judges_independent=False,
                            same_family_judges=["fast-a2"])
    # fast-a2 is of fast-a's family: the screen must say the judges are not independent.
    events: list[Any] = [GenerateStarted(CALL, "judge", gens, judges, 3, False, ("fast-a2",))]
    events += [CandidateGenerated(CALL, c.model, c.index, c.text, c.latency_s, c.answer)
               for c in cands]
    events += [JudgeVoted(CALL, j, gens[c], f"Best: Output {c + 1}", c, (2, 0, 1), 0.3 + i / 10)
               for i, (j, c) in enumerate(zip(judges, choices))]
    events.append(Generated(CALL, result))
    return events


def recorded_auto_events() -> list[Any]:
    """One ``-k auto`` call as the engine reported it: stage 1 (routed) split 2-1 and escalated,
    stage 2 was skipped (calibration found it never confident), stage 3 answered at 0.80."""
    first = ("fast-a", "fast-b", "slow-c")
    third = ("fast-a", "fast-b", "slow-c", "think-e", "fast-d")
    answers = {"fast-a": "YES", "fast-b": "YES", "slow-c": "NO", "think-e": "YES", "fast-d": "YES"}
    latency = {"fast-a": 0.38, "fast-b": 0.44, "slow-c": 1.93, "think-e": 3.12, "fast-d": 0.51}
    votes = [Vote(m, answers[m], latency[m], status="answered", raw=f"Answer: {answers[m]}",
                  tokens=9) for m in third]
    stages = [StageOutcome("route:3", list(first), "YES", 2 / 3, 0.9, False),
              StageOutcome("pair", ["fast-a", "fast-d"], None, 0.0, None, False,
                           skipped="calibration: never confident enough"),
              StageOutcome("default", list(third), "YES", 0.8, 0.75, True)]
    result = ScaleResult(id=CALL, answer="YES", confidence=0.8, votes=votes, calls_made=5,
                         elapsed_s=3.64, decided_early=False, counts={"YES": 4, "NO": 1},
                         valid_votes=5, members=list(third), question="Is 91 prime?",
                         answers=["YES", "NO"], auto=True, stages=stages, calibrated=True,
                         signal="weighted", route={"cluster": 4, "models": list(first)})
    events: list[Any] = [StageStarted(CALL, 0, "route:3", first, 0.9)]
    events += [VoteStarted(CALL, m, f"vendor/{m}") for m in first]
    events += [VoteReceived(CALL, m, answers[m], latency[m], f"Answer: {answers[m]}", "", 9)
               for m in first]
    events.append(StageFinished(CALL, 0, "route:3", "YES", 2 / 3, 0.9, False))
    events.append(StageStarted(CALL, 2, "default", third, 0.75))
    events += [VoteStarted(CALL, m, f"vendor/{m}") for m in ("think-e", "fast-d")]
    events += [VoteReceived(CALL, m, answers[m], latency[m], f"Answer: {answers[m]}",
                            THINKING if m == "think-e" else "", 9) for m in ("think-e", "fast-d")]
    events.append(StageFinished(CALL, 2, "default", "YES", 0.8, 0.75, True))
    events.append(Decided(CALL, result))
    return events


class ReplayingEngine(Engine):
    """A real engine (real settings, registry, health store) whose calls replay recorded events."""

    async def scale_events(self, request):  # type: ignore[override]
        for event in (recorded_auto_events() if request.auto else recorded_events()):
            yield event

    async def generate_events(self, request):
        for event in recorded_generate_events():
            yield event


def seed_call_log(settings) -> None:
    """Eight logged calls at fixed times, so ratings, trends and history are fixed data."""
    from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord

    t0 = time.mktime((2025, 1, 2, 9, 0, 0, 0, 0, -1))
    answers = {  # per call: fast-a, fast-b, slow-c, and the challenger fast-d
        0: ("YES", "YES", "NO", "YES"), 1: ("NO", "NO", "NO", "YES"), 2: ("YES", "NO", "YES", "YES"),
        3: ("YES", "YES", "YES", "NO"), 4: ("NO", "YES", "NO", "NO"), 5: ("YES", "YES", "NO", "YES"),
        6: ("NO", "NO", "NO", "NO"), 7: ("YES", "YES", "YES", "YES"),
    }
    with LearningStore.for_settings(settings) as store:
        for i, (a, b, c, d) in answers.items():
            votes = {"fast-a": a, "fast-b": b, "slow-c": c}
            decided = max(("YES", "NO"), key=lambda lab: list(votes.values()).count(lab))
            replies = [ReplyRecord(m, answer=v, latency_s=0.3, raw=f"Answer: {v}")
                       for m, v in votes.items()]
            replies.append(ReplyRecord("fast-d", role="challenger", answer=d, latency_s=0.5,
                                       raw=f"Answer: {d}"))
            store.record_call(CallRecord(id=f"20250102-09{i:02d}00-0000{i:04d}",
                                         question=f"Is claim #{i} supported by the source?",
                                         labels=["YES", "NO"], members=list(votes),
                                         answer=decided, confidence=2 / 3, ts=t0 + 60 * i,
                                         replies=replies))
        store.add_feedback("20250102-090500-00000005", "reject", now=t0 + 3600)


@pytest.fixture
def snap_home(fscale_home, server):
    write_config(fscale_home, server, panels={"default": ["fast-a", "fast-b", "slow-c", "think-e"],
                                              "pair": ["fast-a", "fast-d"]})
    return fscale_home


def make_app(start: str = "ask") -> FscaleApp:
    return FscaleApp(engine_factory=ReplayingEngine, start=start)


async def run_recorded_call(pilot) -> None:
    screen = pilot.app.screen
    screen.query_one("#question").value = "Is this function safe from SQL injection?"
    screen.query_one("#answers").value = "SAFE,VULNERABLE"
    screen.query_one("#context").text = ("def find(db, name):\n"
                                         "    return db.execute('SELECT * FROM t WHERE n = ?', (name,))")
    await pilot.press("ctrl+r")
    for _ in range(200):
        await pilot.pause()
        if screen.query_one("#banner").has_class("-decided"):
            break
    screen.query_one("#votes").focus()
    await pilot.pause()


def test_ask_screen_after_a_call(snap_home, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_recorded_call)


def test_ask_screen_small_terminal(snap_home, snap_compare):
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_recorded_call)


def test_ask_screen_large_terminal(snap_home, snap_compare):
    assert snap_compare(make_app(), terminal_size=(200, 60), run_before=run_recorded_call)


def test_ask_screen_verify_mode(snap_home, snap_compare):
    async def verify(pilot):
        screen = pilot.app.screen
        screen.query_one("#mode").value = "verify"
        screen.query_one("#context").text = "The bridge opened in 1932 and is 503 m long."
        screen.query_one("#draft").text = "The 503 m bridge opened in 1931."
        screen.query_one("#votes").focus()  # no blinking cursor: the picture must not depend on timing
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=verify)


def seed_health() -> None:
    """A fixed health.json: every status the Health screen shows, checked at a fixed time."""
    from fscale_tui.engine.catalog.config import load_settings

    settings = load_settings()
    at = time.mktime((2025, 1, 2, 3, 4, 5, 0, 0, -1))  # shows as 2025-01-02 03:04:05 in any TZ
    far = time.mktime((2100, 1, 1, 0, 0, 0, 0, 0, -1))

    def entry(alias, status, latency=None, detail="", expires=None):
        return {"status": status, "checked_at": at, "expires_at": expires, "latency_s": latency,
                "detail": detail, "fingerprint": fingerprint(settings.models[alias], settings)}

    storage.write_json(settings.paths.state_dir / "health.json", {
        "fast-a": entry("fast-a", "ok", 0.41),
        "fast-b": entry("fast-b", "dead", detail="dead: HTTP 410: model retired"),
        "fast-c": entry("fast-c", "rate_limited", detail="rate_limited: HTTP 429", expires=far),
        "fast-d": entry("fast-d", "slow", 12.3),
        "slow-c": entry("slow-c", "ok", 3.2),
        "think-e": entry("think-e", "unavailable", detail="unavailable: HTTP 404", expires=far),
    })


def test_health_screen(snap_home, snap_compare):
    seed_health()
    assert snap_compare(make_app("health"), terminal_size=SIZE)


def test_panels_screen(snap_home, snap_compare):
    assert snap_compare(make_app("panels"), terminal_size=SIZE)


def test_history_screen(snap_home, snap_compare):
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    assert snap_compare(make_app("history"), terminal_size=SIZE)


def test_history_call_detail(snap_home, snap_compare):
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    assert snap_compare(make_app("history"), terminal_size=SIZE, press=["down", "down", "enter"])


def test_generate_screen(snap_home, snap_compare):
    assert snap_compare(make_app("generate"), terminal_size=SIZE, run_before=run_recorded_generate)


def test_ratings_screen(snap_home, snap_compare):
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    assert snap_compare(make_app("ratings"), terminal_size=SIZE)


def test_panels_evolve_dry_run(snap_home, snap_compare):
    from fscale_tui.engine.catalog.config import load_settings

    seed_call_log(load_settings())
    assert snap_compare(make_app("panels"), terminal_size=SIZE, press=["v"])


def test_help_screen(snap_home, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, press=["f1"])


def test_light_theme(snap_home, snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_recorded_call,
                        press=["ctrl+t"])


def test_ask_screen_k_auto_stages(snap_home, snap_compare):
    """-k auto: each stage with its members, confidence against threshold and verdict."""
    async def auto(pilot):
        pilot.app.screen.query_one("#k").value = "auto"
        await run_recorded_call(pilot)

    assert snap_compare(make_app(), terminal_size=(120, 36), run_before=auto)


def test_ask_screen_member_card(snap_home, snap_compare):
    """The highlighted member's card: vote, latency, tokens, reasoning, raw reply."""
    async def card(pilot):
        await run_recorded_call(pilot)
        table = pilot.app.screen.query_one("#votes")
        table.move_cursor(row=table.get_row_index("think-e"))
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(120, 36), run_before=card)


async def run_recorded_generate(pilot) -> None:
    screen = pilot.app.screen
    screen.query_one("#gen-question").value = "What is 17*23?"
    await pilot.press("ctrl+r")
    for _ in range(200):
        await pilot.pause()
        if screen.query_one("#gen-banner").has_class("-decided"):
            break
    # Off the prompt: its blinking cursor would make the picture depend on timing.
    screen.query_one("#judges").focus()
    await pilot.pause()


@pytest.mark.parametrize("screen", ["generate", "health", "ratings", "panels", "history"])
def test_every_screen_at_80x24(snap_home, snap_compare, screen):
    """The smallest supported terminal: nothing cut mid-word, the footer's keys all fit."""
    from fscale_tui.engine.catalog.config import load_settings

    if screen == "health":
        seed_health()
    if screen in ("ratings", "history"):
        seed_call_log(load_settings())
    run_before = run_recorded_generate if screen == "generate" else None
    assert snap_compare(make_app(screen), terminal_size=(80, 24), run_before=run_before)


#: The screenshots of docs/tui.md (docs/screens/, the Ask one in the README too) are these
#: snapshots, copied when they change: name → the snapshot (of this module, or "module/name").
DOCS_SCREENS = {
    "ask": "test_ask_screen_after_a_call", "verify": "test_ask_screen_verify_mode",
    "generate": "test_generate_screen", "health": "test_health_screen",
    "ratings": "test_ratings_screen", "panels": "test_panels_evolve_dry_run",
    "history": "test_history_screen", "history-call": "test_history_call_detail",
    "ask-auto": "test_ask_screen_k_auto_stages", "ask-card": "test_ask_screen_member_card",
    "ask-80x24": "test_ask_screen_small_terminal", "ask-200x60": "test_ask_screen_large_terminal",
    "ask-light": "test_light_theme", "help": "test_help_screen",
    "profile": "test_tui_profile/test_profile_screen_draws_the_frontier",
}


def test_the_docs_screenshots_are_the_current_snapshots():
    """docs/tui.md shows docs/screens/*.svg (and the README the Ask screen): each is its
    snapshot, so the pictures cannot drift from the screens (update: --snapshot-update, then copy
    as DOCS_SCREENS says)."""
    from tests.conftest import REPO

    snapshots = REPO / "tests" / "__snapshots__"
    docs = REPO / "docs" / "screens"
    assert {p.stem for p in docs.glob("*.svg")} == set(DOCS_SCREENS)
    tui = (REPO / "docs" / "tui.md").read_text()
    assert "docs/screens/ask.svg" in (REPO / "README.md").read_text()
    for doc, snapshot in DOCS_SCREENS.items():
        assert f"](screens/{doc}.svg)" in tui, f"docs/tui.md does not show screens/{doc}.svg"
        path = snapshots / (snapshot if "/" in snapshot else f"test_tui_snapshots/{snapshot}")
        assert (docs / f"{doc}.svg").read_bytes() == path.with_suffix(".svg").read_bytes(), \
            f"docs/screens/{doc}.svg is not the current {snapshot} snapshot: copy it"
