"""``-k auto``: route, then escalate through calibrated stages, or abstain (design §8).

A cascade is a list of stages, cheapest first. A stage is written as

- ``route:N``: the N best models for this prompt's cluster by Ψ + λ·cost (the router),
- a panel name from config.toml (``strong``), or
- model aliases joined by ``+`` (``fast-a+fast-b+slow-c``).

At run time every stage is a vote of the same :class:`~fscale_tui.engine.vote.VoteRunner`
that ``scale`` uses (the engine runs them: early decision, substitution, health, events, one
logged call): a model already asked by an earlier stage is not asked again, its vote is
reused. Each stage's confidence c(x) comes from its voting rule (:mod:`..voting`):

- ``agreement``: votes for the leading label / stage members (no answer counts against it),
- ``votes``: the same over every vote gathered so far (later stages see more votes),
- ``weighted``: reliability-weighted agreement: each member's vote weighs its profiled
  accuracy on this prompt's cluster (1 − Ψ); confidence = weight behind the leader / total
  weight of the stage (no answer counts against it).

The first stage with c(x) ≥ its calibrated threshold answers; if none does, the call abstains
(exit code 3). A stage that calibration found can never answer is skipped (not paid for).
Uncalibrated, the stages are ``route:3`` (or the first 3 members of the default panel when
nothing is profiled) then the default panel, each answering only when unanimous
(``agreement`` = 1): a conservative default with no risk guarantee (``"calibrated": false``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..errors import UsageError
from ..voting import VotingRule, rule_for
from .calibrate import CascadeCalibrator, StageCalibration
from .profile import load_router
from .router import Router, routing_dir
from .tasks import Task

SIGNALS = ("agreement", "votes", "weighted")
DEFAULT_SIGNAL = "weighted"
UNCALIBRATED_THRESHOLD = 1.0
DEFAULT_RELIABILITY = 0.6


def calibration_path(settings: Any) -> Path:
    return routing_dir(settings) / "calibration.json"


@dataclass(frozen=True)
class StageSpec:
    spec: str

    @property
    def routed(self) -> int | None:
        if self.spec.startswith("route:"):
            try:
                n = int(self.spec.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"stage {self.spec!r}: write route:N with N a number") from None
            if n < 1:
                raise UsageError(f"stage {self.spec!r}: N must be at least 1")
            return n
        return None

    def members(self, settings: Any, router: Router | None, cluster: int, lam: float,
                registry: Any) -> list[str]:
        """The stage's model aliases for a prompt of ``cluster`` (raises on unknown names)."""
        n = self.routed
        if n is not None:
            if router is None:
                return [m.alias for m in registry.select(k=n)]
            return router.rank(cluster, lam).top(n)
        if "+" in self.spec or self.spec in settings.models:
            names = [x.strip() for x in self.spec.split("+") if x.strip()]
        else:
            names = registry.panel(self.spec)
        for name in names:
            if name not in settings.models:
                raise UsageError(f"stage {self.spec!r}: unknown model {name!r} (see 'fscale models')")
        return names


def parse_stages(value: str | Sequence[str]) -> list[StageSpec]:
    items = value.split(",") if isinstance(value, str) else list(value)
    stages = [StageSpec(x.strip()) for x in items if x.strip()]
    if not stages:
        raise UsageError("--stages needs at least one stage, e.g. route:3,strong")
    for s in stages:
        _ = s.routed  # validates route:N
    return stages


def confidence(votes: Sequence[str | None], labels: Sequence[str], signal: str,
               reliability: Sequence[float] | None = None) -> tuple[str | None, float]:
    """(leading label, confidence) of a list of votes (None = no answer / failed).

    ``agreement``/``votes``: share of all votes that back the leader (a tie for the lead is
    confidence 0: there is nothing to answer). ``weighted``: the same with each vote weighted
    by its model's reliability (a tie in weight is confidence 0). The same voting rules as at
    run time (:mod:`..voting`); benches and calibration on recorded answers use this.
    """
    if signal not in SIGNALS:
        raise UsageError(f"--signal must be one of {', '.join(SIGNALS)}")
    if not votes:
        return None, 0.0
    names = [f"m{i}" for i in range(len(votes))]
    rel = list(reliability) if reliability is not None else [DEFAULT_RELIABILITY] * len(votes)
    rule = rule_for(signal, reliability=dict(zip(names, rel)),
                    default_reliability=DEFAULT_RELIABILITY)
    tally = rule.decide([rule.ballot(n, v) for n, v in zip(names, votes)], labels)
    return tally.answer, tally.agreement


# -- stored calibration ---------------------------------------------------------------------

@dataclass
class CascadeConfig:
    stages: list[str]
    thresholds: list[float | None]
    signal: str = DEFAULT_SIGNAL
    lam: float = 0.0
    alpha: float | None = None
    delta: float | None = None
    calibrated: bool = True
    stats: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.stages, "thresholds": self.thresholds, "signal": self.signal,
                "lambda": self.lam, "alpha": self.alpha, "delta": self.delta,
                "calibrated": self.calibrated, "stats": self.stats}

    @classmethod
    def load(cls, settings: Any) -> "CascadeConfig | None":
        doc = storage.read_json(calibration_path(settings))
        if not doc.get("stages"):
            return None
        return cls(stages=list(doc["stages"]), thresholds=list(doc["thresholds"]),
                   signal=doc.get("signal", DEFAULT_SIGNAL), lam=float(doc.get("lambda") or 0.0),
                   alpha=doc.get("alpha"), delta=doc.get("delta"), calibrated=True,
                   stats=list(doc.get("stats") or []))

    def save(self, settings: Any) -> Path:
        path = calibration_path(settings)
        with storage.locked(path):
            storage.write_json(path, {**self.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        return path


def default_cascade(settings: Any, router: Router | None, registry: Any) -> CascadeConfig:
    """``route:3`` (or the default panel's first 3) then the default panel, unanimity only."""
    panel = settings.get("panel")
    members = registry.panel(panel)
    first = "route:3" if router is not None else "+".join(members[:3])
    stages = [first, "+".join(members)]
    return CascadeConfig(stages=stages, thresholds=[UNCALIBRATED_THRESHOLD] * 2, signal="agreement",
                         calibrated=False)


# -- planning a call: which models each stage asks, with which rule and threshold -------------

@dataclass
class StagePlan:
    spec: str
    members: list[Any]  # ModelConfig, in the stage's order
    threshold: float | None
    rule: VotingRule
    skip: str | None = None  # why the stage is not asked


@dataclass
class AutoPlan:
    stages: list[StagePlan]
    calibrated: bool
    signal: str
    cluster: int | None
    routed: list[str] | None
    note: str | None = None

    def all_members(self) -> set[str]:
        return {m.alias for st in self.stages for m in st.members}


class Cascade:
    """The stored (or default) cascade and the router, loaded once per engine."""

    def __init__(self, settings: Any, registry: Any, config: "CascadeConfig | None" = None,
                 router: Router | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.router = router if router is not None else load_router(settings)
        stored = config or CascadeConfig.load(settings)
        self.note = None
        if stored is None:
            stored = default_cascade(settings, self.router, registry)
            self.note = ("-k auto is not calibrated (run 'fscale calibrate CAL.jsonl'): using the "
                         f"default cascade {' → '.join(stored.stages)}, each stage answering only "
                         "when unanimous; no risk guarantee")
        self.config = stored
        self.specs = parse_stages(stored.stages)

    def reliability(self, cluster: int) -> dict[str, float]:
        return self.router.reliability(cluster) if self.router is not None else {}

    def cluster_of(self, question: str, context: str | None) -> int:
        if self.router is None:
            return 0
        return self.router.cluster_of(question if not context else f"{question}\n\n{context}")

    def plan(self, question: str, context: str | None, *, lam: float | None = None,
             tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
             thresholds: Sequence[float | None] | None = None,
             signal: str | None = None) -> AutoPlan:
        """The stages for one prompt: members (routed per cluster), rule, threshold."""
        cfg = self.config
        lam = cfg.lam if lam is None else lam
        signal = signal or cfg.signal
        thresholds = list(cfg.thresholds if thresholds is None else thresholds)
        cluster = self.cluster_of(question, context)
        rule = rule_for(signal, reliability=self.reliability(cluster), tie_break=tie_break,
                        rating_of=rating_of)
        stages: list[StagePlan] = []
        asked: list[str] = []
        for spec, tau in zip(self.specs, thresholds):
            names = spec.members(self.settings, self.router, cluster, lam, self.registry)
            pool = list(dict.fromkeys(asked + names)) if signal == "votes" else names
            skip = None
            if tau is None and cfg.calibrated:
                skip = "never answers: calibration found no threshold with risk ≤ α"
            stages.append(StagePlan(spec.spec, [self.registry.model(n) for n in pool], tau, rule,
                                    skip))
            if skip is None:
                asked = list(dict.fromkeys(asked + names))
        routed = self.router.rank(cluster, lam).top(3) if self.router is not None else None
        return AutoPlan(stages, cfg.calibrated, signal, cluster if self.router else None, routed,
                        self.note)


# -- calibration on a labelled file ---------------------------------------------------------

@dataclass
class CalibrationReport:
    cascade: CascadeConfig
    stages: list[StageCalibration]
    items: int
    coverage: float
    risk: float | None
    calls_per_item: float

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


async def stage_vote(engine: Any, stage: StagePlan, labels: tuple[str, ...],
                     messages: list[dict[str, str]], prior: Sequence[Any], *, call_id: str,
                     task_id: str | None = None, counter: Any = None) -> tuple[Any, list[Any]]:
    """Every member of a stage votes (no early stop, no substitute: calibration measures the
    stage exactly as specified); -> (tally, the stage's new votes)."""
    from ..vote import VoteRunner

    runner = VoteRunner(engine.asker, stage.members, labels, messages, call_id=call_id,
                        rule=stage.rule, threshold=None, prior=prior, early=False,
                        ask_kwargs={"substitute": False, "task_id": task_id, "counter": counter})
    async for _event in runner.events():
        pass
    return runner.tally, runner.votes


async def calibrate_on_tasks(engine: Any, tasks: Sequence[Task], stages: Sequence[str], *,
                             alpha: float, delta: float, signal: str = DEFAULT_SIGNAL, lam: float = 0.0,
                             on_progress: Callable[[int, int], None] | None = None,
                             concurrency: int | None = None) -> CalibrationReport:
    """Run the cascade's stages on labelled tasks and calibrate a threshold per stage.

    Every stage and panel is resolved for every task before the first model call (a typo
    costs nothing). Stage s is only run on the items no earlier stage accepted (votes are
    reused), so calibration costs about what the cascade will cost at run time.
    """
    from ..client import RequestCounter
    from ..prompts import build_messages

    if signal not in SIGNALS:
        raise UsageError(f"--signal must be one of {', '.join(SIGNALS)}")
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise UsageError("--alpha and --delta must be between 0 and 1")
    specs = parse_stages(stages)
    router = load_router(engine.settings)
    if router is None and any(s.routed for s in specs):
        raise UsageError("a route:N stage needs profiled models: run 'fscale profile' first")
    cascade = CascadeConfig(stages=[s.spec for s in specs], thresholds=[None] * len(specs),
                            signal=signal, lam=lam, alpha=alpha, delta=delta)
    runner = Cascade(engine.settings, engine.registry, cascade, router)
    plans = [runner.plan(t.question, t.context, thresholds=[None] * len(specs)) for t in tasks]
    for plan in plans:  # resolve every member's provider (a missing key is an error now)
        for st in plan.stages:
            engine.registry.select(models=[m.alias for m in st.members])
    limit = asyncio.Semaphore(concurrency or engine.settings.get("batch_concurrency"))
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
                tally, new = await stage_vote(engine, plans[i].stages[s], t.answers,
                                              build_messages(t.question, t.answers, t.context),
                                              votes[i], call_id="calibrate", task_id=t.id,
                                              counter=counters[i])
            votes[i].extend(new)
            conf[i], correct[i] = tally.agreement, tally.answer == t.label
            done += 1
            if on_progress is not None:
                on_progress(done, total_jobs)

        await asyncio.gather(*(one(i) for i in np.flatnonzero(reached)))
        done += int((~reached).sum())
        cal = calibrator.stage(conf, correct)
        results.append(cal)
        cascade.thresholds[s] = cal.threshold
    accepted = sum(r.accepted for r in results)
    errors_ = sum(r.errors for r in results)
    cascade.stats = [r.to_dict() | {"stage": spec} for r, spec in zip(results, cascade.stages)]
    for st in cascade.stats:
        st.pop("tested", None)
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
