"""``-k auto``: route, then ask more models only while the evidence is not enough (design §8).

Two modes share the stages and the runner below.

**Adaptive** (the default, ``"mode": "adaptive"``): the stages are ``route:1, route:2, …,
route:M`` (the router's best model for this prompt's cluster, then the best overall, one
more per stage; ``"order": "routed"`` takes the N best on the cluster instead) with the
``posterior`` signal: P(leader is right | votes) under the one-coin model with each model's
reliability on this cluster (1 − Ψ). A stage stops the call when the posterior reaches the
stopping threshold τ; the last stage always answers (the posterior-weighted majority). A stage
whose members, even unanimous, cannot reach τ is asked together with the next one (so a call
starts with two models when the routed one alone is not reliable enough on this cluster).
``fscale calibrate CAL.jsonl`` chooses τ and M on labelled items (the most accurate setting
within ``--budget`` calls per item) and keeps every item's per-stage confidence, so that
``scale -k auto --alpha A`` can calibrate Trust-or-Escalate thresholds for any α on the spot:
then the call abstains (exit 3) unless a stage passes its threshold, with the Clopper–Pearson
guarantee below. Uncalibrated, τ = 0.67 and M = 4.

**Cascade** (``fscale calibrate --stages …``): the stages as written, each answering only when
its confidence passes the threshold calibrated for ``--alpha``; otherwise the call abstains.

A cascade is a list of stages, cheapest first. A stage is written as

- ``route:N``: the N best models for this prompt's cluster by Ψ + λ·cost (the router),
- a panel name from config.toml (``strong``), or
- model aliases joined by ``+`` (``fast-a+fast-b+slow-c``).

At run time every stage is a vote of the same :class:`~fscale_tui.engine.decide.vote.VoteRunner`
that ``scale`` uses (the engine runs them: early decision, substitution, health, events, one
logged call): a model already asked by an earlier stage is not asked again, its vote is
reused. Each stage's confidence c(x) comes from its voting rule (:mod:`..voting`):

- ``agreement``: votes for the leading label / stage members (no answer counts against it),
- ``votes``: the same over every vote gathered so far (later stages see more votes),
- ``weighted``: reliability-weighted agreement: each member's vote weighs its profiled
  accuracy on this prompt's cluster (1 − Ψ); confidence = weight behind the leader / total
  weight of the stage (no answer counts against it).

- ``posterior``: P(leader is right | votes), see :class:`..voting.Posterior`.

The first stage with c(x) ≥ its calibrated threshold answers; if none does, the call abstains
(exit code 3). A stage that calibration found can never answer is skipped (not paid for).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..base import storage
from ..base.errors import UsageError
from ..decide.rules import DEFAULT_SPREAD, VotingRule, rule_for
from .risk import CascadeCalibrator, StageCalibration, calibrate_cascade
from .profile import load_router
from .router import Router, routing_dir
from .tasks import Task

SIGNALS = ("agreement", "votes", "weighted", "posterior")
DEFAULT_SIGNAL = "weighted"
MODES = ("adaptive", "cascade")
ORDERS = ("routed", "routed-then-best")
DEFAULT_ORDER = "routed-then-best"
#: Adaptive defaults when nothing is calibrated (the medians of what ``bench/auto.py`` chose on
#: validation data of the MMLU-Pro replay at ≤ 2 calls per item).
DEFAULT_TAU = 0.67
DEFAULT_MAX_CALLS = 4
#: The stopping thresholds ``fscale calibrate`` tries.
TAU_GRID = tuple(round(0.30 + 0.01 * i, 2) for i in range(70))
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
                registry: Any, order: str = "routed") -> list[str]:
        """The stage's model aliases for a prompt of ``cluster`` (raises on unknown names)."""
        n = self.routed
        if n is not None:
            if router is None:  # nothing profiled: the default panel in its listed order
                return list(registry.panel(settings.get("panel")))[:n]
            return router.order(cluster, n, order, lam)
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
               reliability: Sequence[float] | None = None,
               spread: float = DEFAULT_SPREAD) -> tuple[str | None, float]:
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
                    default_reliability=DEFAULT_RELIABILITY, spread=spread, labels=len(labels))
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
    #: ``adaptive``: stop at the first stage whose posterior reaches ``tau`` (the last of the
    #: first ``stop_after`` stages always answers) unless an α is given; ``cascade``: abstain
    #: unless a stage passes its threshold.
    mode: str = "cascade"
    tau: float | None = None
    stop_after: int | None = None
    spread: float = DEFAULT_SPREAD
    #: Adaptive calibration: every calibration item's confidence and correctness per stage,
    #: from which thresholds for any α are calibrated at run time (``--alpha``).
    scores: dict[str, list[list[float]]] | None = None
    #: Adaptive: which models ``route:N`` asks (``routed``: the N best on this cluster;
    #: ``routed-then-best``: the best on this cluster, then the best overall).
    order: str = DEFAULT_ORDER

    def to_dict(self) -> dict[str, Any]:
        d = {"mode": self.mode, "stages": self.stages, "thresholds": self.thresholds,
             "signal": self.signal, "lambda": self.lam, "alpha": self.alpha, "delta": self.delta,
             "calibrated": self.calibrated, "stats": self.stats}
        if self.mode == "adaptive":
            d.update({"tau": self.tau, "stop_after": self.stop_after, "spread": self.spread,
                      "order": self.order})
        return d

    @classmethod
    def load(cls, settings: Any) -> "CascadeConfig | None":
        doc = storage.read_json(calibration_path(settings))
        if not doc.get("stages"):
            return None
        mode = doc.get("mode", "cascade")
        return cls(stages=list(doc["stages"]), thresholds=list(doc["thresholds"]),
                   signal=doc.get("signal", DEFAULT_SIGNAL), lam=float(doc.get("lambda") or 0.0),
                   alpha=doc.get("alpha"), delta=doc.get("delta"), calibrated=True,
                   stats=list(doc.get("stats") or []), mode=mode if mode in MODES else "cascade",
                   tau=doc.get("tau"), stop_after=doc.get("stop_after"),
                   spread=float(doc.get("spread") or DEFAULT_SPREAD), scores=doc.get("scores"),
                   order=doc.get("order") if doc.get("order") in ORDERS else DEFAULT_ORDER)

    def alpha_thresholds(self, alpha: float) -> list[float | None]:
        """Trust-or-Escalate thresholds for ``alpha`` from the stored calibration scores
        (fixed-sequence Clopper–Pearson at δ/stages each, exactly as ``fscale calibrate``)."""
        if not 0 < alpha < 1:
            raise UsageError(f"--alpha must be between 0 and 1 (exclusive), not {alpha:g}")
        if self.mode != "adaptive" or not self.scores:
            raise UsageError("--alpha needs an adaptive calibration: run 'fscale calibrate "
                             "CAL.jsonl' (a labelled file) first")
        conf = np.asarray(self.scores["confidence"], dtype=float)
        ok = np.asarray(self.scores["correct"], dtype=bool)
        stages = calibrate_cascade([conf[:, s] for s in range(conf.shape[1])],
                                   [ok[:, s] for s in range(ok.shape[1])], alpha,
                                   float(self.delta or 0.1))
        return [st.threshold for st in stages]

    def save(self, settings: Any) -> Path:
        path = calibration_path(settings)
        doc = {**self.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.scores is not None:
            doc["scores"] = self.scores
        with storage.locked(path):
            storage.write_json(path, doc)
        return path


def adaptive_stages(max_calls: int) -> list[str]:
    return [f"route:{n}" for n in range(1, max_calls + 1)]


def default_cascade(settings: Any, router: Router | None, registry: Any) -> CascadeConfig:
    """Uncalibrated ``-k auto``: adaptive, τ = 0.67, at most 4 models, always answers.

    Without a profile the routed stages are the default panel's first members and every
    model's reliability is :data:`DEFAULT_RELIABILITY`."""
    return CascadeConfig(stages=adaptive_stages(DEFAULT_MAX_CALLS),
                         thresholds=[None] * DEFAULT_MAX_CALLS, signal="posterior",
                         calibrated=False, mode="adaptive", tau=DEFAULT_TAU,
                         stop_after=DEFAULT_MAX_CALLS)


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
    #: Adaptive without an α: the last stage answers whatever its confidence.
    always_answers: bool = False
    alpha: float | None = None
    #: Planned from the profile (``planner``): the plan, the budget and the expected spend.
    spend: dict[str, Any] | None = None

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
        self.stored = stored is not None
        self._plans: Any = None
        self._plans_error: str | None = None
        if stored is None:
            stored = default_cascade(settings, self.router, registry)
            self.note = ("-k auto is not calibrated (run 'fscale calibrate CAL.jsonl'): asking "
                         f"up to {DEFAULT_MAX_CALLS} routed models until P(right) ≥ "
                         f"{DEFAULT_TAU:g}; no risk guarantee")
        self.config = stored
        self.specs = parse_stages(stored.stages)

    def plans(self) -> Any:
        """The plans of the stored profile (``planner.PlanSet``; planned on first use when the
        profile changed), or None with the reason in ``_plans_error``."""
        if self._plans is None and self._plans_error is None:
            from .planner import load_plans

            try:
                self._plans = load_plans(self.settings) if self.router is not None else None
            except UsageError as exc:
                self._plans_error = str(exc)
            if self._plans is None and self._plans_error is None:
                self._plans_error = "nothing is profiled"
        return self._plans

    def reliability(self, cluster: int) -> dict[str, float]:
        return self.router.reliability(cluster) if self.router is not None else {}

    def cluster_of(self, question: str, context: str | None) -> int:
        if self.router is None:
            return 0
        return self.router.cluster_of(question if not context else f"{question}\n\n{context}")

    def plan(self, question: str, context: str | None, *, lam: float | None = None,
             tie_break: str = "none", rating_of: Callable[[str], float] | None = None,
             thresholds: Sequence[float | None] | None = None,
             signal: str | None = None, alpha: float | None = None,
             labels: int | None = None, budget: Any = None,
             cluster: int | None = None) -> AutoPlan:
        """The stages for one prompt: members (routed per cluster), rule, threshold.

        With a profile and no stored calibration (or with a ``budget``), the plan chosen on the
        profile (``planner``): the plan's models cheapest evidence first, stopping at its τ.
        ``alpha`` (adaptive mode): abstain unless a stage passes the threshold calibrated for
        it; without it an adaptive plan always answers (unless calibrated with an α)."""
        if thresholds is None and alpha is None and (budget is not None or not self.stored):
            plans = self.plans()
            if plans is not None:
                return self._planned(plans, question, context, budget=budget,
                                     tie_break=tie_break, rating_of=rating_of, labels=labels)
            if budget is not None:
                raise UsageError(f"--budget needs a profile to plan from ({self._plans_error}): "
                                 "run 'fscale profile --fit-clusters TRAIN.jsonl' and 'fscale "
                                 "profile VAL.jsonl --models …' first")
        if budget is not None:
            raise UsageError("--budget and --alpha do not go together: the risk guarantee "
                             "comes from the calibration, not from a budget")
        cfg = self.config
        lam = cfg.lam if lam is None else lam
        signal = signal or cfg.signal
        specs = list(self.specs)
        always = False
        if alpha is not None and cfg.mode != "adaptive":
            raise UsageError("--alpha needs an adaptive calibration; the stored one is a "
                             "--stages cascade calibrated for α = "
                             f"{cfg.alpha}: run 'fscale calibrate CAL.jsonl' without --stages")
        if thresholds is not None:
            thresholds = list(thresholds)
        elif cfg.mode == "adaptive" and alpha is not None:
            thresholds = self._alpha_thresholds(alpha)
        elif cfg.mode == "adaptive" and cfg.alpha is None:
            m = max(1, min(len(specs), int(cfg.stop_after or len(specs))))
            specs = specs[:m]
            thresholds = [float(cfg.tau if cfg.tau is not None else DEFAULT_TAU)] * (m - 1) + [0.0]
            always = True
        else:
            thresholds = list(cfg.thresholds)
        if cluster is None:
            cluster = self.cluster_of(question, context)
        if always and tie_break == "none":
            tie_break = "order"  # always answer: a tie goes to the better-routed model's label
        rule = rule_for(signal, reliability=self.reliability(cluster), tie_break=tie_break,
                        rating_of=rating_of, default_reliability=DEFAULT_RELIABILITY,
                        spread=cfg.spread, labels=labels)
        order = cfg.order if cfg.mode == "adaptive" else "routed"
        resolved = [spec.members(self.settings, self.router, cluster, lam, self.registry, order)
                    for spec in specs]
        if always:
            # Fewer models than stages (a small panel): a stage that adds nobody is dropped,
            # and the last distinct one answers.
            keep = [i for i, names in enumerate(resolved) if i == 0 or names != resolved[i - 1]]
            specs = [specs[i] for i in keep]
            resolved = [resolved[i] for i in keep]
            thresholds = [thresholds[i] for i in keep[:-1]] + [0.0]
        stages: list[StagePlan] = []
        asked: list[str] = []
        for index, (spec, tau) in enumerate(zip(specs, thresholds)):
            names = resolved[index]
            pool = list(dict.fromkeys(asked + names)) if signal == "votes" else names
            skip = None
            if tau is None and (cfg.calibrated or alpha is not None):
                skip = "never answers: calibration found no threshold with risk ≤ α"
            elif (cfg.mode == "adaptive" and tau is not None and index < len(specs) - 1
                  and labels and _best_case(rule, names, labels) < tau - 1e-12):
                skip = "cannot reach the threshold even if unanimous: asked with the next stage"
            stages.append(StagePlan(spec.spec, [self.registry.model(n) for n in pool], tau, rule,
                                    skip))
            if skip is None:
                asked = list(dict.fromkeys(asked + names))
        routed = self.router.rank(cluster, lam).top(3) if self.router is not None else None
        note = self.note
        if alpha is not None or (cfg.mode == "adaptive" and cfg.alpha is not None):
            note = None  # a calibrated α: the guarantee is the one calibration gives
        return AutoPlan(stages, cfg.calibrated, signal, cluster if self.router else None, routed,
                        note, always_answers=always,
                        alpha=alpha if alpha is not None else (cfg.alpha if cfg.mode == "adaptive"
                                                               else None))

    def _planned(self, plans: Any, question: str, context: str | None, *, budget: Any,
                 tie_break: str, rating_of: Callable[[str], float] | None,
                 labels: int | None) -> AutoPlan:
        """The stages of the profile's plan for this prompt (see ``planner``): the plan's
        models ordered by price per unit of evidence on the prompt's cluster; stage k asks the
        first k+1 with the escalation-aware reliabilities of stage k and stops at τ; the last
        stage always answers."""
        from ..decide.rules import Posterior
        from .planner import evidence_order, shifted

        choice = plans.choose(budget)
        text = question if not context else f"{question}\n\n{context}"
        chosen = choice.plan_for(text)
        cluster = self.cluster_of(question, context)
        rel0 = self.reliability(cluster)
        spread = float(plans.spread)
        big_l = min(float(labels), spread) if labels else spread
        names = [m for m in chosen.models if m in self.settings.models]
        if not names:
            raise UsageError("the planned models are no longer configured: run 'fscale profile' again")
        base = np.array([[rel0.get(m, DEFAULT_RELIABILITY) for m in names]])
        price = np.array([plans.prices.get(m, 0.0) for m in names])
        order = [names[j] for j in evidence_order(range(len(names)), base, price,
                                                   np.array([big_l]))[0]]
        families = {m: (self.settings.models[m].family or m) for m in names}
        if tie_break == "none":
            tie_break = "order"  # always answer: a tie goes to the earlier-asked model's label
        stages: list[StagePlan] = []
        for k in range(len(order)):
            members = order[: k + 1]
            offsets = chosen.offsets[k] if k < len(chosen.offsets) else {}
            reliability = {m: float(shifted(np.array(rel0.get(m, DEFAULT_RELIABILITY)),
                                            offsets.get(m, 0.0))) for m in names}
            rule = Posterior(reliability, DEFAULT_RELIABILITY, tie_break, rating_of,
                             spread=spread, labels=labels, families=families,
                             family_rho=float(plans.family_rho))
            tau = float(chosen.tau) if k < len(order) - 1 else 0.0
            skip = None
            if k < len(order) - 1 and labels and _best_case(rule, members, labels) < tau - 1e-12:
                skip = "cannot reach the threshold even if unanimous: asked with the next stage"
            stages.append(StagePlan(f"plan:{k + 1}", [self.registry.model(m) for m in members],
                                    tau, rule, skip))
        unit = plans.unit
        spend = {"plan": chosen.label(), "models": order, "tau": chosen.tau, "unit": unit,
                 "expected_cost": choice.expected_cost,
                 "expected_accuracy": round(choice.expected_accuracy, 4),
                 "budget": None if budget is None else
                 {**budget.to_dict(), "amount": choice.amount,
                  "relative_to": plans.best_single["model"],
                  "best_single_cost": plans.best_single["cost"]},
                 "mix": None if choice.a is choice.b else
                 {"plans": [choice.a.label(), choice.b.label()], "share_first": round(choice.p, 4)}}
        cost = (f"${choice.expected_cost:.3g}" if unit == "usd"
                else f"{choice.expected_cost:.2f} calls")
        what = "within --budget " + budget.text if budget is not None else "by default"
        how = (f"{' → '.join(order)}, stopping once P(right) ≥ {chosen.tau:g}" if len(order) > 1
               else f"asking {order[0]}")
        note = (f"-k auto planned on the profile, not calibrated ({what}): {how}; expected "
                f"{cost} per item, {choice.expected_accuracy:.1%} on the profile; no risk "
                "guarantee")
        return AutoPlan(stages, False, "posterior", cluster if self.router else None, order,
                        note, always_answers=True, spend=spend)

    def _alpha_thresholds(self, alpha: float) -> list[float | None]:
        cache = self.__dict__.setdefault("_alpha_cache", {})
        if alpha not in cache:
            cache[alpha] = self.config.alpha_thresholds(alpha)
        return list(cache[alpha])


def _best_case(rule: VotingRule, members: Sequence[str], labels: int) -> float:
    """The confidence of a stage whose members all give the same answer."""
    names = [f"L{i}" for i in range(labels)]
    return rule.decide([rule.ballot(m, names[0]) for m in members], names).agreement


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
    from ..decide.vote import VoteRunner

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
    from ..base.calls import RequestCounter
    from ..base.prompts import build_messages

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


async def calibrate_adaptive_on_tasks(engine: Any, tasks: Sequence[Task], *, max_calls: int,
                                      budget: Any = None, alpha: float | None = None,
                                      delta: float = 0.1, spread: float = DEFAULT_SPREAD,
                                      lam: float = 0.0, order: str = DEFAULT_ORDER,
                                      on_progress: Callable[[int, int], None] | None = None,
                                      concurrency: int | None = None) -> AdaptiveReport:
    """Ask the ``max_calls`` routed models on every labelled task, then choose the stopping
    threshold τ and the number of stages (the best accuracy within ``budget`` calls per item)
    and keep each item's per-stage confidence for ``--alpha`` at run time. With ``alpha``,
    the thresholds for it are calibrated now and stored (then ``-k auto`` abstains)."""
    from ..base.calls import RequestCounter
    from ..base.prompts import build_messages

    from ..base.budget import Budget, parse_budget

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
    router = load_router(engine.settings)
    runner = Cascade(engine.settings, engine.registry, cfg, router)
    plans = [runner.plan(t.question, t.context, thresholds=[None] * max_calls,
                         labels=len(t.answers)) for t in tasks]
    for plan in plans:  # resolve every member's provider (a missing key is an error now)
        engine.registry.select(models=[m.alias for m in plan.stages[-1].members])
    limit = asyncio.Semaphore(concurrency or engine.settings.get("batch_concurrency"))
    n = len(tasks)
    counters = [RequestCounter() for _ in tasks]
    conf = np.zeros((n, max_calls))
    ok = np.zeros((n, max_calls), dtype=bool)
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        t, last = tasks[i], plans[i].stages[-1]
        async with limit:
            _, votes = await stage_vote(engine, last, t.answers,
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
        from .planner import load_plans

        priced = load_plans(engine.settings)
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
