"""Calibrating ``-k auto`` on a labelled file (``fscale calibrate``), offline: the one module
for it. The per-call plan that uses what it stores is ``cascade.py``; the exact binomial
bounds both use are ``risk.py``.

- **Cascade** (``--stages``): run the stages on the tasks, each only on the items no earlier
  stage accepted (votes reused), and choose a threshold per stage with risk ≤ α
  (:func:`calibrate_on_tasks` → :class:`CalibrationReport`).
- **Adaptive** (the default): ask the ``max_calls`` routed models on every task, choose the
  stopping threshold τ and the number of stages within the budget, and keep every item's
  per-stage confidence for ``--alpha`` at run time (:func:`calibrate_adaptive_on_tasks` →
  :class:`AdaptiveReport`).
- The same evaluation on recorded answers, as arrays (``stage_arrays``, ``adaptive_arrays``,
  :func:`choose_stopping`): ``bench/auto.py`` uses them.

:func:`keep` decides whether a calibration is stored: not on a dry run, and not when no stage
could ever answer (every ``-k auto`` call would abstain) unless forced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ask.context import Context
from ..base.budget import Budget, parse_budget
from ..base.calls import RequestCounter, Vote
from ..base.errors import UsageError
from ..base.prompts import build_messages
from ..base.settings import Settings
from ..decide.rules import DEFAULT_SPREAD, Tally, signals
from ..decide.vote import VoteRunner
from .cascade import (DEFAULT_ORDER, DEFAULT_SIGNAL, ORDERS, TAU_GRID, Cascade,
                      CascadeConfig, StagePlan, adaptive_stages, confidence, parse_stages)
from .planner import load_plans
from .profile import load_router
from .risk import CascadeCalibrator, StageCalibration, calibrate_cascade
from .tasks import Task


# -- calibration on a labelled file ---------------------------------------------------------
@dataclass
class CalibrationReport:
    cascade: CascadeConfig
    stages: list[StageCalibration]
    items: int
    coverage: float
    risk: float | None
    calls_per_item: float
    stored: Path | None = None  # where :func:`keep` stored it
    refused: bool = False  # not stored: it would make every -k auto call abstain

    @property
    def answers_nothing(self) -> bool:
        """No stage found a threshold: stored, this cascade would abstain on every call."""
        return all(st.threshold is None for st in self.stages)

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for spec, st in zip(self.cascade.stages, self.stages):
            rows.append({"stage": spec, "threshold": st.threshold, "reached": st.reached,
                         "accepted": st.accepted,
                         "coverage": round(st.accepted / self.items, 4) if self.items else 0.0,
                         "risk": None if st.risk is None else round(st.risk, 4),
                         "upper_bound": None if st.upper_bound is None else round(st.upper_bound, 4)})
        return {"alpha": self.cascade.alpha, "delta": self.cascade.delta, "signal": self.cascade.signal,
                "lambda": self.cascade.lam, "items": self.items, "stages": rows,
                "coverage": round(self.coverage, 4),
                "risk": None if self.risk is None else round(self.risk, 4),
                "calls_per_item": round(self.calls_per_item, 3),
                "answers_nothing": self.answers_nothing}


async def stage_vote(ctx: Context, stage: StagePlan, labels: tuple[str, ...],
                     messages: list[dict[str, str]], prior: Sequence[Vote], *, call_id: str,
                     task_id: str | None = None, counter: RequestCounter | None = None
                     ) -> tuple[Tally, list[Vote]]:
    """Every member of a stage votes (no early stop, no substitute: calibration measures the
    stage exactly as specified); -> (tally, the stage's new votes)."""
    runner = VoteRunner(ctx.asker, stage.members, labels, messages, call_id=call_id,
                        rule=stage.rule, threshold=None, prior=prior, early=False,
                        ask_kwargs={"substitute": False, "task_id": task_id, "counter": counter})
    async for _event in runner.events():
        pass
    assert runner.tally is not None
    return runner.tally, runner.votes


async def calibrate_on_tasks(ctx: Context, tasks: Sequence[Task], stages: Sequence[str], *,
                             alpha: float, delta: float, signal: str = DEFAULT_SIGNAL, lam: float = 0.0,
                             on_progress: Callable[[int, int], None] | None = None,
                             concurrency: int | None = None) -> CalibrationReport:
    """Run the cascade's stages on labelled tasks and calibrate a threshold per stage.

    Every stage and panel is resolved for every task before the first model call (a typo
    costs nothing). Stage s is only run on the items no earlier stage accepted (votes are
    reused), so calibration costs about what the cascade will cost at run time.
    """
    if signal not in signals():
        raise UsageError(f"--signal must be one of {', '.join(signals())}")
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise UsageError("--alpha and --delta must be between 0 and 1")
    specs = parse_stages(stages)
    router = load_router(ctx.settings)
    if router is None and any(s.routed for s in specs):
        raise UsageError("a route:N stage needs profiled models: run 'fscale profile' first")
    cascade = CascadeConfig(stages=[s.spec for s in specs], thresholds=[None] * len(specs),
                            signal=signal, lam=lam, alpha=alpha, delta=delta)
    runner = Cascade(ctx.settings, ctx.registry, cascade, router)
    plans = [runner.plan(t.question, t.context, thresholds=[None] * len(specs)) for t in tasks]
    for plan in plans:  # resolve every member's provider (a missing key is an error now)
        for st in plan.stages:
            ctx.registry.select(models=[m.alias for m in st.members])
    limit = asyncio.Semaphore(concurrency or ctx.settings.get("batch_concurrency"))
    n = len(tasks)
    votes: list[list[Any]] = [[] for _ in tasks]
    counters = [RequestCounter() for _ in tasks]
    calibrator = CascadeCalibrator(n, len(specs), alpha, delta)
    results: list[StageCalibration] = []
    total_jobs = n * len(specs)
    done = 0

    for s in range(len(specs)):
        conf = np.zeros(n)
        correct = np.zeros(n, dtype=bool)
        reached = calibrator.remaining.copy()

        async def one(i: int) -> None:
            nonlocal done
            t = tasks[i]
            async with limit:
                tally, new = await stage_vote(ctx, plans[i].stages[s], t.answers,
                                              build_messages(t.question, t.answers, t.context),
                                              votes[i], call_id="calibrate", task_id=t.id,
                                              counter=counters[i])
            votes[i].extend(new)
            conf[i], correct[i] = tally.agreement, tally.answer == t.label
            done += 1
            if on_progress is not None:
                on_progress(done, total_jobs)

        await asyncio.gather(*(one(int(i)) for i in np.flatnonzero(reached)))
        done += int((~reached).sum())
        cal = calibrator.stage(conf, correct)
        results.append(cal)
        cascade.thresholds[s] = cal.threshold
    accepted = sum(r.accepted for r in results)
    errors_ = sum(r.errors for r in results)
    cascade.stats = [r.to_dict() | {"stage": spec} for r, spec in zip(results, cascade.stages)]
    for stat in cascade.stats:
        stat.pop("tested", None)
    calls = np.array([c.sent for c in counters], dtype=float)
    return CalibrationReport(cascade, results, n, accepted / n if n else 0.0,
                             errors_ / accepted if accepted else None,
                             float(calls.mean()) if n else 0.0)


# -- offline evaluation on recorded answers (the benchmark uses the same functions) ----------

def stage_arrays(answers: Mapping[str, Sequence[str | None]], gold: Sequence[str],
                 labels: Sequence[Sequence[str]], stage_members: Sequence[Sequence[Sequence[str]]],
                 signal: str, reliability: Callable[[int, str], float] | None = None
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Confidence, correctness and cumulative call count per stage for recorded answers.

    ``answers[model][i]`` is model's recorded vote on item i; ``stage_members[s][i]`` the
    models of stage s for item i (routed stages differ per item). Same ``confidence`` as
    run time; votes are shared between stages exactly as the engine shares them at run time.
    """
    n = len(gold)
    confs, oks, calls = [], [], []
    asked: list[list[str]] = [[] for _ in range(n)]
    for members_per_item in stage_members:
        conf = np.zeros(n)
        ok = np.zeros(n, dtype=bool)
        cnt = np.zeros(n)
        for i in range(n):
            members = list(members_per_item[i])
            for m in members:
                if m not in asked[i]:
                    asked[i].append(m)
            pool = asked[i] if signal == "votes" else members
            rel = [reliability(i, m) for m in pool] if reliability else None
            ans, c = confidence([answers[m][i] for m in pool], labels[i], signal, rel)
            conf[i], ok[i], cnt[i] = c, ans == gold[i], len(asked[i])
        confs.append(conf)
        oks.append(ok)
        calls.append(cnt)
    return confs, oks, calls


# -- adaptive -k auto: per-stage posteriors, the stopping rule and its calibration -----------

def adaptive_arrays(answers: Mapping[str, Sequence[str | None]], gold: Sequence[str],
                    labels: Sequence[Sequence[str]], orders: Sequence[Sequence[str]],
                    reliability: Callable[[int, str], float], max_calls: int, *,
                    spread: float = DEFAULT_SPREAD) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct), each items × ``max_calls``: column s is the ``posterior`` of
    the first s+1 models of ``orders[i]`` (the routed order), as the run-time stages compute it."""
    n = len(gold)
    conf = np.zeros((n, max_calls))
    ok = np.zeros((n, max_calls), dtype=bool)
    for i in range(n):
        members = list(orders[i])[:max_calls]
        for s in range(max_calls):
            pool = members[: s + 1]
            ans, c = confidence([answers[m][i] for m in pool], labels[i], "posterior",
                                [reliability(i, m) for m in pool], spread)
            conf[i, s], ok[i, s] = c, ans is not None and ans == gold[i]
    return conf, ok


def adaptive_outcome(conf: np.ndarray, ok: np.ndarray, tau: float,
                     stop_after: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: whether the adaptive answer is right and how many models were asked (stop
    at the first stage with confidence ≥ τ; the last of ``stop_after`` stages answers)."""
    m = max(1, min(stop_after, conf.shape[1]))
    hit = conf[:, :m] >= tau - 1e-12
    hit[:, m - 1] = True
    stop = hit.argmax(1)
    return ok[np.arange(len(stop)), stop], stop + 1


def choose_stopping(conf: np.ndarray, ok: np.ndarray, *, budget: float | None = None,
                    taus: Sequence[float] = TAU_GRID, costs: np.ndarray | None = None
                    ) -> tuple[float, int, float, float]:
    """The (τ, stop_after) with the best accuracy within ``budget`` calls per item (ties: fewer
    calls) -> (τ, stop_after, accuracy, calls per item). Calls counted as models asked; with
    ``costs`` (items × stages: what stopping after each stage costs) the budget is a mean cost."""
    best: tuple[float, float, float, int] | None = None  # (accuracy, -calls, tau, m)
    rows = np.arange(conf.shape[0])
    for m in range(1, conf.shape[1] + 1):
        for tau in taus:
            right, calls = adaptive_outcome(conf, ok, tau, m)
            acc, cpi = float(right.mean()), float(calls.mean())
            spent = cpi if costs is None else float(costs[rows, calls.astype(int) - 1].mean())
            if budget is not None and spent > budget + 1e-9:
                continue
            key = (acc, -cpi, tau, m)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:  # not even one call per item fits: one call is the least there is
        right, calls = adaptive_outcome(conf, ok, 0.0, 1)
        return 0.0, 1, float(right.mean()), float(calls.mean())
    return float(best[2]), int(best[3]), float(best[0]), float(-best[1])


@dataclass
class AdaptiveReport:
    cascade: CascadeConfig
    items: int
    accuracy: float  # over every item (the adaptive rule always answers)
    calls_per_item: float
    asked_per_item: float  # what calibration itself asked (every stage on every item)
    budget: float | None
    alpha_stages: list[StageCalibration] | None = None
    alpha_coverage: float | None = None
    alpha_risk: float | None = None
    stored: Path | None = None  # where :func:`keep` stored it
    refused: bool = False  # not stored: with its α every -k auto call would abstain

    @property
    def answers_nothing(self) -> bool:
        return self.alpha_stages is not None and all(s.threshold is None for s in self.alpha_stages)

    def to_dict(self) -> dict[str, Any]:
        c = self.cascade
        d: dict[str, Any] = {"mode": "adaptive", "items": self.items, "tau": c.tau,
                             "stop_after": c.stop_after, "max_calls": len(c.stages),
                             "spread": c.spread, "order": c.order, "lambda": c.lam, "budget": self.budget,
                             "accuracy": round(self.accuracy, 4),
                             "calls_per_item": round(self.calls_per_item, 3),
                             "calibration_calls_per_item": round(self.asked_per_item, 3),
                             "alpha": c.alpha, "delta": c.delta, "answers_nothing": self.answers_nothing}
        if self.alpha_stages is not None:
            d["stages"] = [{"stage": spec, "threshold": st.threshold, "reached": st.reached,
                            "accepted": st.accepted,
                            "risk": None if st.risk is None else round(st.risk, 4),
                            "upper_bound": None if st.upper_bound is None else round(st.upper_bound, 4)}
                           for spec, st in zip(c.stages, self.alpha_stages)]
            d["coverage"] = round(self.alpha_coverage or 0.0, 4)
            d["risk"] = None if self.alpha_risk is None else round(self.alpha_risk, 4)
        return d


async def calibrate_adaptive_on_tasks(ctx: Context, tasks: Sequence[Task], *, max_calls: int,
                                      budget: Any = None, alpha: float | None = None,
                                      delta: float = 0.1, spread: float = DEFAULT_SPREAD,
                                      lam: float = 0.0, order: str = DEFAULT_ORDER,
                                      on_progress: Callable[[int, int], None] | None = None,
                                      concurrency: int | None = None) -> AdaptiveReport:
    """Ask the ``max_calls`` routed models on every labelled task, then choose the stopping
    threshold τ and the number of stages (the best accuracy within ``budget`` calls per item)
    and keep each item's per-stage confidence for ``--alpha`` at run time. With ``alpha``,
    the thresholds for it are calibrated now and stored (then ``-k auto`` abstains)."""
    if max_calls < 1:
        raise UsageError("--max-calls must be at least 1")
    spec = budget if isinstance(budget, Budget) or budget is None else \
        parse_budget(budget, bare="calls")
    budget = spec.value if spec is not None and spec.kind == "calls" else None
    if alpha is not None and not 0 < alpha < 1:
        raise UsageError("--alpha must be between 0 and 1")
    if not 0 < delta < 1:
        raise UsageError("--delta must be between 0 and 1")
    if spread < 2:
        raise UsageError("--spread must be at least 2")
    if order not in ORDERS:
        raise UsageError(f"--order must be one of {', '.join(ORDERS)}")
    if not tasks:
        raise UsageError("the calibration file has no items")
    cfg = CascadeConfig(stages=adaptive_stages(max_calls), thresholds=[None] * max_calls,
                        signal="posterior", lam=lam, alpha=alpha, delta=delta, mode="adaptive",
                        spread=spread, order=order)
    router = load_router(ctx.settings)
    runner = Cascade(ctx.settings, ctx.registry, cfg, router)
    plans = [runner.plan(t.question, t.context, thresholds=[None] * max_calls,
                         labels=len(t.answers)) for t in tasks]
    for plan in plans:  # resolve every member's provider (a missing key is an error now)
        ctx.registry.select(models=[m.alias for m in plan.stages[-1].members])
    limit = asyncio.Semaphore(concurrency or ctx.settings.get("batch_concurrency"))
    n = len(tasks)
    counters = [RequestCounter() for _ in tasks]
    conf = np.zeros((n, max_calls))
    ok = np.zeros((n, max_calls), dtype=bool)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        t, last = tasks[i], plans[i].stages[-1]
        async with limit:
            _, votes = await stage_vote(ctx, last, t.answers,
                                        build_messages(t.question, t.answers, t.context), [],
                                        call_id="calibrate", task_id=t.id, counter=counters[i])
        by_model = {v.model: (v.answer if v.status == "answered" else None) for v in votes}
        members = [m.alias for m in last.members]
        rule = last.rule
        for s in range(max_calls):
            pool = members[: s + 1]
            tally = rule.decide([rule.ballot(m, by_model.get(m)) for m in pool], t.answers)
            conf[i, s], ok[i, s] = tally.agreement, tally.answer == t.label
        done += 1
        if on_progress is not None:
            on_progress(done, n)

    await asyncio.gather(*(one(i) for i in range(n)))
    costs = None
    if spec is not None and spec.kind != "calls":
        # A price budget: what stopping after stage s costs, from the profile's prices.
        priced = load_plans(ctx.settings)
        if priced is None:
            raise UsageError(f"--budget {spec.text} needs prices from a profile: run 'fscale "
                             "profile' first (or give the budget in calls, e.g. 2)")
        budget = spec.amount(float(priced.best_single["cost"]), priced.unit)
        costs = np.zeros((n, max_calls))
        for i in range(n):
            spent = np.cumsum([priced.prices.get(m.alias, 0.0) for m in plans[i].stages[-1].members])
            spent = spent[:max_calls]
            costs[i, :len(spent)] = spent
            costs[i, len(spent):] = spent[-1] if len(spent) else 0.0
    tau, stop_after, acc, cpi = choose_stopping(conf, ok, budget=budget, costs=costs)
    cfg.tau, cfg.stop_after = tau, stop_after
    # Unrounded: a threshold is one of these values, and a call must reach it with the same
    # arithmetic (rounded up, it was just out of reach of the very item it came from).
    cfg.scores = {"confidence": conf.tolist(), "correct": ok.astype(int).tolist()}
    report = AdaptiveReport(cfg, n, acc, cpi, float(np.mean([c.sent for c in counters])), budget)
    if alpha is not None:
        stages = calibrate_cascade([conf[:, s] for s in range(max_calls)],
                                   [ok[:, s] for s in range(max_calls)], alpha, delta)
        cfg.thresholds = [st.threshold for st in stages]
        accepted = sum(st.accepted for st in stages)
        report.alpha_stages = stages
        report.alpha_coverage = accepted / n
        report.alpha_risk = sum(st.errors for st in stages) / accepted if accepted else None
    cfg.stats = [{"tau": tau, "stop_after": stop_after, "accuracy": round(acc, 4),
                  "calls_per_item": round(cpi, 3), "items": n}]
    return report


def keep(report: CalibrationReport | AdaptiveReport, settings: Settings, *, store: bool,
         force: bool = False) -> None:
    """Store a calibration where ``-k auto`` reads it (``report.stored``), unless ``store`` is
    false (a dry run) or it would make every ``-k auto`` call abstain and ``force`` is not
    given (``report.refused``)."""
    if report.answers_nothing and not force and store:
        report.refused = True
        return
    if store:
        report.stored = report.cascade.save(settings)
