"""generate() against the loopback server: every strategy selects what its scripted judges and
samples say, shuffles are real and undone, families are kept apart, budgets are exact."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time

import pytest

from fscale_tui import generate, generate_batch
from fscale_tui.engine.base.events import (CandidateGenerated, Generated, GenerateStarted, JudgeVoted,
                                      StepScored)
from fscale_tui.engine.strategies.generate import generate_events
from fscale_tui.engine.base.calls import GenerateRequest
from fscale_tui.engine.session import Engine
from tests.conftest import Behaviour, mid, write_config

GENERATORS = ["fast-a", "fast-b", "slow-c"]  # the stub config's default panel (families a, b, c)
BLOCK_RE = re.compile(r"(Output|Response) (\d+):\n<<<\n(.*?)\n>>>", re.S)


@pytest.fixture(autouse=True)
def _no_local_models(monkeypatch):
    """Keep the embedded local models out of judge selection: tests talk to the stub only."""
    monkeypatch.setenv("FSCALE_LOCAL", "off")


def shown_blocks(body: dict) -> list[str]:
    """The candidate texts of a judge prompt, in the order the judge saw them."""
    return [text for _, _, text in BLOCK_RE.findall(body["messages"][-1]["content"])]


def picks(marker: str, template: str = "Output 1 is worse, Output {n} is best"):
    """A judge that chooses the candidate containing ``marker``, wherever it was shown."""
    def reply(body: dict) -> str:
        for pos, text in enumerate(shown_blocks(body), 1):
            if marker in text:
                return template.format(n=pos)
        return "I cannot decide."
    return reply


def script_candidates(server, replies: dict[str, str]) -> None:
    for alias, text in replies.items():
        server.script(mid(alias), Behaviour(reply=text))


def judge_requests(server, aliases) -> list:
    ids = {mid(a) for a in aliases}
    return [r for r in server.requests if r.model in ids and r.body and shown_blocks(r.body)]


# -- judge ----------------------------------------------------------------------------------------
def test_judges_pick_the_best_candidate_whatever_order_they_saw(server, stub_config):
    script_candidates(server, {"fast-a": "plain answer A", "fast-b": "BEST answer B",
                               "slow-c": "plain answer C"})
    for judge in ("fast-d", "think-e", "fast-a2"):
        server.script(mid(judge), Behaviour(reply_fn=picks("BEST")))
    r = generate("Say something", k=3, seed=7, early_stop=False)
    assert r.status == "decided" and r.winner_model == "fast-b" and r.output == "BEST answer B"
    assert r.selected_by.startswith("judges")
    assert all(v.choice_model == "fast-b" for v in r.judge_votes)
    assert r.all_outputs[1].votes == len(r.judge_votes) >= 2


def test_candidate_order_is_shuffled_independently_per_judge_and_recorded(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b", "fast-c"]})
    script_candidates(server, {"fast-a": "cand A", "fast-b": "cand B", "fast-c": "cand C"})
    server.script(mid("fast-d"), Behaviour(reply_fn=picks("cand A")))
    server.script(mid("think-e"), Behaviour(reply_fn=picks("cand A")))
    r = generate("q", k=3, judges=8, seed=3, early_stop=False)
    texts = {c.index: c.text for c in r.all_outputs}
    seen_orders = []
    for req in judge_requests(server, ["fast-d", "think-e", "slow-c", "fast-a2"]):
        seen_orders.append(tuple(shown_blocks(req.body)))
    assert len(seen_orders) == 8
    recorded = sorted(tuple(texts[i] for i in v.order) for v in r.judge_votes)
    assert recorded == sorted(seen_orders)  # what each judge saw is what the result reports
    assert len(set(seen_orders)) > 1  # not the same order for everybody
    assert r.winner_model == "fast-a"
    assert all(v.choice_index == 0 for v in r.judge_votes if v.choice_index is not None)


def test_judges_come_from_outside_the_generators_families(server, stub_config):
    script_candidates(server, {"fast-a": "A", "fast-b": "B", "slow-c": "C"})
    server.set_default(Behaviour(reply="Best: Output 1"))
    r = generate("q", k=3, seed=1, early_stop=False)
    # Families a, b, c generate; d and e judge; the third judge must share a family
    # (fast-a2 is family a) but is not itself a generator...
    assert r.judges == ["fast-d", "think-e", "fast-a2"]
    a2 = [v for v in r.judge_votes if v.judge == "fast-a2"][0]
    # ...and never sees its own family's candidate while two others remain.
    assert sorted(a2.order) == [1, 2]
    others = [v for v in r.judge_votes if v.judge != "fast-a2"]
    assert all(sorted(v.order) == [0, 1, 2] for v in others)
    assert server.count(mid("fast-a")) == 1  # generators are not asked to judge


def test_output_1_is_worse_output_2_is_best_counts_for_2(server, stub_config):
    script_candidates(server, {"fast-a": "A", "fast-b": "B", "slow-c": "C"})
    server.set_default(Behaviour(reply="Output 1 is worse, Output 2 is best"))
    r = generate("q", k=3, seed=11, early_stop=False)
    for v in r.judge_votes:
        assert v.choice_index == v.order[1]  # the candidate shown second, never the first


def test_judge_tie_broken_by_consistency_then_order(server, stub_config):
    # fast-b and slow-c get one vote each; slow-c's answer agrees with fast-a's: it wins.
    script_candidates(server, {"fast-a": "The answer is: 42", "fast-b": "The answer is: 41 (B)",
                               "slow-c": "So the answer is: 42. (C)"})
    server.script(mid("fast-d"), Behaviour(reply_fn=picks("(B)", "Best: Output {n}")))
    server.script(mid("think-e"), Behaviour(reply_fn=picks("(C)", "Best: Output {n}")))
    r = generate("q", k=3, judges=2, seed=5)
    assert r.counts == {"0": 0, "1": 1, "2": 1}
    assert r.winner_model == "slow-c" and r.selected_by == "tie-break: consistency"
    assert sorted(r.tied) == [1, 2]

    # No answer agrees with another: the lowest candidate index (listed order) wins.
    server.reset()
    script_candidates(server, {"fast-a": "The answer is: 1", "fast-b": "The answer is: 2 (B)",
                               "slow-c": "The answer is: 3 (C)"})
    server.script(mid("fast-d"), Behaviour(reply_fn=picks("(C)", "Best: Output {n}")))
    server.script(mid("think-e"), Behaviour(reply_fn=picks("(B)", "Best: Output {n}")))
    r = generate("q", k=3, judges=2, seed=5)
    assert r.winner_model == "fast-b" and r.selected_by == "tie-break: order"


def test_no_valid_judge_vote_is_no_decision_with_a_fallback(server, stub_config):
    script_candidates(server, {"fast-a": "A", "fast-b": "B", "slow-c": "C"})
    server.set_default(Behaviour(reply="They are all fine, 2 of them are short."))
    r = generate("q", k=3, seed=1)
    assert r.status == "no_votes" and int(r.exit_code) == 3
    assert r.winner_index == 0 and "no valid judge vote" in r.selected_by
    assert all(v.choice_index is None for v in r.judge_votes)


@pytest.mark.xdist_group("serial")  # an early decision's time
def test_early_decision_stops_waiting_for_a_slow_judge(server, stub_config):
    script_candidates(server, {"fast-a": "A", "fast-b": "BEST", "slow-c": "C"})
    server.script(mid("fast-d"), Behaviour(reply_fn=picks("BEST"), latency=0.02))
    server.script(mid("think-e"), Behaviour(reply_fn=picks("BEST"), latency=0.05))
    server.script(mid("fast-a2"), Behaviour(reply="Best: Output 1", latency=5.0))
    t0 = time.monotonic()
    r = generate("q", k=3, seed=2)
    assert time.monotonic() - t0 < 2.0
    assert r.winner_model == "fast-b" and "decided early" in r.selected_by
    assert len(r.judge_votes) == 2
    assert server.wait_until(lambda: server.cancelled(mid("fast-a2")) == 1, timeout=3)


def test_gold_reports_coverage_and_correctness(server, stub_config):
    script_candidates(server, {"fast-a": "The answer is 18.", "fast-b": "#### 20",
                               "slow-c": "\\boxed{21}"})
    server.set_default(Behaviour(reply_fn=picks("#### 20", "Best: Output {n}")))
    r = generate("q", k=3, gold="#### 18", seed=1)
    assert r.answer == "20" and r.gold == "18"
    assert r.coverage is True and r.correct is False
    d = r.to_dict()
    assert d["coverage"] is True and d["correct"] is False


def test_failed_generators_are_reported_and_all_failed_is_exit_4(server, stub_config, monkeypatch):
    monkeypatch.setenv("FSCALE_RETRIES", "0")
    server.script(mid("fast-a"), Behaviour(status=500))
    server.script(mid("fast-b"), Behaviour(reply="only B"))
    server.script(mid("slow-c"), Behaviour(status=500))
    r = generate("q", k=3)
    assert r.output == "only B" and r.selected_by == "only candidate"
    assert [c.error is not None for c in r.all_outputs] == [True, False, True]
    server.reset()
    server.set_default(Behaviour(status=500))
    r = generate("q", k=3)
    assert r.status == "all_failed" and int(r.exit_code) == 4 and r.output is None


# -- vote --------------------------------------------------------------------------------------------
def test_vote_majority_over_normalised_final_answers(server, stub_config):
    write_config(stub_config.parent, server,
                 panels={"default": ["fast-a", "fast-b", "fast-c", "fast-d", "slow-c"]})
    script_candidates(server, {
        "fast-a": "Work...\nThe answer is 1,000.", "fast-b": "so \\boxed{1000}",
        "fast-c": "#### 999", "fast-d": "Final answer: $1000.00", "slow-c": "I get 999 in the end"})
    r = generate("q", strategy="vote", k=5, gold="1000")
    assert r.answer == "1000" and r.counts == {"1000": 3, "999": 2}
    assert r.winner_model == "fast-a" and r.selected_by == "majority"
    assert r.correct and r.coverage and r.calls_made == 5
    assert all(req.body["temperature"] > 0 for req in server.requests)


def test_vote_tie_goes_to_the_answer_stated_first_in_candidate_order(server, stub_config):
    script_candidates(server, {"fast-a": "The answer is 7", "fast-b": "The answer is 8"})
    r = generate("q", strategy="vote", k=4, models=["fast-a", "fast-b"])  # each sampled twice
    assert r.counts == {"7": 2, "8": 2} and r.answer == "7"
    assert r.selected_by == "tie-break: first in order" and sorted(r.tied) == ["7", "8"]


def test_vote_without_any_final_answer_is_no_decision(server, stub_config):
    server.set_default(Behaviour(reply="I am not sure."))
    r = generate("q", strategy="vote", k=3)
    assert r.status == "no_votes" and r.output is None


# -- weighted ---------------------------------------------------------------------------------------
def scorer(scores: dict[str, int]):
    def reply(body: dict) -> str:
        text = body["messages"][-1]["content"]
        for marker, score in scores.items():
            if marker in text:
                return f"Looks plausible.\nScore: {score}"
        return "Score: 1"
    return reply


def test_weighted_sums_verifier_scores_per_answer(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b", "slow-c"]})
    script_candidates(server, {"fast-a": "The answer is 7 (A)", "fast-b": "The answer is 8 (B)",
                               "slow-c": "The answer is 8 (C)"})
    for v in ("fast-d", "think-e"):
        server.script(mid(v), Behaviour(reply_fn=scorer({"(A)": 10, "(B)": 2, "(C)": 3})))
    r = generate("q", strategy="weighted", k=3)
    # 7: 1.0 beats 8: (1 + 2) / 9 -- the minority answer wins on verifier evidence.
    assert r.answer == "7" and r.winner_model == "fast-a"
    assert r.counts == {"7": 1.0, "8": pytest.approx(0.3333, abs=1e-3)}
    assert r.calls_made == 6 == server.count()
    assert all(v.score is not None for v in r.judge_votes)
    # Verifiers never score their own family's candidate (d/e judge a/b/c).
    assert {v.judge for v in r.judge_votes} <= {"fast-d", "think-e"}

    server.reset()
    script_candidates(server, {"fast-a": "The answer is 7 (A)", "fast-b": "The answer is 8 (B)",
                               "slow-c": "The answer is 8 (C)"})
    server.set_default(Behaviour(reply="Score: 6"))
    r = generate("q", strategy="weighted", k=3)
    assert r.answer == "8" and r.winner_model == "fast-b"  # equal scores: the sum follows the count


def test_weighted_reads_scores_from_grammar_constrained_verifiers(server, stub_config):
    """Local models reply 'Answer: <label>' under the label grammar: that is the score."""
    script_candidates(server, {"fast-a": "The answer is 7 (A)", "fast-b": "The answer is 8 (B)",
                               "slow-c": "The answer is 8 (C)"})

    def constrained(body: dict) -> str:
        text = body["messages"][-1]["content"]
        return "Answer: 10" if "(A)" in text else "Answer: 1"

    for v in ("fast-d", "think-e"):
        server.script(mid(v), Behaviour(reply_fn=constrained))
    r = generate("q", strategy="weighted", k=3)
    assert r.status == "decided" and all(v.score is not None for v in r.judge_votes)
    assert r.answer == "7" and r.counts == {"7": 1.0, "8": 0.0}


def test_weighted_yes_verifier_asks_for_logprobs_and_falls_back_to_the_text(server, stub_config):
    script_candidates(server, {"fast-a": "The answer is 7 (A)", "fast-b": "The answer is 8 (B)",
                               "slow-c": "The answer is 9 (C)"})
    server.set_default(Behaviour(reply_fn=lambda body: "Yes" if "(C)" in body["messages"][-1]["content"] else "No"))
    r = generate("q", strategy="weighted", k=3, verifier="yes")
    assert r.answer == "9"
    verifier_bodies = [q.body for q in server.requests if "Is this solution correct" in json.dumps(q.body)]
    assert len(verifier_bodies) == 3 and all(b["logprobs"] is True for b in verifier_bodies)


# -- usc -----------------------------------------------------------------------------------------------
def test_usc_one_extra_call_picks_the_most_consistent(server, stub_config):
    script_candidates(server, {"fast-a": "The answer is 5 [A]", "fast-b": "The answer is 5 [B]",
                               "slow-c": "The answer is 6 [C]"})
    server.set_default(Behaviour(reply_fn=picks("[B]", "The most consistent response is Response {n}")))
    r = generate("q", strategy="usc", k=3, seed=4)
    assert r.winner_model == "fast-b" and r.selected_by == "usc selector"
    assert r.calls_made == 4 == server.count()
    (v,) = r.judge_votes
    assert sorted(v.order) == [0, 1, 2] and v.choice_index == 1


# -- tournament ----------------------------------------------------------------------------------------
def test_tournament_knockout_with_sides_swapped(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b", "fast-c", "fast-d"]})
    quality = {"fast-a": "Q2", "fast-b": "Q4", "fast-c": "Q1", "fast-d": "Q3"}
    script_candidates(server, {alias: f"answer quality {q}" for alias, q in quality.items()})

    def best_quality(body):
        blocks = shown_blocks(body)
        ranks = [int(re.search(r"Q(\d)", b).group(1)) for b in blocks]
        return f"Output {ranks.index(max(ranks)) + 1} is better."
    for j in ("think-e", "fast-a2", "slow-c"):
        server.script(mid(j), Behaviour(reply_fn=best_quality))
    r = generate("q", strategy="tournament", k=4)
    assert r.winner_model == "fast-b" and r.selected_by == "tournament"
    assert len(r.judge_votes) == 3 * 2 and r.calls_made == 4 + 6 == server.count()
    by_match: dict[str, list] = {}
    for v in r.judge_votes:
        by_match.setdefault(v.match, []).append(v.order)
    for orders in by_match.values():
        assert orders[0] == orders[1][::-1]  # the second judgment sees the sides swapped


def test_tournament_position_bias_cancels_out_and_ties_go_to_the_earlier_candidate(server, stub_config):
    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b"]})
    script_candidates(server, {"fast-a": "A", "fast-b": "B"})
    server.set_default(Behaviour(reply="Best: Output 1"))  # always the first shown
    r = generate("q", strategy="tournament", k=2)
    assert r.counts == {"0": 1, "1": 0}
    assert r.winner_index == 0 and "tie-break: order" in r.selected_by


# -- beam search / DVTS ---------------------------------------------------------------------------------
def step_writer(tag: str, steps: int = 2, unique: bool = False):
    """A generator that writes one step per call (next_step or prefill mode) and then answers;
    ``unique`` makes every step text different (so no beam is a duplicate of another)."""
    calls = itertools.count(1)

    def reply(body: dict) -> str:
        msgs = body["messages"]
        partial = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else msgs[-1]["content"]
        done = partial.count("Step ")
        if done >= steps or "stop" not in body:
            return f"The answer is: {42 if tag == 'good' else 41}"
        return f"Step {done + 1} ({tag})" + (f" v{next(calls)}." if unique else ".")
    return reply


def step_scorer(body: dict) -> str:
    text = body["messages"][-1]["content"]
    return "Score: 2" if "(bad)" in text or "41" in text else "Score: 9"


def test_beam_search_keeps_the_best_scored_beams_and_returns_the_best_solution(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply_fn=step_writer("good", unique=True)))
    server.script(mid("fast-b"), Behaviour(reply_fn=step_writer("bad", unique=True)))
    for j in ("fast-c", "fast-d"):
        server.script(mid(j), Behaviour(reply_fn=step_scorer))

    async def go():
        events = []
        async with Engine() as engine:
            async for ev in generate_events(engine.context, GenerateRequest(
                    "q", strategy="beam", k=4, width=2, max_steps=5, gold="42",
                    models=("fast-a", "fast-b"))):
                events.append(ev)
        return events
    events = asyncio.run(go())
    r = events[-1].result
    assert r.status == "decided" and r.answer == "42" and r.correct and r.coverage
    steps = [e for e in events if isinstance(e, StepScored)]
    first = [e for e in steps if e.iteration == 0]
    assert len(first) == 4 and {e.beam for e in first if e.kept} == {0, 2}  # the (good) ones
    assert r.calls_made == server.count()
    # A step ends at a blank line: every non-final step request carries stop ["\n\n"].
    gen_bodies = [q.body for q in server.requests if q.model in (mid("fast-a"), mid("fast-b"))]
    assert all(b.get("stop") == ["\n\n"] for b in gen_bodies)
    # Generic OpenAI providers get the partial solution quoted ("next step" mode).
    later = [b for b in gen_bodies if "solution so far" in b["messages"][-1]["content"]]
    assert later and all(b["messages"][-1]["role"] == "user" for b in later)


def test_beam_last_iteration_writes_to_the_end_without_a_stop(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply_fn=step_writer("good", steps=99)))
    server.set_default(Behaviour(reply="Score: 5"))
    r = generate("q", strategy="beam", k=2, width=2, max_steps=3, models=["fast-a"])
    assert r.steps == 3 and r.answer == "42"
    bodies = [q.body for q in server.requests if q.model == mid("fast-a")]
    assert [("stop" in b) for b in bodies] == [True, True, True, True, False, False]


def test_continuation_uses_an_assistant_prefill_where_the_provider_supports_it(server, stub_config):
    provider = {"base_url": server.base_url, "continuation": "continue_final_message"}
    write_config(stub_config.parent, server, extra={"providers": {"stub": provider}})
    server.script(mid("fast-a"), Behaviour(reply_fn=step_writer("good")))
    server.set_default(Behaviour(reply="Score: 5"))
    r = generate("q", strategy="beam", k=2, width=2, max_steps=4, models=["fast-a"])
    assert r.answer == "42"
    bodies = [q.body for q in server.requests if q.model == mid("fast-a")]
    assert "continue_final_message" not in bodies[0]  # nothing to continue yet
    cont = bodies[2]
    assert cont["messages"][-1] == {"role": "assistant", "content": "Step 1 (good).\n\n"}
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    assert r.output == "Step 1 (good).\n\nStep 2 (good).\n\nThe answer is: 42"


def test_llama_cpp_echo_of_the_prefill_is_removed(server, stub_config):
    """llama.cpp's server returns the prefilled assistant text again at the start of content."""
    provider = {"base_url": server.base_url, "continuation": "prefill"}
    write_config(stub_config.parent, server, extra={"providers": {"stub": provider}})
    writer = step_writer("good")

    def echoing(body):
        last = body["messages"][-1]
        prefix = last["content"] if last["role"] == "assistant" else ""
        return prefix + writer(body)
    server.script(mid("fast-a"), Behaviour(reply_fn=echoing))
    server.set_default(Behaviour(reply="Score: 5"))
    r = generate("q", strategy="beam", k=1, width=1, max_steps=4, models=["fast-a"])
    assert r.output == "Step 1 (good).\n\nStep 2 (good).\n\nThe answer is: 42"
    body = [q.body for q in server.requests if q.model == mid("fast-a")][1]
    assert "continue_final_message" not in body and body["messages"][-1]["role"] == "assistant"


def test_given_candidates_are_judged_without_generation_calls(server, stub_config):
    server.set_default(Behaviour(reply_fn=picks("draft two", "Best: Output {n}")))
    r = generate("Which draft?", candidates=["draft one", "draft two", "draft three"],
                 candidate_models=["fast-a", "fast-b", "slow-c"], judges=2, seed=1,
                 early_stop=False)
    assert r.winner_index == 1 and r.winner_model == "fast-b" and r.calls_made == 2
    assert server.count() == 2 and set(r.judges) == {"fast-d", "think-e"}
    from fscale_tui.engine.base.errors import UsageError
    with pytest.raises(UsageError):
        generate("q", strategy="beam", candidates=["x"])


def test_dvts_runs_independent_subtrees_and_picks_the_best(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply_fn=step_writer("good")))
    server.script(mid("fast-b"), Behaviour(reply_fn=step_writer("bad")))
    for j in ("fast-c", "fast-d"):
        server.script(mid(j), Behaviour(reply_fn=step_scorer))
    r = generate("q", strategy="dvts", k=4, width=2, max_steps=6, models=["fast-a", "fast-b"])
    # 2 subtrees x 2 expansions per iteration, 3 iterations (2 steps, then the answer),
    # each expansion generated and scored.
    assert len(r.all_outputs) == 2 and r.answer == "42"
    assert r.calls_made == 2 * 2 * 3 * 2 == server.count()
    assert all(c.answer == "42" for c in r.all_outputs)  # each subtree kept its good child


# -- accounting, events, batches --------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["judge", "vote", "weighted", "usc", "tournament", "beam", "dvts"])
def test_calls_made_equals_requests_the_server_received(server, stub_config, strategy):
    server.script(mid("fast-a"), Behaviour(status=503), Behaviour(reply="The answer is: 3"))  # one retry
    server.script(mid("fast-b"), Behaviour(reply="The answer is: 3"))
    server.script(mid("slow-c"), Behaviour(reply="The answer is: 4"))
    server.set_default(Behaviour(reply="Best: Output 2\nScore: 7"))
    r = generate("q", strategy=strategy, k=3, max_steps=2, seed=1, early_stop=False)
    assert r.calls_made == server.count() > 3
    data = r.to_dict()  # total_calls: the deprecated name, kept for one release
    assert data["calls_made"] == data["total_calls"] == r.calls_made and data["schema"] == 1


async def test_events_stream_every_candidate_and_judge_vote(server, stub_config):
    script_candidates(server, {"fast-a": "A", "fast-b": "B", "slow-c": "C"})
    server.set_default(Behaviour(reply="Best: Output 3"))
    async with Engine() as engine:
        events = [e async for e in generate_events(
            engine.context, GenerateRequest("q", k=3, seed=9, early_stop=False))]
    assert isinstance(events[0], GenerateStarted) and isinstance(events[-1], Generated)
    cands = [e for e in events if isinstance(e, CandidateGenerated)]
    votes = [e for e in events if isinstance(e, JudgeVoted)]
    assert sorted(e.index for e in cands) == [0, 1, 2] and len(votes) == 3
    result = events[-1].result
    assert [(v.judge, v.choice_index) for v in votes] == [(v.judge, v.choice_index) for v in result.judge_votes]
    assert all(e.choice_index == e.order[2] for e in votes if len(e.order) == 3)
    assert all(e.choice_index is None for e in votes if len(e.order) == 2)  # "Output 3" of 2


def test_generate_batch_isolates_bad_items_and_keeps_order(server, stub_config):
    server.set_default(Behaviour(reply="The answer is: 12"))
    out = generate_batch([{"question": "a", "gold": "12"}, {"nope": 1},
                          {"question": "c", "strategy": "bogus"}, {"question": "d", "k": 2}],
                         strategy="vote", k=3)
    assert out[0].correct is True and out[0].calls_made == 3
    assert isinstance(out[1], Exception) and isinstance(out[2], Exception)
    assert out[3].answer == "12" and len(out[3].all_outputs) == 2


def test_usage_errors_are_raised_before_any_call(server, stub_config):
    from fscale_tui.engine.base.errors import UsageError
    with pytest.raises(UsageError):
        generate("q", strategy="nope")
    with pytest.raises(UsageError):
        generate("", k=2)
    with pytest.raises(UsageError):
        generate("q", models=["fast-a"], panel="default")
    assert server.count() == 0
