"""scale() against the loopback server: voting, early decision, ties, failures, substitution."""

from __future__ import annotations

import time

import pytest

from fscale_tui import scale, scale_batch
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.events import (Cancelled, Decided, MemberSubstituted, VoteDelta,
                                      VoteFailed, VoteReceived, VoteStarted)
from fscale_tui.engine.session import Engine
from fscale_tui.engine.base.calls import ScaleRequest
from fscale_tui.engine.decide.rules.majority import Majority
from fscale_tui.engine.decide.rules.weighted import Weighted
from tests.conftest import Behaviour, mid, write_config



def test_majority_wins_with_confidence_and_counts(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="Answer: SAFE"))
    server.script(mid("fast-b"), Behaviour(reply="It is VULNERABLE.\nAnswer: VULNERABLE"))
    server.script(mid("slow-c"), Behaviour(reply="**SAFE**"))
    r = scale("Is it safe?", ["SAFE", "VULNERABLE"])
    assert r.answer == "SAFE"
    assert r.counts == {"SAFE": 2, "VULNERABLE": 1}
    assert r.confidence == pytest.approx(2 / 3)
    assert r.valid_votes == 3 and r.calls_made == 3
    assert r.status == "decided" and int(r.exit_code) == 0


def test_context_goes_in_system_message_question_in_user_message(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    scale("Is the sky blue?", ["YES", "NO"], context="CONTEXT-MARKER-123", models=["fast-a"])
    body = server.requests[0].body
    system = [m for m in body["messages"] if m["role"] == "system"][0]["content"]
    user = [m for m in body["messages"] if m["role"] == "user"][0]["content"]
    assert "CONTEXT-MARKER-123" in system and "CONTEXT-MARKER-123" not in user
    assert "Is the sky blue?" in user and "Is the sky blue?" not in system


@pytest.mark.xdist_group("serial")  # an early decision's time
def test_early_decision_cancels_slow_model(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="YES", latency=0.02))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.05))
    server.script(mid("slow-c"), Behaviour(reply="NO", latency=5.0))
    t0 = time.monotonic()
    r = scale("q?", ["YES", "NO"], k=3)
    elapsed = time.monotonic() - t0
    assert r.answer == "YES" and r.decided_early
    assert elapsed < 2.0  # functional bound only; the benchmark measures the real figure
    slow = [v for v in r.votes if v.model == "slow-c"][0]
    assert slow.status == "cancelled"
    # The server saw the connection of the slow request closed before it answered.
    assert server.wait_until(lambda: server.cancelled(mid("slow-c")) == 1, timeout=3)


def test_no_early_decision_while_the_result_can_still_change(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="YES", latency=0.01))
    server.script(mid("fast-b"), Behaviour(reply="NO", latency=0.05))
    server.script(mid("slow-c"), Behaviour(reply="NO", latency=0.2))
    r = scale("q?", ["YES", "NO"])
    assert r.answer == "NO" and not r.decided_early
    assert all(v.status == "answered" for v in r.votes)


def _ballots(rule, counts):
    return [rule.ballot(f"{label}{i}", label) for label, n in counts.items() for i in range(n)]


def test_can_decide_early_rule():
    labels = ("A", "B", "C")
    rule = Majority()
    assert rule.can_decide_early(_ballots(rule, {"A": 2}), labels, [1.0])
    assert not rule.can_decide_early(_ballots(rule, {"A": 1}), labels, [1.0, 1.0])
    assert not rule.can_decide_early(_ballots(rule, {"A": 2, "B": 1}), labels, [1.0])
    assert rule.can_decide_early(_ballots(rule, {"A": 3, "B": 1}), labels, [1.0])
    assert not rule.can_decide_early([], labels, [1.0, 1.0, 1.0])


def test_stage_outcome_is_settled_against_its_threshold():
    labels = ("A", "B")
    rule = Majority()
    # unanimity needed (threshold 1): one dissent settles it (escalate), whatever is pending
    assert rule.can_decide_early(_ballots(rule, {"A": 1, "B": 1}), labels, [1.0], threshold=1.0)
    assert not rule.can_decide_early(_ballots(rule, {"A": 2}), labels, [1.0], threshold=1.0)
    # 2 of 3 needed: two agreeing votes already reach it
    assert rule.can_decide_early(_ballots(rule, {"A": 2}), labels, [1.0], threshold=0.66)
    weighted = Weighted({"A0": 0.9, "B0": 0.5}, default=0.5)
    ballots = [weighted.ballot("A0", "A"), weighted.ballot("B0", "B")]
    # 0.9 behind A of 1.4 + 0.5 pending: A cannot reach 0.8 any more
    assert weighted.can_decide_early(ballots, labels, [0.5], threshold=0.8)


def test_final_tie_is_no_decision(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b"]})
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(reply="NO"))
    r = scale("q?", ["YES", "NO"])
    assert r.answer is None and r.status == "tie" and sorted(r.tied) == ["NO", "YES"]
    assert int(r.exit_code) == 3


def test_tie_break_order_uses_panel_order_not_arrival(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b"]})
    # fast-b answers first, but fast-a is listed first: order tie-break picks fast-a's label.
    server.script(mid("fast-a"), Behaviour(reply="NO", latency=0.15))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.0))
    r = scale("q?", ["YES", "NO"], tie_break="order")
    assert r.answer == "NO" and r.tie_broken_by == "order"
    assert r.confidence == pytest.approx(0.5)


def test_tie_break_rating_prefers_higher_rated_member(server, stub_config):
    import asyncio

    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b"]})
    server.script(mid("fast-a"), Behaviour(reply="NO"))
    server.script(mid("fast-b"), Behaviour(reply="YES"))

    async def go():
        async with Engine() as engine:
            engine.rating_of = {"fast-a": 1400.0, "fast-b": 1600.0}.get
            return await engine.scale(ScaleRequest("q?", ("YES", "NO"), tie_break="rating"))

    r = asyncio.run(go())
    assert r.answer == "YES" and r.tie_broken_by == "rating"


def test_no_answer_is_not_a_vote_and_distinct_from_unclear_label(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="I cannot tell from this."))
    server.script(mid("fast-b"), Behaviour(reply="UNCLEAR"))
    server.script(mid("slow-c"), Behaviour(null_content=True))
    r = scale("q?", ["POSITIVE", "NEGATIVE", "UNCLEAR"])
    statuses = {v.model: (v.status, v.answer) for v in r.votes}
    assert statuses["fast-a"] == ("no_answer", None)
    assert statuses["fast-b"] == ("answered", "UNCLEAR")
    assert statuses["slow-c"] == ("no_answer", None)
    assert r.answer == "UNCLEAR" and r.valid_votes == 1 and r.members == ["fast-a", "fast-b", "slow-c"]
    assert r.confidence == 1.0  # 1 of 1 valid votes, reported with valid=1/3


def test_reasoning_is_stripped_before_extraction(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="<think>maybe NO... NO</think>\nAnswer: YES"))
    server.script(mid("fast-b"), Behaviour(reply="YES", reasoning_content="NO NO NO"))
    server.script(mid("slow-c"), Behaviour(reply="YES", reasoning="it is NO"))
    r = scale("q?", ["YES", "NO"])
    assert r.counts.get("NO", 0) == 0 and r.answer == "YES"


def test_every_member_failing_is_exit_4_and_still_a_result(server, fscale_home):
    write_config(fscale_home, server, models={"x1": ("dead/x1", "fast", "x"),
                                              "x2": ("dead/x2", "fast", "x")},
                 panels={"default": ["x1", "x2"]})
    server.set_default(Behaviour(status=500))
    r = scale("q?", ["YES", "NO"])
    assert r.status == "all_failed" and r.answer is None and int(r.exit_code) == 4
    assert all(v.error for v in r.votes)


def test_dead_member_is_substituted_same_tier_other_family(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    server.script(mid("fast-a"), Behaviour(status=410))
    r = scale("q?", ["YES", "NO"], models=["fast-a", "fast-b"])
    failed = [v for v in r.votes if v.model == "fast-a"][0]
    assert failed.status == "replaced" and "dead" in failed.error
    sub = [v for v in r.votes if v.substitute_for == "fast-a"][0]
    assert sub.model in {"fast-c", "fast-d"}  # same tier (fast), not family "a", not in use
    assert r.answer == "YES" and r.valid_votes == 2
    # 410 is final: not retried.
    assert server.count(mid("fast-a")) == 1


def test_dead_verdict_is_remembered_by_later_calls(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    server.script(mid("fast-a"), Behaviour(status=410))
    scale("q?", ["YES", "NO"], models=["fast-a", "fast-b"])
    server.reset()
    server.set_default(Behaviour(reply="YES"))
    r = scale("q?", ["YES", "NO"], models=["fast-a", "fast-b"])
    # Known dead: substituted before any request is wasted on it.
    assert server.count(mid("fast-a")) == 0
    assert any(v.substitute_for == "fast-a" for v in r.votes)


def test_malformed_json_and_cut_streams_are_failures_not_votes(server, stub_config):
    server.set_default(Behaviour(reply="NO"))
    server.script(mid("fast-a"), Behaviour(malformed=True))
    r = scale("q?", ["YES", "NO"], models=["fast-a"])
    assert r.votes[0].status in ("failed", "replaced") and "malformed" in r.votes[0].error


def test_streaming_emits_deltas_and_a_cut_stream_is_retried(server, stub_config):
    import asyncio

    server.script(mid("fast-a"), Behaviour(reply="Answer: YES", cut_stream_after=1),
                  Behaviour(reply="Answer: YES"))
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES", reasoning_content="thinking"))

    async def go():
        events = []
        async with Engine() as engine:
            req = ScaleRequest("q?", ("YES", "NO"), models=("fast-a", "fast-b"), stream=True)
            async for ev in engine.scale_events(req):
                events.append(ev)
        return events

    events = asyncio.run(go())
    assert any(isinstance(e, VoteDelta) and e.reasoning for e in events)
    assert any(isinstance(e, VoteDelta) and e.content for e in events)
    result = [e for e in events if isinstance(e, Decided)][0].result
    assert result.answer == "YES" and result.valid_votes == 2
    assert server.count(mid("fast-a")) == 2  # the cut stream was retried
    assert result.calls_made == 3


def test_event_stream_order(server, stub_config):
    import asyncio

    server.script(mid("fast-a"), Behaviour(reply="YES", latency=0.0))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.05))
    server.script(mid("slow-c"), Behaviour(reply="YES", latency=3))

    async def go():
        async with Engine() as engine:
            return [e async for e in engine.scale_events(ScaleRequest("q?", ("YES", "NO")))]

    events = asyncio.run(go())
    kinds = [type(e) for e in events]
    assert kinds[:3] == [VoteStarted] * 3
    assert kinds[-1] is Decided and Cancelled in kinds
    received = [e.model for e in events if isinstance(e, VoteReceived)]
    assert received == ["fast-a", "fast-b"]  # arrival order
    assert not any(isinstance(e, VoteFailed) for e in events)


def test_429_with_retry_after_is_retried_not_counted_as_vote(server, stub_config):
    server.script(mid("fast-a"), Behaviour(status=429, retry_after=0.2), Behaviour(reply="NO"))
    t0 = time.monotonic()
    r = scale("q?", ["YES", "NO"], models=["fast-a"])
    assert r.answer == "NO" and r.valid_votes == 1
    assert server.count(mid("fast-a")) == 2 and r.calls_made == 2
    assert time.monotonic() - t0 >= 0.2  # Retry-After honoured


def test_substitution_event_is_emitted(server, stub_config):
    import asyncio

    server.set_default(Behaviour(reply="YES"))
    server.script(mid("fast-b"), Behaviour(status=404))

    async def go():
        async with Engine() as engine:
            return [e async for e in engine.scale_events(
                ScaleRequest("q?", ("YES", "NO"), models=("fast-a", "fast-b")))]

    events = asyncio.run(go())
    subs = [e for e in events if isinstance(e, MemberSubstituted)]
    assert len(subs) == 1 and subs[0].model == "fast-b" and subs[0].reason == "unavailable"


def test_scale_batch_isolates_bad_items_and_keeps_order(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    items = [{"question": f"q{i}", "answers": ["YES", "NO"], "id": f"i{i}"} for i in range(5)]
    items.insert(2, {"answers": ["YES", "NO"]})  # no question
    out = scale_batch(items, k=2)
    assert len(out) == 6
    assert isinstance(out[2], Exception)
    assert [r.item_id for i, r in enumerate(out) if i != 2] == ["i0", "i1", "i2", "i3", "i4"]
    ids = [r.id for i, r in enumerate(out) if i != 2]
    assert len(set(ids)) == 5 and not set(ids) & {"i0", "i1", "i2", "i3", "i4"}  # call ids are unique
    assert all(r.answer == "YES" for i, r in enumerate(out) if i != 2)


def test_unknown_model_and_panel_are_usage_errors(server, stub_config):
    from fscale_tui.engine.base.errors import UsageError

    with pytest.raises(UsageError, match="unknown model"):
        scale("q?", ["YES", "NO"], models=["nope"])
    with pytest.raises(UsageError, match="unknown panel"):
        scale("q?", ["YES", "NO"], panel="nope")


def test_k_larger_than_panel_extends_with_diverse_families(server, stub_config):
    server.set_default(Behaviour(reply="YES", latency=0.05))
    settings = load_settings()
    from fscale_tui.engine.catalog.registry import Registry

    members = Registry(settings).select(k=5)
    assert [m.alias for m in members[:3]] == ["fast-a", "fast-b", "slow-c"]
    assert len({m.alias for m in members}) == 5
    assert len({m.family for m in members}) == 5  # a, b, c, d, e before repeating a family
