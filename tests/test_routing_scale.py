"""Routing at the size of a real evaluation (issue 16): the profile journal (append-only,
resumable), stability only when measurable, the prompt-cluster cache, ``route --batch``, the
MMLU-Pro converter's id filters and calibration-only panels, one model-family rule, and the
learning bench's vectorised hindsight panels and output directory."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest
import tomllib

from fscale_tui.engine.catalog.builtins import BUILTIN_MODELS, family_of
from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.providers.replay import prompt_sha256
from fscale_tui.engine.routing import profile as P
from fscale_tui.engine.routing.embed import HashedTfidf
from fscale_tui.engine.routing.mmlu import main as convert_main
from fscale_tui.engine.routing.tasks import Task
from fscale_tui.engine.session import Engine
from tests.conftest import REPO, run_cli
from tests.test_routing import make_tasks, write_replay_setup


class Interrupted(Exception):
    pass


def journal(home: Path) -> Path:
    return home / "data" / "routing" / "profiles.jsonl"


# -- the profile journal --------------------------------------------------------------------

async def test_profile_checkpoints_append_only_and_resumes_after_an_interruption(fscale_home, monkeypatch):
    tasks = make_tasks(60)
    write_replay_setup(fscale_home, tasks)
    settings = load_settings()
    models = [settings.models[m] for m in ("mathy", "lawyer", "coin")]
    monkeypatch.setattr(P, "SAVE_EVERY", 20)

    def stop_after(n: int):
        def progress(done: int, total: int) -> None:
            if done == n:
                raise Interrupted
        return progress

    async with Engine(settings) as engine:
        with pytest.raises(Interrupted):
            await P.run_profile(engine.context, tasks, models, on_progress=stop_after(70), concurrency=4)
    first = journal(fscale_home).read_bytes()
    stored = P.ProfileStore.for_settings(settings)
    kept = sum(len(i["answers"]) for items in stored.items.values() for i in items.values())
    assert 60 <= kept < 180  # the checkpoints and the final flush, not everything
    assert not (fscale_home / "data" / "routing" / "profiles.json").exists()

    async with Engine(settings) as engine:
        counts = await P.run_profile(engine.context, tasks, models, resume=True, concurrency=4)
    assert counts["asked"] == 180 - kept and counts["skipped"] == kept
    after = journal(fscale_home).read_bytes()
    assert after.startswith(first)  # append-only: nothing written before is rewritten

    resumed = P.summarize(P.ProfileStore.for_settings(settings), ["mathy", "lawyer", "coin"], settings)
    # The same profile as one uninterrupted run, in a fresh data directory.
    other = fscale_home / "other"
    other.mkdir()
    monkeypatch.setenv("FSCALE_HOME", str(other))
    write_replay_setup(other, tasks)
    fresh_settings = load_settings()
    async with Engine(fresh_settings) as engine:
        await P.run_profile(engine.context, tasks, [fresh_settings.models[m.alias] for m in models])
    fresh = P.summarize(P.ProfileStore.for_settings(fresh_settings), ["mathy", "lawyer", "coin"],
                        fresh_settings)
    for m in ("mathy", "lawyer", "coin"):
        for field in ("items", "trials", "accuracy", "no_answer_rate"):
            assert resumed["models"][m][field] == fresh["models"][m][field]


def test_journal_ignores_a_torn_last_line_and_the_next_append_repairs_it(tmp_path):
    path = tmp_path / "profiles.jsonl"
    store = P.ProfileStore(path)
    store.append([{"p": "k1", "id": "q1", "text": "t", "label": "A", "category": None},
                  {"m": "x", "k": "k1", "t": 0, "a": "A", "s": 0.1}])
    with path.open("ab") as fh:
        fh.write(b'{"m": "x", "k": "k1", "t": 1, "a"')  # a process killed mid-write
    again = P.ProfileStore(path)
    assert again.items["x"]["k1"]["answers"] == ["A"]
    again.append([{"m": "x", "k": "k1", "t": 1, "a": "B", "s": 0.2}])
    third = P.ProfileStore(path)
    assert third.items["x"]["k1"]["answers"] == ["A", "B"] and third.trials_done("x", "k1") == 2


def test_a_fresh_profile_drops_earlier_trials_and_compaction_keeps_the_live_ones(tmp_path):
    path = tmp_path / "profiles.jsonl"
    store = P.ProfileStore(path)
    keys = [f"k{i}" for i in range(600)]
    store.append([{"p": k, "id": k, "text": k, "label": "A", "category": None} for k in keys])
    for run in range(4):  # four fresh profiles of the same prompts: three are dead weight
        if run == 2:
            assert not store.compact()  # not while the dead records are fewer than the live ones
        store.append([{"drop": {"models": ["x"], "keys": keys}}])
        store.append([{"m": "x", "k": k, "t": 0, "a": "AB"[run % 2], "s": 0.1} for k in keys])
    assert store.dropped == 1800 and store.compact()
    again = P.ProfileStore(path)
    assert again.records == 1200 and again.dropped == 0
    assert {i["answers"][0] for i in again.items["x"].values()} == {"B"}


def test_a_version_1_profiles_json_is_converted(tmp_path):
    legacy = tmp_path / "profiles.json"
    legacy.write_text(json.dumps({"version": 1,
                                  "prompts": {"k1": {"id": "q1", "text": "t", "label": "A", "category": "c"}},
                                  "models": {"x": {"items": {"k1": {"answers": ["A", None],
                                                                   "latency_s": [0.1, 0.2]}}}}}))
    store = P.ProfileStore(tmp_path / "profiles.jsonl")
    assert store.items["x"]["k1"]["answers"] == ["A", None] and store.trials_done("x", "k1") == 2
    assert store.error_rates("x") == {"k1": 0.5}
    assert not legacy.exists() and (tmp_path / "profiles.json.v1").exists()


def duplicate_setup(home: Path) -> Path:
    """Two ids with the same prompt (one key) answered differently: as in MMLU-Pro."""
    tasks = [Task(id=f"q{i}", question=f"Is {i % 10} even?", answers=("YES", "NO"),
                  label="YES" if i % 2 == 0 else "NO") for i in range(20)]
    lines = []
    for t in tasks:
        ans = t.label if int(t.id[1:]) < 10 else ("NO" if t.label == "YES" else "YES")
        lines.append({"model": "v/m", "id": t.id, "prompt_sha256": prompt_sha256(t.messages()),
                      "reply": f"Answer: {ans}"})
    (home / "replay.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    import tomli_w

    (home / "config.toml").write_text(tomli_w.dumps({
        "providers": {"rec": {"type": "replay", "path": "replay.jsonl"}},
        "models": {"m": {"provider": "rec", "id": "v/m", "cost": 0.1, "family": "m"}}}))
    path = home / "dup.jsonl"
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks))
    return path


def test_stability_is_null_and_hidden_with_one_trial_even_with_duplicate_prompts(fscale_home):
    path = duplicate_setup(fscale_home)
    proc = run_cli("profile", str(path), "--models", "m", "--json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)["models"]["m"]
    assert rep["items"] == 10 and rep["trials"] == 20  # each key answered twice (two ids)
    assert rep["stability"] is None
    table = run_cli("profile", "--models", "m")
    assert table.returncode == 0 and "accuracy" in table.stdout and "stability" not in table.stdout
    # Two real trials: measured (the replay answers each id the same way both times).
    proc = run_cli("profile", str(path), "--models", "m", "--trials", "2", "--json")
    rep = json.loads(proc.stdout)["models"]["m"]
    assert rep["stability"] is not None
    assert "stability" in run_cli("profile", "--models", "m").stdout


# -- the prompt-cluster cache and route --batch ---------------------------------------------

def profiled_home(home: Path, n: int = 80) -> tuple[list[Task], Path]:
    tasks = make_tasks(n)
    path = write_replay_setup(home, tasks)
    assert run_cli("profile", "--fit-clusters", str(path), "--clusters", "2", "-q").returncode == 0
    proc = run_cli("profile", str(path), "--models", "mathy,lawyer,coin", "-q", "--json")
    assert proc.returncode == 0, proc.stderr
    return tasks, path


def test_prompt_clusters_are_embedded_once_and_reused_until_the_clusters_change(fscale_home, monkeypatch):
    tasks, path = profiled_home(fscale_home)
    embedded: list[int] = []
    real = HashedTfidf.transform

    def counting(self, texts):
        embedded.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(HashedTfidf, "transform", counting)
    settings = load_settings()
    router = P.load_router(settings)
    assert sum(embedded) == 0  # `fscale profile` left every profiled prompt's cluster on disk
    cache = fscale_home / "data" / "routing" / P.PromptClusters.NAME
    cache.unlink()
    again = P.load_router(settings)
    assert sum(embedded) == 80  # rebuilt once...
    assert all(np.array_equal(router.psi[m], again.psi[m]) for m in router.psi)
    embedded.clear()
    P.load_router(settings)
    assert sum(embedded) == 0  # ...and reused
    # New prompts: only they are embedded.
    more = make_tasks(90)[80:]
    extra = fscale_home / "more.jsonl"
    write_replay_setup(fscale_home, make_tasks(90))
    extra.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in more))
    assert run_cli("profile", str(extra), "--models", "mathy", "-q").returncode == 0
    embedded.clear()
    P.load_router(settings)
    assert sum(embedded) == 0  # the profile command embedded the 10 new prompts already
    # A refit changes the clusters' fingerprint: everything is assigned again.
    assert run_cli("profile", "--fit-clusters", str(path), "--clusters", "3", "-q").returncode == 0
    embedded.clear()
    P.load_router(load_settings())
    assert sum(embedded) == 90


def test_route_batch_gives_the_single_route_answers_in_input_order(fscale_home):
    tasks, _ = profiled_home(fscale_home)
    picked = [tasks[i] for i in (5, 0, 1, 12, 7)]
    items = [{"id": t.id, "question": t.question} for t in picked]
    items[2]["context"] = "Some context about a lease and a tenant."
    lines = [json.dumps(x) for x in items]
    lines.insert(3, "not json")
    batch = fscale_home / "batch.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    proc = run_cli("route", "--batch", str(batch), "--lambda", "0.3", "--models", "mathy,lawyer")
    assert proc.returncode == 3, proc.stderr  # one bad line: not every item routed
    out = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [o["index"] for o in out] == list(range(6))
    assert out[3]["status"] == "error" and "line 4" in out[3]["error"] and out[3]["model"] is None
    good = [o for o in out if o["status"] == "routed"]
    assert [o["id"] for o in good] == [t.id for t in picked]
    for item, o in zip(items, good):
        args = ["route", item["question"], "--lambda", "0.3", "--models", "mathy,lawyer", "--json"]
        if "context" in item:
            args += ["--context", item["context"]]
        single = json.loads(run_cli(*args).stdout)
        assert single["schema"] == 1 and o["schema"] == 1
        assert {k: v for k, v in o.items() if k not in ("index", "id", "status")} == single
    assert {o["model"] for o in good} == {"mathy", "lawyer"}  # both topics, --models respected
    assert run_cli("route", "q", "--batch", str(batch)).returncode == 2


# -- the converter ------------------------------------------------------------------------

MODELS = ["Meta-Llama-3-70B-Instruct", "Smaug-Llama-3-70B-Instruct", "Hermes-2-Theta-Llama-3-70B",
          "gemma-7b", "Phi-3-mini-4k-instruct", "Qwen1.5-7B-Chat"]


def write_source(src: Path, n: int, answer) -> None:
    """A replay set in the shared format; models.csv accuracy over *all* questions, as shipped."""
    src.mkdir(exist_ok=True)
    gold = ["ABCD"[i % 4] for i in range(n)]
    with (src / "questions.jsonl").open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": str(100 + i), "category": "c", "src": "s",
                                 "question": f"Question number {i}?", "options": ["a", "b", "c", "d"],
                                 "answer": gold[i]}) + "\n")
    answers = {m: [answer(j, i, gold[i]) for i in range(n)] for j, m in enumerate(MODELS)}
    with (src / "answers.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *MODELS])
        for i in range(n):
            w.writerow([str(100 + i), *[answers[m][i] or "" for m in MODELS]])
    with (src / "models.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "usd_per_mtok", "accuracy"])
        for j, m in enumerate(MODELS):
            acc = sum(a == g for a, g in zip(answers[m], gold)) / n
            w.writerow([m, [0.9, 0.9, 0.9, 0.2, 0.1, 0.2][j], f"{acc:.4f}"])


def test_converter_keeps_or_excludes_the_listed_ids(tmp_path):
    src = tmp_path / "src"
    write_source(src, 40, lambda j, i, g: g if (i + j) % 3 else "A")
    (tmp_path / "ids.txt").write_text("# tuning ids\n100\n101\n\n102\n999\n")
    assert convert_main([str(src), str(tmp_path / "only"), "--only-ids", str(tmp_path / "ids.txt")]) == 0
    only = [json.loads(x)["id"] for x in (tmp_path / "only" / "tasks.jsonl").read_text().splitlines()]
    assert only == ["100", "101", "102"]
    replay = [json.loads(x) for x in (tmp_path / "only" / "replay.jsonl").read_text().splitlines()]
    assert {r["id"] for r in replay} == {"100", "101", "102"} and len(replay) == 3 * len(MODELS)
    # A task file works as an id list too (e.g. the tasks used for tuning).
    assert convert_main([str(src), str(tmp_path / "rest"), "--exclude-ids",
                         str(tmp_path / "only" / "tasks.jsonl"), "--split", "0.5,0.5"]) == 0
    rest = [json.loads(x)["id"] for x in (tmp_path / "rest" / "tasks.jsonl").read_text().splitlines()]
    assert len(rest) == 37 and not {"100", "101", "102"} & set(rest)
    halves = [len((tmp_path / "rest" / f"tasks.{n}.jsonl").read_text().splitlines()) for n in ("train", "val")]
    assert sum(halves) == 37
    (tmp_path / "none.txt").write_text("7\n")
    assert convert_main([str(src), str(tmp_path / "x"), "--only-ids", str(tmp_path / "none.txt")]) == 2


def test_converter_panels_ignore_the_test_split_answers(tmp_path):
    from fscale_tui.engine.routing.mmlu import load_replay_set, split_indices

    n = 120
    write_source(tmp_path / "a", n, lambda j, i, g: g if (i * 7 + j * 3) % (j + 2) else "A")
    tasks = load_replay_set(tmp_path / "a").tasks
    test_ids = {tasks[i].id for i in split_indices(n, [0.4, 0.3, 0.3], 0)[2]}

    def panels(src: Path, out: str) -> dict:
        assert convert_main([str(src), str(tmp_path / out), "--split", "0.4,0.3,0.3"]) == 0
        return tomllib.loads((tmp_path / out / "config.toml").read_text())["panels"]

    before = panels(tmp_path / "a", "out-a")

    def flipped(j, i, g):  # on the test split only, the worst models become perfect
        if str(100 + i) in test_ids:
            return g if j >= 3 else None
        return g if (i * 7 + j * 3) % (j + 2) else "A"

    write_source(tmp_path / "b", n, flipped)
    assert panels(tmp_path / "b", "out-b") == before
    # The check can fail: the same flip on the calibration part changes the panels.
    write_source(tmp_path / "c", n, lambda j, i, g: g if j >= 3 else None)
    assert panels(tmp_path / "c", "out-c") != before


def test_every_model_gets_a_family_from_one_rule(tmp_path):
    for entry in BUILTIN_MODELS.values():
        assert family_of(entry["id"]) == entry["family"], entry
    variants = ["Meta-Llama-3-70B-Instruct", "Smaug-Llama-3-70B-Instruct", "Hermes-2-Theta-Llama-3-70B",
                "meta-llama/Llama-3-70B-Instruct-Gradient-1048k"]
    assert {family_of(v) for v in variants} == {"llama"}
    assert family_of("nvidia/llama-3.1-nemotron-70b-instruct") == "nemotron"
    assert [family_of(x) for x in ("Mixtral-8x7B-Instruct-v0.1", "mathstral-7B", "gemma-7b",
                                   "gemini-1.5-flash-002", "Yi-34B", "dolphin-2.9-mistral")] == \
        ["mistral", "mistral", "gemma", "gemini", "yi", "mistral"]
    assert family_of("acme/widget-9b") == "acme" and family_of("Starling-LM-7B") == "starling"
    write_source(tmp_path / "src", 8, lambda j, i, g: g)
    assert convert_main([str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    cfg = tomllib.loads((tmp_path / "out" / "config.toml").read_text())
    assert {cfg["models"][a]["family"] for a in ("meta-llama-3-70b-instruct", "smaug-llama-3-70b-instruct",
                                                  "hermes-2-theta-llama-3-70b")} == {"llama"}


# -- bench/learning.py --------------------------------------------------------------------

def learning_module():
    spec = importlib.util.spec_from_file_location("bench_learning", REPO / "bench" / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_learning_bench_scores_hindsight_panels_like_the_reference_rule(tmp_path):
    L = learning_module()
    rng = random.Random(3)
    models = [f"m{i}" for i in range(7)]
    rows, gold = [], {}
    for i in range(300):
        gold[str(i)] = rng.choice("ABCD")
        rows.append({"id": str(i), **{m: rng.choice(["A", "B", "C", "D", "", gold[str(i)]]) for m in models}})
    panels = [rng.sample(models, size) for size in (1, 2, 3, 3, 3, 4, 5) for _ in range(6)]
    fast = L.hindsight_correct(rows, gold, panels, chunk=4)
    for p, got in zip(panels, fast):
        assert got.tolist() == [L.panel_decision(r, p) == gold[r["id"]] for r in rows]
    L.write_config(tmp_path, ["Meta-Llama-3-70B-Instruct", "Smaug-Llama-3-70B-Instruct", "gemma-7b"],
                   ["gemma-7b"], {})
    fams = {m["family"] for m in tomllib.loads((tmp_path / "config.toml").read_text())["models"].values()}
    assert fams == {"llama", "gemma"}


def test_learning_bench_writes_outside_the_repository_by_default(tmp_path):
    L = learning_module()
    import argparse

    default = L.resolve_out(argparse.Namespace(out=None, png=None, json=None))
    try:
        assert REPO not in default.parents and default.is_dir()
    finally:
        default.rmdir()
    args = argparse.Namespace(out=tmp_path / "o", png=None, json=None)
    assert L.resolve_out(args) == tmp_path / "o" and args.png == tmp_path / "o" / "learning.png"
