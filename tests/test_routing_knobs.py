"""Routing knobs chosen on validation: Ψ's shrinkage (cross-fitted), the representation and K
(``knobs.select_router``), and the oracle LP bound the bench reports."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fscale_tui.engine.routing.knobs import bound_at, lp_bound, select_router
from fscale_tui.engine.routing.router import SMOOTHING_GRID, choose_smoothing


def test_smoothing_is_strong_when_clusters_say_nothing_and_weak_when_they_do():
    # Every cluster has the model's global error rate: any per-cluster estimate is noise.
    flat = {f"m{m}": (np.repeat(np.arange(20), 15),
                      (np.random.default_rng(m).random(300) < 0.4).astype(float)) for m in range(4)}
    s_flat, scores = choose_smoothing(flat, 20)
    assert s_flat >= 50 and set(scores) == set(SMOOTHING_GRID)
    # Clusters differ a lot and are well observed: trust them (little shrinkage).
    rates = np.array([0.05, 0.95, 0.1, 0.9, 0.5])
    sharp = {f"m{m}": (np.repeat(np.arange(5), 200),
                       (np.random.default_rng(10 + m).random(1000) < np.repeat(rates, 200)).astype(float))
             for m in range(3)}
    s_sharp, scores = choose_smoothing(sharp, 5)
    assert s_sharp <= 5
    assert scores[s_sharp] < scores[max(SMOOTHING_GRID)]


def test_smoothing_falls_back_to_the_default_without_enough_observations():
    s, scores = choose_smoothing({"m": (np.array([0, 1]), np.array([1.0, 0.0]))}, 2)
    assert s == 5.0 and scores == {}


def test_select_router_prefers_clusters_that_separate_who_is_right():
    rng = np.random.default_rng(1)
    n = 1200
    topic = rng.integers(0, 2, n)  # model 0 is right on topic 0, model 1 on topic 1
    correct = np.stack([(topic == 0) | (rng.random(n) < 0.3),
                        (topic == 1) | (rng.random(n) < 0.3)], axis=1).astype(float)
    costs = np.array([0.2, 0.2])
    perm = rng.permutation(n)
    train, val = perm[:600], perm[600:900]
    fit_rows = {0: train, 1: val}  # model 1 onboarded on val only
    cands = {"topic": (topic, 2), "noise": (rng.integers(0, 2, n), 2)}
    sel = select_router(cands, correct, fit_rows, val, costs, budget=0.2)
    assert sel.name == "topic" and sel.k == 2
    assert sel.table["topic"]["val_auc"] > sel.table["noise"]["val_auc"] + 0.2
    assert sel.lam_budget is not None and sel.smoothing in SMOOTHING_GRID
    # Equal prices: the whole curve is one cost, so the budget mix is that point, p irrelevant.
    la, lb, p = sel.budget_mix
    assert 0.0 <= p <= 1.0


def test_budget_mix_spends_the_budget_between_two_hull_points():
    from fscale_tui.engine.routing.knobs import _budget_mix

    pts = [(0.1, 0.4), (0.2, 0.6), (0.15, 0.45), (0.9, 0.65)]
    la, lb, p = _budget_mix(pts, [3.0, 0.5, 1.0, 0.0], 0.15)
    # (0.15, 0.45) is under the chord from (0.1, 0.4) to (0.2, 0.6): mix those two half-half.
    assert (la, lb) == (3.0, 0.5) and p == pytest.approx(0.5)
    assert _budget_mix(pts, [3.0, 0.5, 1.0, 0.0], 0.05) is None


def test_lp_bound_on_a_tiny_case():
    # Two equal clusters; the cheap model is right on the first only, the dear one on both.
    acc = np.array([[1.0, 1.0], [0.0, 1.0]])
    hull = lp_bound(acc, np.array([1, 1]), np.array([1.0, 2.0]))
    assert hull == [(1.0, 0.5), (1.5, 1.0)]
    assert bound_at(hull, 1.25) == pytest.approx(0.75)  # half of cluster 2 on the dear model
    assert bound_at(hull, 0.5) is None and bound_at(hull, 5.0) == 1.0


def test_lp_bound_matches_the_hull_of_every_assignment():
    rng = np.random.default_rng(3)
    acc = rng.random((3, 4))
    w = rng.integers(1, 10, 3).astype(float)
    costs = np.array([0.1, 0.2, 0.5, 0.9])
    hull = lp_bound(acc, w, costs)
    # Brute force: every deterministic assignment; the LP frontier is their upper concave hull.
    pts = [((w * costs[list(a)]).sum() / w.sum(), (w * acc[np.arange(3), list(a)]).sum() / w.sum())
           for a in itertools.product(range(4), repeat=3)]
    for budget in np.linspace(0.1, 0.9, 33):
        best = max(a for c, a in pts if c <= budget + 1e-12)
        # mixing two assignments on either side of the budget can only do better
        mixed = max([best] + [a1 + (a2 - a1) * (budget - c1) / (c2 - c1)
                              for (c1, a1), (c2, a2) in itertools.product(pts, pts)
                              if c1 <= budget < c2])
        assert bound_at(hull, budget) == pytest.approx(mixed, abs=1e-9)
