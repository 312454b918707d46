"""``-k auto``: route, then escalate through calibrated stages, or abstain (design §8).

A cascade is a list of stages, cheapest first. A stage is written as

- ``route:N``: the N best models for this prompt's cluster by Ψ + λ·cost (the router),
- a panel name from config.toml (``strong``), or
- model aliases joined by ``+`` (``fast-a+fast-b+slow-c``).

Each stage asks its members (a model already asked by an earlier stage for this prompt is not
asked again: its vote is reused) and computes a confidence c(x) with one of the signals:

- ``agreement``: votes for the leading label / stage members (no answer counts against it),
- ``votes``: the same over every vote gathered so far (later stages see more votes),
- ``weighted``: reliability-weighted agreement: each member's vote weighs its profiled
  accuracy on this prompt's cluster (1 − Ψ); confidence = weight behind the leader / total
  weight of the stage (no answer counts against it).

The first stage with c(x) ≥ its calibrated threshold answers; if none does, the call abstains
(exit code 3). Uncalibrated, the stages are ``route:3`` (or the first 3 members of the default
panel when nothing is profiled) then the default panel, each answering only when unanimous
(``agreement`` = 1): a conservative default with no risk guarantee, reported as
``"calibrated": false``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..errors import ExitCode, UsageError
from ..events import Event, VoteFailed, VoteReceived, VoteStarted
from ..vote import build_messages, new_call_id
from .calibrate import StageCalibration, fixed_sequence_threshold
from .profile import ask_model, load_router
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

    def members(self, settings: Any, router: Router | None, cluster: int, lam: float) -> list[str]:
        n = self.routed
        if n is not None:
            if router is None:
                from ..registry import Registry

                return [m.alias for m in Registry(settings).select(k=n)]
            return router.rank(cluster, lam).top(n)
        if "+" in self.spec or self.spec in settings.models:
            names = [x.strip() for x in self.spec.split("+") if x.strip()]
        else:
            from ..registry import Registry

            names = Registry(settings).panel(self.spec)
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
    by its model's reliability (a tie in weight is confidence 0).
    """
    if signal not in SIGNALS:
        raise UsageError(f"--signal must be one of {', '.join(SIGNALS)}")
    valid = [v for v in votes if v is not None]
    if not votes or not valid:
        return None, 0.0
    if signal != "weighted":
        counts = Counter(valid).most_common()
        if len(counts) > 1 and counts[0][1] == counts[1][1]:
            return None, 0.0
        return counts[0][0], counts[0][1] / len(votes)
    rel = list(reliability) if reliability is not None else [DEFAULT_RELIABILITY] * len(votes)
    weights: dict[str, float] = {}
    for vote, r in zip(votes, rel):
        if vote is not None:
            weights[vote] = weights.get(vote, 0.0) + max(0.0, r)
    total = sum(max(0.0, r) for r in rel)
    ranked = sorted(weights.items(), key=lambda kv: -kv[1])
    if not ranked or total <= 0 or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None, 0.0
    return ranked[0][0], ranked[0][1] / total


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


def default_cascade(settings: Any, router: Router | None) -> CascadeConfig:
    from ..registry import Registry

    panel = settings.get("panel")
    first = "route:3" if router is not None else "+".join(Registry(settings).panel(panel)[:3])
    stages = [first, panel]
    return CascadeConfig(stages=stages, thresholds=[UNCALIBRATED_THRESHOLD] * 2, signal="agreement",
                         calibrated=False)


# -- running a cascade on one prompt ----------------------------------------------------------

@dataclass
class StageOutcome:
    spec: str
    models: list[str]
    answer: str | None
    confidence: float
    threshold: float | None
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.spec, "models": self.models, "answer": self.answer,
                "confidence": round(self.confidence, 4), "threshold": self.threshold,
                "accepted": self.accepted}


@dataclass
class AutoResult:
    id: str
    answer: str | None
    confidence: float | None
    stages: list[StageOutcome]
    votes: dict[str, str | None]
    errors: dict[str, str]
    calls_made: int
    elapsed_s: float
    calibrated: bool
    signal: str
    cluster: int | None
    routed: list[str] | None

    @property
    def abstained(self) -> bool:
        return self.answer is None

    @property
    def exit_code(self) -> ExitCode:
        if self.answer is not None:
            return ExitCode.DECIDED
        if self.votes and all(m in self.errors for m in self.votes):
            return ExitCode.ALL_FAILED
        return ExitCode.NO_DECISION

    def to_dict(self) -> dict[str, Any]:
        answered = next((i for i, s in enumerate(self.stages) if s.accepted), None)
        return {
            "id": self.id, "answer": self.answer,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "abstained": self.abstained,
            "status": "decided" if self.answer is not None else (
                "all_failed" if self.exit_code == ExitCode.ALL_FAILED else "abstained"),
            "answered_by_stage": answered,
            "stages": [s.to_dict() for s in self.stages],
            "calls_made": self.calls_made, "elapsed_s": round(self.elapsed_s, 4),
            "calibrated": self.calibrated, "signal": self.signal,
            "route": {"cluster": self.cluster, "models": self.routed},
            "votes": [{"model": m, "answer": a, "error": self.errors.get(m)} for m, a in self.votes.items()],
        }


class CascadeRunner:
    """Runs a cascade for prompts; votes are cached per prompt so stages share them."""

    def __init__(self, engine: Any, cascade: CascadeConfig, router: Router | None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.engine = engine
        self.cascade = cascade
        self.router = router
        self.on_event = on_event or (lambda e: None)
        self.specs = parse_stages(cascade.stages)

    def _reliability(self, cluster: int, models: Sequence[str]) -> list[float]:
        if self.router is None:
            return [DEFAULT_RELIABILITY] * len(models)
        rel = self.router.reliability(cluster)
        return [rel.get(m, DEFAULT_RELIABILITY) for m in models]

    async def _ask(self, call_id: str, messages: list[dict[str, str]], labels: tuple[str, ...],
                   names: Sequence[str], votes: dict[str, str | None], errors: dict[str, str],
                   task_id: str | None) -> int:
        todo = [n for n in names if n not in votes]
        models = [self.engine.registry.model(n) for n in todo]
        for m in models:
            self.on_event(VoteStarted(call_id, m.alias, m.id))
        outcomes = await asyncio.gather(*(ask_model(self.engine, m, messages, labels, task_id=task_id)
                                          for m in models))
        for out in outcomes:
            votes[out.model] = out.answer
            if out.error is not None:
                errors[out.model] = out.error
                self.on_event(VoteFailed(call_id, out.model, out.error, out.error.split(":")[0],
                                         out.latency_s))
            else:
                self.on_event(VoteReceived(call_id, out.model, out.answer, out.latency_s, None, ""))
        return len(models)

    async def stage_votes(self, call_id: str, question: str, labels: tuple[str, ...],
                          context: str | None, votes: dict[str, str | None], errors: dict[str, str],
                          stage: int, cluster: int, task_id: str | None = None
                          ) -> tuple[list[str], str | None, float, int]:
        """Ask stage ``stage``'s missing members; -> (members, answer, confidence, calls)."""
        members = self.specs[stage].members(self.engine.settings, self.router, cluster, self.cascade.lam)
        messages = build_messages(question, labels, context)
        calls = await self._ask(call_id, messages, labels, members, votes, errors, task_id)
        if self.cascade.signal == "votes":
            pool = list(votes)
        else:
            pool = members
        answer, conf = confidence([votes[m] for m in pool], labels, self.cascade.signal,
                                  self._reliability(cluster, pool))
        return members, answer, conf, calls

    def cluster_of(self, question: str, context: str | None) -> int:
        if self.router is None:
            return 0
        return self.router.cluster_of(question if not context else f"{question}\n\n{context}")

    async def run(self, question: str, labels: tuple[str, ...], context: str | None = None, *,
                  call_id: str | None = None, task_id: str | None = None) -> AutoResult:
        call_id = call_id or new_call_id()
        started = time.monotonic()
        cluster = self.cluster_of(question, context)
        routed = self.router.rank(cluster, self.cascade.lam).top(3) if self.router else None
        votes: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        outcomes: list[StageOutcome] = []
        calls = 0
        answer, conf = None, None
        for s, tau in enumerate(self.cascade.thresholds):
            members, ans, c, n = await self.stage_votes(call_id, question, labels, context, votes,
                                                        errors, s, cluster, task_id)
            calls += n
            accepted = tau is not None and ans is not None and c >= tau
            outcomes.append(StageOutcome(self.specs[s].spec, members, ans, c, tau, accepted))
            if accepted:
                answer, conf = ans, c
                break
        return AutoResult(call_id, answer, conf, outcomes, votes, errors, calls,
                          time.monotonic() - started, self.cascade.calibrated, self.cascade.signal,
                          cluster if self.router else None, routed)


async def run_auto(engine: Any, question: str, labels: Sequence[str], context: str | None = None, *,
                   on_event: Callable[[Event], None] | None = None,
                   lam: float | None = None) -> tuple[AutoResult, str | None]:
    """``fscale scale -k auto``: -> (result, a note for people when uncalibrated)."""
    labels = tuple(a.strip() for a in labels)
    if len(labels) < 2:
        raise UsageError("--answers needs at least two labels")
    router = load_router(engine.settings)
    cascade = CascadeConfig.load(engine.settings)
    note = None
    if cascade is None:
        cascade = default_cascade(engine.settings, router)
        note = ("-k auto is not calibrated (run 'fscale calibrate CAL.jsonl'): using the default "
                f"cascade {' → '.join(cascade.stages)}, each stage answering only when unanimous; "
                "no risk guarantee")
    if lam is not None:
        cascade.lam = lam
    runner = CascadeRunner(engine, cascade, router, on_event)
    return await runner.run(question, labels, context), note


# -- calibration on a labelled file ---------------------------------------------------------

@dataclass
class CalibrationReport:
    cascade: CascadeConfig
    stages: list[StageCalibration]
    items: int
    coverage: float
    risk: float | None
    calls_per_item: float

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
                "calls_per_item": round(self.calls_per_item, 3)}


async def calibrate_on_tasks(engine: Any, tasks: Sequence[Task], stages: Sequence[str], *,
                             alpha: float, delta: float, signal: str = DEFAULT_SIGNAL, lam: float = 0.0,
                             on_progress: Callable[[int, int], None] | None = None,
                             concurrency: int | None = None) -> CalibrationReport:
    """Run the cascade's stages on labelled tasks and calibrate a threshold per stage.

    Stage s is only run on the items no earlier stage accepted (votes are reused), so
    calibration costs about what the cascade will cost at run time.
    """
    if signal not in SIGNALS:
        raise UsageError(f"--signal must be one of {', '.join(SIGNALS)}")
    router = load_router(engine.settings)
    specs = parse_stages(stages)
    if router is None and any(s.routed for s in specs):
        raise UsageError("a route:N stage needs profiled models: run 'fscale profile' first")
    cascade = CascadeConfig(stages=[s.spec for s in specs], thresholds=[None] * len(specs),
                            signal=signal, lam=lam, alpha=alpha, delta=delta)
    runner = CascadeRunner(engine, cascade, router)
    limit = asyncio.Semaphore(concurrency or engine.settings.get("batch_concurrency"))
    n = len(tasks)
    state = [({}, {}) for _ in tasks]  # votes, errors per item
    clusters = ([int(c) for c in router.clusters.assign([t.text for t in tasks])]
                if router is not None and router.clusters is not None else [0] * n)
    remaining = np.ones(n, dtype=bool)
    results: list[StageCalibration] = []
    calls = np.zeros(n)
    total_jobs = n * len(specs)
    done = 0

    for s in range(len(specs)):
        conf = np.zeros(n)
        correct = np.zeros(n, dtype=bool)

        async def one(i: int) -> None:
            nonlocal done
            t = tasks[i]
            votes, errors = state[i]
            async with limit:
                _m, ans, c, k = await runner.stage_votes("calibrate", t.question, t.answers, t.context,
                                                         votes, errors, s, clusters[i], t.id)
            calls[i] += k
            conf[i], correct[i] = c, ans == t.label
            done += 1
            if on_progress is not None:
                on_progress(done, total_jobs)

        await asyncio.gather(*(one(i) for i in np.flatnonzero(remaining)))
        done += int((~remaining).sum())
        cal = fixed_sequence_threshold(conf[remaining], correct[remaining], alpha, delta / len(specs))
        results.append(cal)
        cascade.thresholds[s] = cal.threshold
        if cal.threshold is not None:
            remaining &= ~(conf >= cal.threshold)
    accepted = sum(r.accepted for r in results)
    errors_ = sum(r.errors for r in results)
    cascade.stats = [r.to_dict() | {"stage": spec} for r, spec in zip(results, cascade.stages)]
    for st in cascade.stats:
        st.pop("tested", None)
    return CalibrationReport(cascade, results, n, accepted / n if n else 0.0,
                             errors_ / accepted if accepted else None, float(calls.mean()) if n else 0.0)


# -- offline evaluation on recorded answers (the benchmark uses the same functions) ----------

def stage_arrays(answers: Mapping[str, Sequence[str | None]], gold: Sequence[str],
                 labels: Sequence[Sequence[str]], stage_members: Sequence[Sequence[Sequence[str]]],
                 signal: str, reliability: Callable[[int, str], float] | None = None
                 ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Confidence, correctness and cumulative call count per stage for recorded answers.

    ``answers[model][i]`` is model's recorded vote on item i; ``stage_members[s][i]`` the
    models of stage s for item i (routed stages differ per item). Same ``confidence`` as
    run time; votes are shared between stages exactly as ``CascadeRunner`` shares them.
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
