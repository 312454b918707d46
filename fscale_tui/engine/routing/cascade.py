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
reused. Each stage's confidence c(x) comes from its voting rule (:mod:`..decide.rules`):

- ``agreement``: votes for the leading label / stage members (no answer counts against it),
- ``votes``: the same over every vote gathered so far (later stages see more votes),
- ``weighted``: reliability-weighted agreement: each member's vote weighs its profiled
  accuracy on this prompt's cluster (1 − Ψ); confidence = weight behind the leader / total
  weight of the stage (no answer counts against it).

- ``posterior``: P(leader is right | votes), see :class:`..decide.rules.posterior.Posterior`.

The first stage with c(x) ≥ its calibrated threshold answers; if none does, the call abstains
(exit code 3). A stage that calibration found can never answer is skipped (not paid for).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base import storage
from ..base.errors import UsageError
from ..decide.rules import DEFAULT_SPREAD, VotingRule, rule_for, signals
from ..decide.rules.posterior import Posterior
from .risk import calibrate_cascade
from .profile import load_router
from .router import Router, routing_dir

if TYPE_CHECKING:
    from ..catalog.registry import Registry
    from ..base.settings import Settings

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


def calibration_path(settings: Settings) -> Path:
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

    def members(self, settings: Settings, router: Router | None, cluster: int, lam: float,
                registry: Registry, order: str = "routed") -> list[str]:
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
    if signal not in signals():
        raise UsageError(f"--signal must be one of {', '.join(signals())}")
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
    def load(cls, settings: Settings) -> "CascadeConfig | None":
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
                   order=str(doc.get("order")) if doc.get("order") in ORDERS else DEFAULT_ORDER)

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

    def save(self, settings: Settings) -> Path:
        path = calibration_path(settings)
        doc = {**self.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.scores is not None:
            doc["scores"] = self.scores
        with storage.locked(path):
            storage.write_json(path, doc)
        return path


def adaptive_stages(max_calls: int) -> list[str]:
    return [f"route:{n}" for n in range(1, max_calls + 1)]


def default_cascade(settings: Settings, router: Router | None, registry: Registry) -> CascadeConfig:
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

    def __init__(self, settings: Settings, registry: Registry, config: "CascadeConfig | None" = None,
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
