"""Adaptive ``-k auto`` and the calibrated cascade on the MMLU-Pro replay, honestly split.

    python bench/auto.py [--src /work/shared/data/mmlu_pro_replay] [--seeds 20] [--budget 2.0]
                         [--max-calls 5] [--json]

Protocol (``bench/protocol.py``), per seed: questions train 40 % / val 30 % / test 30 %; 10
models profiled on train, 4 onboarded on val only. Clusters are fitted on train prompts. Every
knob is chosen on val: the posterior's ``spread``, the stopping threshold τ and the number of
models M (the most accurate setting within ``--budget`` calls per item), and the top-3 models
of the baselines (the most accurate measured on their observed rows). On val an onboarded
model's reliabilities come from the *other* half of val (2-fold cross-fitting), so no val item
is scored by a reliability fitted on it; on test every model uses all of its observed rows.
Figures are on test only, as mean and worst over seeds.

Everything runs the engine's own code on the recorded answers: ``ClusterModel``,
``Router.add_model``/``rank`` (the routed order of ``route:N``), ``cascade.adaptive_arrays``
(the ``posterior`` voting rule, as at run time), ``choose_stopping`` / ``adaptive_outcome``
(what ``fscale calibrate`` chooses and ``-k auto`` does), ``calibrate.calibrate_cascade`` /
``apply_cascade`` (what ``scale -k auto --alpha`` does), and ``voting.Majority`` for the
baselines.

(1) Always answer, accuracy over all items and calls (models asked) per item: adaptive
    ``-k auto`` vs the best single model, the top-3 majority vote (a tie goes to the better
    model) and "two, then a third when they disagree".
(2) Abstain with a guarantee (``--alpha``): stages route:1…route:M with the posterior signal,
    thresholds calibrated on val by fixed-sequence Clopper–Pearson at δ/M per stage (val
    scored with cross-fitted reliabilities), applied to test; beside it the fixed cascade of
    ``fscale calibrate --stages route:3,strong`` (route:3, then the 5 most accurate models,
    weighted signal, δ/2 per stage), calibrated and tested the same way. Per α: the share of splits whose
    test risk ≤ α (must be ≥ 1 − δ), coverage (mean and worst), risk, calls per item; and the
    signal's ceiling: the largest share of test items whose most confident part (ranked by
    the last stage's posterior, chosen in hindsight on test, no bound) has risk ≤ α.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import honest_split, load, mean_worst

from fscale_tui.engine.routing.calibrate import apply_cascade, calibrate_cascade
from fscale_tui.engine.routing.cascade import (
    adaptive_arrays,
    adaptive_outcome,
    choose_stopping,
    stage_arrays,
)
from fscale_tui.engine.routing.router import DEFAULT_K, ClusterModel, Router
from fscale_tui.engine.voting import Majority

SPREADS = (3.0, 10.0)
ORDERS = ("routed", "routed-then-best")
ALPHAS = (0.05, 0.1, 0.2)
DELTA = 0.1
DEFAULT_SRC = "/work/shared/data/mmlu_pro_replay"


def fit_router(cm, cl, rows_of, correct, models, costs) -> Router:
    router = Router(cm, {}, {}, {})
    for j, m in enumerate(models):
        rows = rows_of(m)
        router.add_model(m, cl[rows], 1.0 - correct[rows, j], costs[m])
    return router


def scored(rs, idx, router, cl, max_calls, spread, order_mode="routed"):
    """Per-stage posterior confidence and correctness of ``idx`` under ``router``."""
    models = list(rs.models)
    answers = {m: [rs.answers[m][i] for i in idx] for m in models}
    gold = [rs.tasks[i].label for i in idx]
    labels = [rs.tasks[i].answers for i in idx]
    clusters = [int(c) for c in cl[idx]]
    order = {c: router.order(c, max_calls, order_mode) for c in set(clusters)}
    rel = {c: router.reliability(c) for c in set(clusters)}
    return adaptive_arrays(answers, gold, labels, [order[c] for c in clusters],
                           lambda i, m: rel[clusters[i]][m], max_calls, spread=spread)


def fixed_cascade(rs, sp, router, fold_routers, folds, cl, top5):
    """Per-stage (confidence, correct, calls) of the cascade route:3 → the 5 most accurate
    models (weighted signal) on val (cross-fitted, folds concatenated) then test."""
    models = list(rs.models)
    parts = []
    for idx, r in ((folds[0], fold_routers[0]), (folds[1], fold_routers[1]), (sp.test, router)):
        answers = {m: [rs.answers[m][i] for i in idx] for m in models}
        gold = [rs.tasks[i].label for i in idx]
        labels = [rs.tasks[i].answers for i in idx]
        clusters = [int(c) for c in cl[idx]]
        rel = {c: r.reliability(c) for c in set(clusters)}
        members = [[r.rank(c).top(3) for c in clusters], [top5] * len(idx)]
        parts.append(stage_arrays(answers, gold, labels, members, "weighted",
                                  lambda i, m, cs=clusters, rl=rel: rl[cs[i]][m]))
    return tuple([np.concatenate([p[k][s] for p in parts]) for s in range(2)] for k in range(3))


def majority_answers(rs, idx, members, two_then_third=False):
    """Right/wrong per item and calls per item of a plain vote of ``members`` (tie: the
    earlier member, i.e. the better model); ``two_then_third``: the third only on disagreement."""
    rule = Majority("order")
    ok, calls = [], []
    for i in idx:
        labels = rs.tasks[i].answers
        votes = [rs.answers[m][i] for m in members]
        asked = members
        if two_then_third and votes[0] is not None and votes[0] == votes[1]:
            asked = members[:2]
        tally = rule.decide([rule.ballot(m, rs.answers[m][i], p) for p, m in enumerate(asked)],
                            labels)
        ok.append(tally.answer == rs.tasks[i].label)
        calls.append(len(asked))
    return np.array(ok), np.array(calls, dtype=float)


def one_seed(rs, correct, seed, *, budget, max_calls, orders=ORDERS):
    models = list(rs.models)
    sp = honest_split(rs, seed)
    texts = [t.text for t in rs.tasks]
    cm = ClusterModel.fit([texts[i] for i in sp.train], DEFAULT_K, seed=seed)
    cl = cm.assign(texts)
    # Val scored with cross-fitted reliabilities: an onboarded model's Ψ from the other half.
    perm = np.random.default_rng(20_000 + seed).permutation(sp.val)
    folds = [np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2:])]
    fold_routers = [fit_router(cm, cl, lambda m, f=f: folds[1 - f] if m in sp.onboarded
                               else sp.train, correct, models, rs.costs) for f in (0, 1)]
    router = fit_router(cm, cl, sp.observed, correct, models, rs.costs)

    def val_scores(spread, order_mode):
        parts = [scored(rs, folds[f], fold_routers[f], cl, max_calls, spread, order_mode)
                 for f in (0, 1)]
        conf = np.concatenate([p[0] for p in parts])
        ok = np.concatenate([p[1] for p in parts])
        return conf, ok

    # Knobs on val: spread, order, τ, M.
    best = None
    for spread in SPREADS:
        for order_mode in orders:
            vc, vo = val_scores(spread, order_mode)
            tau, m, acc, cpi = choose_stopping(vc, vo, budget=budget)
            if best is None or acc > best[0] + 1e-12:
                best = (acc, spread, order_mode, tau, m, cpi, vc, vo)
    val_acc, spread, order_mode, tau, stop_after, val_cpi, vc, vo = best
    tc, to = scored(rs, sp.test, router, cl, max_calls, spread, order_mode)
    right, calls = adaptive_outcome(tc, to, tau, stop_after)

    measured = {m: float(correct[sp.observed(m), j].mean()) for j, m in enumerate(models)}
    top = sorted(models, key=lambda m: -measured[m])[:3]
    single_ok = correct[sp.test, models.index(top[0])].astype(bool)
    maj_ok, _ = majority_answers(rs, sp.test, top)
    two_ok, two_calls = majority_answers(rs, sp.test, top, two_then_third=True)
    out = {
        "seed": seed, "top3": top, "onboarded": list(sp.onboarded),
        "knobs": {"spread": spread, "order": order_mode, "tau": tau, "stop_after": stop_after,
                  "val_accuracy": round(val_acc, 4), "val_calls": round(val_cpi, 3)},
        "adaptive": {"accuracy": round(float(right.mean()), 4), "calls": round(float(calls.mean()), 3),
                     "one_call_share": round(float((calls == 1).mean()), 4)},
        "best_single": {"accuracy": round(float(single_ok.mean()), 4), "calls": 1.0},
        "top3_majority": {"accuracy": round(float(maj_ok.mean()), 4), "calls": 3.0},
        "two_then_third": {"accuracy": round(float(two_ok.mean()), 4),
                           "calls": round(float(two_calls.mean()), 3)},
    }
    fixed = fixed_cascade(rs, sp, router, fold_routers, folds, cl, top5=sorted(
        models, key=lambda m: -measured[m])[:5])
    fval = np.arange(len(folds[0]) + len(folds[1]))  # rows: val folds, then test
    ftest = np.arange(len(fval), len(fval) + len(sp.test))
    out["gain_vs_top3_points"] = round(100 * (out["adaptive"]["accuracy"]
                                              - out["top3_majority"]["accuracy"]), 2)
    # (2) the cascade with a guarantee: thresholds from val (cross-fitted), figures on test.
    cascade = {}
    for alpha in ALPHAS:
        vconf = [vc[:, s] for s in range(max_calls)]
        vok = [vo[:, s] for s in range(max_calls)]
        thresholds = [st.threshold for st in calibrate_cascade(vconf, vok, alpha, DELTA)]
        cascade[f"adaptive --alpha {alpha}"] = evaluate_cascade(tc, to, thresholds, alpha)
        # The fixed cascade of 'fscale calibrate --stages route:3,strong' (weighted signal).
        fc, fo, fcalls = fixed
        thresholds = [st.threshold for st in calibrate_cascade([c[fval] for c in fc],
                                                               [o[fval] for o in fo], alpha, DELTA)]
        cascade[f"route:3,top-5 {alpha}"] = evaluate_cascade(
            np.stack([c[ftest] for c in fc], 1), np.stack([o[ftest] for o in fo], 1), thresholds,
            alpha, calls=[c[ftest] for c in fcalls])
    out["cascade"] = cascade
    return out


def evaluate_cascade(tc, to, thresholds, alpha, calls=None):
    """Test risk, coverage and calls of a cascade with these thresholds; and the signal's
    ceiling (the largest top share by the last stage's posterior with risk ≤ α, in hindsight)."""
    stages = tc.shape[1]
    by = apply_cascade([tc[:, s] for s in range(stages)], thresholds)
    answered = by >= 0
    wrong = sum(int((~to[by == s, s]).sum()) for s in range(stages))
    risk = wrong / answered.sum() if answered.any() else 0.0
    asked = [s for s, t in enumerate(thresholds) if t is not None]
    if calls is None:  # route:1…route:M: stage s asks s + 1 models
        calls = [np.full(len(by), s + 1.0) for s in range(stages)]
    last = np.where(answered, by, asked[-1] if asked else 0)
    cpi = float(np.mean([calls[s][i] for i, s in enumerate(last)])) if asked else 0.0
    order = np.argsort(-tc[:, stages - 1], kind="stable")
    err = np.cumsum(~to[order, stages - 1]) / np.arange(1, len(order) + 1)
    ok_k = np.flatnonzero(err <= alpha)
    ceiling = float((ok_k.max() + 1) / len(order)) if len(ok_k) else 0.0
    return {"risk": round(float(risk), 4), "valid": bool(risk <= alpha),
            "coverage": round(float(answered.mean()), 4), "calls": round(cpi, 3),
            "ceiling": round(ceiling, 4),
            "thresholds": [None if t is None else round(t, 4) for t in thresholds]}


def summarise(runs, max_calls):
    def col(path):
        vals = []
        for r in runs:
            v = r
            for k in path:
                v = v[k]
            vals.append(float(v))
        return vals

    s = {}
    for name in ("adaptive", "best_single", "top3_majority", "two_then_third"):
        s[name] = {"accuracy": mean_worst(col((name, "accuracy"))),
                   "calls": mean_worst(col((name, "calls")), worst="max")}
    s["gain_vs_top3_points"] = mean_worst(col(("gain_vs_top3_points",)))
    s["seeds_not_below_top3"] = sum(g >= 0 for g in col(("gain_vs_top3_points",)))
    s["cascade"] = {}
    for key in runs[0]["cascade"]:
        s["cascade"][key] = {"valid_share": round(float(np.mean(col(("cascade", key, "valid")))), 3),
                             "coverage": mean_worst(col(("cascade", key, "coverage"))),
                             "risk": mean_worst(col(("cascade", key, "risk")), worst="max"),
                             "calls": mean_worst(col(("cascade", key, "calls")), worst="max"),
                             "ceiling": mean_worst(col(("cascade", key, "ceiling")))}
    s["max_calls"] = max_calls
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=DEFAULT_SRC)
    ap.add_argument("--seeds", type=int, default=20, help="honest splits (≥ 20 for the cascade)")
    ap.add_argument("--budget", type=float, default=2.0, help="calls per item for the adaptive rule")
    ap.add_argument("--max-calls", type=int, default=5, help="most models an item may be asked")
    ap.add_argument("--orders", default=",".join(ORDERS),
                    help="routing orders to choose from on val (routed, routed-then-best)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    orders = tuple(x for x in args.orders.split(",") if x)
    t0 = time.monotonic()
    rs, correct = load(args.src)
    runs = []
    for seed in range(args.seeds):
        runs.append(one_seed(rs, correct, seed, budget=args.budget, max_calls=args.max_calls,
                             orders=orders))
        if not args.json:
            print_seed(runs[-1])
    report = {"items": len(rs.tasks), "models": len(rs.models), "budget": args.budget,
              "delta": DELTA, "seeds": args.seeds, "runs": runs,
              "summary": summarise(runs, args.max_calls),
              "wall_s": round(time.monotonic() - t0, 1)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_summary(report)
    return 0


def print_seed(r) -> None:
    k = r["knobs"]
    print(f"seed {r['seed']:>2}: adaptive {r['adaptive']['accuracy']:.1%} at {r['adaptive']['calls']:.2f} "
          f"calls (τ={k['tau']:g}, M={k['stop_after']}, spread={k['spread']:g}, {k['order']}) | top-3 majority "
          f"{r['top3_majority']['accuracy']:.1%} | two-then-third {r['two_then_third']['accuracy']:.1%} at "
          f"{r['two_then_third']['calls']:.2f} | best single {r['best_single']['accuracy']:.1%} | "
          f"--alpha 0.1: risk {r['cascade']['adaptive --alpha 0.1']['risk']:.1%} coverage "
          f"{r['cascade']['adaptive --alpha 0.1']['coverage']:.1%}",
          flush=True)


def print_summary(rep) -> None:
    s = rep["summary"]
    print(f"\nMMLU-Pro replay, {rep['items']} items, {rep['models']} models; {rep['seeds']} honest "
          f"splits (test only); mean (worst)")
    print(f"\n(1) always answer, budget {rep['budget']:g} calls per item")
    print(f"  {'method':<26}{'accuracy':>18}{'calls/item':>18}")
    names = {"adaptive": "adaptive -k auto", "top3_majority": "top-3 majority",
             "two_then_third": "two, then a third", "best_single": "best single model"}
    for key, label in names.items():
        a, c = s[key]["accuracy"], s[key]["calls"]
        print(f"  {label:<26}{a['mean']:>10.1%} ({a['worst']:.1%}){c['mean']:>10.2f} ({c['worst']:.2f})")
    g = s["gain_vs_top3_points"]
    print(f"  adaptive − top-3 majority: {g['mean']:+.2f} points (worst {g['worst']:+.2f}); "
          f"not below it in {s['seeds_not_below_top3']}/{rep['seeds']} splits")
    print(f"\n(2) abstain with a guarantee: route:1…route:{s['max_calls']}, posterior, δ={rep['delta']}")
    print(f"  {'thresholds, α':<16}{'risk≤α':>9}{'coverage':>18}{'risk':>16}{'calls/item':>16}"
          f"{'ceiling':>18}")
    for a, row in s["cascade"].items():
        print(f"  {a:<16}{row['valid_share']:>9.0%}{row['coverage']['mean']:>10.1%} "
              f"({row['coverage']['worst']:.1%}){row['risk']['mean']:>8.1%} ({row['risk']['worst']:.1%})"
              f"{row['calls']['mean']:>9.2f} ({row['calls']['worst']:.2f})"
              f"{row['ceiling']['mean']:>10.1%} ({row['ceiling']['worst']:.1%})")
    print(f"\nwall time {rep['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
