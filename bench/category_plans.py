"""A plan per MMLU-Pro category at a budget: how far it could go, and how far it goes honestly
(issue 20, item 2: ``-k auto --budget 0.5x`` at least as accurate as the best single model).

    python bench/category_plans.py [--src /work/shared/data/mmlu_pro_replay] [--seeds 5]
                                   [--budget 0.5] [--fit-on val|trainval] [--shrink 0,30,100,300]

For each of the 14 categories one *policy* is chosen from a small menu (cheap first, the
expensive model only on disagreement):

- one model alone: gemini-1.5-pro-002, gemini-1.5-flash-002, or Llama-3.1-70B;
- gemini-1.5-flash-002 with one or two cheaper models, gemini-1.5-pro-002 asked only when they
  do not all give the same answer (every pairing whose cheap part costs at most 1.2 USD/Mtok).

The policies of all categories are chosen together, by a Lagrangian sweep of the
multiple-choice knapsack "most right answers for at most ``--budget`` × what asking
gemini-1.5-pro-002 on every item costs". Split as in ``bench/protocol.py`` (per seed: questions
40/30/30); figures on **test**:

- *honest*: the policies chosen on the validation questions (~127 per category), run on test;
  ``--fit-on trainval``: on the training and validation questions (~300 per category; the
  onboarded models' training answers are used too, so this is more data than the protocol
  allows: a probe of whether more data would find the plans); ``--shrink K``: each category's
  table blended with the table of all categories, worth ``K`` items (a grid of K is one row
  each; choosing K by the test figures would be hindsight, so read the best row as a bound);
- *hindsight*: the policies chosen on the test questions themselves — how much a plan per
  category could gain, not a result.

Gains are in points over gemini-1.5-pro-002 alone (the best single model on every split), mean
and worst over the seeds. Price: the replay's USD per million tokens per call.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from protocol import DEFAULT_SRC, honest_split, load, mean_worst  # noqa: E402

BEST, CHEAP_FIRST = "gemini-1.5-pro-002", "gemini-1.5-flash-002"
ALONE = (BEST, CHEAP_FIRST, "Meta-Llama-3_1-70B-Instruct")


def menu(models: list[str], price: np.ndarray) -> dict[str, tuple[str, list[int]]]:
    at = {m: j for j, m in enumerate(models)}
    out = {f"{m} alone": ("alone", [at[m]]) for m in ALONE}
    others = [j for j, m in enumerate(models) if m not in (BEST, CHEAP_FIRST) and price[j] <= 0.9]
    for size in (1, 2):
        for extra in itertools.combinations(others, size):
            cheap = [at[CHEAP_FIRST], *extra]
            if price[cheap].sum() <= 1.2:
                name = " + ".join(models[c] for c in cheap) + f" agree, else {BEST}"
                out[name] = ("agree", cheap)
    return out


def run_policy(policy: tuple[str, list[int]], rows: np.ndarray, answers: np.ndarray,
               correct: np.ndarray, price: np.ndarray, best: int) -> tuple[float, float]:
    """(right answers, cost) of a policy on ``rows``."""
    kind, cols = policy
    if kind == "alone":
        return float(correct[rows, cols[0]].sum()), float(price[cols[0]] * len(rows))
    said = answers[rows][:, cols]
    agree = (said == said[:, :1]).all(1) & (said[:, 0] != "")
    right = np.where(agree, correct[rows, cols[0]], correct[rows, best])
    cost = price[cols].sum() * len(rows) + price[best] * float((~agree).sum())
    return float(right.sum()), float(cost)


def choose(table: dict[str, dict[str, tuple[float, float]]], budget: float
           ) -> dict[str, str]:
    """One policy per category, most right answers for at most ``budget`` (a Lagrangian sweep
    of the multiple-choice knapsack)."""
    best: tuple[float, dict[str, str]] | None = None
    for lam in np.linspace(0.0, 3.0, 3001):
        pick = {c: max(row, key=lambda name: row[name][0] - lam * row[name][1])
                for c, row in table.items()}
        cost = sum(table[c][pick[c]][1] for c in table)
        right = sum(table[c][pick[c]][0] for c in table)
        if cost <= budget and (best is None or right > best[0]):
            best = (right, pick)
    assert best is not None, "the budget does not cover the cheapest policies"
    return best[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget", type=float, default=0.5,
                    help="share of what asking the best model on every item costs")
    ap.add_argument("--fit-on", choices=("val", "trainval"), default="val",
                    help="the questions the honest plans are chosen on")
    ap.add_argument("--shrink", default="0",
                    help="comma-separated: items' worth of all categories blended into each")
    args = ap.parse_args(argv)
    rs, correct = load(args.src)
    models = list(rs.models)
    price = np.array([rs.costs[m] for m in models])
    answers = np.array([[rs.answers[m][i] or "" for m in models] for i in range(len(rs.tasks))])
    cats = np.array([t.category for t in rs.tasks])
    best = models.index(BEST)
    policies = menu(models, price)
    unit = price / price[best]  # cost in units of one call of the best model

    def table(rows: np.ndarray, shrink: float = 0.0) -> dict[str, dict[str, tuple[float, float]]]:
        """Per category and policy: (right answers, cost) on ``rows``; with ``shrink`` > 0
        each category's figures are blended with all categories' per-item figures, worth
        ``shrink`` items (and scaled back to the category's count)."""
        overall = {name: run_policy(p, rows, answers, correct, unit, best)
                   for name, p in policies.items()} if shrink > 0 else {}
        out = {}
        for c in sorted(set(cats[rows])):
            part = rows[cats[rows] == c]
            n = len(part)
            out[c] = {}
            for name, p in policies.items():
                right, cost = run_policy(p, part, answers, correct, unit, best)
                if shrink > 0:
                    r_all, c_all = overall[name]
                    right = (right + shrink * r_all / len(rows)) / (n + shrink) * n
                    cost = (cost + shrink * c_all / len(rows)) / (n + shrink) * n
                out[c][name] = (right, cost)
        return out

    where = "val" if args.fit_on == "val" else "train+val"
    shrinks = [float(k) for k in args.shrink.split(",")]
    honest: dict[float, list[tuple[float, float]]] = {k: [] for k in shrinks}
    hindsight: list[tuple[float, float]] = []
    for seed in range(args.seeds):
        sp = honest_split(rs, seed)
        test_table = table(sp.test)
        base = correct[sp.test, best].mean()
        fit = sp.val if args.fit_on == "val" else np.concatenate([sp.train, sp.val])

        def on_test(fitted_on: np.ndarray, shrink: float) -> tuple[float, float]:
            """(gain over the best model, price) on test of the plans chosen on ``fitted_on``."""
            pick = choose(table(fitted_on, shrink), args.budget * len(fitted_on))
            right = sum(test_table[c][pick[c]][0] for c in test_table)
            cost = sum(test_table[c][pick[c]][1] for c in test_table)
            return right / len(sp.test) - base, cost / len(sp.test)

        hindsight.append(on_test(sp.test, 0.0))  # the hindsight plans need no shrinkage
        for k in shrinks:
            honest[k].append(on_test(fit, k))
        print(f"seed {seed}: {BEST} {base:.1%}; honest "
              + ", ".join(f"{100 * honest[k][-1][0]:+.2f} points at {honest[k][-1][1]:.3f}x"
                          + (f" (shrink {k:g})" if len(shrinks) > 1 else "") for k in shrinks)
              + f"; hindsight {100 * hindsight[-1][0]:+.2f} at {hindsight[-1][1]:.3f}x")
    shown = [(f"honest (chosen on {where}, shrink {k:g})", honest[k]) for k in shrinks]
    for name, rows in [*shown, ("hindsight (chosen on test)", hindsight)]:
        g = mean_worst([100 * r[0] for r in rows])
        c = mean_worst([r[1] for r in rows], worst="max")
        print(f"{name}: {g['mean']:+.2f} points over {BEST} (worst {g['worst']:+.2f}) at "
              f"{c['mean']:.3f}x its price (most {c['worst']:.3f}x); budget {args.budget}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
