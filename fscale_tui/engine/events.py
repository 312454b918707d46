"""Events the engine yields while it works; the CLI and the TUI render the same stream.

Plain frozen dataclasses, no framework types. Every event carries the ``call_id`` of the call
it belongs to so that views showing several calls (batches, the TUI) can route it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    call_id: str


@dataclass(frozen=True)
class VoteStarted(Event):
    model: str
    provider_model_id: str
    substitute_for: str | None = None
    variant: str | None = None  # e.g. "seed 2" when one model votes twice


@dataclass(frozen=True)
class VoteDelta(Event):
    """A piece of a streamed reply (only when the request asks for streaming)."""

    model: str
    content: str
    reasoning: str


@dataclass(frozen=True)
class VoteReceived(Event):
    model: str
    answer: str | None  # None = the reply held no answer (no vote)
    latency_s: float
    raw: str | None
    thinking: str
    tokens: int | None = None


@dataclass(frozen=True)
class VoteFailed(Event):
    model: str
    error: str
    kind: str
    latency_s: float


@dataclass(frozen=True)
class MemberSubstituted(Event):
    model: str  # the one that failed or is known to be down
    substitute: str
    reason: str


@dataclass(frozen=True)
class Cancelled(Event):
    """A member's request was cancelled because the decision was already made."""

    model: str
    reason: str = "decided early"


@dataclass(frozen=True)
class Decided(Event):
    """The final result of a call (also sent when there is no decision)."""

    result: Any  # ScaleResult (kept loose to avoid an import cycle)


@dataclass(frozen=True)
class ProbeResult(Event):
    model: str
    status: str  # ok | slow | rate_limited | dead | unavailable | error | skipped
    latency_s: float | None
    detail: str = ""
