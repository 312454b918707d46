"""scale(): k models vote on a label, with early decision and substitution (design §5).

All members are asked at once. After each reply the leader is checked against what every other
label could still reach with the requests in flight; once nobody can catch it the decision is
made and the remaining requests are cancelled (their tasks are cancelled, so httpx closes the
connections). A final tie is no decision unless a tie-break rule is given. Members that fail
(dead, unavailable, rate-limited after retries, errors) are replaced by a model of the same
tier and another family, so one bad endpoint does not cost a vote.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .client import ChatClient, ChatReply, RequestCounter
from .config import ModelConfig
from .errors import ExitCode, exit_code_for, ProviderError, UsageError
from .events import (Cancelled, Decided, Event, MemberSubstituted, VoteDelta, VoteFailed,
                     VoteReceived, VoteStarted)
from .parsing import parse_reply

TIE_BREAKS = ("none", "rating", "order")
#: Failures after which a member is replaced rather than just counted as failed.
SUBSTITUTABLE = {"dead", "unavailable", "rate_limited", "auth", "server", "timeout", "network",
                 "malformed", "bad_request"}


def new_call_id() -> str:
    """Short, sortable, unique enough: date-time plus 32 random bits."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


@dataclass(frozen=True)
class ScaleRequest:
    question: str
    answers: tuple[str, ...]
    context: str | None = None
    models: tuple[str, ...] | None = None
    panel: str | None = None
    k: int | None = None
    tie_break: str | None = None
    id: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False

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


@dataclass
class Vote:
    model: str
    answer: str | None
    latency_s: float | None
    error: str | None = None
    status: str = "pending"  # answered | no_answer | failed | cancelled | replaced
    substitute_for: str | None = None
    raw: str | None = None
    thinking: str = ""
    tokens: int | None = None

    def fill_from(self, reply: ChatReply, labels: tuple[str, ...]) -> None:
        """Record a reply: the parsed label (or no vote), latency, raw text and reasoning."""
        parsed = parse_reply(reply.content, labels, reasoning=reply.reasoning)
        self.answer = parsed.answer
        self.latency_s = reply.latency_s
        self.raw = reply.content
        self.thinking = parsed.reasoning
        self.tokens = reply.completion_tokens
        self.status = "answered" if parsed.answer is not None else "no_answer"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "answer": self.answer,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "error": self.error, "status": self.status,
                "substitute_for": self.substitute_for}


@dataclass
class ScaleResult:
    id: str
    answer: str | None
    confidence: float | None
    votes: list[Vote]
    calls_made: int
    elapsed_s: float
    decided_early: bool
    status: str = "decided"  # decided | tie | no_votes | all_failed
    counts: dict[str, int] = field(default_factory=dict)
    valid_votes: int = 0
    members: int = 0
    tied: list[str] = field(default_factory=list)
    tie_broken_by: str | None = None
    question: str = ""
    answers: list[str] = field(default_factory=list)
    #: The shadow challenger's vote (not part of the decision), and the requests it cost;
    #: ``calls_made`` counts only the decision's requests.
    challenger: Vote | None = None
    challenger_calls: int = 0

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self.status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "answer": self.answer,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "votes": [v.to_dict() for v in self.votes],
            "calls_made": self.calls_made,
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
        }


def build_messages(question: str, answers: tuple[str, ...], context: str | None) -> list[dict[str, str]]:
    """Context goes in the system message, the question in the user message."""
    labels = ", ".join(answers)
    system = ("You are one member of a panel of independent classifiers. Answer the user's question "
              f"with exactly one of these labels: {labels}. Think briefly if you need to, then end "
              "your reply with a final line of the form 'Answer: <label>'.")
    if context:
        system += "\n\nContext:\n" + context
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{question}\n\nAnswer with one of: {labels}."}]


def can_decide_early(counts: Counter[str], labels: tuple[str, ...], in_flight: int) -> str | None:
    """The leading label if no other label can reach it with the votes still in flight."""
    if not counts or in_flight == 0:
        return None
    leader, top = counts.most_common(1)[0]
    best_other = max((counts.get(lab, 0) for lab in labels if lab != leader), default=0)
    return leader if top > best_other + in_flight else None


def tally(votes: list[Vote], labels: tuple[str, ...]) -> Counter[str]:
    return Counter(v.answer for v in votes if v.status == "answered" and v.answer in labels)


class VoteRunner:
    """Runs one scale call and yields its events; ``result`` is set when it ends."""

    def __init__(self, client: ChatClient, members: list[ModelConfig], request: ScaleRequest, *,
                 call_id: str, max_tokens: int, temperature: float, tie_break: str,
                 substitute: Callable[[ModelConfig, set[str]], ModelConfig | None],
                 is_down: Callable[[str], bool], rating_of: Callable[[str], float],
                 on_failure: Callable[[ModelConfig, ProviderError], None],
                 extra_for: Callable[[ModelConfig], dict[str, Any] | None] | None = None) -> None:
        self.client = client
        self.members = members
        self.request = request
        self.call_id = call_id
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.tie_break = tie_break
        self.substitute = substitute
        self.is_down = is_down
        self.rating_of = rating_of
        self.on_failure = on_failure
        self.extra_for = extra_for or (lambda m: None)
        self.counter = RequestCounter()
        self.result: ScaleResult | None = None

    async def events(self) -> AsyncIterator[Event]:
        req = self.request
        labels = tuple(a.strip() for a in req.answers)
        messages = build_messages(req.question, labels, req.context)
        started = time.monotonic()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        votes: list[Vote] = []
        tasks: dict[asyncio.Task[None], Vote] = {}
        used: set[str] = set()
        models: dict[int, ModelConfig] = {}

        async def ask(vote_index: int, model: ModelConfig) -> None:
            def on_delta(piece: str, think: str) -> None:
                queue.put_nowait(("event", VoteDelta(self.call_id, model.alias, piece, think)))
            try:
                reply = await self.client.chat(
                    model, messages, max_tokens=self.max_tokens, temperature=self.temperature,
                    stream=req.stream, on_delta=on_delta if req.stream else None,
                    counter=self.counter, extra=self.extra_for(model), labels=labels)
                queue.put_nowait(("reply", (vote_index, reply)))
            except ProviderError as exc:
                queue.put_nowait(("error", (vote_index, exc)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug or an unexpected library error: one member fails
                queue.put_nowait(("error", (vote_index, ProviderError("error", f"{type(exc).__name__}: {exc}"))))

        def launch(model: ModelConfig, substitute_for: str | None) -> Event:
            vote = Vote(model=model.alias, answer=None, latency_s=None, substitute_for=substitute_for)
            votes.append(vote)
            idx = len(votes) - 1
            models[idx] = model
            used.add(model.alias)
            task = asyncio.create_task(ask(idx, model))
            task.add_done_callback(lambda t: tasks.pop(t, None))
            tasks[task] = vote
            return VoteStarted(self.call_id, model.alias, model.id, substitute_for,
                               model.options.get("variant"))

        pending_events: list[Event] = []
        for model in self.members:
            used.add(model.alias)
        for model in self.members:
            if self.is_down(model.alias):
                sub = self.substitute(model, used)
                if sub is not None:
                    pending_events.append(MemberSubstituted(self.call_id, model.alias, sub.alias,
                                                            "known to be down (health state)"))
                    pending_events.append(launch(sub, model.alias))
                    continue
            pending_events.append(launch(model, None))

        decided_early = False
        try:
            for ev in pending_events:
                yield ev
            in_flight = len(votes)  # each launched member reports exactly once
            while in_flight:
                kind, payload = await queue.get()
                if kind == "event":
                    yield payload
                    continue
                in_flight -= 1
                for ev in self._record(kind, payload, votes, models, started):
                    yield ev
                if kind == "error":
                    idx, exc = payload
                    if exc.kind in SUBSTITUTABLE:
                        sub = self.substitute(models[idx], used)
                        if sub is not None:
                            votes[idx].status = "replaced"
                            yield MemberSubstituted(self.call_id, models[idx].alias, sub.alias, exc.kind)
                            yield launch(sub, models[idx].alias)
                            in_flight += 1
                leader = can_decide_early(tally(votes, labels), labels, in_flight)
                if leader is not None:
                    decided_early = True
                    break
        finally:
            # Early decision, an error in the consumer, or Esc in the TUI: cancel what is left.
            remaining = list(tasks.items())
            for task, _vote in remaining:
                task.cancel()
            if remaining:
                await asyncio.gather(*(t for t, _ in remaining), return_exceptions=True)
        # Replies that arrived while the decision was being made still count as answers.
        while not queue.empty():
            kind, payload = queue.get_nowait()
            if kind != "event":
                for ev in self._record(kind, payload, votes, models, started):
                    yield ev
        for _task, vote in remaining:
            if vote.status == "pending":
                vote.status = "cancelled"
                yield Cancelled(self.call_id, vote.model)
        self.result = self._finish(votes, labels, started, decided_early)
        yield Decided(self.call_id, self.result)

    def _record(self, kind: str, payload: Any, votes: list[Vote], models: dict[int, ModelConfig],
                started: float) -> list[Event]:
        """Turn one member's reply or failure into its Vote and the event to show."""
        idx, outcome = payload
        vote, model = votes[idx], models[idx]
        if kind == "reply":
            reply: ChatReply = outcome
            vote.fill_from(reply, tuple(a.strip() for a in self.request.answers))
            return [VoteReceived(self.call_id, model.alias, vote.answer, reply.latency_s,
                                 reply.content, vote.thinking, reply.completion_tokens)]
        exc: ProviderError = outcome
        vote.status = "failed"
        vote.error = str(exc)
        vote.latency_s = time.monotonic() - started
        self.on_failure(model, exc)
        return [VoteFailed(self.call_id, model.alias, str(exc), exc.kind, vote.latency_s)]

    def _finish(self, votes: list[Vote], labels: tuple[str, ...], started: float,
                decided_early: bool) -> ScaleResult:
        counts = tally(votes, labels)
        valid = sum(counts.values())
        result = ScaleResult(
            id=self.call_id, answer=None, confidence=None, votes=votes,
            calls_made=self.counter.sent, elapsed_s=time.monotonic() - started,
            decided_early=decided_early, counts=dict(counts), valid_votes=valid,
            members=sum(v.status != "replaced" for v in votes),
            question=self.request.question, answers=list(labels))
        if valid == 0:
            failed = all(v.status in ("failed", "replaced") for v in votes)
            result.status = "all_failed" if failed else "no_votes"
            return result
        top = max(counts.values())
        tied = [lab for lab in labels if counts.get(lab) == top]
        winner = tied[0] if len(tied) == 1 else None
        if winner is None:
            result.tied = tied
            winner = self._break_tie(tied, votes)
            if winner is None:
                result.status = "tie"
                return result
            result.tie_broken_by = self.tie_break
        result.answer = winner
        result.confidence = counts[winner] / valid
        return result

    def _break_tie(self, tied: list[str], votes: list[Vote]) -> str | None:
        """Deterministic: never arrival order. ``order`` = the panel's listed order."""
        if self.tie_break == "none":
            return None
        order = {m.alias: i for i, m in enumerate(self.members)}
        backers = [v for v in votes if v.status == "answered" and v.answer in tied]

        def panel_position(v: Vote) -> int:
            return order.get(v.substitute_for or v.model, len(order))

        if self.tie_break == "rating":
            # Highest rating first; equal ratings fall back to the panel order.
            backers.sort(key=lambda v: (-self.rating_of(v.model), panel_position(v)))
        else:
            backers.sort(key=panel_position)
        return backers[0].answer if backers else None

