"""Prompt embeddings for routing.

The default, ``hashed-tfidf``, needs nothing but numpy and no download: lower-cased word
unigrams and bigrams, numbers (each number also counts as a ``<num>`` token) and symbols are
hashed (crc32, signed) into 4096 buckets, weighted by sublinear tf × idf (idf learnt on the
training prompts), and three "shape" features are appended: the share of numeric tokens, the
density of operators (``= + * / ^``) and the log length. The shape block matters on real
workloads: computation-heavy prompts and recall-heavy prompts are answered best by different
models, and plain TF-IDF spreads numbers over thousands of buckets. Rows are L2-normalised.

``local:<alias>`` (``local`` alone = ``local:local-qwen-0.5b``) embeds with an embedded local
model: llama.cpp's ``/v1/embeddings`` on a background server of the model's weights started in
embedding mode (mean pooling; see ``providers/local/serve.py --embedding``), the first
``max_chars`` characters of each prompt (MMLU-style prompts put the question first), rows
L2-normalised. Vectors are kept in an on-disk cache (:class:`EmbeddingCache`, SQLite in the
state directory) keyed by (weights sha256, sha256 of the text sent), so a task file is embedded
once, whichever process asks.

``sentence-transformers:<name>`` uses a sentence-embedding model when the package and the
weights are installed (optional; loaded with ``HF_HUB_OFFLINE=1`` so it never downloads).
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base.errors import UsageError
from ..base.settings import ModelConfig, ProviderConfig, Settings
from ..providers import EmbeddingHooks, embeddings

if TYPE_CHECKING:
    import httpx

DEFAULT_EMBEDDING = "hashed-tfidf"
DIM = 4096
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")
_OPS = set("=+*/^")


def tokens(text: str) -> list[str]:
    raw = _TOKEN.findall(text.lower())
    out: list[str] = []
    for tok in raw:
        if tok[0].isdigit():
            out.append("<num>")
        out.append(tok)
    words = [t for t in raw if t[0].isalpha()]
    out.extend(f"{a} {b}" for a, b in zip(words, words[1:]))
    return out


def _hashed_counts(text: str) -> dict[int, float]:
    counts: dict[int, float] = {}
    for tok in tokens(text):
        h = zlib.crc32(tok.encode("utf-8"))
        j = h % DIM
        counts[j] = counts.get(j, 0.0) + (1.0 if (h >> 20) & 1 else -1.0)
    return counts


def shape_features(text: str) -> list[float]:
    toks = _TOKEN.findall(text.lower())
    n = max(1, len(toks))
    numeric = sum(t[0].isdigit() for t in toks) / n
    ops = sum(c in _OPS for c in text) / max(1, len(text)) * 10.0
    return [numeric, ops, math.log(max(1, len(text))) / 8.0]


class HashedTfidf:
    name = "hashed-tfidf"

    def __init__(self, idf: np.ndarray | None = None) -> None:
        self.idf = idf

    def fit(self, texts: Sequence[str]) -> "HashedTfidf":
        df = np.zeros(DIM, dtype=np.float64)
        for text in texts:
            for j in _hashed_counts(text):
                df[j] += 1
        self.idf = (np.log((1 + len(texts)) / (1 + df)) + 1.0).astype(np.float32)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if self.idf is None:
            raise RuntimeError("the embedder is not fitted")
        out = np.zeros((len(texts), DIM + 3), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, v in _hashed_counts(text).items():
                if v:
                    out[i, j] = math.copysign(1.0 + math.log(abs(v)), v) * self.idf[j]
            out[i, DIM:] = shape_features(text)
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-9
        return out

    def state(self) -> dict[str, Any]:
        return {"idf": self.idf}


class SentenceEmbedder:
    """Optional: a sentence-transformers model already on disk (never downloads)."""

    def __init__(self, model_name: str) -> None:
        self.name = f"sentence-transformers:{model_name}"
        self.model_name = model_name
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            import os

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer  # type: ignore
            except ImportError:
                raise UsageError(f"embedding {self.name!r} needs the sentence-transformers package "
                                 "and the model's weights installed; the default "
                                 f"{DEFAULT_EMBEDDING!r} needs nothing") from None
            self._model = SentenceTransformer(self.model_name)
        return self._model

    def fit(self, texts: Sequence[str]) -> "SentenceEmbedder":
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        vecs = np.asarray(self._load().encode(list(texts), normalize_embeddings=True), dtype=np.float32)
        return vecs

    def state(self) -> dict[str, Any]:
        return {}


LOCAL_DEFAULT_ALIAS = "local-qwen-0.5b"
#: Characters of a prompt that are embedded (~65 tokens): the question (median 162 characters
#: on MMLU-Pro), not its ten options; a 0.5B model on 2 shared cores embeds ~30 tokens/s.
LOCAL_MAX_CHARS = 256
#: Prompts per /v1/embeddings request.
LOCAL_BATCH = 16
CACHE_NAME = "embeddings.sqlite"


def cache_path(settings: Settings) -> Path:
    return Path(settings.paths.state_dir) / CACHE_NAME


class EmbeddingCache:
    """Vectors by (model, text sha256) in one SQLite file (WAL): many processes may read and
    write it at once; a vector is written once (``INSERT OR IGNORE``) and never changes, so a
    reader sees a vector entirely or not at all. Only an accelerator: deleting it is harmless."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            from ..base import storage

            conn = storage.open_sqlite(self.path, timeout=60.0, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")
            storage.use_wal(conn, timeout=60.0)
            conn.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, text_sha TEXT NOT NULL, "
                         "vec BLOB NOT NULL, PRIMARY KEY (model, text_sha)) WITHOUT ROWID")
            self._conn = conn
        return self._conn

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, model: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
        db = self._db()
        out: dict[str, np.ndarray] = {}
        wanted = list(dict.fromkeys(shas))
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for sha, blob in db.execute(f"SELECT text_sha, vec FROM vectors WHERE model = ? "
                                        f"AND text_sha IN ({marks})", (model, *chunk)):
                out[sha] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, model: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        if not items:
            return
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR IGNORE INTO vectors (model, text_sha, vec) VALUES (?, ?, ?)",
                           [(model, sha, np.asarray(v, dtype=np.float32).tobytes()) for sha, v in items])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def count(self, model: str | None = None) -> int:
        sql, args = ("SELECT COUNT(*) FROM vectors", ()) if model is None else \
            ("SELECT COUNT(*) FROM vectors WHERE model = ?", (model,))
        return int(self._db().execute(sql, args).fetchone()[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class LocalEmbedder:
    """Prompt embeddings from an embedded local model through llama.cpp (cached on disk).

    ``settings`` finds the model and starts its embedding server on the first cache miss;
    ``cache`` defaults to ``<state>/embeddings.sqlite``. ``on_progress(done, total)`` counts
    prompts embedded (cache hits included); ``emit`` receives the first-use events
    (``Preparing``, ``ServerStarting``, ``ServerReady``). Blocking: call it from a thread in
    async code.
    """

    def __init__(self, alias: str, settings: Settings | None = None, *, cache: EmbeddingCache | None = None,
                 max_chars: int = LOCAL_MAX_CHARS, batch: int = LOCAL_BATCH,
                 model_sha: str | None = None) -> None:
        self.alias = alias
        self.name = f"local:{alias}"
        self.settings = settings
        self.max_chars = int(max_chars)
        self.batch = max(1, int(batch))
        self.cache = cache if cache is not None else (
            EmbeddingCache(cache_path(settings)) if settings is not None else None)
        self.model_sha = model_sha  # the weights' sha256, known once the server is found
        self.on_progress: Callable[[int, int], None] | None = None
        self.emit: Callable[[Any], None] | None = None
        self._server: dict[str, Any] | None = None
        self.stats = {"cached": 0, "embedded": 0, "tokens": 0, "seconds": 0.0}

    def _model(self) -> tuple[ModelConfig, ProviderConfig, EmbeddingHooks]:
        """The model, its provider and the provider type's embedding servers."""
        if self.settings is None:
            raise UsageError(f"embedding {self.name!r} needs the settings to find the model")
        model = self.settings.models.get(self.alias)
        provider = self.settings.providers.get(model.provider) if model is not None else None
        hooks = embeddings(provider) if provider is not None else None
        if model is None or provider is None or hooks is None:
            local = sorted(a for a, m in self.settings.models.items()
                           if (p := self.settings.providers.get(m.provider)) is not None
                           and embeddings(p) is not None)
            raise UsageError(f"embedding {self.name!r}: {self.alias!r} is not a local model "
                             f"(local models: {', '.join(local) or 'none'})")
        return model, provider, hooks

    def _key_model(self) -> str:
        """The cache's model key: the weights' sha256 and how prompts are cut and pooled."""
        if self.model_sha is None:
            model, provider, hooks = self._model()
            assert self.settings is not None
            self.model_sha = hooks.weights_key(model, provider, self.settings)
        return f"{self.model_sha}:mean"

    def _url(self) -> str:
        if self._server is None:
            model, provider, hooks = self._model()
            problem = hooks.problem()
            if problem is not None:
                raise UsageError(f"embedding {self.name!r}: {problem}")
            assert self.settings is not None
            self._server = hooks.start(model, provider, self.settings, self.emit)
            self.model_sha = self._server["weights_sha256"]
        return str(self._server["base_url"])

    def fit(self, texts: Sequence[str]) -> "LocalEmbedder":
        return self

    def _request(self, client: httpx.Client, texts: list[str]) -> np.ndarray:
        if self._server is not None and self.settings is not None:
            self._model()[2].keep_alive(self.settings, self._server)
        url = self._url() + "/embeddings"
        server = self._server
        assert server is not None  # _url() started it
        resp = client.post(url, json={"model": str(server["name"]), "input": texts})
        if resp.status_code != 200:
            raise UsageError(f"embedding {self.name!r}: the server answered HTTP {resp.status_code}: "
                             f"{resp.text[:200]}")
        body = resp.json()
        rows = sorted(body["data"], key=lambda d: d["index"])
        self.stats["tokens"] += int((body.get("usage") or {}).get("prompt_tokens") or 0)
        vecs = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
        unit: np.ndarray = vecs / (np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-9)
        return unit

    def sent(self, text: str) -> str:
        """What is embedded of ``text``: its first ``max_chars`` characters."""
        cut = text[: self.max_chars]
        return cut if cut.strip() else "(empty)"

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached vector of each text (None when not cached); never starts a server."""
        if self.cache is None:
            return [None] * len(texts)
        shas = [EmbeddingCache.key(self.sent(t)) for t in texts]
        found = self.cache.get_many(self._key_model(), shas)
        return [found.get(s) for s in shas]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        import time

        import httpx

        sent = [self.sent(t) for t in texts]
        shas = [EmbeddingCache.key(t) for t in sent]
        found: dict[str, np.ndarray] = {}
        key = self._key_model() if self.cache is not None else None
        if self.cache is not None and key is not None:
            found = self.cache.get_many(key, shas)
        todo = list(dict.fromkeys(s for s in shas if s not in found))
        text_of = dict(zip(shas, sent))
        total = len(set(shas))
        done = total - len(todo)
        self.stats["cached"] += done
        if self.on_progress is not None:
            self.on_progress(done, total)
        if todo:
            t0 = time.monotonic()
            with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0), trust_env=False) as client:
                for i in range(0, len(todo), self.batch):
                    chunk = todo[i:i + self.batch]
                    vecs = self._request(client, [text_of[s] for s in chunk])
                    new = list(zip(chunk, vecs))
                    found.update(new)
                    if self.cache is not None:
                        self.cache.put_many(self._key_model(), new)
                    done += len(chunk)
                    self.stats["embedded"] += len(chunk)
                    if self.on_progress is not None:
                        self.on_progress(done, total)
            self.stats["seconds"] += time.monotonic() - t0
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[s] for s in shas]).astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {}


def make_embedder(name: str = DEFAULT_EMBEDDING, state: dict[str, Any] | None = None, *,
                  settings: Settings | None = None) -> Any:
    """The embedder called ``name``; ``settings`` is needed by ``local:<alias>`` only."""
    if name == "hashed-tfidf":
        return HashedTfidf((state or {}).get("idf"))
    if name.startswith("sentence-transformers:"):
        return SentenceEmbedder(name.split(":", 1)[1])
    if name == "local" or name.startswith("local:"):
        alias = name.split(":", 1)[1] if ":" in name else LOCAL_DEFAULT_ALIAS
        return LocalEmbedder(alias or LOCAL_DEFAULT_ALIAS, settings)
    raise UsageError(f"unknown embedding {name!r} (use {DEFAULT_EMBEDDING!r}, 'local:<alias>' or "
                     "'sentence-transformers:<model>')")
