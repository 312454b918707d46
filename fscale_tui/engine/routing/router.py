"""UniRoute-style routing: prompt clusters + per-cluster error profiles Ψ (design §8).

Clusters are fitted once on the prompts of a training task file (``fscale profile
--fit-clusters TRAIN.jsonl``). Every profiled model then gets Ψ(m)[c], its error rate on the
profiled prompts of cluster c, Laplace-smoothed towards its overall error rate::

    Ψ(m)[c] = (errors(m, c) + s · p̄(m)) / (n(m, c) + s)        (s = 5 pseudo-observations)

so a cluster with few observations falls back to the model's overall error rate (with p̄ = ½
and s = 2 this is the classic add-one rule). The strength s is a knob: :func:`choose_smoothing`
picks it by cross-fitting (the s whose Ψ, fitted on all folds but one, best predicts the
errors of the held-out fold, in log-loss, summed over the models), and ``fscale profile``
stores the choice in ``<data>/routing/knobs.json`` next to the profile. A prompt x goes to
``argmin_m Ψ(m)[cluster(x)] + λ · cost(m)``. Nothing is trained per model: a new model joins by
being profiled (on a validation file) and its Ψ is computed from those observations only.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import storage
from ..base.errors import UsageError
from .clusters import kmeans
from .embed import DEFAULT_EMBEDDING, make_embedder

if TYPE_CHECKING:
    from ..base.settings import Settings
    import numpy.typing as npt

DEFAULT_K = 20
DEFAULT_SMOOTHING = 5.0
#: A model outranks the most accurate model on a cluster only when its Ψ there is lower by
#: more than this many standard errors of the difference (one-sided 95 %): a difference that
#: ~100 profiled items per cluster cannot tell from noise does not move traffic away from the
#: model that is best overall (so λ = 0 is never worse than the best single model by chance).
SWITCH_Z = 1.645
#: The strengths :func:`choose_smoothing` considers (pseudo-observations of the global rate).
SMOOTHING_GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
KNOBS = "knobs.json"


def routing_dir(settings: Settings) -> Path:
    return settings.paths.data_dir / "routing"


@dataclass
class ClusterModel:
    """An embedder and K unit-norm centroids."""

    embedding: str
    embedder: Any
    centroids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    #: sha256 of the saved clusters.npz (None until saved or loaded): what the prompt-cluster
    #: cache next to the profile is keyed by.
    fingerprint: str | None = None

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    @classmethod
    def fit(cls, texts: Sequence[str], k: int = DEFAULT_K, *, embedding: str = DEFAULT_EMBEDDING,
            seed: int = 0, settings: Settings | None = None,
            on_progress: Callable[[int, int], None] | None = None,
            emit: Callable[[Any], None] | None = None) -> "ClusterModel":
        """Embed ``texts`` and fit ``k`` centroids. ``settings`` is needed by a ``local:``
        embedding (it finds the model); ``on_progress(done, total)`` and ``emit`` (first-use
        events) report its embedding work."""
        if len(texts) < 2:
            raise UsageError("fitting clusters needs at least two prompts")
        embedder = make_embedder(embedding, settings=settings)
        if on_progress is not None and hasattr(embedder, "on_progress"):
            embedder.on_progress = on_progress
        if emit is not None and hasattr(embedder, "emit"):
            embedder.emit = emit
        embedder = embedder.fit(texts)
        x = embedder.transform(texts)
        centroids = kmeans(x, min(k, len(texts)), seed=seed)
        return cls(embedding, embedder, centroids, {"n": len(texts), "seed": seed})

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors: np.ndarray = self.embedder.transform(texts)
        return vectors

    def assign(self, texts: Sequence[str]) -> np.ndarray:
        """The nearest centroid of each text. Row by row, so a text gets the same cluster
        whether it is assigned alone or in a batch (a matrix product may sum in another order)."""
        if not texts:
            return np.zeros(0, dtype=int)
        x = self.embed(texts)
        ct = np.ascontiguousarray(self.centroids.T)
        return np.fromiter((int(np.argmax(row @ ct)) for row in x), dtype=int, count=len(x))

    # -- storage: <data>/routing/clusters.npz (arrays) + clusters.json (what and when) ------
    def save(self, directory: Path) -> Path:
        buf = io.BytesIO()
        arrays = {"centroids": self.centroids}
        arrays.update({f"embedder_{k}": v for k, v in self.embedder.state().items() if v is not None})
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds as allow_pickle
        path = directory / "clusters.npz"
        self.fingerprint = hashlib.sha256(buf.getvalue()).hexdigest()
        with storage.locked(path):
            storage.atomic_write_bytes(path, buf.getvalue())
            storage.write_json(directory / "clusters.json",
                               {"embedding": self.embedding, "k": self.k, **self.meta})
        return path

    @classmethod
    def load(cls, directory: Path, settings: Settings | None = None) -> "ClusterModel | None":
        path = directory / "clusters.npz"
        if not path.exists():
            return None
        meta = storage.read_json(directory / "clusters.json")
        try:
            raw = path.read_bytes()
            with np.load(io.BytesIO(raw)) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # unreadable: move aside like every other state file
            storage.move_aside(path, f"{type(exc).__name__}: {exc}")
            return None
        state = {k[len("embedder_"):]: v for k, v in arrays.items() if k.startswith("embedder_")}
        embedding = str(meta.get("embedding") or DEFAULT_EMBEDDING)
        return cls(embedding, make_embedder(embedding, state, settings=settings), arrays["centroids"], meta,
                   hashlib.sha256(raw).hexdigest())


def compute_psi(cluster_ids: np.ndarray, errors: np.ndarray, k: int, *,
                smoothing: float = DEFAULT_SMOOTHING, prior: float | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Ψ[c] and n[c] for one model from its per-observation errors (0..1) and their clusters.

    ``prior`` defaults to the model's overall error rate (½ when it has no observation).
    """
    cluster_ids = np.asarray(cluster_ids, dtype=int)
    errors = np.asarray(errors, dtype=float)
    if prior is None:
        prior = float(errors.mean()) if len(errors) else 0.5
    n = np.bincount(cluster_ids, minlength=k).astype(float)[:k]
    err = np.bincount(cluster_ids, weights=errors, minlength=k)[:k]
    psi = (err + smoothing * prior) / (n + smoothing)
    return psi, n


def switch_penalty(psi: np.ndarray, counts: np.ndarray, smoothing: float,
                   z: float = SWITCH_Z) -> np.ndarray:
    """(K × models) what a model needs to beat on each cluster, beyond the best model's Ψ:
    ``z`` standard errors of the difference of the two smoothed rates (0 for the model with
    the lowest overall error, the *anchor*)."""
    psi = np.asarray(psi, dtype=float)
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(0)
    overall = np.where(total > 0, (psi * counts).sum(0) / np.maximum(total, 1e-12), psi.mean(0))
    anchor = int(np.argmin(overall))
    se = np.sqrt(np.clip(psi * (1 - psi), 0.0, None) / (counts + smoothing))
    pen: np.ndarray = z * np.sqrt(se ** 2 + se[:, [anchor]] ** 2)
    pen[:, anchor] = 0.0
    return pen


def choose_smoothing(observations: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]]
                     | Mapping[int, tuple[npt.ArrayLike, npt.ArrayLike]], k: int, *,
                     grid: Sequence[float] = SMOOTHING_GRID, folds: int = 5, seed: int = 0
                     ) -> tuple[float, dict[float, float]]:
    """The shrinkage strength s of :func:`compute_psi`, chosen by cross-fitting.

    ``observations`` is ``{model: (cluster ids, errors in 0..1)}``. Each model's observations
    are cut into ``folds`` random folds; Ψ is fitted with each s on all folds but one (the
    prior is that model's error rate on those folds) and scored by the mean Bernoulli
    log-loss of the held-out errors. Returns (the best s, {s: mean log-loss}); with too few
    observations to cross-fit, the default.
    """
    rng = np.random.default_rng(seed)
    total = {float(s): 0.0 for s in grid}
    n_scored = 0
    for _, (ids, errors) in sorted(observations.items()):
        ids = np.asarray(ids, dtype=int)
        errors = np.asarray(errors, dtype=float)
        if len(ids) < 2 * folds:
            continue
        fold = rng.permutation(len(ids)) % folds
        for f in range(folds):
            fit, held = fold != f, fold == f
            prior = float(errors[fit].mean())
            n = np.bincount(ids[fit], minlength=k)[:k].astype(float)
            err = np.bincount(ids[fit], weights=errors[fit], minlength=k)[:k]
            for s in total:
                psi = np.clip((err + s * prior) / (n + s), 1e-4, 1 - 1e-4)[ids[held]]
                e = errors[held]
                total[s] += float(-(e * np.log(psi) + (1 - e) * np.log(1 - psi)).sum())
        n_scored += len(ids)
    if not n_scored:
        return DEFAULT_SMOOTHING, {}
    scores = {s: v / n_scored for s, v in total.items()}
    # Ties (within float noise) go to the stronger shrinkage: the simpler model.
    best = min(scores, key=lambda s: (round(scores[s], 9), -s))
    return best, scores


@dataclass(frozen=True)
class RouteChoice:
    cluster: int
    ranking: list[dict[str, Any]]  # best first: model, psi, cost, score, n

    @property
    def model(self) -> str:
        best: str = self.ranking[0]["model"]
        return best

    def top(self, n: int) -> list[str]:
        return [r["model"] for r in self.ranking[:n]]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "model": self.model, "ranking": self.ranking}


@dataclass
class Router:
    """Ψ per model over the clusters of ``clusters`` and each model's cost."""

    clusters: ClusterModel | None
    psi: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
    costs: dict[str, float]
    smoothing: float = DEFAULT_SMOOTHING

    @property
    def k(self) -> int:
        if self.categories is not None:
            return len(self.categories)
        return self.clusters.k if self.clusters is not None else 1

    #: ``SWITCH_Z`` of :func:`switch_penalty` (0: plain argmin Ψ + λ·cost)
    switch_z: float = SWITCH_Z
    _penalty: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: A category router (:func:`profile.build_category_router`): its "clusters" are these
    #: task categories (Ψ per model and category), found by name, not by embedding.
    categories: tuple[str, ...] | None = None

    def category_index(self, category: str | None) -> int | None:
        """The cluster of a prompt of ``category`` (None: not a category this router knows)."""
        if self.categories is None or category is None:
            return None
        try:
            return self.categories.index(category)
        except ValueError:
            return None

    def add_model(self, name: str, cluster_ids: np.ndarray, errors: np.ndarray, cost: float) -> None:
        """A new model joins from its observations alone: no refit of the clusters or others."""
        self.psi[name], self.counts[name] = compute_psi(cluster_ids, errors, self.k,
                                                        smoothing=self.smoothing)
        self.costs[name] = float(cost)
        self._penalty = None

    def penalties(self) -> dict[str, np.ndarray]:
        """Per model, the switching penalty of each cluster (see :func:`switch_penalty`)."""
        if self._penalty is None:
            names = list(self.psi)
            if not names:
                return {}
            pen = switch_penalty(np.stack([self.psi[m] for m in names], 1),
                                 np.stack([self.counts[m] for m in names], 1), self.smoothing,
                                 self.switch_z)
            self._penalty = {m: pen[:, j] for j, m in enumerate(names)}
        return self._penalty

    def rank(self, cluster: int, lam: float = 0.0, models: Iterable[str] | None = None) -> RouteChoice:
        names = [m for m in (models if models is not None else self.psi) if m in self.psi]
        if not names:
            raise UsageError("no profiled model to route to: run 'fscale profile TASKS.jsonl --models …' first")
        rows = []
        penalty = self.penalties()
        for m in names:
            psi = float(self.psi[m][cluster])
            cost = self.costs.get(m, 0.0)
            rows.append({"model": m, "psi": round(psi, 4), "cost": cost,
                         "score": round(psi + lam * cost + penalty[m][cluster], 6),
                         "n": int(self.counts[m][cluster])})
        # Ties go to the cheaper model, then the name, so routing is deterministic.
        rows.sort(key=lambda r: (r["score"], r["cost"], r["model"]))
        return RouteChoice(cluster, rows)

    def overall_error(self, name: str) -> float:
        """The model's error rate over all its observations (recovered from Ψ and the counts:
        Σ_c Ψ[c]·(n[c] + s) = errors · (1 + K·s/N))."""
        psi, n = self.psi[name], self.counts[name]
        total = float(n.sum())
        if total <= 0:
            return float(psi.mean())
        return float((psi * (n + self.smoothing)).sum() / (1 + len(psi) * self.smoothing / total)
                     / total)

    def order(self, cluster: int, n: int, mode: str = "routed", lam: float = 0.0) -> list[str]:
        """The models a ``route:n`` stage asks, best first. ``routed``: by Ψ[cluster] + λ·cost;
        ``routed-then-best``: the routed model, then the best overall (the per-cluster ranking
        of the runners-up is noisier than their overall ranking)."""
        ranked = self.rank(cluster, lam).top(len(self.psi))
        if mode == "routed" or n <= 1:
            return ranked[:n]
        if mode != "routed-then-best":
            raise UsageError(f"unknown routing order {mode!r} (routed | routed-then-best)")
        first = ranked[0]
        rest = sorted((m for m in self.psi if m != first),
                      key=lambda m: (self.overall_error(m) + lam * self.costs.get(m, 0.0),
                                     self.costs.get(m, 0.0), m))
        return [first, *rest][:n]

    def cluster_of(self, text: str) -> int:
        if self.clusters is None:
            return 0
        return int(self.clusters.assign([text])[0])

    def route(self, text: str, lam: float = 0.0, models: Iterable[str] | None = None) -> RouteChoice:
        return self.rank(self.cluster_of(text), lam, models)

    def route_many(self, texts: Sequence[str], lam: float = 0.0,
                   models: Iterable[str] | None = None) -> list[RouteChoice]:
        """``route`` for many prompts, embedded in one pass (the same choices, in order)."""
        if self.clusters is None or not texts:
            ids = [0] * len(texts)
        else:
            ids = [int(c) for c in self.clusters.assign(list(texts))]
        names = list(models) if models is not None else None
        ranked: dict[int, RouteChoice] = {}
        out = []
        for c in ids:
            if c not in ranked:
                ranked[c] = self.rank(c, lam, names)
            out.append(ranked[c])
        return out

    def choose_many(self, cluster_ids: np.ndarray, lam: float, models: Sequence[str]) -> np.ndarray:
        """Vectorised argmin over ``models`` for many prompts (index into ``models``)."""
        pen = self.penalties()
        table = np.stack([self.psi[m] + lam * self.costs.get(m, 0.0) + pen[m] for m in models], axis=1)
        chosen: np.ndarray = table[np.asarray(cluster_ids, dtype=int)].argmin(1)
        return chosen

    def reliability(self, cluster: int) -> dict[str, float]:
        """1 − Ψ: each model's estimated accuracy on this kind of prompt."""
        return {m: float(1.0 - p[cluster]) for m, p in self.psi.items()}


def router_from_observations(clusters: ClusterModel | None,
                             observations: Mapping[str, tuple[Sequence[str], Sequence[float]]],
                             costs: Mapping[str, float], *, smoothing: float = DEFAULT_SMOOTHING,
                             ) -> Router:
    """Build a router from ``{model: (prompt texts, errors)}``; texts are assigned to clusters."""
    cache: dict[str, int] = {}
    all_texts = sorted({t for texts, _ in observations.values() for t in texts})
    if clusters is not None and all_texts:
        for text, c in zip(all_texts, clusters.assign(all_texts)):
            cache[text] = int(c)
    return router_from_assignments(
        clusters, {m: (np.array([cache.get(t, 0) for t in texts], dtype=int), errors)
                   for m, (texts, errors) in observations.items()}, costs, smoothing=smoothing)


def router_from_assignments(clusters: ClusterModel | None,
                            observations: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
                            costs: Mapping[str, float], *, smoothing: float = DEFAULT_SMOOTHING,
                            ) -> Router:
    """Build a router from ``{model: (cluster ids, errors)}`` (prompts already assigned)."""
    router = Router(clusters, {}, {}, {}, smoothing)
    for model, (ids, errors) in observations.items():
        router.add_model(model, np.asarray(ids, dtype=int), np.asarray(errors, dtype=float),
                         costs.get(model, 0.0))
    return router


def read_knobs(directory: Path) -> dict[str, Any]:
    """The knobs chosen for the stored profile (``knobs.json``; empty when none was chosen)."""
    return storage.read_json(directory / KNOBS)


def write_knobs(directory: Path, knobs: Mapping[str, Any]) -> None:
    storage.write_json(directory / KNOBS, json_safe(dict(knobs)))


def describe(choice: RouteChoice, lam: float) -> str:
    """A few lines saying why this model was chosen."""
    best = choice.ranking[0]
    lines = [f"cluster {choice.cluster}: route to {best['model']} "
             f"(expected error {best['psi']:.1%} + λ {lam:g} × cost {best['cost']:g} = {best['score']:.4f})"]
    for r in choice.ranking[1:6]:
        lines.append(f"  then {r['model']:<28} error {r['psi']:.1%}  cost {r['cost']:g}  "
                     f"score {r['score']:.4f}  (n={r['n']})")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
