"""Learning end to end against the loopback server: challengers, the call log, feedback,
ratings and evolve through the real engine and the real CLI."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.ask.health import HealthStore
from fscale_tui.engine.learning.store import CallRecord, LearningStore, ReplyRecord
from fscale_tui.engine.session import Engine
from fscale_tui.engine.base.calls import ScaleRequest
from tests.conftest import Behaviour, earn_shadow_budget, mid, run_cli, start_cli

OUTSIDERS = {"fast-c", "fast-d", "fast-a2"}  # stub models outside the default panel (not thinking)


@pytest.fixture
def challenger_on(monkeypatch, stub_config):
    monkeypatch.setenv("FSCALE_CHALLENGER", "1")
    monkeypatch.setenv("FSCALE_LOCAL", "off")  # only the stub models may be drawn
    # One shadow per call, as these tests count; several early on have their own test.
    monkeypatch.setenv("FSCALE_CHALLENGERS", "1")
    earn_shadow_budget()


def run_scale(request: ScaleRequest):
    async def go():
        async with Engine() as engine:
            return await engine.scale(request)

    return asyncio.run(go())


def test_shadow_challenger_is_outside_the_panel_and_not_in_the_decision(server, stub_config, challenger_on):
    server.set_default(Behaviour(reply="NO"))  # every outsider says NO
    for m in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(m), Behaviour(reply="YES"))
    r = run_scale(ScaleRequest("q?", ("YES", "NO")))
    # the challenger's NO never counts (the third member may be cancelled by the early decision)
    assert r.answer == "YES" and set(r.counts) == {"YES"} and r.counts["YES"] >= 2
    assert r.challenger is not None and r.challenger.model in OUTSIDERS
    assert r.challenger.answer == "NO" and r.challenger.status == "answered"
    assert r.calls_made == 3 and r.challenger_calls == 1  # counted separately
    assert server.count() == 4
    data = r.to_dict()
    assert data["challenger"]["model"] == r.challenger.model and data["calls_made"] == 3


def test_challenger_skips_down_and_thinking_models_and_explores(server, stub_config, challenger_on):
    server.set_default(Behaviour(reply="YES"))
    settings = load_settings()
    HealthStore(settings).record(settings.models["fast-d"], "dead")
    HealthStore(settings).record(settings.models["fast-a2"], "rate_limited", retry_after=60)
    seen = {run_scale(ScaleRequest("q?", ("YES", "NO"))).challenger.model for _ in range(4)}
    assert seen == {"fast-c"}  # think-e is thinking-tier, fast-d dead, fast-a2 rate-limited
    assert server.count(mid("fast-d")) == 0 and server.count(mid("think-e")) == 0


def test_challenger_draws_vary_between_calls(server, stub_config, challenger_on):
    server.set_default(Behaviour(reply="YES"))
    seen = {run_scale(ScaleRequest("q?", ("YES", "NO"))).challenger.model for _ in range(12)}
    assert len(seen) >= 2  # Thompson sampling explores; not the same outsider forever


@pytest.mark.xdist_group("serial")  # a grace period's time
def test_slow_challenger_is_cancelled_after_the_grace_period(server, stub_config, challenger_on, monkeypatch):
    monkeypatch.setenv("FSCALE_CHALLENGER_GRACE", "0.2")
    server.set_default(Behaviour(reply="YES", latency=5.0))  # outsiders are slow
    for m in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(m), Behaviour(reply="YES"))
    t0 = time.monotonic()
    r = run_scale(ScaleRequest("q?", ("YES", "NO")))
    assert time.monotonic() - t0 < 2.0
    assert r.answer == "YES" and r.challenger.status == "cancelled"
    with LearningStore.for_settings(load_settings()) as store:
        replies = store.get(r.id)["replies"]
        assert [x["status"] for x in replies if x["role"] == "challenger"] == ["cancelled"]
        assert r.challenger.model not in store.ratings()  # no evidence from a cancelled request


def test_every_scale_call_is_logged_with_votes_and_decision(server, stub_config):
    server.script(mid("fast-a"), Behaviour(reply="Answer: YES"))
    # fast-b answers last, so the early decision never cancels slow-c's dissent.
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES", latency=0.3))
    server.script(mid("slow-c"), Behaviour(reply="Answer: NO"))
    proc = run_cli("scale", "Is it up?", "-a", "YES,NO", "--json", "-c", "CTX-1")
    rid = json.loads(proc.stdout)["id"]
    hist = json.loads(run_cli("history", "--json", "--limit", "5").stdout)
    assert hist[0]["id"] == rid and hist[0]["answer"] == "YES"
    shown = json.loads(run_cli("history", "show", rid, "--json").stdout)
    assert shown["question"] == "Is it up?" and shown["context"] == "CTX-1"
    by_model = {r["model"]: r for r in shown["replies"]}
    assert by_model["slow-c"]["answer"] == "NO" and by_model["slow-c"]["raw"] == "Answer: NO"
    assert by_model["fast-a"]["latency_s"] is not None
    human = run_cli("history", "show", rid)
    assert human.returncode == 0 and "slow-c" in human.stdout
    ratings = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    assert ratings["slow-c"]["rating"] < 1500 < ratings["fast-a"]["rating"]
    assert ratings["slow-c"]["agreement"] == 0.0 and ratings["fast-a"]["calls"] == 1


def test_no_log_keeps_only_hashes(server, stub_config):
    server.set_default(Behaviour(reply="YES"))
    rid = json.loads(run_cli("scale", "PRIVATE-Q", "-a", "YES,NO", "--json", "--no-log").stdout)["id"]
    shown = json.loads(run_cli("history", "show", rid, "--json").stdout)
    assert shown["question"] is None and shown["question_hash"]
    assert all(r["raw"] is None for r in shown["replies"])


def test_log_calls_off_writes_nothing(server, stub_config, fscale_home):
    server.set_default(Behaviour(reply="YES"))
    assert run_cli("scale", "q?", "-a", "YES,NO", env={"FSCALE_LOG_CALLS": "0"}).returncode == 0
    assert not (fscale_home / "data" / "learning.db").exists()


def test_no_challenger_flag(server, stub_config, monkeypatch):
    server.set_default(Behaviour(reply="YES"))
    earn_shadow_budget()
    env = {"FSCALE_CHALLENGER": "1", "FSCALE_LOCAL": "off", "FSCALE_CHALLENGERS": "1"}
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json", "--no-challenger", env=env).stdout)
    assert data["challenger"] is None and server.count() == 3
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json", env=env).stdout)
    assert data["challenger"]["model"] in OUTSIDERS and server.count() == 7


def test_feedback_cli_updates_challenger_too_and_unknown_id_exits_2(server, stub_config):
    server.set_default(Behaviour(reply="NO"))
    earn_shadow_budget()
    for m in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(m), Behaviour(reply="YES"))
    env = {"FSCALE_CHALLENGER": "1", "FSCALE_LOCAL": "off", "FSCALE_CHALLENGERS": "1"}
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json", env=env).stdout)
    shadow = data["challenger"]["model"]
    proc = run_cli("feedback", data["id"], "--override", "NO", "--json")
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)["changes"]
    assert changes[shadow] > 0 and changes["fast-a"] < 0
    ratings = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    assert ratings[shadow]["feedback"] == 1 and ratings[shadow]["rating"] > ratings["fast-a"]["rating"]
    assert json.loads(run_cli("history", "show", data["id"], "--json").stdout)["feedback"][0]["kind"] == "override"
    bad = run_cli("feedback", "no-such-id", "--confirm")
    assert bad.returncode == 2 and "no call with id" in bad.stderr and bad.stdout == ""
    both = run_cli("feedback", data["id"], "--confirm", "--reject")
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_feedback_replaces_and_undo_takes_back_through_the_cli(server, stub_config):
    """Issue 12 item 8: --confirm then --override on one call used to count both (+64, -75.7);
    now the override replaces the confirm, and --undo takes it back (ratings recomputed)."""
    # slow-c's dissent arrives first, so the early decision can never cancel it (under load it
    # sometimes did, and slow-c then had no rating to compare).
    server.set_default(Behaviour(reply="YES", latency=0.5))
    server.script(mid("slow-c"), Behaviour(reply="NO"))
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json").stdout)
    consensus = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    assert run_cli("feedback", data["id"], "--confirm").returncode == 0
    proc = run_cli("feedback", data["id"], "--override", "NO", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["schema"] == 1 and out["replaced"]["kind"] == "confirm"
    ratings = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    assert all(r["feedback"] == 1 for r in ratings.values())  # one verdict, not two
    assert ratings["slow-c"]["rating"] > consensus["slow-c"]["rating"]
    shown = run_cli("history", "show", data["id"])
    assert "confirm" in shown.stdout and "superseded" in shown.stdout
    assert json.loads(run_cli("history", "--json").stdout)[0]["feedback"] == ["override"]

    undo = run_cli("feedback", data["id"], "--undo", "--json")
    assert undo.returncode == 0, undo.stderr
    body = json.loads(undo.stdout)
    assert body["schema"] == 1 and body["undone"]["kind"] == "override" and body["feedback"] == []
    assert body["changes"]["slow-c"] < 0
    after = {r["model"]: r for r in json.loads(run_cli("ratings", "--json").stdout)}
    assert after == consensus  # exactly the consensus-only ratings again
    states = [f["state"] for f in json.loads(run_cli("history", "show", data["id"], "--json").stdout)["feedback"]]
    assert states == ["superseded", "undone"]

    nothing = run_cli("feedback", data["id"], "--undo")
    assert nothing.returncode == 2 and nothing.stdout == ""
    assert nothing.stderr.strip() == (f"fscale: error: call {data['id']!r} has no feedback to undo "
                                      "(see 'fscale feedback --help')")
    unknown = run_cli("feedback", "no-such-id", "--undo")
    assert unknown.returncode == 2 and unknown.stderr.startswith("fscale: error: no call with id")
    assert len(unknown.stderr.strip().splitlines()) == 1
    mixed = run_cli("feedback", data["id"], "--undo", "--confirm")
    assert mixed.returncode == 2 and "exactly one" in mixed.stderr


def test_tie_break_rating_reads_the_stored_ratings(server, stub_config):
    from tests.conftest import write_config

    write_config(stub_config.parent, server, panels={"default": ["fast-a", "fast-b"]})
    with LearningStore.for_settings(load_settings()) as store:
        for i in range(5):  # fast-b keeps siding with the majority, fast-a dissents
            store.record_call(CallRecord(id=f"s{i}", labels=["YES", "NO"], replies=[
                ReplyRecord("fast-a", answer="NO"), ReplyRecord("fast-b", answer="YES"),
                ReplyRecord("fast-c", answer="YES"), ReplyRecord("fast-d", answer="YES")]))
    server.script(mid("fast-a"), Behaviour(reply="NO"))
    server.script(mid("fast-b"), Behaviour(reply="YES", latency=0.1))
    proc = run_cli("scale", "q?", "-a", "YES,NO", "--json", "--tie-break", "rating")
    assert proc.returncode == 0 and json.loads(proc.stdout)["answer"] == "YES"


def _seed_evidence(n: int = 40) -> None:
    """fast-c and fast-d agree with the majority; slow-c always dissents."""
    with LearningStore.for_settings(load_settings()) as store:
        for i in range(n):
            store.record_call(CallRecord(id=f"seed{i}", labels=["YES", "NO"], replies=[
                ReplyRecord("fast-a", answer="YES"), ReplyRecord("fast-b", answer="YES"),
                ReplyRecord("slow-c", answer="NO"),
                ReplyRecord("fast-c" if i % 2 else "fast-d", role="challenger", answer="YES")]))


def test_evolve_dry_run_changes_nothing_on_disk(server, stub_config, fscale_home):
    _seed_evidence()
    before = stub_config.read_bytes()
    files_before = sorted(p.name for p in fscale_home.iterdir())
    for args in (["evolve"], ["evolve", "--dry-run"], ["evolve", "--dry-run", "--json"]):
        proc = run_cli(*args, "--min-calls", "15")
        assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "slow-c" in [x["model"] for x in data["removed"]] and data["changed"]
    assert not data["applied"] and "slow-c" not in data["proposed"]
    assert stub_config.read_bytes() == before
    assert sorted(p.name for p in fscale_home.iterdir()) == files_before
    human = run_cli("evolve", "--min-calls", "15")
    assert "- slow-c" in human.stdout and "dry run" in human.stderr
    assert run_cli("evolve", "--dry-run", "--apply").returncode == 2


def test_evolve_apply_changes_what_scale_uses(server, stub_config):
    _seed_evidence()
    server.set_default(Behaviour(reply="YES"))
    proc = run_cli("evolve", "--apply", "--min-calls", "15", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["applied"] and "slow-c" not in data["proposed"]
    new_panel = data["proposed"]
    assert set(new_panel) <= {"fast-a", "fast-b", "fast-c", "fast-d"} and len(new_panel) == 3
    assert "panel 'default' written" in proc.stderr
    assert load_settings().panels["default"] == new_panel  # in config.toml
    out = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json").stdout)
    assert [v["model"] for v in out["votes"]] == new_panel
    assert server.count(mid("slow-c")) == 0
    again = run_cli("evolve", "--apply", "--min-calls", "15")
    assert again.returncode == 0 and "already the champion" in again.stderr


def test_ratings_table_and_plot(server, stub_config):
    _seed_evidence(10)
    table = run_cli("ratings")
    assert table.returncode == 0 and "slow-c" in table.stdout and "agreement" in table.stdout
    plot = run_cli("ratings", "--plot", "--models", "slow-c,fast-a")
    assert plot.returncode == 0 and "slow-c" in plot.stdout and "|" in plot.stdout


@pytest.mark.parametrize("command", ["history", "ratings", "feedback", "evolve"])
def test_learning_commands_have_help_with_an_example(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0 and "Example" in proc.stdout


@pytest.mark.parametrize("args", [["history"], ["ratings", "--json"], ["evolve", "--help"],
                                  ["feedback", "x", "--confirm"]])
def test_learning_commands_do_not_import_textual(args):
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys\nfrom fscale_tui.cli import app\n"
            "try:\n    app(args=%r)\nexcept SystemExit:\n    pass\n"
            "print('TEXTUAL' if any(m == 'textual' or m.startswith('textual.') for m in sys.modules) else 'CLEAN')"
            % (args,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip().splitlines()[-1] == "CLEAN"


def test_four_cli_processes_log_every_call_and_rating(server, stub_config, tmp_path):
    """Acceptance 2 end to end: 4 concurrent `fscale scale --batch` processes with challengers."""
    import os

    server.set_default(Behaviour(reply="YES"))
    server.script(mid("slow-c"), Behaviour(reply="NO"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"q{i}?"}) + "\n" for i in range(15)))
    env = dict(os.environ, FSCALE_CHALLENGER="1", FSCALE_LOCAL="off")
    procs = [start_cli(None, "scale", "--batch", str(items), "-a", "YES,NO", "--concurrency", "4",
                       env=env) for _ in range(4)]
    shadows = decisions = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert len(out.splitlines()) == 15
        shadows += sum(len(json.loads(line)["challengers"]) for line in out.splitlines())
        decisions += sum(json.loads(line)["calls_made"] for line in out.splitlines())
    # The processes share one shadow budget (the spend ledger in the state directory): each
    # call holds its shadows in the ledger before it starts, so processes starting together
    # never spend the same budget twice (they overshot it by up to 10 on a loaded machine).
    assert 1 <= shadows <= 0.1 * decisions
    with LearningStore.for_settings(load_settings()) as store:
        assert store.count() == 60
        table = store.ratings()
        rated = store.conn.execute("SELECT COUNT(*) FROM replies WHERE status IN "
                                   "('answered', 'no_answer')").fetchone()[0]
        assert sum(r.calls for r in table.values()) == rated  # every reply's update landed
        assert table["slow-c"].calls == table["slow-c"].disagree > 0
        challengers = sum(table[m].calls for m in OUTSIDERS if m in table)
        logged = store.conn.execute("SELECT COUNT(*) FROM replies WHERE role = 'challenger'"
                                    ).fetchone()[0]
        answered = store.conn.execute("SELECT COUNT(*) FROM replies WHERE role = 'challenger' "
                                      "AND status = 'answered'").fetchone()[0]
        assert logged == shadows and challengers == answered  # every shadow reply, none lost
        assert sum(r.rating for r in table.values()) == pytest.approx(1500 * len(table))  # zero-sum


def test_decision_is_announced_before_the_challenger_grace(server, stub_config, challenger_on, monkeypatch):
    """A slow challenger never delays the decision: Decided comes first, its vote after."""
    from fscale_tui.engine.base.events import ChallengerAnswered, Decided

    monkeypatch.setenv("FSCALE_CHALLENGER_GRACE", "0.6")
    server.set_default(Behaviour(reply="NO", latency=3.0))  # every outsider is slow
    for m in ("fast-a", "fast-b", "slow-c"):
        server.script(mid(m), Behaviour(reply="YES"))

    async def go():
        seen = []
        t0 = time.monotonic()
        async with Engine() as engine:
            async for event in engine.scale_events(ScaleRequest("q?", ("YES", "NO"))):
                seen.append((type(event), time.monotonic() - t0, event))
        return seen

    seen = asyncio.run(go())
    kinds = [k for k, _, _ in seen]
    assert kinds[-2:] == [Decided, ChallengerAnswered]
    decided_at = [t for k, t, _ in seen if k is Decided][0]
    ended_at = seen[-1][1]
    # The decision did not wait for the slow outsiders (3 s), and the stream ended only after
    # the 0.6 s grace that followed it (order and spans, not a bound on this machine's speed).
    assert decided_at < 3.0 and ended_at - decided_at >= 0.55
    assert seen[-1][2].vote.status == "cancelled"
    with LearningStore.for_settings(load_settings()) as store:
        assert store.recent(1)  # logged exactly once, after the challenger's grace


def test_shadow_budget_is_a_learning_setting(server, stub_config):
    """``[learning] shadow_budget`` in config.toml (or FSCALE_SHADOW_BUDGET): 0 asks no shadow
    even with budget earned; a negative share is a usage error naming the file; under
    ``[defaults]`` it is an unknown key (warned, ignored)."""
    server.set_default(Behaviour(reply="YES"))
    earn_shadow_budget()
    base = stub_config.read_text()
    stub_config.write_text(base + "\n[learning]\nshadow_budget = 0\n")
    env = {"FSCALE_CHALLENGER": "1", "FSCALE_LOCAL": "off"}
    shown = json.loads(run_cli("config", "show", "--json").stdout)["settings"]["shadow_budget"]
    assert shown["value"] == 0 and shown["source"] == "config" and shown["table"] == "learning"
    data = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json", env=env).stdout)
    assert data["challengers"] == [] and data["spend"]["shadow"]["calls"] == 0
    on = json.loads(run_cli("scale", "q?", "-a", "YES,NO", "--json",
                            env={**env, "FSCALE_SHADOW_BUDGET": "0.5"}).stdout)
    assert len(on["challengers"]) >= 1  # the environment wins over the file
    stub_config.write_text(base + "\n[learning]\nshadow_budget = -0.1\n")
    bad = run_cli("scale", "q?", "-a", "YES,NO", env=env)
    assert bad.returncode == 2 and "config.toml [learning]: shadow_budget" in bad.stderr
    assert "must be 0 or more" in bad.stderr and "Traceback" not in bad.stderr
    stub_config.write_text(base.replace("[panels]", "[defaults]\nshadow_budget = 0.2\n\n[panels]"))
    warned = run_cli("config", "show")
    assert warned.returncode == 0 and "unknown key shadow_budget in [defaults]" in warned.stderr
    assert "shadow_budget" in warned.stdout and "[learning]" in warned.stdout
    assert "shadow_budget" in run_cli("scale", "--help").stdout
