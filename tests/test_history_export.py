"""Round trip: calls logged against the loopback server replay offline, reply for reply."""

from __future__ import annotations

import json

import tomli_w

from tests.conftest import Behaviour, mid, run_cli


def test_history_export_replay_round_trip(server, stub_config, fscale_home, tmp_path):
    server.script(mid("fast-a"), Behaviour(reply="Answer: NO"))
    server.script(mid("fast-b"), Behaviour(reply="Answer: YES"))
    server.script(mid("slow-c"), Behaviour(reply="Answer: YES"))
    live = json.loads(run_cli("scale", "Is 9 prime?", "-a", "YES,NO", "--json").stdout)
    assert live["answer"] == "YES"

    out = tmp_path / "replay.jsonl"
    proc = run_cli("history", "export", "--replay", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["model"] for x in lines} == {mid("fast-a"), mid("fast-b"), mid("slow-c")}

    # Point the same aliases at a replay provider: no request reaches the server any more.
    doc = {"providers": {"rec": {"type": "replay", "path": str(out)}},
           "models": {a: {"provider": "rec", "id": mid(a), "tier": "fast", "family": a}
                      for a in ("fast-a", "fast-b", "slow-c")},
           "panels": {"default": ["fast-a", "fast-b", "slow-c"]}}
    (fscale_home / "config.toml").write_text(tomli_w.dumps(doc))
    before = server.count()
    replayed = json.loads(run_cli("scale", "Is 9 prime?", "-a", "YES,NO", "--json").stdout)
    assert server.count() == before
    assert {v["model"]: v["answer"] for v in replayed["votes"]} == \
        {v["model"]: v["answer"] for v in live["votes"]}
    # A prompt that was never recorded is a clear failure, not a silent default.
    missing = run_cli("scale", "Is 10 prime?", "-a", "YES,NO", "--json")
    assert missing.returncode == 4
    assert "no recorded reply" in json.loads(missing.stdout)["votes"][0]["error"]
    # ...and it does not mark the models unavailable: recorded prompts still replay.
    again = json.loads(run_cli("scale", "Is 9 prime?", "-a", "YES,NO", "--json").stdout)
    assert again["answer"] == live["answer"] and not any(v["substitute_for"] for v in again["votes"])


def test_history_export_needs_a_format(fscale_home, tmp_path):
    proc = run_cli("history", "export", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 2 and "--replay" in proc.stderr
