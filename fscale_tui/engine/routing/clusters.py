"""Spherical K-means (cosine) with k-means++ seeding, numpy only, deterministic for a seed."""

from __future__ import annotations

import numpy as np


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iters: int = 60, n_init: int = 2) -> np.ndarray:
    """Fit ``k`` unit-norm centroids to the unit-norm rows of ``x``; best of ``n_init`` runs."""
    n = len(x)
    if n == 0:
        raise ValueError("no points to cluster")
    k = max(1, min(k, n))
    best: tuple[float, np.ndarray] | None = None
    for run in range(n_init):
        rng = np.random.default_rng(seed + run)
        centroids = [x[rng.integers(n)]]
        d2 = np.full(n, np.inf)
        for _ in range(1, k):
            d2 = np.minimum(d2, ((x - centroids[-1]) ** 2).sum(1))
            total = d2.sum()
            pick = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
            centroids.append(x[pick])
        c = np.array(centroids, dtype=np.float32)
        for _ in range(iters):
            assign = (x @ c.T).argmax(1)
            new = c.copy()
            for j in range(k):
                members = x[assign == j]
                if len(members):
                    new[j] = members.mean(0)
            new /= np.linalg.norm(new, axis=1, keepdims=True) + 1e-9
            if np.allclose(new, c, atol=1e-6):
                c = new
                break
            c = new
        score = float((x @ c.T).max(1).sum())
        if best is None or score > best[0]:
            best = (score, c)
    assert best is not None
    return best[1]


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    nearest: np.ndarray = (x @ centroids.T).argmax(1)
    return nearest
