"""Adaptive ``-k auto`` (issue: always answer, ask as few routed models as the evidence
allows; abstain only with ``--alpha``): the ``posterior`` voting rule, its early decision,
the stopping rule chosen by ``fscale calibrate``, and ``scale -k auto`` end to end on a
replay provider (real recorded replies through the one ask path)."""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from fscale_tui.engine.routing.calibrate import adaptive_outcome, choose_stopping
from fscale_tui.engine.routing.cascade import confidence
from fscale_tui.engine.decide.rules.posterior import Posterior
from tests.conftest import run_cli
from tests.test_routing import make_tasks, write_replay_setup

LETTERS = list("ABCD")


# -- the posterior rule -------------------------------------------------------------------------

def test_one_vote_is_as_sure_as_its_model_and_agreement_raises_the_posterior():
    rule = Posterior({"good": 0.8, "fair": 0.6, "fair2": 0.6, "weak": 0.4}, labels=4)
    one = rule.decide([rule.ballot("good", "A")], LETTERS)
    assert one.answer == "A" and one.agreement == pytest.approx(0.8) and one.confidence == pytest.approx(0.8)
    two = rule.decide([rule.ballot("good", "A"), rule.ballot("fair", "A")], LETTERS)
    assert two.agreement > 0.9
    split = rule.decide([rule.ballot("good", "A"), rule.ballot("fair", "B")], LETTERS)
    assert split.answer == "A" and split.agreement < 0.8  # the more reliable model wins a 1–1
    # Two fair models outvote one good one; no answer is no evidence.
    outvoted = rule.decide([rule.ballot("good", "A"), rule.ballot("fair", "B"),
                            rule.ballot("fair2", "B"), rule.ballot("weak", None)], LETTERS)
    assert outvoted.answer == "B"
    held = rule.decide([rule.ballot("good", "A"), rule.ballot("fair", "B"),
                        rule.ballot("weak", "B")], LETTERS)
    assert held.answer == "A"  # a fair and a weak model do not outweigh a good one
    # The offline confidence (benches, calibration) is the same rule.
    assert confidence(["A", "B"], LETTERS, "posterior", [0.8, 0.6]) == (split.answer,
                                                                        pytest.approx(split.agreement))


def test_spread_says_how_far_wrong_answers_spread():
    wide = Posterior({"a": 0.6, "b": 0.6}, spread=10, labels=10)
    narrow = Posterior({"a": 0.6, "b": 0.6}, spread=3, labels=10)
    labels = list("ABCDEFGHIJ")
    both = [("a", "A"), ("b", "A")]
    p_wide = wide.decide([wide.ballot(m, x) for m, x in both], labels).agreement
    p_narrow = narrow.decide([narrow.ballot(m, x) for m, x in both], labels).agreement
    assert p_wide > p_narrow > 0.6  # agreeing on one of 10 letters by chance is rarer than of 3


def _verdict(rule, ballots, labels, threshold):
    tally = rule.decide(ballots, labels)
    accepted = tally.answer is not None and tally.agreement >= threshold - 1e-12
    return (tally.answer if accepted else None, accepted)


def test_early_decision_equals_waiting_for_every_way_the_pending_models_can_vote():
    rng = random.Random(7)
    labels = ["A", "B", "C"]
    checked = settled = 0
    for _ in range(400):
        names = [f"m{i}" for i in range(4)]
        rule = Posterior({m: rng.uniform(0.3, 0.95) for m in names}, labels=len(labels),
                         spread=rng.choice([2.5, 3, 10]))
        n_done = rng.randint(0, 3)
        done = [rule.ballot(m, rng.choice(labels + [None])) for m in names[:n_done]]
        pending = names[n_done:]
        threshold = rng.choice([0.5, 0.67, 0.8, 0.95, None])
        early = rule.can_decide_early(done, labels, [rule.weight(m) for m in pending], threshold)
        checked += 1
        if not early:
            continue
        settled += 1
        outcomes = set()
        for votes in itertools.product(labels + [None], repeat=len(pending)):
            full = done + [rule.ballot(m, v) for m, v in zip(pending, votes)]
            if threshold is None:
                outcomes.add(rule.decide(full, labels).answer)
            else:
                outcomes.add(_verdict(rule, full, labels, threshold))
        assert len(outcomes) == 1, (done, pending, threshold, outcomes)
    assert settled > 50 and checked == 400  # the property was exercised, not vacuous


def test_early_decision_is_not_taken_when_the_label_count_is_unknown():
    rule = Posterior({"a": 0.9, "b": 0.9})  # labels not given: pending weights may not match
    assert not rule.can_decide_early([rule.ballot("a", "A")], LETTERS, [rule.weight("b")], 0.1)


# -- the stopping rule ------------------------------------------------------------------------

def test_stopping_rule_stops_at_the_first_confident_stage_and_the_last_always_answers():
    conf = np.array([[0.9, 0.95, 0.99], [0.5, 0.8, 0.9], [0.4, 0.5, 0.6]])
    ok = np.array([[True, True, True], [False, True, True], [False, False, True]])
    right, calls = adaptive_outcome(conf, ok, 0.7, 3)
    assert calls.tolist() == [1, 2, 3] and right.tolist() == [True, True, True]
    right, calls = adaptive_outcome(conf, ok, 0.7, 2)
    assert calls.tolist() == [1, 2, 2] and right.tolist() == [True, True, False]
    tau, m, acc, cpi = choose_stopping(conf, ok, budget=1.5)
    assert acc == pytest.approx(1 / 3) and cpi == 1.0  # nothing better fits: the cheapest
    tau, m, acc, cpi = choose_stopping(conf, ok)  # no budget: the most accurate, then cheapest
    assert acc == 1.0 and cpi == pytest.approx(2.0) and m == 3 and 0.5 < tau <= 0.8


# -- scale -k auto end to end (replay provider: mathy is right on math, lawyer on law) ---------

_TEMPLATES: dict[int, Path] = {}  # n -> a home profiled on the first n tasks (this module, this worker)


@pytest.fixture(scope="module", autouse=True)
def _templates_root(tmp_path_factory: pytest.TempPathFactory):
    _TEMPLATES.clear()
    _TEMPLATES[-1] = tmp_path_factory.mktemp("profiled")  # where the profiled homes go
    yield
    _TEMPLATES.clear()


def _profiled(home: Path, n: int = 40) -> tuple[list, Path]:
    """The replay setup of ``n`` tasks written into ``home`` with its profile. `fscale profile`
    runs once per ``n`` (the setup is deterministic) into a home of its own; each test gets a
    copy of that home, as the two profile commands left it."""
    tasks = make_tasks(n)
    if -1 not in _TEMPLATES:  # called from another module's test: profile in place
        path = write_replay_setup(home, tasks)
        assert run_cli("profile", "--fit-clusters", str(path), "--clusters", "2", "-q").returncode == 0
        assert run_cli("profile", str(path), "--panel", "strong", "-q").returncode == 0
        return tasks, path
    if n not in _TEMPLATES:
        template = _TEMPLATES[-1] / f"n{n}"
        template.mkdir()
        path = write_replay_setup(template, tasks)
        env = {"FSCALE_HOME": str(template)}
        assert run_cli("profile", "--fit-clusters", str(path), "--clusters", "2", "-q",
                       env=env).returncode == 0
        assert run_cli("profile", str(path), "--panel", "strong", "-q", env=env).returncode == 0
        _TEMPLATES[n] = template
    shutil.copytree(_TEMPLATES[n], home, dirs_exist_ok=True)
    path = write_replay_setup(home, tasks)
    return tasks, path


def _adaptive_file(home: Path, **fields) -> Path:
    path = home / "data" / "routing" / "calibration.json"
    doc = {"mode": "adaptive", "stages": ["route:1", "route:2", "route:3"],
           "thresholds": [None, None, None], "signal": "posterior", "lambda": 0.0,
           "alpha": None, "delta": 0.1, "tau": 0.67, "stop_after": 3, "spread": 10}
    doc.update(fields)
    path.write_text(json.dumps(doc))
    return path


def test_k_auto_stops_after_one_call_when_the_routed_model_is_reliable(fscale_home):
    tasks, _ = _profiled(fscale_home)
    proc = run_cli("scale", tasks[1].question, "-a", "YES,NO", "-k", "auto", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == tasks[1].label and data["calls_made"] == 1
    assert data["stages"][0]["models"] == ["lawyer"] and data["answered_by_stage"] == 0
    assert data["confidence"] > 0.67 and data["abstained"] is False


def test_k_auto_asks_a_third_model_only_when_the_second_does_not_confirm(fscale_home):
    tasks, _ = _profiled(fscale_home)
    # τ between what the routed model alone gives (its reliability on the cluster, which the
    # profile's cross-fitted shrinkage sets) and what it gives with the second one agreeing.
    ranking = json.loads(run_cli("route", tasks[2].question, "--json").stdout)["ranking"]
    rel = {r["model"]: 1.0 - r["psi"] for r in ranking}
    assert [r["model"] for r in ranking][:2] == ["mathy", "coin"]
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    alone = rel["mathy"]
    agreed = 1 / (1 + math.exp(-(logit(rel["mathy"]) + logit(rel["coin"]))))
    assert alone < agreed
    _adaptive_file(fscale_home, tau=(alone + agreed) / 2)  # the routed model alone is not enough

    def ask(task):
        proc = run_cli("scale", task.question, "-a", "YES,NO", "-k", "auto", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    # A math question: mathy is routed first, coin second (right when it answers), lawyer
    # last (always wrong on math). route:1 cannot reach τ alone: two models are asked at once.
    confirmed = ask(tasks[2])  # coin answers and agrees: two calls
    assert confirmed["stages"][0]["skipped"] and confirmed["stages"][1]["accepted"]
    assert confirmed["calls_made"] == 2 and confirmed["answered_by_stage"] == 1
    unconfirmed = ask(tasks[0])  # coin gives no answer: a third model, which disagrees
    stages = unconfirmed["stages"]
    assert stages[1]["models"][0] == "mathy" and not stages[1]["accepted"]
    assert stages[2]["accepted"] and "lawyer" in stages[2]["models"]
    assert unconfirmed["calls_made"] == 3 and unconfirmed["counts"] == {"YES": 1, "NO": 1}
    assert unconfirmed["answer"] == tasks[0].label  # the reliable model's label wins
    assert unconfirmed["status"] == "decided" and unconfirmed["calibrated"] is True


def test_k_auto_json_has_every_key_of_k_3_and_the_call_is_logged_once(fscale_home):
    tasks, _ = _profiled(fscale_home)
    plain = json.loads(run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "3",
                               "--json").stdout)
    auto = json.loads(run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto",
                              "--json").stdout)
    assert set(plain) <= set(auto)
    assert {"stages", "abstained", "answered_by_stage", "calibrated", "signal", "route"} <= set(auto)
    ids = [row["id"] for row in json.loads(run_cli("history", "--json").stdout)]
    assert ids.count(auto["id"]) == 1


def _scores_file(home: Path) -> None:
    """A calibration whose items are right only when (nearly) certain: α = 0.1 needs ≥ 0.999."""
    conf = [[0.9995] * 3] * 200 + [[0.95] * 3] * 200
    correct = [[1] * 3] * 200 + [[1, 1, 1] if i % 2 else [0, 0, 0] for i in range(200)]
    _adaptive_file(home, scores={"confidence": conf, "correct": correct})


def test_alpha_abstains_with_exit_3_when_no_stage_is_confident_enough(fscale_home):
    tasks, _ = _profiled(fscale_home)
    _scores_file(fscale_home)
    without = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", "--json")
    assert without.returncode == 0 and json.loads(without.stdout)["answer"] == tasks[0].label
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", "--alpha", "0.1",
                   "--json")
    assert proc.returncode == 3, proc.stderr
    data = json.loads(proc.stdout)
    assert data["abstained"] is True and data["status"] == "abstained" and data["answer"] is None
    assert all(s["threshold"] is None or s["threshold"] >= 0.999 for s in data["stages"])
    text = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", "--alpha", "0.1")
    assert text.returncode == 3 and text.stdout == "" and "abstained" in text.stderr


def test_alpha_in_a_batch(fscale_home, tmp_path):
    tasks, _ = _profiled(fscale_home)
    _scores_file(fscale_home)
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"question": t.question, "id": t.id}) + "\n"
                             for t in tasks[:3]))
    proc = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "-k", "auto", "--alpha", "0.1")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["item_id"] for x in lines] == ["t0", "t1", "t2"]
    assert all(x["abstained"] and x["status"] == "abstained" for x in lines)
    plain = run_cli("scale", "--batch", str(items), "-a", "YES,NO", "-k", "auto")
    assert all(json.loads(x)["status"] == "decided" for x in plain.stdout.splitlines())


@pytest.mark.parametrize("args,message", [
    (("--alpha", "2"), "--alpha must be between 0 and 1"),
    (("--alpha", "0"), "--alpha must be between 0 and 1"),
    (("--alpha", "0.1"), "needs an adaptive calibration"),
])
def test_bad_alpha_is_a_usage_error(fscale_home, args, message):
    tasks, _ = _profiled(fscale_home, 20)
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "auto", *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_alpha_needs_k_auto(fscale_home):
    tasks, _ = _profiled(fscale_home, 20)
    proc = run_cli("scale", tasks[0].question, "-a", "YES,NO", "-k", "2", "--alpha", "0.1")
    assert proc.returncode == 2 and "-k auto" in proc.stderr


def test_calibrate_chooses_the_stopping_rule_and_scale_uses_it(fscale_home):
    tasks, path = _profiled(fscale_home)
    proc = run_cli("calibrate", str(path), "--max-calls", "3", "--budget", "1.5", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["mode"] == "adaptive" and rep["stored"] and rep["calls_per_item"] <= 1.5
    assert rep["accuracy"] == 1.0  # the routed model is right on its cluster
    assert rep["calibration_calls_per_item"] == 3.0  # every stage on every item
    stored = json.loads(Path(rep["stored"]).read_text())
    assert len(stored["scores"]["confidence"]) == len(tasks)
    proc = run_cli("scale", tasks[2].question, "-a", "YES,NO", "-k", "auto", "--json")
    data = json.loads(proc.stdout)
    assert data["calibrated"] is True and data["answer"] == tasks[2].label
    # With the stored scores any α can be asked for: here every answer was right.
    proc = run_cli("scale", tasks[2].question, "-a", "YES,NO", "-k", "auto", "--alpha", "0.2",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["answer"] == tasks[2].label


def test_calibrate_with_alpha_stores_an_abstaining_k_auto(fscale_home):
    tasks, path = _profiled(fscale_home)
    proc = run_cli("calibrate", str(path), "--max-calls", "2", "--alpha", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["alpha"] == 0.2 and rep["stages"][0]["threshold"] is not None
    assert rep["coverage"] == 1.0 and rep["risk"] == 0.0
    data = json.loads(run_cli("scale", tasks[3].question, "-a", "YES,NO", "-k", "auto",
                              "--json").stdout)
    assert data["stages"][0]["threshold"] == rep["stages"][0]["threshold"]
    assert data["answer"] == tasks[3].label and data["calls_made"] == 1


def test_routed_then_best_asks_the_cluster_specialist_first_then_the_best_overall():
    from types import SimpleNamespace

    from fscale_tui.engine.routing.router import Router

    r = Router(SimpleNamespace(k=2), {}, {}, {})  # two clusters (no embedder needed here)
    ids = np.array([0] * 50 + [1] * 50)
    # "spec" is right on cluster 0 only; "solid" is good everywhere; "lucky" is good on
    # cluster 0 by a few items and poor elsewhere.
    r.add_model("spec", ids, np.r_[np.zeros(50), np.ones(50)], cost=0.1)
    r.add_model("solid", ids, np.r_[np.full(50, 0.2), np.full(50, 0.2)], cost=0.1)
    r.add_model("lucky", ids, np.r_[np.full(50, 0.1), np.full(50, 0.9)], cost=0.1)
    assert r.overall_error("solid") == pytest.approx(0.2)
    assert r.overall_error("lucky") == pytest.approx(0.5)
    # lucky's 0.1 against solid's 0.2 on 50 items is not evidence enough to outrank the model
    # that is best overall (the switching penalty); spec's 0 against 0.2 is.
    assert r.order(0, 3, "routed") == ["spec", "solid", "lucky"]
    r.switch_z, r._penalty = 0.0, None  # plain argmin Ψ: lucky's few items count
    assert r.order(0, 3, "routed") == ["spec", "lucky", "solid"]
    assert r.order(0, 3, "routed-then-best") == ["spec", "solid", "lucky"]
    assert r.order(0, 1, "routed-then-best") == ["spec"]


@pytest.mark.parametrize("args,message", [
    (("--budget", "0.5"), "--budget is in calls per item"),
    (("--max-calls", "0"), "--max-calls must be at least 1"),
    (("--order", "random"), "--order must be one of"),
    (("--alpha", "1.5"), "--alpha must be between 0 and 1"),
])
def test_calibrate_rejects_bad_adaptive_options_before_asking_anyone(fscale_home, args, message):
    _, path = _profiled(fscale_home, 20)
    proc = run_cli("calibrate", str(path), *args)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (fscale_home / "data" / "routing" / "calibration.json").exists()
