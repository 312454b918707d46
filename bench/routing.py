"""Routing on the shared MMLU-Pro replay set (14 real models, 5943 items).

    python bench/routing.py [--src /work/shared/data/mmlu_pro_replay] [--seeds 5] [--json]

Everything runs in-process on the recorded answers with the engine's own functions (the same
code paths as ``fscale profile``/``route``/``calibrate``/``-k auto``): ``ClusterModel`` (hashed
TF-IDF + K-means), ``Router.add_model``/``choose_many`` (Ψ with Laplace smoothing, argmin Ψ +
λ·cost).

(a) Router quality: questions split 40/30/30 into train (cluster fitting) / validation /
    test; the 14 models are profiled on train+validation; accuracy vs mean cost on test for
    a λ sweep, against the best single model (the cost/accuracy frontier of single models),
    random routing (uniform over the k cheapest models, k = 1…14), a per-prompt k-nearest-
    neighbour router (the baseline UniRoute compares with) and the oracle. Area under the
    curve = mean over cost budgets c in [cheapest, dearest] of the best accuracy reached at
    cost <= c (a step curve), so 1.0 would be perfect at every budget.
(b) Onboarding: 4 models are held out; the others are profiled on train+validation, the 4
    join by being profiled on the validation split only (no refit).

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

from fscale_tui.engine.routing.mmlu import load_replay_set, split_indices  # noqa: E402
from fscale_tui.engine.routing.router import DEFAULT_K, ClusterModel, Router, compute_psi  # noqa: E402

LAMBDAS = np.concatenate([np.linspace(0, 0.3, 61), np.linspace(0.35, 2.0, 12), [3.0, 5.0, 10.0, 20.0]])
BUDGETS = (0.15, 0.2, 0.3, 0.5, 0.9)
HELD_OUT = ("gemini-1.5-flash-002", "Qwen1.5-72B-Chat", "mathstral-7B", "Phi-3-mini-4k-instruct")
NN_K = 50


def frontier_auc(points: list[tuple[float, float]], lo: float, hi: float, grid: int = 801) -> float:
    """Mean over budgets c in [lo, hi] of the best accuracy among points with cost <= c."""
    pts = sorted(points)
    cs = np.linspace(lo, hi, grid)
    best = np.zeros(grid)
    for cost, acc in pts:
        best[cs >= cost - 1e-12] = np.maximum(best[cs >= cost - 1e-12], acc)
    return float(best.mean())


def best_at(points: list[tuple[float, float]], budget: float) -> float:
    return max((a for c, a in points if c <= budget + 1e-12), default=0.0)


def router_for(models, cl_prof, errors_prof, costs, k, prof_rows_by_model):
    router = Router(None, {}, {}, {})
    router.clusters = None
    for m in models:
        rows = prof_rows_by_model[m]
        router.psi[m], router.counts[m] = compute_psi(cl_prof[rows], errors_prof[m][rows], k,
                                                      smoothing=router.smoothing)
        router.costs[m] = costs[m]
    return router


def curve_router(router, models, cl_test, correct_test, costs):
    pts = []
    for lam in LAMBDAS:
        ch = router.choose_many(cl_test, float(lam), models)
        idx = np.array([models.index(models[c]) for c in ch])
        pts.append((float(np.mean([costs[models[c]] for c in ch])),
                    float(correct_test[np.arange(len(ch)), idx].mean())))
    return pts


def curve_nn(x_prof, err_prof_mat, x_test, correct_test, cost_vec, smoothing=5.0):
    sims = x_test @ x_prof.T
    nn = np.argpartition(-sims, NN_K, axis=1)[:, :NN_K]
    prior = err_prof_mat.mean(0)
    est = (err_prof_mat[nn].sum(1) + smoothing * prior) / (NN_K + smoothing)
    pts = []
    for lam in LAMBDAS:
        ch = (est + lam * cost_vec).argmin(1)
        pts.append((float(cost_vec[ch].mean()), float(correct_test[np.arange(len(ch)), ch].mean())))
    return pts


def curve_oracle(correct_test, cost_vec):
    pts = []
    for lam in LAMBDAS:
        ch = ((1 - correct_test) + lam * cost_vec + 1e-9 * cost_vec).argmin(1)
        pts.append((float(cost_vec[ch].mean()), float(correct_test[np.arange(len(ch)), ch].mean())))
    return pts


def curve_random(correct_test, cost_vec, seed=0):
    rng = np.random.default_rng(seed)
    order = np.argsort(cost_vec, kind="stable")
    pts = []
    for k in range(1, len(order) + 1):
        ch = order[rng.integers(0, k, size=len(correct_test))]
        pts.append((float(cost_vec[ch].mean()), float(correct_test[np.arange(len(ch)), ch].mean())))
    return pts


def summarise(name, pts, lo, hi):
    return {"name": name, "auc": round(frontier_auc(pts, lo, hi), 4),
            "best_accuracy": round(max(a for _, a in pts), 4),
            "best_at_budget": {str(b): round(best_at(pts, b), 4) for b in BUDGETS}}


def routing_experiment(rs, correct, x, seed, held_out=()):
    n = len(rs.tasks)
    tr, va, te = (np.array(p) for p in split_indices(n, [0.4, 0.3, 0.3], seed))
    models = list(rs.models)
    costs = rs.costs
    cost_vec = np.array([costs[m] for m in models])
    texts = [t.text for t in rs.tasks]
    cm = ClusterModel.fit([texts[i] for i in tr], DEFAULT_K, seed=seed)
    cl = cm.assign(texts)
    err = {m: 1.0 - correct[:, j] for j, m in enumerate(models)}
    trva = np.concatenate([tr, va])
    rows = {m: (va if m in held_out else trva) for m in models}
    router = Router(cm, {}, {}, {})
    for m in models:  # the same call a new model's profile makes: no refit, no other model touched
        router.add_model(m, cl[rows[m]], err[m][rows[m]], costs[m])
    correct_test = correct[te]
    pts_router = curve_router(router, models, cl[te], correct_test, costs)
    err_mat = 1.0 - correct
    # NN router: per-prompt neighbours among the profiled prompts (held-out models: val only).
    x_prof = x[trva]
    prof_err = err_mat[trva].copy()
    if held_out:
        in_val = np.isin(trva, va)
        for j, m in enumerate(models):
            if m in held_out:
                prof_err[~in_val, j] = np.nan
        # neighbours of a held-out model come from validation prompts only
        pts_nn = curve_nn_masked(x_prof, prof_err, x[te], correct_test, cost_vec)
    else:
        pts_nn = curve_nn(x_prof, prof_err, x[te], correct_test, cost_vec)
    single = [(float(cost_vec[j]), float(correct_test[:, j].mean())) for j in range(len(models))]
    lo, hi = float(cost_vec.min()), float(cost_vec.max())
    best_j = int(np.argmax([a for _, a in single]))
    out = {
        "seed": seed, "split": [len(tr), len(va), len(te)], "k": cm.k,
        "best_single": {"model": models[best_j], "accuracy": round(single[best_j][1], 4),
                        "cost": single[best_j][0]},
        "curves": [summarise("router (ours)", pts_router, lo, hi),
                   summarise("nearest-neighbour router", pts_nn, lo, hi),
                   summarise("best single model (frontier)", single, lo, hi),
                   summarise("random", curve_random(correct_test, cost_vec, seed), lo, hi),
                   summarise("oracle", curve_oracle(correct_test, cost_vec), lo, hi)],
    }
    best_router = max(pts_router, key=lambda p: p[1])
    out["router_gain_points"] = round(100 * (best_router[1] - single[best_j][1]), 2)
    out["router_best_point"] = {"cost": round(best_router[0], 4), "accuracy": round(best_router[1], 4),
                                "lambda": float(LAMBDAS[pts_router.index(best_router)])}
    return out, (router, cm, cl, tr, va, te)


def curve_nn_masked(x_prof, prof_err, x_test, correct_test, cost_vec, smoothing=5.0):
    sims = x_test @ x_prof.T
    est = np.zeros((len(x_test), prof_err.shape[1]))
    for j in range(prof_err.shape[1]):
        ok = ~np.isnan(prof_err[:, j])
        s = sims[:, ok]
        e = prof_err[ok, j]
        nn = np.argpartition(-s, NN_K, axis=1)[:, :NN_K]
        est[:, j] = (e[nn].sum(1) + smoothing * e.mean()) / (NN_K + smoothing)
    pts = []
    for lam in LAMBDAS:
        ch = (est + lam * cost_vec).argmin(1)
        pts.append((float(cost_vec[ch].mean()), float(correct_test[np.arange(len(ch)), ch].mean())))
    return pts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="/work/shared/data/mmlu_pro_replay")
    ap.add_argument("--seeds", type=int, default=5, help="router: repeat on this many random splits")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.monotonic()
    rs = load_replay_set(Path(args.src))
    gold = np.array([t.label for t in rs.tasks])
    correct = np.stack([np.array([a == g for a, g in zip(rs.answers[m], gold)]) for m in rs.models], 1).astype(float)
    report = {"items": len(rs.tasks), "models": len(rs.models)}
    primary = None
    gains, auc_r, auc_nn = [], [], []
    for seed in range(args.seeds):
        # The NN baseline embeds with the same embedder the clusters were fitted with.
        n = len(rs.tasks)
        tr = np.array(split_indices(n, [0.4, 0.3, 0.3], seed)[0])
        emb = ClusterModel.fit([rs.tasks[i].text for i in tr], 1, seed=seed).embedder
        x = emb.transform([t.text for t in rs.tasks])
        res, _ = routing_experiment(rs, correct, x, seed)
        gains.append(res["router_gain_points"])
        auc_r.append(res["curves"][0]["auc"])
        auc_nn.append(res["curves"][1]["auc"])
        if seed == 0:
            primary, x0 = res, x
    report["routing"] = primary
    report["routing_over_seeds"] = {"seeds": args.seeds, "gain_points": gains,
                                    "mean_gain_points": round(float(np.mean(gains)), 2),
                                    "auc_router": auc_r, "auc_nn": auc_nn}
    onboard, _ = routing_experiment(rs, correct, x0, 0, held_out=HELD_OUT)
    onboard["held_out"] = list(HELD_OUT)
    report["onboarding"] = onboard
    report["wall_s"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print_report(report)
    return 0


def print_report(r) -> None:
    def curves(block):
        print(f"  best single model on test: {block['best_single']['model']} "
              f"{block['best_single']['accuracy']:.1%} at cost {block['best_single']['cost']:g}")
        print(f"  router best: {block['router_best_point']['accuracy']:.1%} at cost "
              f"{block['router_best_point']['cost']:.3f} (λ={block['router_best_point']['lambda']:g}), "
              f"gain {block['router_gain_points']:+.2f} points")
        head = "  " + f"{'curve':<30}{'AUC':>7}{'best':>8}" + "".join(f"{'≤' + str(b):>8}" for b in BUDGETS)
        print(head)
        for c in block["curves"]:
            print("  " + f"{c['name']:<30}{c['auc']:>7.4f}{c['best_accuracy']:>8.1%}"
                  + "".join(f"{c['best_at_budget'][str(b)]:>8.1%}" for b in BUDGETS))

    print(f"MMLU-Pro replay: {r['items']} items, {r['models']} models")
    print(f"\n(a) router quality (seed 0, split {r['routing']['split']}, K={r['routing']['k']})")
    curves(r["routing"])
    o = r["routing_over_seeds"]
    print(f"  over {o['seeds']} splits: gain {o['gain_points']} (mean {o['mean_gain_points']:+.2f}); "
          f"AUC router {o['auc_router']} vs NN {o['auc_nn']}")
    print(f"\n(b) onboarding: {', '.join(r['onboarding']['held_out'])} profiled on validation only")
    curves(r["onboarding"])
    print(f"\nwall time {r['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
