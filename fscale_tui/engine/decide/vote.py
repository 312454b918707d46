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
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..ask.asker import Asker
from ..base.calls import ScaleRequest, ScaleResult, Vote
from ..base.events import Cancelled, Event
from ..base.settings import ModelConfig
from .rules import Ballot, Tally, VotingRule


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

