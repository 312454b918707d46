"""Prompt embeddings from the embedded local model (llama.cpp ``/v1/embeddings``) and their
on-disk cache: a real 0.5B embedding server on a few short texts, cache hits and misses, and
several processes writing the cache at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fscale_tui.engine.catalog.config import load_settings
from fscale_tui.engine.base.paths import Paths
from fscale_tui.engine.providers.local import servers
from fscale_tui.engine.routing.embed import EmbeddingCache, LocalEmbedder, make_embedder
from tests.conftest import needs_local_models, run_cli

ID_05 = "qwen2.5-coder-0.5b-instruct-q4_k_m"
TEXTS = ["What is 17 plus 25?", "Compute 9 times 8.", "Is an oral contract to sell land enforceable?"]


# -- the cache, without a model ----------------------------------------------------------------

def test_cache_hits_and_misses(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    v = np.array([0.6, 0.8], dtype=np.float32)
    key = EmbeddingCache.key("hello")
    assert cache.get_many("w1", [key]) == {}
    cache.put_many("w1", [(key, v)])
    cache.put_many("w1", [(key, np.array([1.0, 0.0], dtype=np.float32))])  # written once, never changed
    assert np.array_equal(cache.get_many("w1", [key, key])[key], v)
    assert cache.get_many("other-weights", [key]) == {}  # keyed by the weights too
    assert cache.count("w1") == 1 and cache.count() == 1
    assert (tmp_path / "e.sqlite").stat().st_mode & 0o777 == 0o600  # prompts' hashes stay private


def test_a_filled_cache_serves_vectors_without_a_server(tmp_path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    emb = LocalEmbedder("local-qwen-0.5b", None, cache=cache, model_sha="abc", max_chars=8)
    rows = [np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)]
    cache.put_many("abc:mean", [(EmbeddingCache.key(emb.sent(t)), r)
                                for t, r in zip(["first text", "second"], rows)])
    # Only the first max_chars characters are embedded: a longer text with that start hits.
    x = emb.transform(["first text, with more after", "second"])
    assert np.array_equal(x, np.stack(rows)) and emb.stats["cached"] == 2 and emb.stats["embedded"] == 0
    assert emb.lookup(["never seen"]) == [None]


WRITER = """
import sys, numpy as np
from fscale_tui.engine.routing.embed import EmbeddingCache
c = EmbeddingCache(sys.argv[1]); w = int(sys.argv[2])
for i in range(40):
    # overlapping keys: every writer writes every even key, and odd keys of its own
    keys = [(f"k{j}", np.full(4, j, np.float32)) for j in range(i * 5, i * 5 + 5) if j % 2 == 0]
    keys.append((f"w{w}-{i}", np.full(4, -w, np.float32)))
    c.put_many("m", keys)
"""


def test_concurrent_writers_share_the_cache(tmp_path):
    path = tmp_path / "e.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w)],
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    cache = EmbeddingCache(path)
    evens = [f"k{j}" for j in range(200) if j % 2 == 0]
    got = cache.get_many("m", evens)
    assert len(got) == 100 and all(np.all(got[f"k{j}"] == j) for j in range(0, 200, 2))
    assert cache.count("m") == 100 + 4 * 40


def test_unknown_or_non_local_embeddings_are_usage_errors(fscale_home):
    from fscale_tui.engine.base.errors import UsageError

    with pytest.raises(UsageError, match="unknown embedding"):
        make_embedder("bogus")
    emb = make_embedder("local:not-a-model", settings=load_settings())
    with pytest.raises(UsageError, match="not a local model"):
        emb.transform(["x"])
    assert make_embedder("local").name == "local:local-qwen-0.5b"


# -- the real model ------------------------------------------------------------------------------

@pytest.fixture
def home(local_home: Path):
    return local_home


@pytest.mark.xdist_group("serial")  # a real llama.cpp server
@needs_local_models
@pytest.mark.slow
def test_real_local_embeddings_are_unit_vectors_that_group_topics_and_are_cached(home):
    settings = load_settings()
    emb = LocalEmbedder("local-qwen-0.5b", settings)
    x = emb.transform(TEXTS)
    assert x.shape == (3, 896) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    sims = x @ x.T
    assert sims[0, 1] > sims[0, 2]  # two sums are closer to each other than to a contract
    assert emb.stats["embedded"] == 3 and emb.stats["tokens"] > 10
    paths = Paths.resolve()
    # Its own server (embedding mode), beside no chat server.
    assert servers.status(paths, ID_05 + ".embed")["status"] == "running"
    assert servers.status(paths, ID_05)["status"] == "stopped"
    # Another embedder (another process would do the same) reads the cache: no request.
    servers.stop_server(paths, ID_05 + ".embed")
    again = LocalEmbedder("local-qwen-0.5b", load_settings())
    y = again.transform(list(reversed(TEXTS)))
    assert again.stats == {"cached": 3, "embedded": 0, "tokens": 0, "seconds": 0.0}
    assert np.array_equal(y, x[::-1])
    assert servers.status(paths, ID_05 + ".embed")["status"] == "stopped"


@pytest.mark.xdist_group("serial")  # a real llama.cpp server
@needs_local_models
@pytest.mark.slow
def test_profile_fits_clusters_on_local_embeddings(home):
    tasks = home / "train.jsonl"
    qs = TEXTS + ["What is 3 plus 4?", "Can a tenant sue a landlord for a broken lease?"]
    tasks.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answers": ["YES", "NO"],
                                         "label": "YES"}) + "\n" for i, q in enumerate(qs)))
    proc = run_cli("profile", "--fit-clusters", str(tasks), "--clusters", "2", "--embedding", "local",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["clusters"] == 2 and out["embedding"] == "local"
    assert out["embedded"]["new"] == 5 and out["embedded"]["cached"] == 0
    meta = json.loads((home / "data" / "routing" / "clusters.json").read_text())
    assert meta["embedding"] == "local"
    # A refit embeds nothing again.
    proc = run_cli("profile", "--fit-clusters", str(tasks), "--clusters", "2", "--embedding", "local",
                   "--json")
    assert json.loads(proc.stdout)["embedded"] == {**out["embedded"], "new": 0, "cached": 5,
                                                   "tokens": 0, "seconds": 0.0}
