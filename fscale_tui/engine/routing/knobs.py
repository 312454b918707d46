"""Choosing a router's knobs on validation data only (never on the data it is judged on).

A router has knobs: the prompt representation and K (which clusters), Ψ's shrinkage s and
the cost weight λ. :func:`select_router` chooses them from a labelled validation part by
cross-fitting: the validation items are cut into folds; for each fold the router's Ψ is
fitted on every observation it may use except that fold's (a model profiled on the training
part keeps all of its observations, a model onboarded on validation loses the fold's), and
its choices on the fold are scored with every model's recorded answers there. The
representation with the largest cross-fitted area under the cost/accuracy curve wins; s is
chosen per representation by :func:`router.choose_smoothing` on the observations alone; λ is
read off the pooled cross-fitted curve: the most accurate λ, and the most accurate λ whose
validation cost stays within a budget.

Arrays, no I/O: ``bench/routing.py`` uses it on the MMLU-Pro replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .router import choose_smoothing, compute_psi

#: λ values swept (score = Ψ + λ·cost; costs in USD per million tokens).
#: A grid of λ: a list, or an array such as :data:`LAMBDAS`.
Lambdas = Sequence[float] | np.ndarray
LAMBDAS = np.concatenate([np.linspace(0, 0.3, 61), np.linspace(0.35, 2.0, 12), [3.0, 5.0, 10.0, 20.0]])


def frontier_auc(points: Sequence[tuple[float, float]], lo: float, hi: float, grid: int = 801) -> float:
    """Mean over budgets c in [lo, hi] of the best accuracy among points with cost <= c."""
    cs = np.linspace(lo, hi, grid)
    best = np.zeros(grid)
    for cost, acc in points:
        reach = cs >= cost - 1e-12
        best[reach] = np.maximum(best[reach], acc)
    return float(best.mean())


def psi_table(cluster_ids: np.ndarray, errors: np.ndarray, rows: Mapping[int, np.ndarray], k: int,
              smoothing: float) -> np.ndarray:
    """(k × models) Ψ from each model's observation rows (``rows[j]``: item indices)."""
    return np.stack([compute_psi(cluster_ids[rows[j]], errors[rows[j], j], k, smoothing=smoothing)[0]
                     for j in range(errors.shape[1])], axis=1)


def choices(psi: np.ndarray, cluster_ids: np.ndarray, costs: np.ndarray,
            lambdas: Lambdas = LAMBDAS) -> np.ndarray:
    """(λ × items) index of the chosen model: argmin Ψ + λ·cost (ties to the cheaper model)."""
    order = np.argsort(costs, kind="stable")  # argmin returns the first: list cheaper first
    out = np.empty((len(lambdas), len(cluster_ids)), dtype=int)
    for i, lam in enumerate(lambdas):
        table = (psi + lam * costs)[:, order]
        out[i] = order[table[cluster_ids].argmin(1)]
    return out


def curve(chosen: np.ndarray, correct: np.ndarray, costs: np.ndarray) -> list[tuple[float, float]]:
    """(mean cost, accuracy) per λ row of ``chosen`` on the items of ``correct``."""
    rows = np.arange(correct.shape[0])
    return [(float(costs[c].mean()), float(correct[rows, c].mean())) for c in chosen]


@dataclass
class Selection:
    name: str  # the chosen representation
    k: int
    smoothing: float
    lam_best: float  # the λ with the best validation accuracy
    lam_budget: float | None  # the best λ whose validation cost is within the budget
    val_auc: float
    table: dict[str, dict[str, Any]] = field(default_factory=dict)  # every candidate's figures
    #: (λ_a, λ_b, p): route a share p of prompts (drawn at random) with λ_a and the rest with
    #: λ_b, the pair of the validation curve's hull that spends the budget (None: no budget)
    budget_mix: tuple[float, float, float] | None = None


def select_router(candidates: Mapping[str, tuple[np.ndarray, int]], correct: np.ndarray,
                  fit_rows: Mapping[int, np.ndarray], val: np.ndarray, costs: np.ndarray, *,
                  budget: float | None = None, lambdas: Lambdas = LAMBDAS, folds: int = 2,
                  seed: int = 0) -> Selection:
    """Choose representation/K, s and λ on the validation items ``val`` (see the module doc).

    ``candidates``: name -> (cluster id of every item, K); ``correct``: (items × models) 0/1;
    ``fit_rows[j]``: the items whose answers of model j may fit Ψ; ``budget``: the mean cost
    the budget λ must stay within on validation.
    """
    errors = 1.0 - correct
    lo, hi = float(costs.min()), float(costs.max())
    fold = np.random.default_rng(seed).permutation(len(val)) % folds
    table: dict[str, dict[str, Any]] = {}
    best: tuple[float, str] | None = None
    pooled: dict[str, np.ndarray] = {}
    for name, (ids, k) in candidates.items():
        obs = {j: (ids[fit_rows[j]], errors[fit_rows[j], j]) for j in range(correct.shape[1])}
        s, _ = choose_smoothing(obs, k, seed=seed)
        picked = np.empty((len(lambdas), len(val)), dtype=int)
        aucs = []
        for f in range(folds):
            held = val[fold == f]
            rows = {j: np.setdiff1d(fit_rows[j], held, assume_unique=True) for j in fit_rows}
            psi = psi_table(ids, errors, rows, k, s)
            ch = choices(psi, ids[held], costs, lambdas)
            picked[:, fold == f] = ch
            aucs.append(frontier_auc(curve(ch, correct[held], costs), lo, hi))
        pooled[name] = picked
        auc = float(np.mean(aucs))
        table[name] = {"k": k, "smoothing": s, "val_auc": round(auc, 4)}
        if best is None or auc > best[0] + 1e-12:
            best = (auc, name)
    assert best is not None
    name = best[1]
    pts = curve(pooled[name], correct[val], costs)
    accs = np.array([a for _, a in pts])
    cost = np.array([c for c, _ in pts])
    # The most accurate λ; among equals the cheapest.
    i_best = int(np.lexsort((cost, -accs))[0])
    i_budget = None
    mix = None
    if budget is not None:
        ok = np.flatnonzero(cost <= budget + 1e-12)
        if len(ok):
            i_budget = int(ok[np.lexsort((cost[ok], -accs[ok]))[0]])
        mix = _budget_mix(pts, lambdas, budget)
    return Selection(name, int(candidates[name][1]), float(table[name]["smoothing"]),
                     float(lambdas[i_best]), None if i_budget is None else float(lambdas[i_budget]),
                     best[0], table, mix)


def _budget_mix(pts: list[tuple[float, float]], lambdas: Lambdas, budget: float
                ) -> tuple[float, float, float] | None:
    """The two λ of the curve's hull around ``budget`` and the share p of the first."""
    hull = upper_hull(pts)
    if not hull or budget < hull[0][0] - 1e-12:
        return None
    lam_of: dict[tuple[float, float], float] = {}
    for value, p in zip(lambdas, pts):
        lam_of.setdefault((round(p[0], 12), round(p[1], 12)), float(value))

    def lam(point: tuple[float, float]) -> float:
        return lam_of[(round(point[0], 12), round(point[1], 12))]

    for a, b in zip(hull, hull[1:]):
        if budget <= b[0]:
            share = (b[0] - budget) / (b[0] - a[0]) if b[0] > a[0] else 0.0
            return lam(a), lam(b), float(share)
    return lam(hull[-1]), lam(hull[-1]), 1.0


def lp_bound(acc: np.ndarray, weights: np.ndarray, costs: np.ndarray) -> list[tuple[float, float]]:
    """The best (cost, accuracy) frontier of any per-cluster mix of models, knowing ``acc``
    (clusters × models, accuracy of each model on each cluster) exactly.

    The linear programme max Σ_c w_c Σ_m x_cm acc_cm s.t. Σ_c w_c Σ_m x_cm cost_m ≤ B,
    Σ_m x_cm = 1, x ≥ 0 is solved by its Lagrangian: for each λ every cluster takes
    argmax acc − λ·cost; every vertex of the frontier is such a solution for a λ just
    beside a breakpoint (acc_ca − acc_cb) / (cost_a − cost_b), and the frontier between
    adjacent vertices is their interpolation (mixing the two solutions). Returns the
    vertices, cheapest first; :func:`bound_at` reads the frontier at a budget.
    """
    acc = np.asarray(acc, dtype=float)
    w = np.asarray(weights, dtype=float) / np.sum(weights)
    costs = np.asarray(costs, dtype=float)
    da = acc[:, :, None] - acc[:, None, :]
    dc = costs[None, :, None] - costs[None, None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        breaks = np.where(dc != 0, da / np.where(dc != 0, dc, 1), np.nan)
    lams = np.unique(breaks[np.isfinite(breaks) & (breaks >= 0)])
    eps = 1e-9
    lams = np.unique(np.concatenate([[0.0], lams - eps, lams + eps, [1e9]]))
    lams = lams[lams >= 0]
    points: set[tuple[float, float]] = set()
    for chunk in np.array_split(lams, max(1, len(lams) // 2000)):
        score = acc[None] - chunk[:, None, None] * costs[None, None, :]  # λ × c × m
        # Ties: the cheaper model first (an accurate tie costs nothing).
        order = np.argsort(costs, kind="stable")
        pick = order[score[:, :, order].argmax(2)]
        pc = (w[None] * costs[pick]).sum(1)
        pa = (w[None] * np.take_along_axis(np.broadcast_to(acc, (len(chunk),) + acc.shape),
                                           pick[:, :, None], 2)[:, :, 0]).sum(1)
        points.update(zip(np.round(pc, 12), np.round(pa, 12)))
    return upper_hull(points)


def upper_hull(points: Any) -> list[tuple[float, float]]:
    """The upper concave hull of (cost, accuracy) points, cheapest first: what mixing the
    points' policies at random (prompt by prompt) can reach."""
    hull: list[tuple[float, float]] = []
    for c, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if hull and a <= hull[-1][1]:
            continue  # dearer and no more accurate: never on the frontier
        while len(hull) >= 2:
            (c1, a1), (c2, a2) = hull[-2], hull[-1]
            if (a2 - a1) * (c - c1) <= (a - a1) * (c2 - c1):
                hull.pop()  # the middle point is under the chord
            else:
                break
        hull.append((float(c), float(a)))
    return hull


def bound_at(hull: Sequence[tuple[float, float]], budget: float) -> float | None:
    """The frontier's accuracy at mean cost ``budget`` (None below the cheapest vertex)."""
    if not hull or budget < hull[0][0] - 1e-12:
        return None
    for (c1, a1), (c2, a2) in zip(hull, hull[1:]):
        if budget <= c2:
            return a1 + (a2 - a1) * (budget - c1) / (c2 - c1) if c2 > c1 else a2
    return hull[-1][1]
