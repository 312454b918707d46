"""Events the engine yields while it works; the CLI and the TUI render the same stream.

Plain frozen dataclasses, no framework types. Every event carries the ``call_id`` of the call
it belongs to so that views showing several calls (batches, the TUI) can route it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import GenerateResult, ScaleResult


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

    result: ScaleResult


@dataclass(frozen=True)
class StageStarted(Event):
    """``-k auto``: a cascade stage starts asking its members."""

    index: int
    stage: str  # the stage as written: route:3, a panel, a+b+c
    models: tuple[str, ...]
    threshold: float | None


@dataclass(frozen=True)
class StageFinished(Event):
    """``-k auto``: a stage's confidence against its threshold: it answers, or escalates."""

    index: int
    stage: str
    answer: str | None
    confidence: float
    threshold: float | None
    accepted: bool


@dataclass(frozen=True)
class ProbeResult(Event):
    model: str
    status: str  # ok | slow | rate_limited | dead | unavailable | error | no_key
    latency_s: float | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """One probe as ``fscale health --json`` prints it (and the MCP ``health`` tool returns it)."""
        return {"schema": 1, "model": self.model, "status": self.status,
                "latency_s": None if self.latency_s is None else round(self.latency_s, 4),
                "detail": self.detail}


# -- generate (best-of-k, self-consistency, judges, step-wise search) --------------------------
@dataclass(frozen=True)
class GenerateStarted(Event):
    """A generate call began: who writes candidates and who judges them."""

    strategy: str
    generators: tuple[str, ...]
    judges: tuple[str, ...]
    k: int
    #: False when some judge shares a family with a generator (no judge of another family was
    #: available); None when the strategy has no judges.
    judges_independent: bool | None = None
    #: the judges that share a family with a generator (a generator itself included)
    same_family_judges: tuple[str, ...] = ()


@dataclass(frozen=True)
class CandidateGenerated(Event):
    model: str
    index: int  # the candidate's position in the result's ``all_outputs``
    text: str
    latency_s: float
    answer: str | None = None  # normalised final answer, when one can be extracted


@dataclass(frozen=True)
class CandidateFailed(Event):
    model: str
    index: int
    error: str
    kind: str


@dataclass(frozen=True)
class JudgeVoted(Event):
    """One judge's ballot, already mapped back from its shuffled order to candidate indices."""

    judge: str
    choice_model: str | None  # the model whose candidate was chosen (None = no valid choice)
    raw: str | None
    choice_index: int | None = None
    order: tuple[int, ...] = ()  # candidate indices in the order this judge saw them
    latency_s: float = 0.0
    score: float | None = None  # verifier / step score in [0, 1] (weighted, beam, dvts)
    match: str = ""  # tournament: "round 1: #0 vs #1"
    error: str | None = None  # the call failed (then choice_index is None)


@dataclass(frozen=True)
class StepScored(Event):
    """Beam search / DVTS: one partial solution extended by a step and scored."""

    iteration: int
    beam: int
    model: str
    step: str
    score: float | None
    completed: bool
    kept: bool = False


@dataclass(frozen=True)
class Generated(Event):
    """The final result of a generate call."""

    result: GenerateResult


@dataclass(frozen=True)
class ChallengerAnswered(Event):
    """The shadow challenger's vote, after ``Decided`` (never part of the decision).

    The decision is announced the moment it is known; the challenger gets at most
    ``challenger_grace`` seconds more, and this event closes the call's stream.
    """

    vote: Any  # vote.Vote


# -- preparing local models (first run) ----------------------------------------------------------
# These are not part of one call: the engine reports them through the ``on_status`` hook given
# to ``Engine(...)`` (``call_id`` is empty). They happen once per model and machine (joining
# the weights) or once per idle period (starting its server), and can take seconds.
@dataclass(frozen=True)
class Preparing(Event):
    """A local model's weights are being joined from the installed packages into the cache
    (once per machine); ``done_bytes`` grows to ``total_bytes``."""

    model: str  # the alias that needs them
    what: str  # the weights' title, e.g. "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)"
    done_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class ServerStarting(Event):
    """A local model's server is being started (it loads the model: a few seconds)."""

    model: str  # the alias asked for
    server: str  # the server's name (model id); aliases may share one server


@dataclass(frozen=True)
class ServerReady(Event):
    """The server announced by ``ServerStarting`` answers."""

    model: str
    server: str
    elapsed_s: float
