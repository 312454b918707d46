"""The frontier: accuracy against price of everything ``-k auto`` and ``route`` can do, on the
stored profile (design §8 "Spend": the picture that explains all of it).

Points (each ``{"kind", "label", "cost", "accuracy", "default"}``; cost per item in the
profile's unit, USD or calls):

- ``single``: every profiled model alone;
- ``majority``: a plain vote of the k most accurate models (k = 2…5; a tie goes to the more
  accurate);
- ``router``: the router along its budget (the cross-fitted hull of argmin Ψ + λ·cost);
- ``auto``: the ``-k auto`` plans on the cross-fitted hull, the default marked;
- ``calibrated``: the calibration ``fscale calibrate`` stored, run on the profiled items (an
  adaptive rule: its τ and stages; a ``--stages`` cascade: abstentions count as not right).

Singles, majorities and the calibrated cascade are measured on the jointly profiled items; the
router and ``-k auto`` points are cross-fitted there (what a budget is planned from). Blocking
(numpy, the profile); the CLI renders it as a table or a PNG, the TUI as a terminal plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .planner import PlanSet, evidence_from_profile, load_plans

if TYPE_CHECKING:
    from ..base.settings import Settings


def frontier(settings: Settings) -> dict[str, Any] | None:
    """The frontier of the stored profile (None when nothing is profiled)."""
    plans = load_plans(settings)
    if plans is None:
        return None
    points: list[dict[str, Any]] = []
    best = plans.best_single["model"]
    for s in plans.frontier.get("singles", []):
        points.append({"kind": "single", "label": s["model"], "cost": s["cost"],
                       "accuracy": s["accuracy"], "default": False, "best_single": s["model"] == best})
    for m in plans.frontier.get("majorities", []):
        points.append({"kind": "majority", "label": f"top-{m['k']} majority", "cost": m["cost"],
                       "accuracy": m["accuracy"], "default": False, "models": m["models"]})
    for r in plans.router:
        points.append({"kind": "router", "label": f"route λ={r['lambda']:g}", "cost": r["cost"],
                       "accuracy": r["accuracy"], "default": False, "lambda": r["lambda"]})
    for i, p in enumerate(plans.plans):
        points.append({"kind": "auto", "label": p.label(), "cost": p.cost, "accuracy": p.accuracy,
                       "default": i == plans.default, "calls": p.calls})
    notes = []
    cal = calibrated_point(settings, plans)
    if isinstance(cal, dict):
        points.append(cal)
    elif cal:
        notes.append(cal)
    return {"unit": plans.unit, "items": plans.items, "best_single": plans.best_single,
            "default": plans.plans[plans.default].label(), "spread": plans.spread,
            "family_rho": plans.family_rho, "points": points, "notes": notes}


def calibrated_point(settings: Settings, plans: PlanSet) -> dict[str, Any] | str | None:
    """The stored calibration as a frontier point, or why there is none (a note)."""
    from .cascade import Cascade, CascadeConfig
    from .profile import load_router

    cfg = CascadeConfig.load(settings)
    if cfg is None:
        return "no calibration stored ('fscale calibrate CAL.jsonl' adds the calibrated cascade)"
    found = evidence_from_profile(settings)
    router = load_router(settings)
    if found is None or router is None:
        return None
    ev, _ = found
    from ..catalog.registry import Registry

    cascade = Cascade(settings, Registry(settings), cfg, router)
    rows = np.flatnonzero(ev.asked(range(len(ev.models))))
    if not len(rows):
        return "the calibrated cascade needs items profiled on every model"
    right, spent = [], []
    index = {m: j for j, m in enumerate(ev.models)}
    for i in rows:
        n_labels = max(int(ev.labels[i]), int(ev.answers[i].max(initial=0)) + 1, 2)
        labels = [f"L{x}" for x in range(n_labels)]
        plan = cascade.plan("", None, labels=n_labels, cluster=int(ev.clusters[i]))
        votes: dict[str, str | None] = {}
        answered, cost = None, 0.0
        for st in plan.stages:
            if st.skip is not None:
                continue
            names = [m.alias for m in st.members]
            if any(n not in index for n in names):
                return "the calibrated cascade asks models that are not profiled"
            for n in names:
                if n not in votes:
                    a = int(ev.answers[i, index[n]])
                    votes[n] = labels[a] if a >= 0 else None
                    cost += float(ev.price[index[n]])
            tally = st.rule.decide([st.rule.ballot(n, votes[n]) for n in names], labels)
            if st.threshold is not None and tally.answer is not None and \
                    tally.agreement >= st.threshold - 1e-12:
                answered = tally.answer
                break
        right.append(answered is not None and answered == labels[int(ev.gold[i])])
        spent.append(cost)
    what = (f"calibrated -k auto (τ={cfg.tau:g}, {cfg.stop_after} models)" if cfg.mode == "adaptive"
            else f"calibrated cascade {','.join(cfg.stages)} (α={cfg.alpha:g})")
    return {"kind": "calibrated", "label": what, "cost": float(np.mean(spent)),
            "accuracy": float(np.mean(right)), "default": False}

