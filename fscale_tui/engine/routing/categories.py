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

Arrays in, arrays out, except :func:`load`, which reads the stored profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .router import SWITCH_Z, Router, choose_smoothing, compute_psi

if TYPE_CHECKING:
    from ..base.settings import Settings
    from .planner import Evidence

#: Fewer profiled prompts with a category than this: no category router.
MIN_ITEMS = 50
FOLDS = 2


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
                smoothing: float, switch_z: float = SWITCH_Z, seed: int = 0
                ) -> list[dict[str, float]]:
    """The category router's λ sweep on ``rows`` (items with a category): per distinct
    choice, its spend as it runs (Ψ on every observation) and its cross-fitted accuracy
    (``planner.router_spend``); what ``spend_mix`` picks a budget's λ from."""
    from .planner import router_points, router_spend

    by_cat = dataclasses.replace(ev, clusters=np.where(cat >= 0, cat, 0), k=k)
    psi_without = psi_fitter(obs, ev.models, cat, k, smoothing)
    fold = np.random.default_rng(seed).permutation(len(rows)) % FOLDS
    points = router_points(by_cat, rows, [rows[fold == f] for f in range(FOLDS)], psi_without,
                           route_cost, smoothing=smoothing, switch_z=switch_z)
    psi, counts = psi_without(rows[:0])
    return router_spend(by_cat, rows, psi, counts, route_cost, [a for _, a in points],
                        smoothing=smoothing, switch_z=switch_z)


def load(settings: Settings) -> tuple[Router, list[dict[str, float]]] | None:
    """The category router of the stored profile and its spend curve (:func:`spend_curve`);
    None when fewer than :data:`MIN_ITEMS` profiled prompts (or fewer than two categories)
    have a category."""
    from .planner import evidence_from_profile
    from .profile import ProfileStore

    found = evidence_from_profile(settings)
    if found is None:
        return None
    ev, extra = found
    store = ProfileStore.for_settings(settings)
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
    return router, spend_curve(ev, rows, cat, k, obs, np.asarray(extra["route_cost"], dtype=float),
                               smoothing=smoothing)
