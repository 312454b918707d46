"""Ray Data batches (fscale_tui.integrations.ray) on a real local Ray cluster, against the
loopback OpenAI server. One cluster for the whole module (starting Ray costs seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import tomli_w

from tests.conftest import REPO, STUB_MODELS, Behaviour, mid

ray = pytest.importorskip("ray", reason="needs Ray: the [ray] extra (pip install -e '.[ray]')")

# The module's Ray cluster (a module fixture): its tests run one after another on one xdist
# worker, a group of their own (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024 * 1024,
             log_to_driver=False, configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _config(home, server, *, rpm=None, panel=("fast-a", "fast-b", "fast-c")) -> None:
    provider = {"base_url": server.base_url, "concurrency": 8}
    if rpm is not None:
        provider["rpm"] = rpm
    doc = {"providers": {"stub": provider},
           "models": {a: {"provider": "stub", "id": m, "tier": t, "family": f}
                      for a, (m, t, f) in STUB_MODELS.items()},
           "panels": {"default": list(panel)}}
    (home / "config.toml").write_text(tomli_w.dumps(doc))


def test_scale_dataset_answers_every_row_in_order_under_the_limit(ray_cluster, server,
                                                                  fscale_home, monkeypatch):
    """Acceptance 2: every row answered, order and item_id kept, total sends = calls_made
    summed, the rate limit held, and the driver's call log holds every call once."""
    from fscale_tui.engine.catalog.config import load_settings
    from fscale_tui.engine.session import Engine
    from fscale_tui.integrations.ray import scale_dataset

    rpm, window = 60, 2.0
    monkeypatch.setenv("FSCALE_RATE_WINDOW_S", str(window))
    _config(fscale_home, server, rpm=rpm)
    for alias in ("fast-a", "fast-b", "fast-c"):
        server.script(mid(alias), Behaviour(reply="YES"))
    server.script(mid("fast-b"), *[Behaviour(reply="NO" if i % 5 == 0 else "YES") for i in range(5)])
    rows = [{"id": f"row{i}", "question": f"is {i} fine?", "extra": i} for i in range(40)]
    ds = ray.data.from_items(rows, override_num_blocks=4)
    out = scale_dataset(ds, answers=["YES", "NO"], k=3, actors=2, batch_size=8)
    got = out.take_all()
    assert [r["item_id"] for r in got] == [f"row{i}" for i in range(40)]
    assert [r["extra"] for r in got] == list(range(40))  # the input's columns are kept
    assert all(r["answer"] == "YES" and r["status"] == "decided" for r in got)
    assert all(json.loads(r["votes"]) for r in got)
    assert "_fscale_calls" not in out.schema().names
    # A send that an early decision cancels may never reach the server (a loaded machine can
    # cancel it between the limiter's token and the first byte): it counts as made, not as seen.
    made = sum(r["calls_made"] for r in got)
    cancelled = sum(v["status"] == "cancelled" for r in got for v in json.loads(r["votes"]))
    assert made - cancelled <= server.count() <= made
    assert server.max_in_window(window) <= rpm
    engine = Engine(load_settings())
    try:
        logged = engine.calls.history(100)
    finally:
        engine.close()
    assert sorted(x["item_id"] for x in logged) == sorted(f"row{i}" for i in range(40))


def test_cli_batch_on_ray_writes_the_same_lines_as_the_local_batch(ray_cluster, server,
                                                                   fscale_home, tmp_path):
    """``fscale scale --batch --ray ADDRESS`` (a driver in another process joining the
    cluster): the same JSON lines, in input order, as the in-process batch; a bad line is its
    own error line; ``history`` sees the Ray job's calls."""
    _config(fscale_home, server, panel=("fast-a",))
    server.script(mid("fast-a"), Behaviour(reply="YES"))
    items = tmp_path / "items.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": f"question {i}?", "answers": ["YES", "NO"]})
             for i in range(12)]
    lines.insert(5, json.dumps({"id": "bad"}))  # no question
    items.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, FSCALE_HOME=str(fscale_home))

    def run(*extra: str) -> list[dict]:
        proc = subprocess.run([sys.executable, "-m", "fscale_tui", "scale", "--batch", str(items),
                               "-k", "1", "-q", *extra], capture_output=True, text=True,
                              env=env, cwd=REPO, timeout=240, stdin=subprocess.DEVNULL)
        assert proc.returncode == 3, proc.stderr  # one bad line: not every item decided
        return [json.loads(x) for x in proc.stdout.splitlines()]

    local = run()
    on_ray = run("--ray", ray_cluster)
    strip = ("id", "elapsed_s", "votes")
    assert [{k: v for k, v in x.items() if k not in strip} for x in on_ray] == \
        [{k: v for k, v in x.items() if k not in strip} for x in local]
    assert [x["index"] for x in on_ray] == list(range(13))
    assert on_ray[5]["status"] == "error"
    hist = subprocess.run([sys.executable, "-m", "fscale_tui", "history", "--json", "-n", "100"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert hist.returncode == 0, hist.stderr
    ids = {x["id"] for x in on_ray if x["status"] != "error"}
    logged = {x["id"] for x in json.loads(hist.stdout)}
    assert ids <= logged and len(logged) == 24  # 12 local + 12 on Ray, each once


def test_generate_dataset_runs_generate_on_ray(ray_cluster, server, fscale_home):
    from fscale_tui.integrations.ray import generate_dataset

    _config(fscale_home, server, panel=("fast-a",))
    server.script(mid("fast-a"), Behaviour(reply="42"))
    ds = ray.data.from_items([{"id": f"g{i}", "question": f"what is 6*7 ({i})?"} for i in range(6)])
    got = generate_dataset(ds, strategy="vote", k=2, models=("fast-a",), actors=2,
                           batch_size=3).take_all()
    assert [r["item_id"] for r in got] == [f"g{i}" for i in range(6)]
    assert all(r["output"] and "42" in r["output"] for r in got)
    assert sum(r["calls_made"] for r in got) == server.count()


def test_ray_flag_alone_means_a_local_cluster():
    """``--ray [ADDRESS]``: alone (last, or before another option) it means "local"."""
    from fscale_tui.cli.common import optional_value

    assert optional_value(["fscale", "scale", "--batch", "x", "--ray"], "--ray", "local")[-1] == "local"
    assert optional_value(["f", "--ray", "-q"], "--ray", "local") == ["f", "--ray", "local", "-q"]
    assert optional_value(["f", "--ray", "ray://h:1"], "--ray", "local") == ["f", "--ray", "ray://h:1"]


def test_cli_batch_on_ray_streams_and_a_stop_keeps_every_finished_item(ray_cluster, server,
                                                                       fscale_home, tmp_path):
    """``--batch --ray`` prints results in input order as blocks finish (not after the whole
    dataset), so Ctrl-C keeps every finished item in the output and the call log, and
    ``--resume`` finishes the rest: every item once."""
    from tests.test_stops import _items, _lines, _logged_ids, start_batch, stop_after

    n = 600
    _config(fscale_home, server, panel=("fast-a",))
    server.set_default(Behaviour(reply="YES", latency=0.05))
    items = _items(tmp_path / "items.jsonl", n)
    out = tmp_path / "out.jsonl"
    proc = start_batch(fscale_home, out, "scale", "--batch", str(items), "-a", "YES,NO", "-k",
                       "1", "-q", "--ray", ray_cluster, "--concurrency", "2")
    import time
    deadline = time.monotonic() + 180
    while not out.read_bytes() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.count() < n // 2, "the first result came only after most of the job"
    rc, err = stop_after(proc, out, 1, signal.SIGINT)
    assert rc == 130 and "fscale: interrupted: " in err, err
    printed = _lines(out)
    assert 0 < len(printed) < n
    assert [x["index"] for x in printed] == list(range(len(printed)))  # input order
    assert {x["id"] for x in printed} <= _logged_ids(fscale_home)
    env = dict(os.environ, FSCALE_HOME=str(fscale_home))
    done = subprocess.run([sys.executable, "-m", "fscale_tui", "scale", "--batch", str(items),
                           "-a", "YES,NO", "-k", "1", "-q", "--resume", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert sorted(x["index"] for x in _lines(out)) == list(range(n))
