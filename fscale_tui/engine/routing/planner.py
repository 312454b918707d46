"""``-k auto`` planned cheap-first from the profile (design §8 "Spend", issue 20).

A *plan* is a set S of at most four profiled models and a stopping threshold τ. For a prompt
of cluster c the models of S are asked one at a time, **cheapest evidence first**: by price
per unit of evidence, price(m) / w_m(c), where w_m(c) = log(r·(L−1)/(1−r)) is the log-odds a
vote of m adds under the one-coin model with m's reliability r = 1 − Ψ_m(c) on the cluster (to
reach a threshold a call needs a certain amount of evidence; buying it cheapest unit first is
the fractional-knapsack rule). After each answer the posterior of the leading label is
computed (``voting.Posterior``, as Adaptive-Consistency does with a stopping rule on the
answers so far); the call stops once it reaches τ, and the last model of S always answers.

Two things make the posterior honest about what the profile shows:

- **Escalation-aware reliabilities.** The items that reach stage k are the ones the earlier
  models could not settle: harder, and harder for some models than for others (on MMLU-Pro the
  expensive model is right on 56 % of the items two cheaper ones disagree on, they on 31–33 %,
  against 71 % / 63 % overall). Stage k therefore weighs model m with
  r_k(m, c) = σ(logit(1 − Ψ_m(c)) + β_k(m)), the per-cluster reliability shifted by one offset
  per stage and model, fitted so that r_k matches m's accuracy on the profiled items that reach
  stage k under this very plan (a few parameters per plan: they do not overfit the clusters).
- **Correlated errors.** Wrong answers concentrate on a few distractors: the posterior's L is
  1 + 1/q with q the profile's rate at which two wrong models give the *same* wrong answer;
  and a second vote of the same family for the same label counts (1 − ρ) of its weight, ρ being
  how much more the profile's same-family pairs err together than other pairs do.

**Choosing plans on the profile only (cross-fitting).** Every candidate plan (subsets of a
pool of at most six models — the price/accuracy Pareto set and the best model of each family —
and τ on a grid) is scored on the jointly profiled items with 2-fold cross-fitting: Ψ and the
offsets are fitted on one half, the plan's accuracy and spend measured on the other, so no item
is scored by a reliability fitted on it. The plans on the upper hull of (expected cost,
accuracy) are kept with their offsets refitted on the whole profile (``routing/plans.json``);
a kept plan's expected spend is then measured as it will run (those offsets) on the profiled
items — spend needs no label, and the cross-fitted one ran a slightly different policy.

- A **budget** picks the two hull plans around it and mixes them (a deterministic share p of
  the prompts, by a hash of the question, takes the cheaper one) so that the expected spend
  equals the budget.
- Without one, the **default** is the cheapest plan as accurate as the top-3 majority vote
  (what one would run to be safe) and not clearly worse than the most accurate plan, on the
  same items, cross-fitted: within one standard error of the item-by-item difference from the
  vote (a one-item gap is noise, not a reason to pay 30 % more), and within two of the best
  plan (the best of hundreds of estimates is optimistic; when a plan is much better than the
  vote, the default follows it).

The router's budget (``fscale route --budget``) is spent like a plan's: the λ sweep of
argmin Ψ + λ·cost of the router *as it runs* (Ψ on the whole profile) is measured on the
profiled prompts (spend needs no label) and the two adjacent λ around the budget are mixed;
the cross-fitted curve of the same sweep gives the expected accuracy and the frontier's line.

Arrays in, arrays out (numpy only): ``bench/auto.py`` runs these functions on the MMLU-Pro
replay with the protocol's splits; :func:`plans_for_profile` runs them on the stored profile.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import storage
from ..base.errors import UsageError
from ..decide.rules import RELIABILITY_CAP
from ..base.budget import Budget
from .knobs import LAMBDAS, Lambdas, frontier_auc, upper_hull
from .router import DEFAULT_SMOOTHING, SWITCH_Z, compute_psi, routing_dir, switch_penalty

if TYPE_CHECKING:
    from ..base.settings import Settings

PLANS = "plans.json"
PLANS_VERSION = 6
#: The most models a plan asks, and the most a plan may choose from.
MAX_STAGES = 4
POOL = 6
#: Stopping thresholds tried (posterior of the leading label).
TAUS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)
FOLDS = 2
#: Pseudo-observations pulling a stage offset toward "no shift" (tiny stages stay as they were).
OFFSET_PSEUDO = 5.0
#: Fewer jointly profiled items than this: no plan (``-k auto`` falls back to the routed order).
MIN_JOINT = 20
SPREAD_MAX = 10.0
NO_ANSWER, NOT_ASKED = -1, -2


# -- the profile as arrays ------------------------------------------------------------------

@dataclass
class Evidence:
    """What the planner knows: every profiled item's answers (label indices per item;
    ``NO_ANSWER`` = the reply held none, ``NOT_ASKED`` = not profiled), gold, number of
    labels, cluster; every model's price per call and family."""

    models: list[str]
    answers: np.ndarray  # items × models, int
    gold: np.ndarray  # items, int
    labels: np.ndarray  # items, number of labels offered
    clusters: np.ndarray  # items, int
    k: int  # number of clusters
    price: np.ndarray  # models: expected spend of one call (USD, or 1 per call)
    unit: str  # "usd" | "calls"
    families: list[str]
    keys: list[str] = field(default_factory=list)
    #: items × models: what asking that model that item cost (its recorded tokens at its
    #: price); None: every call of a model costs ``price``. Spend estimates use it, so that
    #: long prompts, which escalate more often, are not priced at the mean.
    item_price: np.ndarray | None = None

    @property
    def correct(self) -> np.ndarray:
        right: np.ndarray = (self.answers == self.gold[:, None]).astype(float)
        return right

    def asked(self, models: Sequence[int]) -> np.ndarray:
        """Items on which every one of ``models`` was profiled."""
        if not len(models):
            return np.ones(len(self.gold), dtype=bool)
        profiled: np.ndarray = (self.answers[:, list(models)] != NOT_ASKED).all(1)
        return profiled


def encode_answers(rows: Sequence[Mapping[str, str | None]], gold: Sequence[str],
                   models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(answers, gold) as small integers per item (only equality matters); ``rows[i]`` maps a
    model to its answer on item i (absent: not profiled; None: no answer)."""
    answers = np.full((len(rows), len(models)), NOT_ASKED, dtype=int)
    gold_idx = np.zeros(len(rows), dtype=int)
    for i, (row, g) in enumerate(zip(rows, gold)):
        index = {g: 0}
        for j, m in enumerate(models):
            if m not in row:
                continue
            a = row[m]
            if a is None:
                answers[i, j] = NO_ANSWER
            else:
                answers[i, j] = index.setdefault(a, len(index))
    return answers, gold_idx


# -- reliabilities, weights, posteriors (vectorised twins of voting.Posterior) ---------------

def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    odds: np.ndarray = np.log(p / (1 - p))
    return odds


def _sigmoid(x: np.ndarray) -> np.ndarray:
    y: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return y


def weights(r: np.ndarray, big_l: np.ndarray) -> np.ndarray:
    """``voting.Posterior.weight``: log-odds of one vote, reliability clipped to
    [chance + 0.001, RELIABILITY_CAP]."""
    r = np.minimum(RELIABILITY_CAP, np.maximum(1.0 / big_l + 1e-3, r))
    w: np.ndarray = np.log(r * (big_l - 1) / (1 - r))
    return w


def shifted(base: np.ndarray, offset: float | np.ndarray) -> np.ndarray:
    """A reliability shifted by a stage offset on the logit scale."""
    return _sigmoid(_logit(base) + offset)


def fit_offset(base: np.ndarray, right: np.ndarray, pseudo: float = OFFSET_PSEUDO) -> float:
    """β with mean σ(logit(base) + β) = the observed accuracy (shrunk toward the base's own
    mean by ``pseudo`` observations). Newton's method (the mean grows with β, concavely on
    each side), kept inside [-10, 10]."""
    if not len(base):
        return 0.0
    lb = _logit(base)
    s = _sigmoid(lb)
    target = (float(right.sum()) + pseudo * float(s.mean())) / (len(right) + pseudo)
    beta = 0.0
    for _ in range(30):
        gap = float(s.mean()) - target
        slope = float((s * (1 - s)).mean())
        if abs(gap) < 1e-9 or slope <= 1e-12:
            break
        beta = min(10.0, max(-10.0, beta - gap / slope))
        s = _sigmoid(lb + beta)
    return beta


def evidence_order(models: Sequence[int], base: np.ndarray, price: np.ndarray,
                   big_l: np.ndarray) -> np.ndarray:
    """Per item, ``models`` sorted by price per unit of evidence (cheapest evidence first;
    ties: the listed order). ``base``: items × len(models) reliabilities."""
    w = weights(base, big_l[:, None])
    key = price[list(models)][None, :] / np.maximum(w, 1e-6)
    return np.asarray(models)[np.argsort(key, 1, kind="stable")]


@dataclass
class Outcome:
    right: np.ndarray  # items, bool
    cost: np.ndarray  # items, spend
    calls: np.ndarray  # items, models asked
    offsets: list[dict[int, float]]  # per stage: model index -> β (fitted on the estimation rows)


def simulate(ev: Evidence, models: Sequence[int], tau: float, *, spread: float,
             family_rho: float, est_rows: np.ndarray, est_base: np.ndarray,
             eval_rows: np.ndarray, eval_base: np.ndarray,
             offsets: Sequence[Mapping[int, float]] | None = None) -> Outcome:
    """Run the plan (``models``, ``tau``) on ``eval_rows`` with stage offsets fitted on
    ``est_rows`` (or given). ``*_base``: rows × len(models) base reliabilities 1 − Ψ."""
    models = list(models)
    n_stages = len(models)
    fam = np.array([hash(ev.families[m]) for m in models])
    parts = {}
    for name, rows, base in (("est", est_rows, est_base), ("eval", eval_rows, eval_base)):
        big_l = np.minimum(ev.labels[rows], spread).astype(float)
        order = evidence_order(models, base, ev.price, big_l)
        pos = np.full(max(models) + 1, -1)
        pos[models] = np.arange(len(models))
        order_col = pos[order]  # column of each asked model in ``base``
        parts[name] = {"rows": rows, "base": base, "L": big_l, "order": order, "ocol": order_col,
                       "reach": np.ones(len(rows), dtype=bool),
                       "lead": np.full(len(rows), NO_ANSWER), "cost": np.zeros(len(rows)),
                       "calls": np.zeros(len(rows))}
    fitted: list[dict[int, float]] = []
    for k in range(n_stages):
        if offsets is not None:
            beta = dict(offsets[k])
        else:
            e = parts["est"]
            beta = {}
            for j, m in enumerate(models):
                r = e["reach"]
                beta[m] = fit_offset(e["base"][r, j], ev.answers[e["rows"][r], m] == ev.gold[e["rows"][r]])
        fitted.append(beta)
        names = ("eval",) if offsets is not None else ("est", "eval")
        for name in names:
            d = parts[name]
            rows = d["rows"]
            n = len(rows)
            if not n:
                continue
            idx = np.arange(n)
            beta_vec = np.array([beta[m] for m in models])
            rel = shifted(d["base"], beta_vec[None, :])
            w_all = weights(rel, d["L"][:, None])  # n × |S|
            width = int(ev.answers[rows][:, models].max(initial=0)) + 1
            scores = np.zeros((n, max(width, 1)))
            for kk in range(k + 1):
                j = d["ocol"][:, kk]
                a = ev.answers[rows, d["order"][:, kk]]
                w = w_all[idx, j]
                ok = a >= 0
                if family_rho > 0 and kk:
                    # A family's ballots for one label count max + (1 − ρ)·rest: adding w to
                    # a group whose heaviest ballot so far weighs b adds w − ρ·b (w > b) or
                    # (1 − ρ)·w.
                    b = np.zeros(n)
                    for kk2 in range(kk):
                        j2 = d["ocol"][:, kk2]
                        same = ok & (fam[j2] == fam[j]) & (ev.answers[rows, d["order"][:, kk2]] == a)
                        b = np.where(same, np.maximum(b, w_all[idx, j2]), b)
                    w = np.where(b > 0, np.where(w > b, w - family_rho * b, (1 - family_rho) * w), w)
                scores[idx[ok], a[ok]] += w[ok]
            voted = scores > 0
            top = scores.max(1)
            z = (np.exp(scores - top[:, None]) * voted).sum(1) \
                + np.maximum(0.0, d["L"] - voted.sum(1)) * np.exp(-top)
            post = np.where(voted.any(1), 1.0 / z, 0.0)
            lead = np.where(voted.any(1), scores.argmax(1), NO_ANSWER)
            active = d["reach"]
            asked = d["order"][active, k]
            d["cost"][active] += (ev.price[asked] if ev.item_price is None
                                  else ev.item_price[rows[active], asked])
            d["calls"][active] += 1
            stop = active & ((post >= tau - 1e-12) | (k == n_stages - 1))
            d["lead"][stop] = lead[stop]
            d["reach"] = active & ~stop
    e = parts["eval"]
    right = (e["lead"] == ev.gold[e["rows"]]) & (e["lead"] >= 0)
    return Outcome(right, e["cost"], e["calls"], fitted)


# -- what the profile says about correlated errors ------------------------------------------

def error_structure(ev: Evidence, models: Sequence[int], rows: np.ndarray) -> tuple[float, float]:
    """(spread, family ρ) from the items ``rows``: the posterior's L = 1 + 1/q with q the rate at
    which two wrong models give the same wrong answer (in [2, SPREAD_MAX]); ρ = how much more
    the same-family pairs' errors correlate than the other pairs' (0 when no family repeats)."""
    a = ev.answers[rows][:, list(models)]
    wrong = (a >= 0) & (a != ev.gold[rows][:, None])
    same, both = 0.0, 0.0
    phi_same: list[float] = []
    phi_other: list[float] = []
    err = (a != ev.gold[rows][:, None]).astype(float)
    for x, y in itertools.combinations(range(len(models)), 2):
        w = wrong[:, x] & wrong[:, y]
        both += float(w.sum())
        same += float((a[w, x] == a[w, y]).sum())
        if err[:, x].std() > 0 and err[:, y].std() > 0 and len(rows) > 2:
            phi = float(np.corrcoef(err[:, x], err[:, y])[0, 1])
            fx, fy = ev.families[models[x]], ev.families[models[y]]
            (phi_same if fx == fy else phi_other).append(phi)
    q = (same + 1.0) / (both + 2.0)  # Laplace: one coincidence in two pairs before any data
    spread = float(min(SPREAD_MAX, max(2.0, 1.0 + 1.0 / q)))
    rho = 0.0
    if phi_same and phi_other:
        rho = float(min(0.9, max(0.0, float(np.mean(phi_same)) - float(np.mean(phi_other)))))
    elif phi_same:
        rho = float(min(0.9, max(0.0, float(np.mean(phi_same)))))
    return spread, rho


# -- candidates, cross-fitted scores, the hull ----------------------------------------------

def choose_pool(ev: Evidence, accuracy: np.ndarray, *, size: int = POOL,
                candidates: Sequence[int] | None = None) -> list[int]:
    """The models plans are made of: the (price, accuracy) Pareto set, then the best model of
    each family by accuracy, at most ``size`` (most accurate first)."""
    names = list(candidates) if candidates is not None else list(range(len(ev.models)))
    by_acc = sorted(names, key=lambda j: (-accuracy[j], ev.price[j], ev.models[j]))
    pareto = [j for j in by_acc
              if not any((accuracy[o] >= accuracy[j] and ev.price[o] < ev.price[j]) or
                         (accuracy[o] > accuracy[j] and ev.price[o] <= ev.price[j]) for o in names)]
    pool = sorted(pareto, key=lambda j: (-accuracy[j], ev.price[j]))[:size]
    seen = {ev.families[j] for j in pool}
    for j in by_acc:
        if len(pool) >= size:
            break
        if j not in pool and ev.families[j] not in seen:
            pool.append(j)
            seen.add(ev.families[j])
    for j in by_acc:  # fewer families than seats: the next most accurate
        if len(pool) >= size:
            break
        if j not in pool:
            pool.append(j)
    return sorted(pool, key=lambda j: (-accuracy[j], ev.price[j]))


@dataclass
class Candidate:
    models: tuple[int, ...]
    tau: float
    accuracy: float  # cross-fitted on the joint items
    cost: float  # expected spend per item
    calls: float
    right: np.ndarray  # per joint item (paired comparisons)


def score_candidates(ev: Evidence, pool: Sequence[int], rows: np.ndarray,
                     psi_without: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], *,
                     folds: int = FOLDS,
                     seed: int = 0, taus: Sequence[float] = TAUS, max_stages: int = MAX_STAGES,
                     spread: float, family_rho: float) -> list[Candidate]:
    """Every plan over ``pool`` scored on ``rows`` by ``folds``-fold cross-fitting:
    ``psi_without(held)`` is the (K × models) Ψ fitted without the items ``held``, and the
    observation counts behind it."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(rows)) % folds
    parts = []
    for f in range(folds):
        held, rest = rows[fold == f], rows[fold != f]
        psi = psi_without(held)[0]
        parts.append((rest, 1.0 - psi[ev.clusters[rest]], held, 1.0 - psi[ev.clusters[held]]))
    back = np.argsort(np.concatenate([rows[fold == f] for f in range(folds)]), kind="stable")
    out = []
    for size in range(1, max_stages + 1):
        for subset in itertools.combinations(sorted(pool), size):
            cols = list(subset)
            for tau in (taus if size > 1 else (1.0,)):
                right, cost, calls = [], [], []
                for est, est_rel, held, held_rel in parts:
                    o = simulate(ev, cols, tau, spread=spread, family_rho=family_rho,
                                 est_rows=est, est_base=est_rel[:, cols], eval_rows=held,
                                 eval_base=held_rel[:, cols])
                    right.append(o.right)
                    cost.append(o.cost)
                    calls.append(o.calls)
                r = np.concatenate(right)[back]
                out.append(Candidate(subset, float(tau), float(r.mean()),
                                     float(np.concatenate(cost).mean()),
                                     float(np.concatenate(calls).mean()), r))
    return out


def hull(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates on the upper hull of (cost, accuracy), cheapest first."""
    points = upper_hull([(c.cost, c.accuracy) for c in candidates])
    out = []
    for cost, acc in points:
        best = min((c for c in candidates if abs(c.cost - cost) < 1e-12 and abs(c.accuracy - acc) < 1e-12),
                   key=lambda c: (len(c.models), c.calls))
        out.append(best)
    return out


#: The default is not clearly worse than the most accurate plan: within this many standard
#: errors of it (the most accurate of hundreds of cross-fitted estimates is itself optimistic,
#: so one standard error would chase noise).
BEST_SE = 2.0


def _within(c: Candidate, ref: np.ndarray, z: float) -> bool:
    """c's accuracy is at most ``z`` standard errors (paired, item by item) under ``ref``'s."""
    d = c.right.astype(float) - ref.astype(float)
    if len(d) < 2:
        return bool(d.mean() >= -1e-12)
    return bool(d.mean() >= -z * float(d.std(ddof=1)) / math.sqrt(len(d)) - 1e-12)


def default_candidate(candidates: Sequence[Candidate], target: np.ndarray | None) -> Candidate:
    """The default plan: the cheapest candidate that is as accurate as ``target`` — right/wrong
    per item of the top-3 majority vote — within one standard error, and not clearly worse
    than the most accurate candidate (within ``BEST_SE``); all cross-fitted, paired item by
    item. No candidate is both: the cheapest within ``BEST_SE`` of the most accurate."""
    top = max(candidates, key=lambda c: (c.accuracy, -c.cost))
    near_best = [c for c in candidates if _within(c, top.right, BEST_SE)]
    both = [c for c in near_best if target is None or _within(c, target, 1.0)]
    return min(both or near_best, key=lambda c: (c.cost, -c.accuracy))


def one_se_default(candidates: Sequence[Candidate], cap: float | None = None) -> Candidate:
    """The cheapest candidate within one standard error (of the paired difference) of the
    most accurate candidate (costing at most ``cap``, if given)."""
    affordable = [c for c in candidates if cap is None or c.cost <= cap + 1e-9] or \
        [min(candidates, key=lambda c: c.cost)]
    top = max(affordable, key=lambda c: (c.accuracy, -c.cost))
    good = []
    for c in affordable:
        d = c.right.astype(float) - top.right.astype(float)
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        if d.mean() >= -se - 1e-12:
            good.append(c)
    return min(good, key=lambda c: (c.cost, -c.accuracy))


def mix_for(points: Sequence[tuple[float, float]], budget: float) -> tuple[int, int, float]:
    """Indices (a, b) of two hull points and the share p of items given to ``a`` such that
    p·cost_a + (1−p)·cost_b = ``budget`` (a = b: one point; the budget is above the dearest, or
    below the cheapest point, which is then the least there is)."""
    if budget <= points[0][0] + 1e-12:
        return 0, 0, 1.0
    for i in range(len(points) - 1):
        (ca, _), (cb, _) = points[i], points[i + 1]
        if budget <= cb + 1e-12:
            p = (cb - budget) / (cb - ca) if cb > ca else 0.0
            return i, i + 1, float(min(1.0, max(0.0, p)))
    last = len(points) - 1
    return last, last, 1.0


def takes_first(text: str, share: float) -> bool:
    """Whether a prompt falls in the first ``share`` of a budget mix (a stable hash of its
    text, so the same question always gets the same plan)."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    h = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return h / 2.0 ** 64 < share


# -- the stored plans ------------------------------------------------------------------------

@dataclass
class Plan:
    """One operating point of ``-k auto``: ask ``models`` cheapest evidence first, stop at τ."""

    models: list[str]
    tau: float
    accuracy: float  # cross-fitted on the profile
    cost: float  # expected spend per item (the plan set's unit)
    calls: float  # expected models asked per item
    offsets: list[dict[str, float]]  # per stage: model -> β (fitted on the whole profile)

    def to_dict(self) -> dict[str, Any]:
        return {"models": self.models, "tau": self.tau, "accuracy": round(self.accuracy, 6),
                "cost": self.cost, "calls": round(self.calls, 4),
                "offsets": [{m: round(b, 6) for m, b in st.items()} for st in self.offsets]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        return cls(list(d["models"]), float(d["tau"]), float(d["accuracy"]), float(d["cost"]),
                   float(d["calls"]), [dict(st) for st in d["offsets"]])

    def label(self) -> str:
        return f"{'+'.join(self.models)} τ={self.tau:g}" if len(self.models) > 1 else self.models[0]


@dataclass
class Choice:
    """What a budget (or the default) resolved to: plan ``a`` for a share ``p`` of the prompts
    (by hash), plan ``b`` for the rest; the expected spend and accuracy per item."""

    a: Plan
    b: Plan
    p: float
    expected_cost: float
    expected_accuracy: float
    amount: float | None  # the budget in the plan set's unit (None: the default)

    def plan_for(self, text: str) -> Plan:
        return self.a if takes_first(text, self.p) else self.b


@dataclass
class PlanSet:
    unit: str
    spread: float
    family_rho: float
    items: int
    best_single: dict[str, Any]  # model, accuracy, cost
    plans: list[Plan]  # the cross-fitted hull, cheapest first
    default: int  # index into plans
    router: list[dict[str, float]]  # hull of the cross-fitted router curve: lambda, cost, accuracy
    frontier: dict[str, Any]  # singles and top-k majorities, for the views
    prices: dict[str, float]  # price of one call per model (unit)
    fingerprint: str = ""
    seconds: float = 0.0
    #: per λ, the spend of the router as it runs and its cross-fitted accuracy
    #: (:func:`router_spend`): what ``route --budget`` chooses λ from
    router_spend: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"version": PLANS_VERSION, "fingerprint": self.fingerprint, "unit": self.unit,
                "spread": self.spread, "family_rho": self.family_rho, "items": self.items,
                "best_single": self.best_single, "plans": [p.to_dict() for p in self.plans],
                "default": self.default, "router": self.router, "frontier": self.frontier,
                "prices": self.prices, "seconds": round(self.seconds, 2),
                "router_spend": self.router_spend}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PlanSet":
        return cls(str(d["unit"]), float(d["spread"]), float(d["family_rho"]), int(d["items"]),
                   dict(d["best_single"]), [Plan.from_dict(p) for p in d["plans"]],
                   int(d["default"]), list(d.get("router") or []), dict(d.get("frontier") or {}),
                   {k: float(v) for k, v in (d.get("prices") or {}).items()},
                   str(d.get("fingerprint") or ""), float(d.get("seconds") or 0.0),
                   [dict(r) for r in d.get("router_spend") or []])

    @property
    def hull_plans(self) -> list[Plan]:
        """The plans on the hull (the default may lie just under it), cheapest first."""
        return [p for i, p in enumerate(self.plans) if i != self.default or self._default_on_hull]

    @property
    def _default_on_hull(self) -> bool:
        pts = upper_hull([(p.cost, p.accuracy) for p in self.plans])
        d = self.plans[self.default]
        return any(abs(c - d.cost) < 1e-12 and abs(a - d.accuracy) < 1e-12 for c, a in pts)

    def choose(self, budget: Budget | None = None) -> Choice:
        """The plan(s) for a budget (a mix of the two hull plans around it), or the default."""
        if budget is None:
            d = self.plans[self.default]
            return Choice(d, d, 1.0, d.cost, d.accuracy, None)
        amount = budget.amount(float(self.best_single["cost"]), self.unit)
        hull_plans = sorted(self.hull_plans, key=lambda p: p.cost)
        i, j, p = mix_for([(x.cost, x.accuracy) for x in hull_plans], amount)
        a, b = hull_plans[i], hull_plans[j]
        return Choice(a, b, p, p * a.cost + (1 - p) * b.cost,
                      p * a.accuracy + (1 - p) * b.accuracy, amount)

    def route_budget(self, budget: Budget) -> dict[str, Any]:
        """λ for ``fscale route --budget``: the two adjacent λ of the router as it runs
        whose spends on the profiled prompts bracket the budget (:func:`spend_mix`), and the
        share p of prompts routed with the first."""
        if not self.router_spend:
            raise UsageError("the profile has no router curve: run 'fscale profile' again")
        return spend_mix(self.router_spend, budget.amount(float(self.best_single["cost"]), self.unit))


def _majority(ev: Evidence, rows: np.ndarray, members: Sequence[int]) -> np.ndarray:
    """Right/wrong of a plain vote of ``members`` on ``rows`` (a tie goes to the earlier member,
    i.e. the more accurate one)."""
    a = ev.answers[rows][:, list(members)]
    width = int(a.max(initial=0)) + 1
    counts = np.zeros((len(rows), width))
    for j in range(a.shape[1]):
        ok = a[:, j] >= 0
        counts[np.flatnonzero(ok), a[ok, j]] += 1
    top = counts.max(1)
    pick = np.full(len(rows), NO_ANSWER)
    for j in reversed(range(a.shape[1])):  # the earliest member backing a top label wins
        ok = (a[:, j] >= 0)
        hit = ok & (counts[np.arange(len(rows)), np.where(ok, a[:, j], 0)] == top)
        pick = np.where(hit, a[:, j], pick)
    right: np.ndarray = (pick == ev.gold[rows]) & (pick >= 0)
    return right


def router_points(ev: Evidence, rows: np.ndarray, folds: Sequence[np.ndarray],
                  psi_without: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                  route_cost: np.ndarray, *, smoothing: float = DEFAULT_SMOOTHING,
                  switch_z: float = SWITCH_Z, lambdas: Lambdas = LAMBDAS
                  ) -> list[tuple[float, float]]:
    """The router's cross-fitted (cost, accuracy) on ``rows`` for every λ of ``lambdas``.
    Scores as ``Router.rank`` computes them: Ψ + λ·cost + the switching penalty."""
    from .knobs import choices

    correct = ev.correct
    picked = np.empty((len(lambdas), len(rows)), dtype=int)
    pos = {int(r): i for i, r in enumerate(rows)}
    for held in folds:
        psi, counts = psi_without(held)
        table = psi + (switch_penalty(psi, counts, smoothing, switch_z) if switch_z else 0.0)
        ch = choices(table, ev.clusters[held], route_cost, lambdas)
        picked[:, [pos[int(r)] for r in held]] = ch
    return [(float(_spend(ev, rows, c).mean()), float(correct[rows, c].mean())) for c in picked]


def _spend(ev: Evidence, rows: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """What asking ``chosen[i]`` on ``rows[i]`` costs (recorded tokens, else the mean price)."""
    spend: np.ndarray = ev.price[chosen] if ev.item_price is None else ev.item_price[rows, chosen]
    return spend


def router_curve(ev: Evidence, rows: np.ndarray, folds: Sequence[np.ndarray],
                 psi_without: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 route_cost: np.ndarray, *, smoothing: float = DEFAULT_SMOOTHING,
                 switch_z: float = SWITCH_Z, lambdas: Lambdas = LAMBDAS
                 ) -> list[dict[str, float]]:
    """The upper hull of :func:`router_points`, labelled with λ (the smallest λ reaching each
    hull point): the router's line on the frontier."""
    return labelled_hull(router_points(ev, rows, folds, psi_without, route_cost,
                                       smoothing=smoothing, switch_z=switch_z, lambdas=lambdas),
                         lambdas)


def labelled_hull(points: Sequence[tuple[float, float]], lambdas: Lambdas = LAMBDAS
                  ) -> list[dict[str, float]]:
    """The upper hull of per-λ (cost, accuracy) points, each labelled with its smallest λ."""
    out = []
    for cost, acc in upper_hull(points):
        lam = next(float(lambdas[i]) for i, p in enumerate(points)
                   if abs(p[0] - cost) < 1e-12 and abs(p[1] - acc) < 1e-12)
        out.append({"lambda": lam, "cost": cost, "accuracy": acc})
    return out


def router_spend(ev: Evidence, rows: np.ndarray, psi: np.ndarray, counts: np.ndarray,
                 route_cost: np.ndarray, accuracy: Sequence[float], *,
                 smoothing: float = DEFAULT_SMOOTHING, switch_z: float = SWITCH_Z,
                 lambdas: Lambdas = LAMBDAS) -> list[dict[str, float]]:
    """What ``route --budget`` chooses λ from: for every λ, the spend per item of the router
    *as it runs* (Ψ and the switching penalty fitted on the whole profile, ``psi``/``counts``)
    on the profiled prompts ``rows`` (spend needs no label), beside ``accuracy[λ]`` (the
    cross-fitted accuracy, :func:`router_points`). One entry per distinct choice (the
    smallest λ making it), cheaper as λ grows.

    The cross-fitted curve's costs belong to the fold routers, not to the router that runs:
    a λ read off them spent 0.64× of pro's price for a 0.7× budget on MMLU-Pro (and lost
    accuracy with it); the λ sweep of the router that runs is the linear programme over its
    own estimates, so two adjacent λ mixed by hash spend the budget."""
    from .knobs import choices

    table = psi + (switch_penalty(psi, counts, smoothing, switch_z) if switch_z else 0.0)
    picked = choices(table, ev.clusters[rows], route_cost, lambdas)
    out: list[dict[str, float]] = []
    last = None
    for lam, c, acc in zip(lambdas, picked, accuracy):
        if last is not None and np.array_equal(c, last):
            continue
        last = c
        out.append({"lambda": float(lam), "cost": float(_spend(ev, rows, c).mean()),
                    "accuracy": float(acc)})
    return out


def spend_mix(points: Sequence[Mapping[str, float]], amount: float) -> dict[str, Any]:
    """The two λ of :func:`router_spend` around ``amount`` (the dearer-or-equal first) and
    the share p of prompts routed with the first, so that the spend is ``amount``; below the
    cheapest λ's spend, that λ alone; above the dearest, λ = 0 alone."""
    pts = sorted(points, key=lambda r: (-r["cost"], r["lambda"]))  # dearest first
    a = b = pts[-1]
    p = 1.0
    if amount >= pts[0]["cost"] - 1e-12:
        a = b = pts[0]
    else:
        for x, y in zip(pts, pts[1:]):
            if y["cost"] <= amount + 1e-12:
                a, b = y, x  # a: within the budget, b: over it
                p = (b["cost"] - amount) / (b["cost"] - a["cost"]) if b["cost"] > a["cost"] else 1.0
                break
    p = float(min(1.0, max(0.0, p)))
    return {"lambdas": [a["lambda"], b["lambda"]], "p": p, "amount": amount,
            "expected_cost": p * a["cost"] + (1 - p) * b["cost"],
            "expected_accuracy": p * a["accuracy"] + (1 - p) * b["accuracy"]}


def plan(ev: Evidence, rows: np.ndarray, *,
         psi_without: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
         psi_full: np.ndarray, route_cost: np.ndarray | None = None,
         smoothing: float = DEFAULT_SMOOTHING, switch_z: float = SWITCH_Z,
         candidates: Sequence[int] | None = None, seed: int = 0, folds: int = FOLDS,
         taus: Sequence[float] = TAUS, max_stages: int = MAX_STAGES, pool_size: int = POOL,
         ) -> tuple[PlanSet, list[Candidate]]:
    """Choose the plans on ``rows`` (jointly profiled items; see the module doc).

    ``psi_without(held)``: the (K × models) Ψ fitted without the items ``held`` and its
    observation counts (the caller decides which observations each model may use);
    ``psi_full``: Ψ fitted on everything, for the stored offsets. ``route_cost``: the router's
    cost per model (λ's scale; default the prices). Returns the plan set and every scored
    candidate.
    """
    t0 = time.monotonic()
    rows = np.asarray(rows, dtype=int)
    if len(rows) < MIN_JOINT:
        raise UsageError(f"planning -k auto needs at least {MIN_JOINT} items profiled on every "
                         f"model it may ask; the profile has {len(rows)}")
    correct = ev.correct
    accuracy = correct[rows].mean(0)
    pool = choose_pool(ev, accuracy, size=pool_size, candidates=candidates)
    estimated, rho = error_structure(ev, pool, rows)
    names = list(candidates) if candidates is not None else list(range(len(ev.models)))
    best = max(names, key=lambda j: (accuracy[j], -ev.price[j]))
    # The posterior's L: the profile's estimate, or wrong answers spread over every label; the
    # one whose cross-fitted frontier is higher up to the best single model's price wins.
    chosen: tuple[float, float, list[Candidate]] | None = None
    for spread in sorted({round(estimated, 4), SPREAD_MAX}):
        found = score_candidates(ev, pool, rows, psi_without, folds=folds, seed=seed, taus=taus,
                                 max_stages=max_stages, spread=spread, family_rho=rho)
        area = frontier_auc([(c.cost, c.accuracy) for c in found], float(ev.price[names].min()),
                            float(ev.price[best]))
        if chosen is None or area > chosen[0] + 1e-12:
            chosen = (area, spread, found)
    assert chosen is not None
    _, spread, scored = chosen
    on_hull = hull(scored)
    by_acc = sorted(names, key=lambda j: (-accuracy[j], ev.price[j]))
    default = default_candidate(scored, _majority(ev, rows, by_acc[:3]))
    keep = list(on_hull) + ([default] if all(c is not default for c in on_hull) else [])
    keep.sort(key=lambda c: (c.cost, -c.accuracy))
    full = 1.0 - psi_full[ev.clusters[rows]]
    plans = []
    for c in keep:
        cols = list(c.models)
        fitted = simulate(ev, cols, c.tau, spread=spread, family_rho=rho, est_rows=rows,
                          est_base=full[:, cols], eval_rows=rows[:0], eval_base=full[:0, cols]).offsets
        # Spend does not need labels to be judged: the plan as it will run (these offsets, Ψ
        # on everything) is measured on the profiled items themselves; the accuracy stays the
        # cross-fitted one.
        run = simulate(ev, cols, c.tau, spread=spread, family_rho=rho, est_rows=rows[:0],
                       est_base=full[:0, cols], eval_rows=rows, eval_base=full[:, cols],
                       offsets=fitted)
        plans.append(Plan([ev.models[j] for j in cols], c.tau, c.accuracy, float(run.cost.mean()),
                          float(run.calls.mean()),
                          [{ev.models[j]: float(b) for j, b in st.items()} for st in fitted]))
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(rows)) % folds
    fold_rows = [rows[fold == f] for f in range(folds)]
    lam_cost = route_cost if route_cost is not None else ev.price
    points = router_points(ev, rows, fold_rows, psi_without, lam_cost, smoothing=smoothing,
                           switch_z=switch_z)
    curve = labelled_hull(points)
    psi_all, counts_all = psi_without(rows[:0])
    spend = router_spend(ev, rows, psi_all, counts_all, lam_cost, [a for _, a in points],
                         smoothing=smoothing, switch_z=switch_z)
    frontier = {"spreads_tried": sorted({round(estimated, 4), SPREAD_MAX}),
        "singles": [{"model": ev.models[j], "accuracy": float(accuracy[j]), "cost": float(ev.price[j])}
                    for j in by_acc],
        "majorities": [{"k": k, "models": [ev.models[j] for j in by_acc[:k]],
                        "accuracy": float(_majority(ev, rows, by_acc[:k]).mean()),
                        "cost": float(ev.price[by_acc[:k]].sum())}
                       for k in range(2, min(5, len(by_acc)) + 1)],
    }
    out = PlanSet(ev.unit, spread, rho, len(rows),
                  {"model": ev.models[best], "accuracy": float(accuracy[best]),
                   "cost": float(ev.price[best])},
                  plans, plans.index(next(p for p, c in zip(plans, keep) if c is default)), curve,
                  frontier, {m: float(ev.price[j]) for j, m in enumerate(ev.models)},
                  router_spend=spend)
    out.seconds = time.monotonic() - t0
    return out, scored


# -- the stored profile -> plans.json --------------------------------------------------------

#: Tokens of one call assumed for a model whose profile recorded none (prices are per million).
ASSUMED_TOKENS = 1000.0


def plans_path(settings: Settings) -> Path:
    return routing_dir(settings) / PLANS


def profile_fingerprint(settings: Settings) -> str:
    """What the plans depend on: the profile journal, the clusters, Ψ's smoothing and the
    configured models' prices and families (a change of any means planning again)."""
    from .profile import profiles_path
    from .router import read_knobs

    directory = routing_dir(settings)
    parts: list[Any] = [PLANS_VERSION]
    for path in (profiles_path(settings), directory / "clusters.npz"):
        try:
            st = path.stat()
            parts.append((path.name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            parts.append((path.name, None))
    parts.append(read_knobs(directory).get("smoothing"))
    parts.append(sorted((m.alias, m.cost, m.family) for m in settings.models.values()))
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:16]


def evidence_from_profile(settings: Settings) -> tuple[Evidence, dict[str, Any]] | None:
    """The stored profile as :class:`Evidence` (configured, profiled models only), with what
    Ψ needs per model (``obs[model] = (item rows, errors)``), the clusters and the smoothing.
    None when nothing is profiled."""
    from ..catalog.builtins import family_of
    from .profile import ProfileStore, PromptClusters
    from .router import ClusterModel, read_knobs

    store = ProfileStore.for_settings(settings)
    names = [m for m in store.models() if m in settings.models and store.observations(m)]
    if not names:
        return None
    directory = routing_dir(settings)
    clusters = ClusterModel.load(directory, settings)
    keys = sorted({k for m in names for k in store.items.get(m, {}) if k in store.prompts
                   and store.prompts[k].get("label") is not None})
    if not keys:
        return None
    index = {k: i for i, k in enumerate(keys)}
    rows: list[dict[str, str | None]] = [{} for _ in keys]
    obs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tokens: dict[str, list[float]] = {}
    item_tokens = np.full((len(keys), len(names)), np.nan)
    for j, m in enumerate(names):
        r_idx, errs = [], []
        for key, prompt, item in store.observations(m, keys):
            i = index[key]
            rows[i][m] = item["answers"][0]
            r_idx.append(i)
            errs.append(sum(a != prompt["label"] for a in item["answers"]) / len(item["answers"]))
            used = [float(u) for u in item.get("tokens") or [] if u]
            tokens.setdefault(m, []).extend(used)
            if used:
                item_tokens[i, j] = used[0]
        obs[m] = (np.array(r_idx, dtype=int), np.array(errs, dtype=float))
    gold = [store.prompts[k]["label"] for k in keys]
    answers, gold_idx = encode_answers(rows, gold, names)
    labels = []
    for key, row, g in zip(keys, rows, gold):
        offered = store.prompts[key].get("answers")
        labels.append(len(offered) if offered else max(2, len({g, *(a for a in row.values() if a)})))
    assigned = PromptClusters.for_store(store).assign(clusters, store, keys)
    cluster_ids = np.array([assigned.get(k, 0) for k in keys], dtype=int)
    k = clusters.k if clusters is not None else 1
    costs = np.array([float(settings.models[m].cost or 0.0) for m in names])
    item_price = None
    if not (costs > 0).any():
        unit, price = "calls", np.ones(len(names))
    else:
        known = [np.mean(t) for t in tokens.values() if t]
        fallback = float(np.mean(known)) if known else ASSUMED_TOKENS
        per_call = np.array([np.mean(tokens[m]) if tokens.get(m) else fallback for m in names])
        unit, price = "usd", costs * per_call / 1e6
        filled = np.where(np.isnan(item_tokens), per_call[None, :], item_tokens)
        item_price = costs[None, :] * filled / 1e6
    families = [settings.models[m].family or family_of(settings.models[m].id) for m in names]
    ev = Evidence(names, answers, gold_idx, np.array(labels), cluster_ids, k, price, unit,
                  families, keys, item_price)
    smoothing = read_knobs(directory).get("smoothing")
    return ev, {"obs": obs, "k": k, "smoothing": float(smoothing or DEFAULT_SMOOTHING),
                "route_cost": costs, "store": store}


def plans_for_profile(settings: Settings, *, save: bool = True) -> PlanSet | None:
    """Plan ``-k auto`` on the stored profile (2-fold cross-fitting over its items) and keep
    the result in ``routing/plans.json``; None when nothing is profiled. Raises UsageError when
    too few items were profiled on the same models."""
    found = evidence_from_profile(settings)
    if found is None:
        return None
    ev, extra = found
    obs, k, smoothing = extra["obs"], extra["k"], extra["smoothing"]
    counts = np.array([len(obs[m][0]) for m in ev.models])
    # The models profiled on (about) the same items: joint rows are where every one answered.
    candidates = [j for j in range(len(ev.models)) if counts[j] >= 0.5 * counts.max()]
    rows = np.flatnonzero(ev.asked(candidates))
    while len(rows) < MIN_JOINT and len(candidates) > 1:
        candidates.remove(min(candidates, key=lambda j: (counts[j], ev.models[j])))
        rows = np.flatnonzero(ev.asked(candidates))

    def psi_without(held: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        drop = np.zeros(len(ev.gold), dtype=bool)
        drop[held] = True
        cols = []
        for m in ev.models:
            r, e = obs[m]
            keep = ~drop[r]
            cols.append(compute_psi(ev.clusters[r[keep]], e[keep], k, smoothing=smoothing))
        return np.stack([c[0] for c in cols], 1), np.stack([c[1] for c in cols], 1)

    full, _ = psi_without(np.zeros(0, dtype=int))
    plans, _ = plan(ev, rows, psi_without=psi_without, psi_full=full,
                    route_cost=extra["route_cost"], smoothing=smoothing, candidates=candidates)
    plans.fingerprint = profile_fingerprint(settings)
    if save:
        path = plans_path(settings)
        with storage.locked(path):
            storage.write_json(path, plans.to_dict())
    return plans


def load_plans(settings: Settings, *, refresh: bool = True) -> PlanSet | None:
    """The stored plans if they belong to the current profile; else planned again (and
    stored) unless ``refresh`` is false. None when there is nothing to plan from."""
    doc = storage.read_json(plans_path(settings))
    if doc.get("version") == PLANS_VERSION and doc.get("fingerprint") == profile_fingerprint(settings):
        try:
            return PlanSet.from_dict(doc)
        except (KeyError, TypeError, ValueError):
            pass
    return plans_for_profile(settings) if refresh else None
