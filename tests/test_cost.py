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
