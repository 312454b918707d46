"""Prompt embeddings for routing.

The default, ``hashed-tfidf``, needs nothing but numpy and no download: lower-cased word
unigrams and bigrams, numbers (each number also counts as a ``<num>`` token) and symbols are
hashed (crc32, signed) into 4096 buckets, weighted by sublinear tf × idf (idf learnt on the
training prompts), and three "shape" features are appended: the share of numeric tokens, the
density of operators (``= + * / ^``) and the log length. The shape block matters on real
workloads: computation-heavy prompts and recall-heavy prompts are answered best by different
models, and plain TF-IDF spreads numbers over thousands of buckets. Rows are L2-normalised.

``sentence-transformers:<name>`` uses a sentence-embedding model when the package and the
weights are installed (optional; loaded with ``HF_HUB_OFFLINE=1`` so it never downloads).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

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


def make_embedder(name: str = DEFAULT_EMBEDDING, state: dict[str, Any] | None = None) -> Any:
    if name == "hashed-tfidf":
        return HashedTfidf((state or {}).get("idf"))
    if name.startswith("sentence-transformers:"):
        return SentenceEmbedder(name.split(":", 1)[1])
    raise UsageError(f"unknown embedding {name!r} (use {DEFAULT_EMBEDDING!r} or "
                     "'sentence-transformers:<model>')")
