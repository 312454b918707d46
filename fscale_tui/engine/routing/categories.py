"""Routing by task category: Ψ per model and *category* when a prompt says which it is.

A task file may give each item a ``category`` (MMLU-Pro's: law, math, health, …). Where the
models' strengths differ, they differ by kind of question far more than the prompt clusters
show: on the MMLU-Pro dev replay (15 models, the honest protocol of ``bench/routing.py``)
the oracle bound of a router that knows every model's accuracy per category is 1.4 points
above the best single model at 0.8× its price, per TF-IDF cluster (K = 20) 0.3 — and the
~170 profiled items of a category estimate its Ψ well enough to use it: ``route --budget
0.7x`` routed by category gains on the best single model where routed by cluster it loses
1.65 points (figures in docs/performance.md, "Spend").

So a prompt whose category the profile knows (profiled prompts of that category exist) is
routed by the *category router*: the same :class:`router.Router` (Ψ shrunk toward each
model's overall error, the strength chosen by cross-fitting; the switching rule that keeps
λ = 0 on the best model unless a category clearly says otherwise), with the categories as
its clusters. A prompt without a category, or of one never profiled, is routed by the
prompt clusters as before. A budget is spent like the cluster router's
(``planner.router_spend`` / ``spend_mix``): the λ sweep of the category router as it runs,
its spend measured on the profiled prompts, the two λ around the budget mixed by hash; the
expected accuracy is the cross-fitted one (2 folds).

A prompt *without* a category is given one: ``fscale profile --fit-clusters`` on a training
file whose items carry categories also fits a :class:`Classifier` (ridge regression of the
category one-hot on the prompt representation the clusters use, the strength chosen by 5-fold
cross-fitting on that file) and keeps it beside the clusters (``categories.npz``, with the
cross-fitted predicted category of every training prompt). Such a prompt is routed by the
category router with its *predicted* category and a stricter switching rule (its z chosen by
cross-fitting on the profile from :data:`TEXT_Z`: a wrong category must not move a prompt
off the best model), and a budget's λ is read off that router's spend on the profiled
prompts routed by their predicted categories, as at route time. Soft routing (Σ_c p(c|x)·Ψ
with tempered probabilities) was measured and lost to the argmax (docs/performance.md).

Arrays in, arrays out, except :func:`load`, which reads the stored profile.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .router import SWITCH_Z, Router, choose_smoothing, compute_psi

if TYPE_CHECKING:
    from ..base.settings import Settings
    from .planner import Evidence

#: Fewer profiled prompts with a category than this: no category router.
MIN_ITEMS = 50
FOLDS = 2
#: The classifier's ridge strengths (chosen by :data:`CLASSIFIER_FOLDS`-fold cross-fitting).
ALPHAS = (0.3, 1.0, 3.0)
CLASSIFIER_FOLDS = 5
#: The switching rule's z for predicted categories (chosen on the profile, ties to the stricter).
TEXT_Z = (SWITCH_Z, 2.33, 3.0)
FILE = "categories.npz"


def ridge(x: np.ndarray, y: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """(d × k) weights of ridge regression of the ±1 one-hot of ``y`` on the rows of ``x``
    (the dual form when there are fewer rows than features)."""
    x = np.asarray(x, dtype=np.float64)
    target = -np.ones((len(y), k))
    target[np.arange(len(y)), y] = 1.0
    if len(x) <= x.shape[1]:
        w: np.ndarray = x.T @ np.linalg.solve(x @ x.T + alpha * np.eye(len(x)), target)
    else:
        w = np.linalg.solve(x.T @ x + alpha * np.eye(x.shape[1]), x.T @ target)
    return w


def fit_weights(x: np.ndarray, y: np.ndarray, k: int, seed: int = 0
                ) -> tuple[np.ndarray, float, np.ndarray]:
    """-> (weights, the ridge strength with the most cross-fitted hits, each row's
    cross-fitted predicted category)."""
    fold = np.random.default_rng(seed).permutation(len(y)) % CLASSIFIER_FOLDS
    pred = {a: np.zeros(len(y), dtype=int) for a in ALPHAS}
    for f in range(CLASSIFIER_FOLDS):
        held = fold == f
        if held.all() or not held.any():
            continue
        for a in ALPHAS:
            pred[a][held] = (x[held] @ ridge(x[~held], y[~held], k, a)).argmax(1)
    alpha = max(ALPHAS, key=lambda a: (int((pred[a] == y).sum()), -a))
    return ridge(x, y, k, alpha).astype(np.float32), alpha, pred[alpha]


@dataclasses.dataclass
class Classifier:
    """A prompt's category from its vector (the clusters' representation): argmax x·W."""

    categories: tuple[str, ...]
    weights: np.ndarray  # (d × categories)
    alpha: float
    #: prompt key -> the cross-fitted predicted category of a training prompt
    known: dict[str, int]
    #: sha256 of the clusters.npz the vectors come from (a refit makes this stale)
    clusters: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray((np.asarray(x, dtype=np.float32) @ self.weights).argmax(1), dtype=int)

    @classmethod
    def fit(cls, x: np.ndarray, categories: Sequence[str | None], keys: Sequence[str],
            clusters: str) -> "Classifier | None":
        """None when fewer than :data:`MIN_ITEMS` prompts (or two categories) have one, or
        when the text does not tell the categories apart: cross-fitted, it must beat always
        guessing the commonest category by :data:`TEXT_Z`'s strictest z standard errors."""
        known = tuple(sorted({c for c in categories if c}))
        y = index(categories, known)
        rows = np.flatnonzero(y >= 0)
        if len(known) < 2 or len(rows) < MIN_ITEMS:
            return None
        w, alpha, pred = fit_weights(np.asarray(x)[rows], y[rows], len(known))
        n, share = len(rows), float(np.bincount(y[rows]).max()) / len(rows)
        if (pred == y[rows]).sum() <= n * share + max(TEXT_Z) * np.sqrt(n * share * (1 - share)):
            return None
        return cls(known, w, alpha, {keys[int(r)]: int(p) for r, p in zip(rows, pred)}, clusters)

    def save(self, directory: Path) -> None:
        from ..base import storage

        buf = io.BytesIO()
        keys = sorted(self.known)
        np.savez(buf, weights=self.weights, alpha=np.array(self.alpha),
                 categories=np.array(self.categories), keys=np.array(keys),
                 predicted=np.array([self.known[k] for k in keys], dtype=int),
                 clusters=np.array(self.clusters))
        path = directory / FILE
        with storage.locked(path):
            storage.atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, directory: Path, clusters: str | None) -> "Classifier | None":
        """The stored classifier, None when there is none or it belongs to other clusters."""
        path = directory / FILE
        if clusters is None or not path.exists():
            return None
        try:
            with np.load(io.BytesIO(path.read_bytes())) as data:
                if str(data["clusters"]) != clusters:
                    return None
                return cls(tuple(str(c) for c in data["categories"]), data["weights"],
                           float(data["alpha"]),
                           {str(k): int(p) for k, p in zip(data["keys"], data["predicted"])},
                           clusters)
        except Exception:  # unreadable: as if absent (the next --fit-clusters rewrites it)
            return None


#: The predicted category of every profiled prompt not in the training file (an accelerator
#: like ``prompt_clusters.json``: keyed by the clusters' fingerprint, deleting it is harmless).
PREDICTED = "predicted_categories.json"


def predicted_of_profile(classifier: Classifier, clusters: Any, store: Any, directory: Path,
                         keys: Sequence[str]) -> dict[str, int]:
    """prompt key -> the classifier's category index, embedding only prompts not cached."""
    from ..base import storage

    path = directory / PREDICTED
    doc = storage.read_json(path)
    cached: dict[str, int] = (doc.get("predicted") or {}) if doc.get("clusters") == classifier.clusters else {}
    missing = [k for k in keys if k not in cached]
    if missing:
        ids = classifier.predict(clusters.embed([store.prompts[k].get("text") or "" for k in missing]))
        new = {k: int(c) for k, c in zip(missing, ids)}
        cached = {**cached, **new}

        def change(d: dict[str, Any]) -> None:
            if d.get("clusters") != classifier.clusters:
                d.clear()
                d["clusters"] = classifier.clusters
            d.setdefault("predicted", {}).update(new)

        storage.update_json(path, change)
    return {k: int(cached[k]) for k in keys}


def index(categories: Sequence[str | None], known: Sequence[str]) -> np.ndarray:
    """Each category's position in ``known`` (−1: none, or not known)."""
    pos = {c: i for i, c in enumerate(known)}
    return np.array([pos.get(c, -1) if c is not None else -1 for c in categories], dtype=int)


def psi_fitter(obs: Mapping[str, tuple[np.ndarray, np.ndarray]], models: Sequence[str],
               cat: np.ndarray, k: int, smoothing: float
               ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``psi_without(held)`` -> (k × models) Ψ and counts from every observation (``obs[m]`` =
    item rows, errors) of an item with a category, except the items ``held``."""

    def psi_without(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        drop = np.zeros(len(cat), dtype=bool)
        drop[held] = True
        cols = []
        for m in models:
            r, e = obs[m]
            keep = ~drop[r] & (cat[r] >= 0)
            cols.append(compute_psi(cat[r[keep]], e[keep], k, smoothing=smoothing))
        return np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)

    return psi_without


def choose(obs: Mapping[str, tuple[np.ndarray, np.ndarray]], cat: np.ndarray, k: int,
           seed: int = 0) -> float:
    """Ψ's shrinkage strength for the category table (cross-fitted log-loss)."""
    cut = {m: (cat[r][cat[r] >= 0], e[cat[r] >= 0]) for m, (r, e) in obs.items()}
    s, _ = choose_smoothing(cut, k, seed=seed)
    return s


def spend_curve(ev: Evidence, rows: np.ndarray, cat: np.ndarray, k: int,
                obs: Mapping[str, tuple[np.ndarray, np.ndarray]], route_cost: np.ndarray, *,
                smoothing: float, switch_z: float = SWITCH_Z, seed: int = 0,
                routed: np.ndarray | None = None) -> list[dict[str, float]]:
    """The category router's λ sweep on ``rows`` (items with a category): per distinct
    choice, its spend as it runs (Ψ on every observation) and its cross-fitted accuracy
    (``planner.router_spend``); what ``spend_mix`` picks a budget's λ from. ``routed``: the
    category each item is routed by (the predicted one) when it is not ``cat`` (Ψ's)."""
    from .planner import router_points, router_spend

    by = cat if routed is None else routed
    by_cat = dataclasses.replace(ev, clusters=np.where(by >= 0, by, 0), k=k)
    psi_without = psi_fitter(obs, ev.models, cat, k, smoothing)
    fold = np.random.default_rng(seed).permutation(len(rows)) % FOLDS
    points = router_points(by_cat, rows, [rows[fold == f] for f in range(FOLDS)], psi_without,
                           route_cost, smoothing=smoothing, switch_z=switch_z)
    psi, counts = psi_without(rows[:0])
    return router_spend(by_cat, rows, psi, counts, route_cost, [a for _, a in points],
                        smoothing=smoothing, switch_z=switch_z)


def text_z(ev: Evidence, rows: np.ndarray, cat: np.ndarray, predicted: np.ndarray, k: int,
           obs: Mapping[str, tuple[np.ndarray, np.ndarray]], route_cost: np.ndarray, *,
           smoothing: float, seed: int = 0) -> float:
    """The switching rule's z for prompts routed by their predicted category: the z of
    :data:`TEXT_Z` whose λ = 0 router, cross-fitted on ``rows`` (Ψ by the true category,
    each item routed by ``predicted``), is most accurate; ties to the stricter z."""
    from .planner import router_points

    by_cat = dataclasses.replace(ev, clusters=np.where(predicted >= 0, predicted, 0), k=k)
    psi_without = psi_fitter(obs, ev.models, cat, k, smoothing)
    fold = np.random.default_rng(seed).permutation(len(rows)) % FOLDS
    folds = [rows[fold == f] for f in range(FOLDS)]
    acc = {z: router_points(by_cat, rows, folds, psi_without, route_cost, smoothing=smoothing,
                            switch_z=z, lambdas=(0.0,))[0][1] for z in TEXT_Z}
    return max(TEXT_Z, key=lambda z: (round(acc[z], 9), z))


@dataclasses.dataclass
class Routing:
    """What :func:`load` finds: the category router and its spend curve, and — when a
    classifier was fitted with the clusters — the router for predicted categories (the same
    Ψ, its own z), its spend curve and the classifier."""

    router: Router
    curve: list[dict[str, float]]
    classifier: Classifier | None = None
    text_router: Router | None = None
    text_curve: list[dict[str, float]] | None = None

    def predict(self, clusters: Any, texts: Sequence[str]) -> list[str | None]:
        """Each text's predicted category (None without a classifier or a category the
        router does not know)."""
        if self.classifier is None or self.text_router is None or clusters is None or not texts:
            return [None] * len(texts)
        names = self.classifier.categories
        return [names[j] if self.text_router.category_index(names[j]) is not None else None
                for j in self.classifier.predict(clusters.embed(list(texts)))]


#: What :func:`load` builds from the profile (Ψ, the switching z, the spend curves), kept so a
#: single ``route`` does not build it again: keyed by :func:`fingerprint`, deleting it is harmless.
CACHE = "category_router.json"
CACHE_VERSION = 1


def fingerprint(settings: Settings) -> str:
    """What the category router depends on: the profile, the clusters, the configured models
    (``planner.profile_fingerprint``) and the classifier (``categories.npz``)."""
    import hashlib

    from .planner import profile_fingerprint
    from .router import routing_dir

    path = routing_dir(settings) / FILE
    try:
        st = path.stat()
        stat: tuple[Any, ...] = (st.st_size, st.st_mtime_ns)
    except FileNotFoundError:
        stat = (None,)
    parts = (CACHE_VERSION, profile_fingerprint(settings), stat)
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:16]


def _arrays(d: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {m: {"dtype": str(a.dtype), "values": np.asarray(a).tolist()} for m, a in d.items()}


def _unarrays(d: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {m: np.asarray(a["values"], dtype=a["dtype"]) for m, a in d.items()}


def _to_cache(found: Routing | None, key: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": CACHE_VERSION, "fingerprint": key, "routing": None}
    if found is not None:
        r = found.router
        doc["routing"] = {
            "psi": _arrays(r.psi), "counts": _arrays(r.counts), "costs": r.costs,
            "smoothing": r.smoothing, "switch_z": r.switch_z, "categories": list(r.categories or ()),
            "curve": found.curve,
            "classifier": found.classifier.clusters if found.classifier is not None else None,
            "text_z": found.text_router.switch_z if found.text_router is not None else None,
            "text_curve": found.text_curve}
    return doc


def _from_cache(doc: Mapping[str, Any], directory: Path) -> Routing | None:
    d = doc["routing"]
    if d is None:
        return None
    router = Router(None, _unarrays(d["psi"]), _unarrays(d["counts"]),
                    {m: float(c) for m, c in d["costs"].items()}, float(d["smoothing"]),
                    switch_z=float(d["switch_z"]), categories=tuple(d["categories"]))
    found = Routing(router, list(d["curve"]))
    if d["classifier"] is not None:
        classifier = Classifier.load(directory, d["classifier"])
        if classifier is None:  # the classifier changed under the same stat: build again
            raise ValueError("stale classifier")
        found.classifier = classifier
        found.text_router = dataclasses.replace(router, switch_z=float(d["text_z"]), _penalty=None)
        found.text_curve = list(d["text_curve"])
    return found


def load(settings: Settings) -> Routing | None:
    """The category router of the stored profile and its spend curve (:func:`spend_curve`),
    with the router for predicted categories when a classifier is stored; None when fewer
    than :data:`MIN_ITEMS` profiled prompts (or fewer than two categories) have a category.
    Kept in :data:`CACHE` while the profile, clusters and classifier stay as they are."""
    from ..base import storage
    from .router import routing_dir

    directory = routing_dir(settings)
    key = fingerprint(settings)
    doc = storage.read_json(directory / CACHE)
    if doc.get("version") == CACHE_VERSION and doc.get("fingerprint") == key:
        try:
            return _from_cache(doc, directory)
        except (KeyError, TypeError, ValueError):
            pass
    found = build(settings)
    try:
        with storage.locked(directory / CACHE):
            storage.write_json(directory / CACHE, _to_cache(found, key))
    except OSError:  # an accelerator: a home that cannot take it routes all the same
        pass
    return found


def build(settings: Settings) -> Routing | None:
    """:func:`load` without the cache."""
    from .planner import evidence_from_profile
    from .profile import ProfileStore

    found = evidence_from_profile(settings)
    if found is None:
        return None
    ev, extra = found
    store: ProfileStore = extra["store"]
    item_cats = [store.prompts.get(key, {}).get("category") for key in ev.keys]
    known = tuple(sorted({c for c in item_cats if c}))
    cat = index(item_cats, known)
    if len(known) < 2 or int((cat >= 0).sum()) < MIN_ITEMS:
        return None
    obs: dict[str, tuple[np.ndarray, np.ndarray]] = extra["obs"]
    k = len(known)
    smoothing = choose(obs, cat, k)
    psi, counts = psi_fitter(obs, ev.models, cat, k, smoothing)(np.zeros(0, dtype=int))
    costs = {m: float(c) for m, c in zip(ev.models, extra["route_cost"])}
    router = Router(None, {m: psi[:, j] for j, m in enumerate(ev.models)},
                    {m: counts[:, j] for j, m in enumerate(ev.models)}, costs, smoothing,
                    categories=known)
    # The items every model answered (where a choice's accuracy can be judged), else all.
    rows = np.flatnonzero((cat >= 0) & ev.asked(range(len(ev.models))))
    if len(rows) < MIN_ITEMS:
        rows = np.flatnonzero(cat >= 0)
    route_cost = np.asarray(extra["route_cost"], dtype=float)
    found_router = Routing(router, spend_curve(ev, rows, cat, k, obs, route_cost, smoothing=smoothing))
    from .router import ClusterModel, routing_dir

    directory = routing_dir(settings)
    clusters = ClusterModel.load(directory, settings)
    classifier = Classifier.load(directory, clusters.fingerprint if clusters else None)
    if clusters is None or classifier is None:
        return found_router
    # Every profiled prompt's predicted category, as at route time (the training prompts'
    # cross-fitted ones from the classifier's file, the others' from the classifier, cached).
    guessed = predicted_of_profile(classifier, clusters, store, directory,
                                   [key for key in ev.keys if key not in classifier.known])
    names = classifier.categories
    by_name = [names[classifier.known[key]] if key in classifier.known else names[guessed[key]]
               for key in ev.keys]
    predicted = index(by_name, known)
    z = text_z(ev, rows, cat, predicted, k, obs, route_cost, smoothing=smoothing)
    found_router.classifier = classifier
    found_router.text_router = dataclasses.replace(router, switch_z=z, _penalty=None)
    found_router.text_curve = spend_curve(ev, rows, cat, k, obs, route_cost, smoothing=smoothing,
                                          switch_z=z, routed=predicted)
    return found_router
