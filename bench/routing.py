"""Routing on the shared MMLU-Pro replay set (14 real models, 5943 items).

    python bench/routing.py [--seeds 5] [--embed-cache PATH] [--json]

Everything runs in-process on the recorded answers with the engine's own functions:
``embed`` (hashed TF-IDF; the local model's llama.cpp embeddings read from the cache
``fscale profile --embedding local`` fills), ``clusters.kmeans``, ``router.compute_psi`` /
``choose_smoothing`` (Ψ shrunk toward each model's global error), ``knobs.select_router`` and
``knobs.lp_bound``.

(a)+(b) Router quality, honestly (``protocol.honest_split``, one split per seed): questions
    40/30/30 train/val/test; 10 models profiled on train, 4 onboarded with their val answers
    only. Clusters are fitted on train prompts. The representation (TF-IDF or local
    embeddings) and K, Ψ's shrinkage s (cross-fitted log-loss) and λ (the most accurate λ, and
    the most accurate λ within 80 % of the best single model's cost, both on val) are chosen
    on val by cross-fitting (``select_router``); test is used once, for the figures. Against:
    the best single model (its test accuracy, at any cost and at the router's cost), the
    nearest-neighbour router (per-prompt k-NN, onboarded models' neighbours from val), the
    cost/accuracy frontier of single models, and the oracle LP bound: the best any
    cluster-level router could do knowing every model's *test* accuracy per cluster, mixing
    models per cluster optimally under the cost budget (per category, TF-IDF K=20/50 and the
    chosen clusters). Area = mean over budgets c in [cheapest, dearest] of the best accuracy
    reached at cost <= c (a step curve over the λ sweep). Over ``--seeds`` seeds: mean, worst.
    ``route --budget 0.7x`` is also run for every knob setting (clusters, Ψ's shrinkage s,
    the switching rule's z) and judged on test: the router with its knobs chosen in
    hindsight (``knob_hindsight``), beside the oracle LP bound.
    The same two figures for items that carry their category (``engine_category_router``:
    the category router of ``routing.categories``, as ``fscale route --batch`` runs it on
    items with a ``category``)
    and for the same items without it (``engine_predicted_router``: the category predicted
    from the text by ``categories.Classifier`` fitted on the train prompts, the switching z
    chosen on val by ``categories.text_z``).
    The local-embedding variant runs on the questions whose vectors are in ``--embed-cache``
    (a random subset while the cache fills), with TF-IDF on the same subset beside it.
The cascade and the adaptive ``-k auto`` are measured by ``bench/auto.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import honest_split, load, mean_worst  # noqa: E402

from fscale_tui.engine.routing.clusters import assign, kmeans  # noqa: E402
from fscale_tui.engine.routing.embed import (LOCAL_DEFAULT_ALIAS, EmbeddingCache, HashedTfidf,  # noqa: E402
                                             LocalEmbedder)
from fscale_tui.engine.routing.knobs import (LAMBDAS, bound_at, choices, curve, frontier_auc,  # noqa: E402
                                             lp_bound, psi_table, select_router)
from fscale_tui.engine.routing.mmlu import select  # noqa: E402
from fscale_tui.engine.routing import categories as C  # noqa: E402
from fscale_tui.engine.routing import planner as P  # noqa: E402
from fscale_tui.engine.routing.router import compute_psi, switch_penalty  # noqa: E402

BUDGET_SHARE = 0.8  # "at <= 80 % of the best single model's cost"
ROUTE_BUDGET = 0.7  # `fscale route --budget 0.7x` (issue 20): λ chosen on val by the engine's planner
K_GRID = (5, 10, 20, 50)
NN_K = 50
DEFAULT_CACHE = Path("/work/cache/fscale-embed/embeddings.sqlite")


def best_at(points, budget: float) -> float:
    return max((a for c, a in points if c <= budget + 1e-12), default=0.0)


def nn_estimates(x, err, fit_rows, items):
    """Per-prompt k-NN error estimates (items × models); model j's neighbours among fit_rows[j]."""
    sims = x[items] @ x[np.unique(np.concatenate(list(fit_rows.values())))].T
    pool = np.unique(np.concatenate(list(fit_rows.values())))
    pos = {int(r): i for i, r in enumerate(pool)}
    est = np.zeros((len(items), err.shape[1]))
    for j, rows in fit_rows.items():
        cols = np.array([pos[int(r)] for r in rows])
        s = sims[:, cols]
        e = err[rows, j]
        nn = np.argpartition(-s, NN_K, axis=1)[:, :NN_K]
        est[:, j] = (e[nn].sum(1) + 5.0 * e.mean()) / (NN_K + 5.0)
    return est


def nn_curve(est, correct_items, cost_vec):
    rows = np.arange(len(est))
    pts = []
    for lam in LAMBDAS:
        ch = (est + lam * cost_vec).argmin(1)
        pts.append((float(cost_vec[ch].mean()), float(correct_items[rows, ch].mean())))
    return pts


def tfidf_vectors(texts, train):
    emb = HashedTfidf().fit([texts[i] for i in train])
    return emb.transform(texts)


def cluster_ids(x, train, k, seed):
    centroids = kmeans(x[train], k, seed=seed)
    return assign(x, centroids)


def lp_bounds(ids_by_name, correct, test, costs, budget):
    """The oracle LP bound at ``budget`` and at any cost, per clustering (test accuracies)."""
    out = {}
    for name, ids in ids_by_name.items():
        c = ids[test]
        labels = np.unique(c)
        acc = np.stack([correct[test][c == u].mean(0) for u in labels])
        w = np.array([(c == u).sum() for u in labels], dtype=float)
        hull = lp_bound(acc, w, costs)
        out[name] = {"at_budget": bound_at(hull, budget), "any_cost": hull[-1][1],
                     "clusters": len(labels)}
    return out


def whole_replay_bound(rs, correct):
    """The finding behind acceptance 2, on the whole dev replay in-sample: the best single
    model, the models cheaper than it, and the oracle LP bound at 80 % / 100 % of its cost."""
    costs = np.array([rs.costs[m] for m in rs.models])
    acc = correct.mean(0)
    j = int(np.argmax(acc))
    cats = sorted({t.category for t in rs.tasks})
    texts = [t.text for t in rs.tasks]
    x = HashedTfidf().fit(texts).transform(texts)
    ids = {"category": np.array([cats.index(t.category) for t in rs.tasks])}
    for k in (20, 50):
        ids[f"tfidf-K{k}"] = assign(x, kmeans(x, k, seed=0))
    out = {"best": {"model": rs.models[j], "accuracy": float(acc[j]), "cost": float(costs[j])},
           "cheaper": [{"model": m, "cost": float(costs[i]), "accuracy": float(acc[i])}
                       for i, m in enumerate(rs.models) if costs[i] < costs[j]], "bound": {}}
    for name, c in ids.items():
        labels = np.unique(c)
        hull = lp_bound(np.stack([correct[c == u].mean(0) for u in labels]),
                        np.array([(c == u).sum() for u in labels], dtype=float), costs)
        out["bound"][name] = {"at_80": bound_at(hull, BUDGET_SHARE * costs[j]),
                              "at_100": bound_at(hull, costs[j]), "any_cost": hull[-1][1]}
    return out


def point(chosen_row, correct_items, cost_vec):
    rows = np.arange(len(chosen_row))
    return float(cost_vec[chosen_row].mean()), float(correct_items[rows, chosen_row].mean())


def run_seed(rs, correct, seed, vectors, categories, k_grid=K_GRID):
    """One honest split: choose on val, report on test. ``vectors``: representation -> callable
    (train indices) -> (items × d) unit rows."""
    sp = honest_split(rs, seed)
    models = list(rs.models)
    cost_vec = np.array([rs.costs[m] for m in models])
    err = 1.0 - correct
    fit_rows = {j: sp.observed(m) for j, m in enumerate(models)}
    # The reference: the best single model as validation says (what a user would pick), judged
    # on test; "hindsight" is the model best on test itself (a stricter comparison).
    val_acc = correct[sp.val].mean(0)
    test_acc = correct[sp.test].mean(0)
    jr, jh = int(np.argmax(val_acc)), int(np.argmax(test_acc))
    best = {"model": models[jr], "accuracy": float(test_acc[jr]), "cost": float(cost_vec[jr])}
    hindsight = {"model": models[jh], "accuracy": float(test_acc[jh]), "cost": float(cost_vec[jh])}
    budget = budget_val = BUDGET_SHARE * best["cost"]
    singles = [(float(cost_vec[j]), float(test_acc[j])) for j in range(len(models))]
    lo, hi = float(cost_vec.min()), float(cost_vec.max())
    out = {"seed": seed, "split": [len(sp.train), len(sp.val), len(sp.test)],
           "onboarded": list(sp.onboarded), "best_single": best, "best_single_hindsight": hindsight,
           "single_frontier_auc": frontier_auc(singles, lo, hi), "routers": {}, "nn": {}}
    ids_all, xs = {}, {}
    for rep, make in vectors.items():
        xs[rep] = make(sp.train)
        for k in k_grid:
            ids_all[f"{rep}-K{k}"] = (cluster_ids(xs[rep], sp.train, k, seed), k)
    groups = {rep: {n: v for n, v in ids_all.items() if n.startswith(rep + "-")} for rep in vectors}
    if len(vectors) > 1:
        groups["val-chosen"] = ids_all
    for name, cands in groups.items():
        sel = select_router(cands, correct, fit_rows, sp.val, cost_vec, budget=budget_val, seed=seed)
        ids, k = cands[sel.name]
        psi = psi_table(ids, err, fit_rows, k, sel.smoothing)
        ch = choices(psi, ids[sp.test], cost_vec)
        pts = curve(ch, correct[sp.test], cost_vec)
        lam_i = list(LAMBDAS).index(sel.lam_best)
        c_best, a_best = pts[lam_i]
        r = {"chosen": sel.name, "k": k, "smoothing": sel.smoothing, "val_auc": round(sel.val_auc, 4),
             "candidates": sel.table, "auc": frontier_auc(pts, lo, hi),
             "lam_best": sel.lam_best, "best": {"cost": c_best, "accuracy": a_best},
             # the best single model (any cost), and the best single model within the router's cost
             "gain_vs_best_single": a_best - best["accuracy"],
             "gain_vs_hindsight_single": a_best - hindsight["accuracy"],
             "gain_at_equal_cost": a_best - best_at(singles, c_best)}
        if sel.budget_mix is not None:
            la, lb, p = sel.budget_mix
            (ca, aa), (cb, ab) = pts[list(LAMBDAS).index(la)], pts[list(LAMBDAS).index(lb)]
            c_m, a_m = p * ca + (1 - p) * cb, p * aa + (1 - p) * ab
            r["budget_mix"] = {"lambdas": [la, lb], "p": p, "cost": c_m, "cost_share": c_m / best["cost"],
                               "accuracy": a_m, "gap_to_best_single": a_m - best["accuracy"]}
        if sel.lam_budget is not None:
            c_b, a_b = pts[list(LAMBDAS).index(sel.lam_budget)]
            r["budget"] = {"lambda": sel.lam_budget, "cost": c_b, "cost_share": c_b / best["cost"],
                           "accuracy": a_b, "gap_to_best_single": a_b - best["accuracy"]}
        r.update(engine_router(rs, correct, sp, ids, k, sel.smoothing, cost_vec, best, seed))
        r.update(engine_category_router(rs, correct, sp, categories, cost_vec, best, seed,
                                        xs[sel.name.rsplit("-", 1)[0]]))
        out["routers"][name] = r
    for rep, x in xs.items():
        est = nn_estimates(x, err, fit_rows, sp.test)
        out["nn"][rep] = {"auc": frontier_auc(nn_curve(est, correct[sp.test], cost_vec), lo, hi)}
    bound_ids = {"category": categories}
    for rep in vectors:
        for k in (20, 50):
            if f"{rep}-K{k}" in ids_all:
                bound_ids[f"{rep}-K{k}"] = ids_all[f"{rep}-K{k}"][0]
    out["lp_bound"] = lp_bounds(bound_ids, correct, sp.test, cost_vec, budget)
    out["lp_bound_route_budget"] = lp_bounds(bound_ids, correct, sp.test, cost_vec,
                                             ROUTE_BUDGET * best["cost"])
    out["budget"] = budget
    out["knob_hindsight"] = knob_hindsight(rs, correct, sp, ids_all, cost_vec, best)
    out["_state"] = (sp, ids_all, fit_rows)
    return out


#: The knobs :func:`knob_hindsight` sweeps: Ψ's shrinkage s and the switching rule's z.
HINDSIGHT_S = (5.0, 20.0, 50.0, 200.0)
HINDSIGHT_Z = (0.0, 1.0, 1.645)


def knob_hindsight(rs, correct, sp, ids_all, cost_vec, best):
    """``route --budget 0.7x`` as the engine runs it (Ψ from the observations, λ from the
    spend on the val prompts) for every knob setting — clusters (representation, K), Ψ's
    shrinkage s, the switching rule's z — judged on **test**: {setting: gap to the best single
    model}. Its maximum is the router with its knobs chosen in hindsight, on the test items
    (an estimate of how far knob choice could go, not a strict bound)."""
    models = list(rs.models)
    err = 1.0 - correct
    amount = ROUTE_BUDGET * best["cost"]
    texts = [rs.tasks[t].text for t in sp.test]
    out = {}
    for name, (ids, k) in ids_all.items():
        ev = P.Evidence(models, np.zeros((len(rs.tasks), len(models)), dtype=int),
                        np.zeros(len(rs.tasks), dtype=int), np.full(len(rs.tasks), 10), ids, k,
                        cost_vec, "usd", models)
        for s in HINDSIGHT_S:
            cols = [compute_psi(ids[sp.observed(m)], err[sp.observed(m), j], k, smoothing=s)
                    for j, m in enumerate(models)]
            psi, counts = np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)
            for z in HINDSIGHT_Z:
                spend = P.router_spend(ev, sp.val, psi, counts, cost_vec, np.zeros(len(LAMBDAS)),
                                       smoothing=s, switch_z=z)
                mix = P.spend_mix(spend, amount)
                table = psi + (switch_penalty(psi, counts, s, z) if z else 0.0)
                pa, pb = choices(table, ids[sp.test], cost_vec, mix["lambdas"])
                first = np.array([P.takes_first(t, mix["p"]) for t in texts])
                pick = np.where(first, pa, pb)
                out[f"{name} s={s:g} z={z:g}"] = float(correct[sp.test, pick].mean()) - best["accuracy"]
    return out


def engine_router(rs, correct, sp, ids, k, smoothing, cost_vec, best, seed):
    """The router as ``fscale route`` runs it: argmin Ψ + λ·cost + the switching penalty
    (``router.switch_penalty``); at λ = 0, and at ``--budget 0.7x`` with λ chosen on val by
    ``planner.router_spend`` / ``spend_mix`` as ``PlanSet.route_budget`` does (the two
    adjacent λ whose spends on the val prompts, Ψ fitted on every observation, bracket the
    budget; prompts split between them by the hash of their text), figures on test."""
    models = list(rs.models)
    err = 1.0 - correct
    ev = P.Evidence(models, np.zeros((len(rs.tasks), len(models)), dtype=int),
                    np.zeros(len(rs.tasks), dtype=int), np.full(len(rs.tasks), 10), ids, k,
                    cost_vec, "usd", models)
    ev.answers[correct == 0] = 1  # right = label 0, wrong = 1: all router_curve needs

    def psi_without(held):
        cols = []
        for j, m in enumerate(models):
            rows = np.setdiff1d(sp.observed(m), held, assume_unique=True)
            cols.append(compute_psi(ids[rows], err[rows, j], k, smoothing=smoothing))
        return np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)

    psi, counts = psi_without(np.zeros(0, dtype=int))
    table = psi + switch_penalty(psi, counts, smoothing)
    test = sp.test
    pick0 = choices(table, ids[test], cost_vec, [0.0])[0]
    acc0 = float(correct[test, pick0].mean())
    fold = np.random.default_rng(seed).permutation(len(sp.val)) % 2
    points = P.router_points(ev, sp.val, [sp.val[fold == f] for f in (0, 1)], psi_without,
                             cost_vec, smoothing=smoothing)
    spend = P.router_spend(ev, sp.val, psi, counts, cost_vec, [a for _, a in points],
                           smoothing=smoothing)
    amount = ROUTE_BUDGET * best["cost"]
    mix = P.spend_mix(spend, amount)
    (la, lb), p = mix["lambdas"], mix["p"]
    texts = [rs.tasks[t].text for t in test]
    first = np.array([P.takes_first(t, p) for t in texts])
    pa, pb = choices(table, ids[test], cost_vec, [la, lb])
    pick = np.where(first, pa, pb)
    acc_b = float(correct[test, pick].mean())
    cost_b = float(cost_vec[pick].mean())
    return {"lambda0": {"accuracy": acc0, "cost_share": float(cost_vec[pick0].mean()) / best["cost"],
                        "gain_vs_best_single": acc0 - best["accuracy"]},
            "route_budget": {"lambdas": [la, lb], "p": p, "accuracy": acc_b,
                             "cost_share": cost_b / best["cost"],
                             "spend_vs_budget": cost_b / amount - 1.0,
                             "gap_to_best_single": acc_b - best["accuracy"]}}


def engine_category_router(rs, correct, sp, categories, cost_vec, best, seed, x):
    """``fscale route`` on items that carry their category (``routing.categories``): Ψ per
    model and category from the observations (shrinkage cross-fitted), the switching rule;
    λ = 0, and ``--budget 0.7x`` with λ read off the category router's spend on the val
    prompts (``categories.spend_curve``, ``planner.spend_mix``), figures on test.
    ``predicted``: the same test items *without* their category, as ``fscale route`` runs
    them: the category predicted from the prompt's vector ``x`` (the router's representation)
    by ``categories.Classifier`` fitted on the train prompts (as ``profile --fit-clusters``
    does), the switching z chosen on the val prompts (``categories.text_z``), λ read off the
    spend on the val prompts routed by their predicted categories."""
    models = list(rs.models)
    err = 1.0 - correct
    k = int(categories.max()) + 1
    ev = P.Evidence(models, np.zeros((len(rs.tasks), len(models)), dtype=int),
                    np.zeros(len(rs.tasks), dtype=int), np.full(len(rs.tasks), 10), categories, k,
                    cost_vec, "usd", models)
    ev.answers[correct == 0] = 1
    obs = {m: (sp.observed(m), err[sp.observed(m), j]) for j, m in enumerate(models)}
    s = C.choose(obs, categories, k, seed=seed)
    psi, counts = C.psi_fitter(obs, models, categories, k, s)(np.zeros(0, dtype=int))
    table = psi + switch_penalty(psi, counts, s)
    # λ read off the spend on the val prompts (as engine_router does), accuracy cross-fitted there
    spend = C.spend_curve(ev, sp.val, categories, k, obs, cost_vec, smoothing=s, seed=seed)
    figures = table_figures(rs, correct, sp.test, table, categories, cost_vec, spend, best)
    predicted = engine_predicted_router(rs, correct, sp, categories, cost_vec, best, seed, x, ev,
                                        obs, s, psi, counts)
    return {"predicted": predicted, "category": {"smoothing": s, **figures}}


def table_figures(rs, correct, test, table, ids, cost_vec, spend, best):
    """A (clusters × models) score table's test figures: λ = 0, and ``--budget 0.7x`` with
    the two λ of ``planner.spend_mix`` around the budget on ``spend``, mixed by hash."""
    pick0 = choices(table, ids[test], cost_vec, [0.0])[0]
    acc0 = float(correct[test, pick0].mean())
    amount = ROUTE_BUDGET * best["cost"]
    mix = P.spend_mix(spend, amount)
    (la, lb), p = mix["lambdas"], mix["p"]
    first = np.array([P.takes_first(rs.tasks[t].text, p) for t in test])
    pa, pb = choices(table, ids[test], cost_vec, [la, lb])
    pick = np.where(first, pa, pb)
    acc_b = float(correct[test, pick].mean())
    cost_b = float(cost_vec[pick].mean())
    return {"lambda0": {"accuracy": acc0, "gain_vs_best_single": acc0 - best["accuracy"],
                        "cost_share": float(cost_vec[pick0].mean()) / best["cost"]},
            "route_budget": {"lambdas": [la, lb], "p": p, "accuracy": acc_b,
                             "expected_accuracy": mix["expected_accuracy"],
                             "cost_share": cost_b / best["cost"],
                             "spend_vs_budget": cost_b / amount - 1.0,
                             "gap_to_best_single": acc_b - best["accuracy"]}}


def engine_predicted_router(rs, correct, sp, categories, cost_vec, best, seed, x, ev, obs, s,
                            psi, counts):
    """Test items routed by their predicted category (see :func:`engine_category_router`)."""
    names = [rs.tasks[int(i)].category for i in sp.train]
    keys = [str(int(i)) for i in sp.train]
    clf = C.Classifier.fit(x[sp.train], names, keys, "bench")
    known = tuple(sorted({t.category for t in rs.tasks}))
    to_known = np.array([known.index(c) for c in clf.categories])
    predicted = np.full(len(rs.tasks), -1)
    predicted[sp.train] = to_known[[clf.known[k] for k in keys]]  # the cache: cross-fitted
    rest = np.setdiff1d(np.arange(len(rs.tasks)), sp.train)
    predicted[rest] = to_known[clf.predict(x[rest])]
    k = len(known)
    z = C.text_z(ev, sp.val, categories, predicted, k, obs, cost_vec, smoothing=s, seed=seed)
    table = psi + switch_penalty(psi, counts, s, z)
    spend = C.spend_curve(ev, sp.val, categories, k, obs, cost_vec, smoothing=s, seed=seed,
                          switch_z=z, routed=predicted)
    return {"alpha": clf.alpha, "z": z,
            "classifier_test_accuracy": float((predicted[sp.test] == categories[sp.test]).mean()),
            **table_figures(rs, correct, sp.test, table, predicted, cost_vec, spend, best)}


def experiment(rs, correct, seeds, vectors, label):
    cats = {c: i for i, c in enumerate(sorted({t.category for t in rs.tasks}))}
    categories = np.array([cats[t.category] for t in rs.tasks])
    runs = [run_seed(rs, correct, seed, vectors, categories) for seed in range(seeds)]
    return {"label": label, "items": len(rs.tasks), "runs": runs, "summary": summarise(runs)}


def summarise(runs):
    def mw(values, worst="min"):
        return mean_worst([float(v) for v in values], worst=worst)

    s = {"best_single_accuracy": mw([r["best_single"]["accuracy"] for r in runs]),
         "hindsight_single_accuracy": mw([r["best_single_hindsight"]["accuracy"] for r in runs]),
         "single_frontier_auc": mw([r["single_frontier_auc"] for r in runs]), "routers": {}, "nn": {},
         "lp_bound_at_budget": {}}
    for name in runs[0]["routers"]:
        rr = [r["routers"][name] for r in runs]

        def router_summary(kind, rr=rr):
            """λ = 0 and --budget figures of the category (or predicted-category) router."""
            at = {"lambda0": [x[kind]["lambda0"] for x in rr],
                  "route_budget": [x[kind]["route_budget"] for x in rr]}
            return {f"{kind}_lambda0_gain": mw([x["gain_vs_best_single"] for x in at["lambda0"]]),
                    f"{kind}_lambda0_cost_share": mw([x["cost_share"] for x in at["lambda0"]], "max"),
                    f"{kind}_route_budget_gap": mw([x["gap_to_best_single"] for x in at["route_budget"]]),
                    f"{kind}_route_budget_cost_share": mw([x["cost_share"] for x in at["route_budget"]],
                                                          "max"),
                    f"{kind}_route_budget_spend": mw([x["spend_vs_budget"] for x in at["route_budget"]],
                                                     "max")}

        s["routers"][name] = {
            "auc": mw([x["auc"] for x in rr]),
            "best_accuracy": mw([x["best"]["accuracy"] for x in rr]),
            "gain_vs_best_single": mw([x["gain_vs_best_single"] for x in rr]),
            "gain_vs_hindsight_single": mw([x["gain_vs_hindsight_single"] for x in rr]),
            "gain_at_equal_cost": mw([x["gain_at_equal_cost"] for x in rr]),
            "budget_accuracy": mw([x["budget"]["accuracy"] for x in rr if "budget" in x]),
            "budget_gap": mw([x["budget"]["gap_to_best_single"] for x in rr if "budget" in x]),
            "budget_cost_share": mw([x["budget"]["cost_share"] for x in rr if "budget" in x], "max"),
            "mix_accuracy": mw([x["budget_mix"]["accuracy"] for x in rr if "budget_mix" in x]),
            "mix_cost_share": mw([x["budget_mix"]["cost_share"] for x in rr if "budget_mix" in x], "max"),
            "mix_gap": mw([x["budget_mix"]["gap_to_best_single"] for x in rr if "budget_mix" in x]),
            "auc_minus_nn": mw([x["auc"] - max(r["nn"].values(), key=lambda v: v["auc"])["auc"]
                                for x, r in zip(rr, runs)]),
            "lambda0_accuracy": mw([x["lambda0"]["accuracy"] for x in rr]),
            "lambda0_gain": mw([x["lambda0"]["gain_vs_best_single"] for x in rr]),
            "lambda0_cost_share": mw([x["lambda0"]["cost_share"] for x in rr], "max"),
            "route_budget_accuracy": mw([x["route_budget"]["accuracy"] for x in rr]),
            "route_budget_gap": mw([x["route_budget"]["gap_to_best_single"] for x in rr]),
            "route_budget_cost_share": mw([x["route_budget"]["cost_share"] for x in rr], "max"),
            "route_budget_spend": mw([x["route_budget"]["spend_vs_budget"] for x in rr], "max"),
            "lp_route_budget_gap": mw([r["lp_bound_route_budget"][x["chosen"].rsplit("-", 1)[0] + "-K20"]["at_budget"]
                                       - r["best_single"]["accuracy"]
                                       if (x["chosen"].rsplit("-", 1)[0] + "-K20") in r["lp_bound_route_budget"]
                                       else float("nan") for x, r in zip(rr, runs)], "max"),
            **router_summary("category"), "predicted_classifier_accuracy":
                mw([x["predicted"]["classifier_test_accuracy"] for x in rr]),
            "predicted_z": [x["predicted"]["z"] for x in rr], **router_summary("predicted"),
            "predicted_route_budget_spend_min": mw([x["predicted"]["route_budget"]["spend_vs_budget"]
                                                    for x in rr]),
            "chosen": [x["chosen"] for x in rr], "smoothing": [x["smoothing"] for x in rr]}
    for rep in runs[0]["nn"]:
        s["nn"][rep] = mw([r["nn"][rep]["auc"] for r in runs])
    settings = list(runs[0]["knob_hindsight"])
    fixed = max(settings, key=lambda k: np.mean([r["knob_hindsight"][k] for r in runs]))
    s["knob_hindsight"] = {"per_seed_best": mw([max(r["knob_hindsight"].values()) for r in runs]),
                           "best_fixed": fixed,
                           "best_fixed_gap": mw([r["knob_hindsight"][fixed] for r in runs]),
                           "settings": len(settings)}
    for name in runs[0]["lp_bound"]:
        s["lp_bound_at_budget"][name] = mw([r["lp_bound"][name]["at_budget"] or 0.0 for r in runs], "max")
    return s


def local_vectors(rs, cache_path, home=None, compute=False):
    """The local model's vectors of every question in the cache (rows of those not cached:
    None), computing the missing ones first with ``compute`` (needs the [local] extra)."""
    settings = None
    if compute:
        import os

        if home:
            os.environ["FSCALE_HOME"] = str(home)
        from fscale_tui.engine.catalog.config import load_settings

        settings = load_settings()
    from fscale_tui.engine.providers.local.weights import BUILTIN_WEIGHTS
    from fscale_tui.engine.providers.local.provider import builtin_models

    weights = builtin_models()[LOCAL_DEFAULT_ALIAS].options["weights"]
    emb = LocalEmbedder(LOCAL_DEFAULT_ALIAS, settings, cache=EmbeddingCache(cache_path),
                        model_sha=BUILTIN_WEIGHTS[weights].sha256)
    texts = [t.text for t in rs.tasks]
    if compute:
        order = np.random.default_rng(0).permutation(len(texts))  # a partial cache is a random subset
        t0 = time.monotonic()
        for i in range(0, len(order), 64):
            emb.transform([texts[j] for j in order[i:i + 64]])
            print(json.dumps({"done": min(i + 64, len(order)), "wall_s": round(time.monotonic() - t0, 1),
                              **emb.stats}), file=sys.stderr, flush=True)
    return emb.lookup(texts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/work/shared/data/mmlu_pro_replay", help="the replay set")
    ap.add_argument("--seeds", type=int, default=5, help="honest splits (>= 5)")
    ap.add_argument("--embed-cache", type=Path, default=DEFAULT_CACHE,
                    help="the local model's embedding cache (SQLite) to read question vectors from")
    ap.add_argument("--embed-missing", action="store_true",
                    help="embed the questions missing from --embed-cache first (slow: local model)")
    ap.add_argument("--embed-home", default=None, help="FSCALE_HOME for --embed-missing")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    rs, correct = load(args.src) if args.src else load()
    texts = [t.text for t in rs.tasks]
    report = {"items": len(rs.tasks), "models": len(rs.models), "seeds": args.seeds,
              "prices": {m: rs.costs[m] for m in rs.models}}
    report["finding"] = whole_replay_bound(rs, correct)
    # (a)+(b) on every question with TF-IDF.
    tfidf = {"tfidf": lambda train, texts=texts: tfidf_vectors(texts, train)}
    report["tfidf"] = experiment(rs, correct, args.seeds, tfidf, "all questions, hashed TF-IDF")
    # The local model's embeddings, on the questions the cache holds (TF-IDF beside it).
    vecs = local_vectors(rs, args.embed_cache, args.embed_home, args.embed_missing) \
        if args.embed_cache.exists() or args.embed_missing else [None] * len(texts)
    have = [i for i, v in enumerate(vecs) if v is not None]
    report["local_coverage"] = len(have)
    if len(have) >= 300:
        sub = select(rs, only={rs.tasks[i].id for i in have})
        pos = {t.id: i for i, t in enumerate(rs.tasks)}
        idx = np.array([pos[t.id] for t in sub.tasks])
        x_local = np.stack([vecs[i] for i in idx]).astype(np.float32)
        sub_texts = [t.text for t in sub.tasks]
        both = {"tfidf": lambda train: tfidf_vectors(sub_texts, train),
                "local": lambda train: x_local}
        report["local"] = experiment(sub, correct[idx], args.seeds, both,
                                     f"{len(have)} questions embedded by {LOCAL_DEFAULT_ALIAS}")
    for block in ("tfidf", "local"):
        for r in report.get(block, {}).get("runs", []):
            r.pop("_state", None)
    report["wall_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=1, default=float))
        return 0
    print_report(report)
    return 0


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def pts(x):
    return f"{100 * x:+.2f}"


def print_block(b) -> None:
    s = b["summary"]
    print(f"\n{b['label']} ({b['items']} items; per seed: test items {b['runs'][0]['split'][2]})")
    for key, what in (("best_single", "best single model on val, its test accuracy"),
                      ("best_single_hindsight", "best single model on test (hindsight)")):
        print(f"  {what}: " + ", ".join(
            f"seed {r['seed']} {r[key]['model']} {pct(r[key]['accuracy'])} (${r[key]['cost']:g})"
            for r in b["runs"]))
    for name, r in s["routers"].items():
        print(f"  router [{name}] chosen on val: {', '.join(r['chosen'])}; Ψ shrinkage s = "
              f"{', '.join(f'{v:g}' for v in r['smoothing'])}")
    head = f"  {'figure (test part, mean / worst over seeds)':<58}"
    print(head)

    def row(label, d, fmt=pct):
        print(f"  {label:<58}{fmt(d['mean']):>10} / {fmt(d['worst']):<10}")

    row("best single model (chosen on val): accuracy", s["best_single_accuracy"])
    row("best single model on test (hindsight): accuracy", s["hindsight_single_accuracy"])
    for name, r in s["routers"].items():
        row(f"router [{name}]: accuracy at the val-chosen λ", r["best_accuracy"])
        row(f"router [{name}]: gain vs best single (points)", r["gain_vs_best_single"], pts)
        row(f"router [{name}]: gain vs hindsight single (points)", r["gain_vs_hindsight_single"], pts)
        row(f"router [{name}]: gain vs best single within its cost", r["gain_at_equal_cost"], pts)
        row(f"router [{name}]: accuracy at ≤80% budget λ (val-chosen)", r["budget_accuracy"])
        row(f"router [{name}]: … its cost / best single's cost", r["budget_cost_share"],
            lambda v: f"{100 * v:.0f}%")
        row(f"router [{name}]: … gap to best single (points)", r["budget_gap"], pts)
        row(f"router [{name}]: accuracy mixing 2 val-chosen λ at 80% budget", r["mix_accuracy"])
        row(f"router [{name}]: … its cost / best single's cost", r["mix_cost_share"],
            lambda v: f"{100 * v:.0f}%")
        row(f"router [{name}]: … gap to best single (points)", r["mix_gap"], pts)
    for name, r in s["routers"].items():
        row(f"router [{name}] at λ = 0 (switching rule): accuracy", r["lambda0_accuracy"])
        row(f"router [{name}] at λ = 0: gain vs best single (points)", r["lambda0_gain"], pts)
        row(f"router [{name}] at λ = 0: cost / best single's (max)", r["lambda0_cost_share"],
            lambda v: f"{100 * v:.0f}%")
        row(f"route --budget {ROUTE_BUDGET}x [{name}]: accuracy", r["route_budget_accuracy"])
        row(f"route --budget {ROUTE_BUDGET}x [{name}]: gap to best single", r["route_budget_gap"], pts)
        row(f"route --budget {ROUTE_BUDGET}x [{name}]: cost / best single's (max)",
            r["route_budget_cost_share"], lambda v: f"{100 * v:.0f}%")
        row(f"route --budget {ROUTE_BUDGET}x [{name}]: spend / budget − 1 (max)",
            r["route_budget_spend"], lambda v: f"{100 * v:+.1f}%")
        row(f"oracle LP bound at {ROUTE_BUDGET}x, K=20 − best single (mean / max)",
            r["lp_route_budget_gap"], pts)
        row("items with their category: λ = 0, gain vs best single", r["category_lambda0_gain"], pts)
        row("items with their category: λ = 0, cost / best single's (max)",
            r["category_lambda0_cost_share"], lambda v: f"{100 * v:.0f}%")
        row(f"items with their category: route --budget {ROUTE_BUDGET}x, gap to best single",
            r["category_route_budget_gap"], pts)
        row(f"items with their category: route --budget {ROUTE_BUDGET}x, cost / best single's",
            r["category_route_budget_cost_share"], lambda v: f"{100 * v:.0f}%")
        row(f"items with their category: route --budget {ROUTE_BUDGET}x, spend / budget − 1",
            r["category_route_budget_spend"], lambda v: f"{100 * v:+.1f}%")
        row("text only (category predicted): classifier's test accuracy",
            r["predicted_classifier_accuracy"], lambda v: f"{100 * v:.1f}%")
        print(f"  text only: the switching z chosen on val per seed: {r['predicted_z']}")
        row("text only (category predicted): λ = 0, gain vs best single", r["predicted_lambda0_gain"], pts)
        row(f"text only (category predicted): route --budget {ROUTE_BUDGET}x, gap to best single",
            r["predicted_route_budget_gap"], pts)
        row(f"text only (category predicted): route --budget {ROUTE_BUDGET}x, cost / best single's",
            r["predicted_route_budget_cost_share"], lambda v: f"{100 * v:.0f}%")
        row(f"text only (category predicted): route --budget {ROUTE_BUDGET}x, spend / budget − 1 (max)",
            r["predicted_route_budget_spend"], lambda v: f"{100 * v:+.1f}%")
        row(f"text only (category predicted): route --budget {ROUTE_BUDGET}x, spend / budget − 1 (min)",
            r["predicted_route_budget_spend_min"], lambda v: f"{100 * v:+.1f}%")
    kh = s["knob_hindsight"]
    row(f"route --budget {ROUTE_BUDGET}x, knobs chosen on test per seed",
        kh["per_seed_best"], pts)
    row(f"route --budget {ROUTE_BUDGET}x, best fixed knobs on test",
        kh["best_fixed_gap"], pts)
    print(f"  (knobs in hindsight: {kh['settings']} settings of clusters × Ψ shrinkage s × switching "
          f"z, λ as the engine spends it, judged on test; best fixed: {kh['best_fixed']}; "
          "an estimate of what knob choice could give, not a strict bound)")
    for name, v in s["lp_bound_at_budget"].items():
        row(f"oracle LP bound at 80% cost, clusters = {name} (mean / max)", v)
    for name, r in s["routers"].items():
        row(f"area: router [{name}]", r["auc"], lambda v: f"{v:.4f}")
    for rep, v in s["nn"].items():
        row(f"area: nearest-neighbour router ({rep})", v, lambda v: f"{v:.4f}")
    row("area: best-single frontier", s["single_frontier_auc"], lambda v: f"{v:.4f}")
    for name, r in s["routers"].items():
        row(f"area: router [{name}] − best NN router", r["auc_minus_nn"], lambda v: f"{v:+.4f}")
    print("  per seed (router chosen on val; acc / cost at λ_best; at the budget λ; area; NN area; LP bound):")
    for r in b["runs"]:
        for name, x in r["routers"].items():
            bud = x.get("budget_mix") or {}
            print(f"    seed {r['seed']} [{name}] {x['chosen']:<10} s={x['smoothing']:<5g} "
                  f"{pct(x['best']['accuracy'])} @ ${x['best']['cost']:.3f}  "
                  f"budget {pct(bud.get('accuracy'))} @ {100 * bud.get('cost_share', 0):.0f}%  "
                  f"area {x['auc']:.4f}  NN {max(v['auc'] for v in r['nn'].values()):.4f}  "
                  f"LP(category) {pct(r['lp_bound']['category']['at_budget'])}")


def print_report(r) -> None:
    print(f"MMLU-Pro replay: {r['items']} items, {r['models']} models; {r['seeds']} honest splits "
          f"(questions 40/30/30, 4 models onboarded on val only); everything chosen on val")
    cheap = sorted(r["prices"].items(), key=lambda kv: kv[1])
    print("  prices ($/Mtok): " + ", ".join(f"{m} {c:g}" for m, c in cheap))
    f = r["finding"]
    b = f["best"]
    print(f"\nwhy ≥ best single at ≤ 80% of its cost is out of reach (whole replay, in-sample): the best "
          f"single model is {b['model']} ({pct(b['accuracy'])}, ${b['cost']:g}); cheaper: "
          + ", ".join(f"{c['model']} (${c['cost']:g}, {pct(c['accuracy'])})" for c in f["cheaper"]))
    print("  oracle LP bound (every model's accuracy per cluster known, models mixed per cluster "
          "optimally under the budget):")
    for name, v in f["bound"].items():
        print(f"    clusters = {name:<10} at 80% of its cost {pct(v['at_80'])}, at 100% {pct(v['at_100'])}, "
              f"at any cost {pct(v['any_cost'])}")
    print_block(r["tfidf"])
    if "local" in r:
        print_block(r["local"])
    else:
        print(f"\nlocal embeddings: only {r['local_coverage']} questions cached: not run")
    print(f"\nwall time {r['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
