"""scale(): k models vote on a label, with early decision and substitution (design §5).

A :class:`VoteRunner` runs one *stage*: its members are asked at once through the one ask path
(:meth:`~fscale_tui.engine.ask.asker.Asker.ask_seat`: substitution of dead or failing members,
health, events). After each seat is settled the stage's voting rule
(:mod:`~fscale_tui.engine.decide.rules`) is asked whether the outcome can still change; once it
cannot, the remaining requests are cancelled (their tasks are cancelled, so their HTTP
connections close). A plain ``scale`` call is one stage whose outcome is the winner; a
``-k auto`` call (``routing.cascade``) is several stages whose outcome is "accept" or
"escalate" against a calibrated threshold. Both produce a :class:`ScaleResult`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..ask.asker import Asker, Reply
from ..base.prompts import build_messages  # noqa: F401 - the vote prompt, re-exported
from ..base.settings import ModelConfig
from ..base.errors import ExitCode, UsageError, exit_code_for
from ..base.events import Cancelled, Event
from ..base.spend import Spend
from .rules import TIE_BREAKS, Ballot, Tally, VotingRule

#: A member's vote in a result is the reply the one ask path produced.
Vote = Reply

#: Version of the JSON objects the CLI prints (``"schema"``); bumped on incompatible changes.
SCHEMA = 1


def new_call_id() -> str:
    """Sortable and unique: date-time plus 64 random bits."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(8)


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
            from ..base.budget import parse_budget

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


def ballots(votes: Sequence[Vote], rule: VotingRule, order: dict[str, int]) -> list[Ballot]:
    """Every settled vote as a ballot (failed seats are ballots without an answer)."""
    out = []
    for v in votes:
        if v.status in ("answered", "no_answer", "failed"):
            position = order.get(v.substitute_for or v.model, len(order))
            out.append(rule.ballot(v.model, v.answer if v.status == "answered" else None, position))
    return out


class VoteRunner:
    """Runs one stage of a call and yields its events; ``votes``/``tally`` are set at the end.

    ``prior`` votes (from earlier stages of the same call) count in the stage's tally when
    their models are among ``members``; those models are not asked again. ``votes`` holds
    this stage's own votes in the order their requests started (a failed member, then its
    substitute).
    """

    def __init__(self, asker: Asker, members: list[ModelConfig], labels: tuple[str, ...],
                 messages: list[dict[str, str]], *, call_id: str, rule: VotingRule,
                 threshold: float | None = None, used: set[str] | None = None,
                 reserved: set[str] | frozenset[str] = frozenset(), prior: Sequence[Vote] = (),
                 ask_kwargs: dict[str, Any] | None = None, early: bool = True) -> None:
        self.asker = asker
        self.early = early
        self.members = members
        self.labels = labels
        self.messages = messages
        self.call_id = call_id
        self.rule = rule
        self.threshold = threshold
        self.used = used if used is not None else set()
        self.reserved = reserved
        names = {m.alias for m in members}
        self.reused = [v for v in prior if v.model in names
                       and v.status in ("answered", "no_answer", "failed")]
        self.ask_kwargs = ask_kwargs or {}
        self.order = {m.alias: i for i, m in enumerate(members)}
        self.votes: list[Vote] = []
        self.tally: Tally | None = None
        self.decided_early = False

    def stage_votes(self) -> list[Vote]:
        """The votes this stage's tally counts: reused prior votes, then its own."""
        return self.reused + self.votes

    def _ballots(self) -> list[Ballot]:
        return ballots(self.stage_votes(), self.rule, self.order)

    async def events(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[Event | tuple[str, int]] = asyncio.Queue()
        reused = {v.model for v in self.reused}
        to_ask = [m for m in self.members if m.alias not in reused]
        current: dict[int, Vote] = {}  # seat -> the reply being waited for
        tasks: list[asyncio.Task[Any]] = []

        def launch(index: int, model: ModelConfig) -> None:
            def on_start(reply: Vote) -> None:
                self.votes.append(reply)
                current[index] = reply

            async def seat() -> None:
                try:
                    await self.asker.ask_seat(model, self.messages, used=self.used,
                                              reserved=self.reserved, call_id=self.call_id,
                                              emit=queue.put_nowait, on_start=on_start,
                                              labels=self.labels, **self.ask_kwargs)
                finally:
                    queue.put_nowait(("seat", index))

            tasks.append(asyncio.create_task(seat()))

        for model in self.members:
            self.used.add(model.alias)
        for index, model in enumerate(to_ask):
            launch(index, model)
        open_seats = set(range(len(to_ask)))

        def settled() -> bool:
            if not self.early:
                return False
            pending = [self.rule.weight(current[i].model if i in current else to_ask[i].alias)
                       for i in open_seats]
            return self.rule.can_decide_early(self._ballots(), self.labels, pending,
                                              self.threshold)

        try:
            while open_seats:
                item = await queue.get()
                if isinstance(item, tuple):
                    open_seats.discard(item[1])
                    if open_seats and settled():
                        break
                    continue
                yield item
        finally:
            # Early decision, an error in the consumer, or Esc in the TUI: cancel what is left.
            remaining = [t for t in tasks if not t.done()]
            for task in remaining:
                task.cancel()
            if remaining:
                await asyncio.gather(*remaining, return_exceptions=True)
        # Events that arrived while the decision was being made (late replies count too).
        while not queue.empty():
            item = queue.get_nowait()
            if not isinstance(item, tuple):
                yield item
        self.tally = self.rule.decide(self._ballots(), self.labels)
        for vote in self.votes:
            if vote.status in ("pending", "cancelled"):
                vote.status = "cancelled"
                # "Decided early" means requests really were cancelled because of it.
                self.decided_early = True
                yield Cancelled(self.call_id, vote.model)


def result_from(call_id: str, request: ScaleRequest, votes: list[Vote], tally: Tally, *,
                calls_made: int, started: float, decided_early: bool) -> ScaleResult:
    """A plain scale call's result from its votes and its rule's tally."""
    labels = request.labels
    result = ScaleResult(
        id=call_id, answer=None, confidence=None, votes=votes, calls_made=calls_made,
        elapsed_s=time.monotonic() - started, decided_early=decided_early,
        counts=dict(tally.counts), valid_votes=tally.valid,
        members=[v.model for v in votes if v.status != "replaced"],
        question=request.question, answers=list(labels), item_id=request.item_id)
    if tally.valid == 0:
        failed = all(v.status in ("failed", "replaced") for v in votes)
        result.status = "all_failed" if failed and votes else "no_votes"
        return result
    result.tied = list(tally.tied)
    if tally.answer is None:
        result.status = "tie"
        return result
    result.tie_broken_by = tally.tie_broken_by
    result.answer = tally.answer
    result.confidence = tally.confidence
    return result

