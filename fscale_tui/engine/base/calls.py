"""What a call is, as every layer and every view sees it: the requests (:class:`ScaleRequest`,
:class:`GenerateRequest`), what one model said (:class:`Reply`, a vote in a scale result) and
the results (:class:`ScaleResult` with its :class:`StageOutcome` stages, :class:`GenerateResult`
with its :class:`Candidate` outputs and :class:`JudgeVote` judgments).

Plain dataclasses: the engine fills them, the views render them (``to_dict()`` is the
``--json`` object). Nothing here asks a model or reads a file.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .budget import parse_budget
from .errors import ExitCode, ProviderError, UsageError, exit_code_for
from .spend import Part, Spend

#: Version of the JSON objects the CLI prints (``"schema"``); bumped on incompatible changes.
SCHEMA = 1
#: ``--tie-break``: no decision on a final tie, or the higher-rated backer, or the panel's order.
TIE_BREAKS = ("none", "rating", "order")
VERIFIERS = ("score", "yes")  # weighted: how a verifier scores a candidate
#: Request metadata field that carries a task id to replay providers (real APIs may reject it).
TASK_ID_FIELD = "fscale_task_id"


@dataclass
class RequestCounter:
    """Counts HTTP requests actually sent (retries included) for budget accounting."""

    sent: int = 0


@dataclass
class ChatReply:
    """What a provider sent back for one chat request (``wire.client.ChatClient.chat``)."""

    content: str | None
    reasoning: str | None
    latency_s: float
    attempts: int = 1
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    logprobs: Any = None


def new_call_id() -> str:
    """Sortable and unique: date-time plus 64 random bits."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(8)


@dataclass
class Reply:
    """What one model said (or why it said nothing), as every feature sees it.

    In a scale result this is a member's vote (``vote.Vote`` is this class).
    """

    model: str
    answer: str | None = None  # the parsed label (classification asks only); None = no vote
    latency_s: float | None = None
    error: str | None = None
    status: str = "pending"  # answered | no_answer | failed | cancelled | replaced | pending
    substitute_for: str | None = None
    raw: str | None = None  # the content as received
    thinking: str = ""  # the reasoning, split off the answer
    tokens: int | None = None  # completion tokens
    text: str | None = None  # the reply without its reasoning
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    logprobs: Any = None
    error_kind: str | None = None
    attempts: int = 0
    cost_usd: float | None = None  # tokens × the model's price (USD per million tokens)
    exception: ProviderError | None = field(default=None, repr=False, compare=False)

    @property
    def content(self) -> str | None:
        """The content as received (the chat API's name for it)."""
        return self.raw

    @property
    def reasoning(self) -> str:
        return self.thinking

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "answer": self.answer,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "error": self.error, "status": self.status,
                "substitute_for": self.substitute_for,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.tokens,
                "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8)}

    @property
    def ok(self) -> bool:
        """The model replied (with or without a usable answer)."""
        return self.status in ("answered", "no_answer")

    def fail(self, exc: ProviderError, started: float) -> None:
        self.exception = exc
        self.status = "failed"
        self.error = str(exc)
        self.error_kind = exc.kind
        self.latency_s = time.monotonic() - started


#: A member's vote in a result is the reply the one ask path produced.
Vote = Reply


@dataclass(frozen=True)
class ScaleRequest:
    """One classification call. ``auto`` = route + calibrated cascade (``-k auto``)."""

    question: str
    answers: tuple[str, ...]
    context: str | None = None
    models: tuple[str, ...] | None = None
    panel: str | None = None
    k: int | None = None
    tie_break: str | None = None
    id: str | None = None  # the call id (generated when not given); never a batch item's id
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    auto: bool = False
    lam: float | None = None  # -k auto: cost weight λ for routed stages
    item_id: str | None = None  # a batch item's own id, kept beside the call id
    #: -k auto: abstain unless the answer passes the threshold calibrated for this risk level
    #: (None: the adaptive rule always answers, unless calibration stored an α).
    alpha: float | None = None
    #: -k auto: the most an item may cost on average, "0.7x" (of the best single model) or
    #: "0.002" (USD); None: ``FSCALE_BUDGET`` / ``[routing] budget``, else the planner's default.
    budget: str | None = None

    def validate(self) -> None:
        if not self.question or not self.question.strip():
            raise UsageError("the question is empty")
        labels = [a.strip() for a in self.answers]
        if len(labels) < 2 or any(not a for a in labels):
            raise UsageError("--answers needs at least two non-empty labels, e.g. --answers YES,NO")
        if len({a.casefold() for a in labels}) != len(labels):
            raise UsageError("--answers has the same label twice")
        if self.tie_break is not None and self.tie_break not in TIE_BREAKS:
            raise UsageError(f"--tie-break must be one of {', '.join(TIE_BREAKS)}")
        chosen = sum(x is not None and x != () for x in (self.models, self.panel))
        if chosen > 1:
            raise UsageError("give at most one of --models and --panel")
        if self.auto and chosen:
            raise UsageError("-k auto chooses the models itself: drop --models/--panel")
        if self.alpha is not None:
            if not self.auto:
                raise UsageError("--alpha works with -k auto only (abstain unless confident)")
            if not 0 < self.alpha < 1:
                raise UsageError(f"--alpha must be between 0 and 1 (exclusive), not {self.alpha:g}")
        if self.budget is not None:
            if not self.auto:
                raise UsageError("--budget works with -k auto only (the planner spends it)")
            parse_budget(self.budget)
        if self.k is not None and not self.auto and self.k < 1:
            raise UsageError("-k must be at least 1")
        if self.models and len(set(self.models)) != len(self.models):
            twice = sorted({m for m in self.models if self.models.count(m) > 1})
            raise UsageError(f"--models names {', '.join(twice)} more than once: "
                             "a model votes once per call")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.answers)


@dataclass
class StageOutcome:
    """One ``-k auto`` stage: who was asked, what it concluded, against which threshold."""

    spec: str
    models: list[str]
    answer: str | None
    confidence: float
    threshold: float | None
    accepted: bool
    skipped: str | None = None  # why the stage was not asked (e.g. it can never answer)
    decided_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.spec, "models": self.models, "answer": self.answer,
                "confidence": round(self.confidence, 4), "threshold": self.threshold,
                "accepted": self.accepted, "skipped": self.skipped,
                "decided_early": self.decided_early}


@dataclass
class ScaleResult:
    id: str
    answer: str | None
    confidence: float | None
    votes: list[Vote]
    calls_made: int
    elapsed_s: float
    decided_early: bool
    status: str = "decided"  # decided | tie | no_votes | all_failed | abstained
    counts: dict[str, int] = field(default_factory=dict)
    valid_votes: int = 0
    #: The models whose votes count: every seat's final voter (substitutes included).
    members: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    tie_broken_by: str | None = None
    question: str = ""
    answers: list[str] = field(default_factory=list)
    #: The requests the shadow challengers cost; ``calls_made`` counts only the decision's.
    challenger_calls: int = 0
    #: Every shadow challenger's vote (not part of the decision): several while the learning
    #: is uncertain (the ``challengers`` setting), else one; ``challenger`` is the first.
    challengers: list[Vote] = field(default_factory=list)
    item_id: str | None = None
    #: Notes for people (e.g. "-k 5 asked 3 models: ...") that the CLI prints on stderr.
    notes: list[str] = field(default_factory=list)
    #: ``-k auto`` only: the stages, whether it abstained, calibration and routing.
    auto: bool = False
    stages: list[StageOutcome] = field(default_factory=list)
    calibrated: bool | None = None
    signal: str | None = None
    route: dict[str, Any] | None = None
    #: ``-k auto`` planned on the profile: the plan, the budget and the expected spend (what
    #: was spent is :attr:`spend`).
    planned: dict[str, Any] | None = None

    @property
    def challenger(self) -> Vote | None:
        """The first shadow challenger's vote (None: no challenger on this call)."""
        return self.challengers[0] if self.challengers else None

    @challenger.setter
    def challenger(self, vote: Vote | None) -> None:
        self.challengers = [] if vote is None else [vote, *self.challengers[1:]]

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.status)

    @property
    def abstained(self) -> bool:
        return self.status == "abstained"

    @property
    def spend(self) -> Spend:
        """Decision calls (``calls_made``) and shadow calls (``challenger_calls``), with the
        tokens and USD of their replies; ``pending``: shadows not collected yet."""
        pending = sum(v.status == "pending" for v in self.challengers)
        return Spend.of(self.calls_made, self.votes, self.challenger_calls, self.challengers,
                        pending)

    @property
    def usage(self) -> dict[str, Any]:
        """Tokens and USD of the decision's replies (``spend.decision``; shadows not included)."""
        d = self.spend.decision.to_dict()
        return {k: d[k] for k in ("prompt_tokens", "completion_tokens", "cost_usd")}

    def to_dict(self) -> dict[str, Any]:
        spend = self.spend.to_dict()
        usage = {k: spend["decision"][k] for k in ("prompt_tokens", "completion_tokens",
                                                   "cost_usd")}
        d: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "item_id": self.item_id,
            "answer": self.answer,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "votes": [v.to_dict() for v in self.votes],
            "calls_made": self.calls_made,
            "usage": {k: v for k, v in usage.items() if k != "cost_usd"},
            "cost_usd": usage["cost_usd"],
            "cost_usd_total": spend["cost_usd_total"],
            "spend": spend,
            "elapsed_s": round(self.elapsed_s, 4),
            "decided_early": self.decided_early,
            "status": self.status,
            "counts": self.counts,
            "valid_votes": self.valid_votes,
            "members": self.members,
            "tied": self.tied,
            "tie_broken_by": self.tie_broken_by,
            "challenger": None if self.challenger is None else self.challenger.to_dict(),
            "challenger_calls": self.challenger_calls,
            "challengers": [v.to_dict() for v in self.challengers],
        }
        if self.auto:
            answered = next((i for i, s in enumerate(self.stages) if s.accepted), None)
            d.update({"abstained": self.abstained, "answered_by_stage": answered,
                      "stages": [s.to_dict() for s in self.stages],
                      "calibrated": self.calibrated, "signal": self.signal,
                      "route": self.route})
            planned = self.planned or {}
            usd = planned.get("unit") == "usd"
            d.update({"plan": planned.get("plan"), "budget": planned.get("budget"),
                      "expected_cost_usd": (round(planned["expected_cost"], 8)
                                            if usd and "expected_cost" in planned else None),
                      "expected_accuracy": planned.get("expected_accuracy")})
        return d


class StrategyInfo(Protocol):
    """What a request needs to know of a generate strategy (``strategies.Strategy``)."""

    @property
    def search(self) -> bool: ...


@dataclass(frozen=True)
class GenerateRequest:
    """One generate call. ``k`` = candidates (beam/dvts: N beams); ``judges`` = M, whose
    meaning depends on the strategy: judges (judge), verifier calls per candidate
    (weighted), judgments per match (tournament)."""

    question: str
    context: str | None = None
    k: int | None = None
    strategy: str = "judge"
    judges: int | None = None
    models: tuple[str, ...] | None = None
    panel: str | None = None
    judge_models: tuple[str, ...] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    max_steps: int | None = None
    width: int | None = None  # beam / dvts: M (each kept beam is expanded M times)
    gold: str | None = None
    id: str | None = None
    seed: int | None = None  # makes the judges' shuffles reproducible
    verifier: str = "score"  # weighted: "score" (1-10) or "yes" (P(yes) from logprobs)
    early_stop: bool = True  # judge: stop asking judges once the winner cannot change
    #: Candidates written elsewhere (drafts, or another run's samples): the selection
    #: strategies judge these instead of generating; ``candidate_models`` names their authors
    #: (for family exclusion and reporting), aligned with ``candidates``.
    candidates: tuple[str, ...] | None = None
    candidate_models: tuple[str, ...] | None = None
    item_id: str | None = None  # a batch item's own id, kept beside the call id

    def validate(self, known: Mapping[str, StrategyInfo]) -> None:
        """Usage errors, in the order a person fixes them; ``known``: the strategies
        (``strategies.strategies()``, which the request may not import: it is below them)."""
        if not self.question or not self.question.strip():
            raise UsageError("the question is empty")
        if self.strategy not in known:
            raise UsageError(f"--strategy must be one of {', '.join(known)}")
        if self.verifier not in VERIFIERS:
            raise UsageError(f"--verifier must be one of {', '.join(VERIFIERS)}")
        for name in ("k", "judges", "max_steps", "width", "max_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise UsageError("--temperature must be between 0 and 2")
        if self.models and self.panel:
            raise UsageError("give at most one of --models and --panel")
        if self.candidates is not None:
            if known[self.strategy].search:
                raise UsageError("beam and dvts search for their own candidates")
            if not self.candidates:
                raise UsageError("the candidate list is empty")
            if self.candidate_models and len(self.candidate_models) != len(self.candidates):
                raise UsageError("candidate_models must name one model per candidate")


@dataclass
class Candidate:
    index: int
    model: str
    text: str | None
    answer: str | None = None  # normalised final answer (None: none stated / failed)
    latency_s: float | None = None
    error: str | None = None
    votes: float = 0  # judge votes / tournament wins / verifier score, per strategy
    score: float | None = None
    family: str = ""

    @property
    def ok(self) -> bool:
        return self.text is not None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "model": self.model, "text": self.text,
                "answer": self.answer,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "error": self.error, "votes": self.votes,
                "score": None if self.score is None else round(self.score, 4)}


@dataclass
class JudgeVote:
    judge: str
    choice_index: int | None  # candidate index chosen (shuffle undone); None = no valid choice
    choice_model: str | None
    raw: str | None
    order: list[int] = field(default_factory=list)  # candidate indices in the order shown
    latency_s: float | None = None
    error: str | None = None
    score: float | None = None  # verifier score in [0, 1] (weighted)
    candidate_index: int | None = None  # weighted: the candidate this verifier scored
    match: str = ""  # tournament match label

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "choice_index": self.choice_index,
                "choice_model": self.choice_model, "order": self.order, "raw": self.raw,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "error": self.error,
                "score": None if self.score is None else round(self.score, 4),
                "candidate_index": self.candidate_index, "match": self.match}


@dataclass
class GenerateResult:
    id: str
    strategy: str
    status: str  # decided | no_votes | all_failed
    output: str | None
    answer: str | None  # normalised final answer of the output, when it states one
    winner_model: str | None
    winner_index: int | None
    all_outputs: list[Candidate]
    judge_votes: list[JudgeVote]
    counts: dict[str, float] = field(default_factory=dict)
    selected_by: str = ""  # e.g. "judges", "tie-break: consistency", "majority"
    tied: list[int | str] = field(default_factory=list)
    calls_made: int = 0  # HTTP requests actually sent (retries included)
    elapsed_s: float = 0.0
    question: str = ""
    generators: list[str] = field(default_factory=list)
    judges: list[str] = field(default_factory=list)
    steps: int | None = None  # beam / dvts: iterations run
    gold: str | None = None
    coverage: bool | None = None  # some candidate's answer equals the gold answer
    correct: bool | None = None  # the selected answer equals the gold answer
    item_id: str | None = None
    judges_independent: bool | None = None  # every judge is of a family no generator has
    usage: dict[str, Any] = field(default_factory=dict)  # tokens and cost_usd of every request
    #: the judges sharing a family with a generator (why judges_independent is False)
    same_family_judges: list[str] = field(default_factory=list)

    @property
    def total_calls(self) -> int:
        """Deprecated name of ``calls_made`` (kept in the JSON for one release)."""
        return self.calls_made

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.status)

    @property
    def spend(self) -> Spend:
        """Every request of a generate call decides (generators and judges): no shadow."""
        u = self.usage
        return Spend(Part(self.calls_made, int(u.get("prompt_tokens") or 0),
                          int(u.get("completion_tokens") or 0), u.get("cost_usd")))

    def to_dict(self) -> dict[str, Any]:
        spend = self.spend.to_dict()
        return {
            "schema": 1, "id": self.id, "item_id": self.item_id,
            "strategy": self.strategy, "status": self.status,
            "output": self.output, "answer": self.answer,
            "winner_model": self.winner_model, "winner_index": self.winner_index,
            "all_outputs": [c.to_dict() for c in self.all_outputs],
            "judge_votes": [v.to_dict() for v in self.judge_votes],
            "counts": self.counts, "selected_by": self.selected_by, "tied": self.tied,
            "calls_made": self.calls_made, "total_calls": self.calls_made,
            "usage": {k: v for k, v in self.usage.items() if k != "cost_usd"},
            "cost_usd": self.usage.get("cost_usd"),
            "cost_usd_total": spend["cost_usd_total"], "spend": spend,
            "elapsed_s": round(self.elapsed_s, 4),
            "generators": self.generators, "judges": self.judges,
            "judges_independent": self.judges_independent, "steps": self.steps,
            "gold": self.gold, "coverage": self.coverage, "correct": self.correct,
        }
