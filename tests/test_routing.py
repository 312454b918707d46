"""Routing: embeddings, clusters, Ψ with Laplace smoothing, λ trade-off, onboarding, signals;
and profile / route / calibrate / scale -k auto end to end on a replay provider."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tomli_w

from fscale_tui.engine.base.errors import UsageError
from fscale_tui.engine.providers.replay import prompt_sha256
from fscale_tui.engine.routing.cascade import confidence, parse_stages
from fscale_tui.engine.routing.router import SMOOTHING_GRID, ClusterModel, Router, compute_psi
from fscale_tui.engine.routing.tasks import Task, load_tasks
from tests.conftest import run_cli

MATH = ["What is {a} plus {b}? Compute 12 * {a} = ?", "Solve {a} x + {b} = 0 for x", "Compute {a}^2 - {b}"]
LAW = ["Is a verbal contract about land number {a} enforceable under the statute of frauds?",
       "Can the tenant in case {a} sue the landlord for breach of the covenant of quiet enjoyment?",
       "Does the defendant in trial {a} have a privilege against self-incrimination here?"]


def make_tasks(n: int = 60) -> list[Task]:
    tasks = []
    for i in range(n):
        topic = "math" if i % 2 == 0 else "law"
        tmpl = (MATH if topic == "math" else LAW)[i % 3]
        prefix = "Arithmetic drill, numbers only: " if topic == "math" else \
            "Legal question for the court about the law of contracts, property and torts: "
        tasks.append(Task(id=f"t{i}", question=prefix + tmpl.format(a=i + 3, b=2 * i + 1),
                          answers=("YES", "NO"),
                          label="YES" if i % 4 < 2 else "NO", category=topic))
    return tasks


# -- unit -------------------------------------------------------------------------------------

def test_laplace_smoothing_of_psi():
    psi, n = compute_psi(np.array([0, 0, 0, 1]), np.array([1.0, 0.0, 0.0, 1.0]), 3,
                         smoothing=2, prior=0.5)
    assert psi[0] == pytest.approx((1 + 1) / (3 + 2))  # classic add-one
    assert psi[1] == pytest.approx((1 + 1) / (1 + 2))
    assert psi[2] == pytest.approx(0.5) and n.tolist() == [3, 1, 0]  # unseen cluster = prior
    psi2, _ = compute_psi(np.array([0, 0]), np.array([0.0, 0.0]), 2, smoothing=4)
    assert psi2[1] == 0.0 and psi2[0] == 0.0  # prior = the model's own overall error rate


def test_lambda_trades_error_against_cost():
    r = Router(None, {}, {}, {})
    r.add_model("cheap", np.zeros(10, dtype=int), np.array([1.0] * 4 + [0.0] * 6), cost=0.1)
    r.add_model("dear", np.zeros(10, dtype=int), np.array([1.0] * 1 + [0.0] * 9), cost=1.0)
    assert r.rank(0, lam=0.0).model == "dear"
    assert r.rank(0, lam=1.0).model == "cheap"
    choice = r.rank(0, lam=0.1)
    assert [row["model"] for row in choice.ranking] == ["dear", "cheap"]
    assert choice.ranking[0]["score"] == pytest.approx(choice.ranking[0]["psi"] + 0.1 * 1.0, abs=1e-4)


def test_clusters_separate_topics_and_a_new_model_joins_without_refitting(tmp_path):
    tasks = make_tasks()
    cm = ClusterModel.fit([t.text for t in tasks], 2, seed=0)
    ids = cm.assign([t.text for t in tasks])
    math_ids = {int(c) for c, t in zip(ids, tasks) if t.category == "math"}
    law_ids = {int(c) for c, t in zip(ids, tasks) if t.category == "law"}
    assert len(math_ids) == 1 and len(law_ids) == 1 and math_ids != law_ids
    m, l = math_ids.pop(), law_ids.pop()
    cats = np.array([t.category for t in tasks])
    r = Router(cm, {}, {}, {})
    r.add_model("mathy", ids, (cats == "law").astype(float), cost=0.2)  # wrong on law only
    centroids, psi_before = cm.centroids.copy(), r.psi["mathy"].copy()
    # The newcomer is profiled on a few prompts only; nothing else is refitted or touched.
    few = np.array([0, 1, 2, 3, 4, 5])
    r.add_model("lawyer", ids[few], (cats[few] == "math").astype(float), cost=0.2)
    assert np.array_equal(cm.centroids, centroids) and np.array_equal(r.psi["mathy"], psi_before)
    assert r.route(tasks[1].text).model == "lawyer" and r.route(tasks[0].text).model == "mathy"
    assert r.rank(l).ranking[0]["n"] == 3
    # Save and load give the same assignments.
    cm.save(tmp_path)
    again = ClusterModel.load(tmp_path)
    assert np.array_equal(again.assign([t.text for t in tasks]), ids)


@pytest.mark.parametrize("votes,signal,rel,expected", [
    (["A", "A", "B"], "agreement", None, ("A", 2 / 3)),
    (["A", None, "A"], "agreement", None, ("A", 2 / 3)),  # no answer counts against
    (["A", "B"], "agreement", None, (None, 0.0)),  # tie: nothing to answer
    ([None, None], "votes", None, (None, 0.0)),
    (["A", "B", "B"], "weighted", [0.9, 0.3, 0.3], ("A", 0.9 / 1.5)),
])
def test_confidence_signals(votes, signal, rel, expected):
    ans, conf = confidence(votes, ["A", "B", "C"], signal, rel)
    assert ans == expected[0] and conf == pytest.approx(expected[1])


def test_stage_specs_and_task_file_errors(tmp_path):
    assert [s.routed for s in parse_stages("route:3,strong,a+b")] == [3, None, None]
    with pytest.raises(UsageError):
        parse_stages("route:x")
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"id": 1, "question": "q", "answers": ["A", "B"], "label": "C"}\n')
    with pytest.raises(UsageError, match="t.jsonl:1: "):
        load_tasks(bad)


# -- end to end on a replay provider ----------------------------------------------------------

def write_replay_setup(home: Path, tasks: list[Task]) -> Path:
    """Three recorded models: 'mathy' is right on math, 'lawyer' on law, 'coin' on neither."""
    lines = []
    for i, t in enumerate(tasks):
        wrong = "NO" if t.label == "YES" else "YES"
        replies = {"v/mathy": t.label if t.category == "math" else wrong,
                   "v/lawyer": t.label if t.category == "law" else wrong,
                   "v/coin": t.label if i % 3 else None}
        sha = prompt_sha256(t.messages())
        for model, ans in replies.items():
            lines.append({"model": model, "id": t.id, "prompt_sha256": sha,
                          "reply": f"Answer: {ans}" if ans else "hmm"})
    (home / "replay.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    doc = {"providers": {"rec": {"type": "replay", "path": "replay.jsonl"}},
           "models": {"mathy": {"provider": "rec", "id": "v/mathy", "cost": 0.2, "family": "m"},
                      "lawyer": {"provider": "rec", "id": "v/lawyer", "cost": 0.5, "family": "l"},
                      "coin": {"provider": "rec", "id": "v/coin", "cost": 0.1, "family": "c"}},
           "panels": {"default": ["mathy", "lawyer", "coin"], "strong": ["mathy", "lawyer", "coin"]}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))
    path = home / "tasks.jsonl"
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    return path


def test_profile_route_calibrate_and_k_auto_end_to_end(fscale_home):
    tasks = make_tasks(80)
    path = write_replay_setup(fscale_home, tasks)
    proc = run_cli("profile", "--fit-clusters", str(path), "--clusters", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["clusters"] == 2

    proc = run_cli("profile", str(path), "--models", "mathy,coin", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["models"]["mathy"]["accuracy"] == 0.5 and rep["calls"]["asked"] == 160
    assert rep["models"]["coin"]["no_answer_rate"] > 0.3
    assert len(rep["clusters"]["psi"]["mathy"]) == 2
    # Ψ's shrinkage was chosen on what was profiled (cross-fitted) and is stored for routing.
    assert rep["knobs"]["smoothing"] in SMOOTHING_GRID and rep["knobs"]["smoothing_observations"] == 160
    assert json.loads((fscale_home / "data" / "routing" / "knobs.json").read_text())["smoothing"] == \
        rep["knobs"]["smoothing"]

    # Adding one model profiles only that model; what is stored is skipped.
    proc = run_cli("profile", str(path), "--models", "mathy,coin,lawyer", "--resume", "--json")
    rep = json.loads(proc.stdout)
    assert rep["calls"]["asked"] == 80 and rep["calls"]["skipped"] == 160
    pair = rep["error_correlation"]["mathy|lawyer"]
    assert pair["phi"] == pytest.approx(-1.0)  # perfectly complementary errors

    proc = run_cli("route", tasks[1].question, "--json")  # a law question
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "lawyer"
    proc = run_cli("route", tasks[0].question)
    assert proc.stdout == "mathy\n" and "expected error" in proc.stderr

    # Uncalibrated: the adaptive default, said so in the JSON; it always answers, and the
    # routed model is reliable enough on this cluster for one call to settle it.
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", "--json")
    data = json.loads(proc.stdout)
    assert data["calibrated"] is False and data["abstained"] is False and proc.returncode == 0
    assert data["answer"] == tasks[0].label and data["calls_made"] == 1
    assert data["signal"] == "posterior" and data["stages"][0]["models"] == ["mathy"]
    assert proc.stderr == ""  # --json into a pipe: "calibrated": false says it
    text = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto")
    assert text.returncode == 0 and "not calibrated" in text.stderr  # the note for people

    proc = run_cli("calibrate", str(path), "--alpha", "0.1", "--delta", "0.1",
                   "--stages", "route:1,strong", "--signal", "weighted", "--json")
    assert proc.returncode == 0, proc.stderr
    cal = json.loads(proc.stdout)
    assert cal["stages"][0]["threshold"] is not None and cal["stages"][0]["coverage"] == 1.0
    assert cal["risk"] == 0.0 and cal["stored"]

    proc = run_cli("scale", tasks[1].question, "-a", "YES,NO", "-k", "auto", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == tasks[1].label and data["abstained"] is False and data["calibrated"] is True
    assert data["stages"][0]["models"] == ["lawyer"] and data["stages"][0]["accepted"]
    assert data["calls_made"] == 1 and data["answered_by_stage"] == 0


def test_k_auto_abstains_with_exit_3_when_no_stage_is_confident(fscale_home):
    tasks = make_tasks(40)
    path = write_replay_setup(fscale_home, tasks)
    assert run_cli("profile", str(path), "--panel", "strong", "-q").returncode == 0
    routing = fscale_home / "data" / "routing" / "calibration.json"
    routing.write_text(json.dumps({"stages": ["route:1", "strong"], "thresholds": [None, 0.99],
                                   "signal": "agreement", "lambda": 0.0}))
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 3 and data["abstained"] and data["status"] == "abstained"
    assert [s["stage"] for s in data["stages"]] == ["route:1", "strong"]
    assert data["calls_made"] == 3  # the route:1 vote is reused by the strong stage
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto")
    assert proc.returncode == 3 and proc.stdout == "" and "abstained" in proc.stderr


def test_routing_commands_have_examples_and_do_not_import_textual():
    import subprocess
    import sys

    from tests.conftest import REPO

    for cmd in ("profile", "route", "calibrate"):
        proc = run_cli(cmd, "--help")
        assert proc.returncode == 0 and "Example" in proc.stdout
    code = ("import sys\nfrom fscale_tui.cli import app\ntry:\n    app(args=['profile', '--path'])\n"
            "except SystemExit:\n    pass\nprint('TEXTUAL' if 'textual' in sys.modules else 'CLEAN')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip().splitlines()[-1] == "CLEAN"
