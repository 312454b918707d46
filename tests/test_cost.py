"""Token usage and USD per vote and per call: in --json, the call log, history and batches."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Behaviour, run_cli
from tests.test_routing import make_tasks, write_replay_setup


def test_every_vote_and_the_call_carry_tokens_and_dollars(server, stub_config, tmp_path):
    server.set_default(Behaviour(reply="Answer: YES"))
    proc = run_cli("scale", "Is it?", "-a", "YES,NO", "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    counted = [v for v in data["votes"] if v["status"] == "answered"]
    assert counted and all(v["prompt_tokens"] > 0 and v["completion_tokens"] > 0 for v in counted)
    for v in counted:  # the stub models cost 0.1 USD per million tokens (tests/conftest.py)
        assert v["cost_usd"] == pytest.approx((v["prompt_tokens"] + v["completion_tokens"]) * 0.1 / 1e6)
    assert data["cost_usd"] == pytest.approx(sum(v["cost_usd"] for v in counted), rel=1e-6)
    assert data["usage"]["prompt_tokens"] == sum(v["prompt_tokens"] for v in counted)
    shown = run_cli("history", "show", data["id"])
    assert "completion tokens, $" in shown.stdout
    logged = json.loads(run_cli("history", "show", data["id"], "--json").stdout)
    assert logged["extra"]["usage"]["cost_usd"] == pytest.approx(data["cost_usd"], rel=1e-6)


def test_k_auto_batch_prints_calls_and_dollars_per_item(fscale_home, tmp_path):
    tasks = make_tasks(40)
    write_replay_setup(fscale_home, tasks)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": t.question, "id": t.id}) + "\n"
                             for t in tasks[:4]))
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "-k", "auto")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    calls = sum(x["calls_made"] for x in lines) / len(lines)
    cost = sum(x["cost_usd"] for x in lines) / len(lines)
    assert cost > 0  # the replay provider estimates usage (about 4 characters per token)
    assert f"{calls:.2f} calls per item" in proc.stderr
    assert f"${cost:.6f} per item" in proc.stderr


def test_profile_reports_accuracy_per_dollar(fscale_home):
    tasks = make_tasks(20)
    path = write_replay_setup(fscale_home, tasks)  # mathy costs 0.2, coin 0.1 USD per M tokens
    proc = run_cli("profile", str(path), "--models", "mathy,coin", "--json")
    assert proc.returncode == 0, proc.stderr
    models = json.loads(proc.stdout)["models"]
    for name, price in (("mathy", 0.2), ("coin", 0.1)):
        m = models[name]
        assert m["tokens_per_item"] > 0
        assert m["cost_usd_per_item"] == pytest.approx(m["tokens_per_item"] * price / 1e6, rel=1e-3)
        assert m["accuracy_per_usd"] == pytest.approx(m["accuracy"] / m["cost_usd_per_item"], rel=1e-3)
    table = run_cli("profile", "--models", "mathy,coin")
    assert "accuracy / $" in table.stdout


def _spend_sums(lines):
    decision = sum(x["spend"]["decision"]["calls"] for x in lines)
    shadow = sum(x["spend"]["shadow"]["calls"] for x in lines)
    return decision, shadow


def test_batch_reports_decision_and_shadow_spend_and_accuracy(server, stub_config, tmp_path):
    """Issue 20: one spend model for every call. Each batch line carries ``spend`` (decision and
    shadow calls, tokens and USD) and ``cost_usd_total``; the batch ends with one stderr line:
    items, decided, calls (decision + shadow), USD, and the accuracy on the items' labels."""
    server.set_default(Behaviour(reply="Answer: YES"))
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": f"Is {i} even?", "id": f"q{i}",
                                         "label": "YES" if i % 2 else "NO"}) + "\n"
                             for i in range(8)))
    env = {"FSCALE_CHALLENGER": "1", "FSCALE_SHADOW_BUDGET": "1"}
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "--concurrency", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    decision, shadow = _spend_sums(lines)
    assert shadow >= 1  # the budget (1 shadow per decision call here) was spent on outsiders
    for x in lines:
        s = x["spend"]
        assert s["decision"]["calls"] == x["calls_made"] and s["shadow"]["calls"] == x["challenger_calls"]
        assert s["decision"]["cost_usd"] == pytest.approx(x["cost_usd"])
        total = s["decision"]["cost_usd"] + (s["shadow"]["cost_usd"] or 0.0)
        assert x["cost_usd_total"] == pytest.approx(total) and s["cost_usd_total"] == pytest.approx(total)
        assert s["calls"] == s["decision"]["calls"] + s["shadow"]["calls"] and s["pending"] == 0
        if s["shadow"]["calls"]:
            assert s["shadow"]["prompt_tokens"] > 0 and s["shadow"]["cost_usd"] > 0
    summary = [line for line in proc.stderr.splitlines() if "items" in line]
    assert len(summary) == 1, proc.stderr
    per = len(lines)
    line = summary[0]
    assert line.startswith("8 items (8 decided)")
    assert f"{decision / per:.2f} calls per item + {shadow / per:.2f} shadow ({decision} + {shadow} calls)" in line
    usd = sum(x["cost_usd"] for x in lines)
    total = sum(x["cost_usd_total"] for x in lines)
    assert f"${usd / per:.6f} per item (${total / per:.6f} with shadows), ${total:.4f} in all" in line
    assert "accuracy 50.0% (4/8 labelled)" in line  # every answer is YES; half the labels are
    # The call log and history show the same figures.
    one = next(x for x in lines if x["challenger_calls"])
    shown = json.loads(run_cli("history", "show", one["id"], "--json").stdout)
    assert shown["spend"] == one["spend"]
    text = run_cli("history", "show", one["id"]).stdout
    assert f"{one['spend']['decision']['calls']} decision call" in text and "shadow call" in text
    assert "in all" in text


def test_one_shot_json_counts_the_shadows_still_running(server, stub_config):
    """The answer is printed the moment it is known: the shadows' requests may still be under
    way, so ``spend.pending`` counts them; the call log has their final spend."""
    server.set_default(Behaviour(reply="Answer: YES"))
    env = {"FSCALE_CHALLENGER": "1", "FSCALE_SHADOW_BUDGET": "1"}
    first = run_cli("scale", "Warm?", "-a", "YES,NO", "--json", env=env)  # earns the budget
    assert json.loads(first.stdout)["spend"]["pending"] == 0
    proc = run_cli("scale", "Is it?", "-a", "YES,NO", "--json", env=env)
    data = json.loads(proc.stdout)
    asked = len(data["challengers"])
    assert asked >= 1 and data["spend"]["pending"] == asked
    assert all(c["status"] == "pending" for c in data["challengers"])
    logged = json.loads(run_cli("history", "show", data["id"], "--json").stdout)["spend"]
    assert logged["pending"] == 0 and logged["shadow"]["calls"] == asked
    assert logged["decision"] == data["spend"]["decision"]


def test_generate_reports_the_same_spend_and_batch_accuracy_on_gold(server, stub_config, tmp_path):
    """generate goes through the same spend model: every request decides (no shadow), and a
    batch with ``gold`` answers ends with the accuracy."""
    server.set_default(Behaviour(reply="The answer is 4."))
    proc = run_cli("generate", "What is 2+2?", "-s", "vote", "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    spend = data["spend"]
    assert spend["decision"]["calls"] == data["calls_made"] == 3 and spend["shadow"]["calls"] == 0
    assert data["cost_usd"] > 0 and spend["decision"]["cost_usd"] == pytest.approx(data["cost_usd"])
    assert data["cost_usd_total"] == pytest.approx(data["cost_usd"])
    items = tmp_path / "gen.jsonl"
    items.write_text("".join(json.dumps({"question": f"What is {i}+{4 - i}?", "gold": g}) + "\n"
                             for i, g in enumerate(["4", "4", "5"])))
    batch = run_cli("generate", "--batch", str(items), "-s", "vote", "-k", "3")
    assert batch.returncode == 0, batch.stderr
    assert "3 items (3 decided); 3.00 calls per item + 0.00 shadow (9 + 0 calls)" in batch.stderr
    assert "accuracy 66.7% (2/3 labelled)" in batch.stderr


def test_the_tui_banner_says_what_the_shadows_cost():
    """The Ask screen's banner reads the same spend: shadows next to the decision's calls, and
    the total with shadows; while they still run, that they do; none, as before."""
    from fscale_tui.engine.base.calls import ScaleResult, Vote
    from fscale_tui.widgets.votes import describe_result

    votes = [Vote(m, "YES", 0.2, status="answered", prompt_tokens=100, tokens=5,
                  cost_usd=0.0001) for m in ("a", "b")]
    result = ScaleResult(id="c1", answer="YES", confidence=1.0, votes=votes, calls_made=2,
                         elapsed_s=0.5, decided_early=False, counts={"YES": 2}, valid_votes=2,
                         members=["a", "b"])
    assert "2 calls, 0.50s, $0.000200 · call c1" in describe_result(result)[0]
    result.challengers = [Vote("d", status="pending")]
    assert "2 calls + 1 shadow (running), 0.50s, $0.000200" in describe_result(result)[0]
    result.challengers = [Vote("d", "NO", 0.3, status="answered", prompt_tokens=100, tokens=5,
                               cost_usd=0.0003)]
    result.challenger_calls = 1
    assert "2 calls + 1 shadow, 0.50s, $0.000200 ($0.000500 with shadows)" in \
        describe_result(result)[0]
