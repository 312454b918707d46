"""What every generation strategy shares: the request, the result, and one run's runtime.

A strategy is ``async def strategy(run: Run) -> GenerateResult``: it asks models through
``run.chat`` (which counts every HTTP request sent, retries included, in ``run.counter``) and
reports progress with ``run.emit(event)``. ``generate.generate_events`` wraps it, streams the
events and fills in the accounting (calls, time, gold checks).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..decide.answers import asks_for_number, final_answer
from ..ask.asker import Reply
from ..wire.client import RequestCounter
from ..base.settings import ModelConfig
from ..base.errors import ExitCode, exit_code_for, ProviderError, UsageError
from ..base.events import Event
from ..base.spend import Part, Spend

if TYPE_CHECKING:
    from ..session import Engine

VERIFIERS = ("score", "yes")
#: Sampling temperature for strategies that need diverse samples (self-consistency, search),
#: and for repeated draws of the same model in ``judge``. search-and-learn uses 0.8.
SAMPLING_TEMPERATURE = 0.7
TIER_RANK = {"fast": 0, "medium": 1, "slow": 2, "thinking": 3}

#: Candidate prompt: harmless for free-form tasks, and it makes final answers extractable.
ANSWER_SYSTEM = ("Answer the user's request as well as you can. If it asks for a single result "
                 "(a number, a word, a choice), end your reply with a final line of the form "
                 "'The answer is: <answer>'.")


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

    def validate(self) -> None:
        if not self.question or not self.question.strip():
            raise UsageError("the question is empty")
        from . import strategies

        known = strategies()
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


def answer_of(text: str | None, *, numeric: bool = False) -> str | None:
    """A candidate's final answer, only when the task asked for one: what the text states
    explicitly (``\\boxed{}``, ``#### n``, "The answer is …", "Answer: …"), or, for a task
    that asks for a number (``numeric``: see ``answers.asks_for_number``), its last number.
    A regex, a summary or any free text without a stated answer has none (``None``)."""
    return final_answer(text, fallback=numeric) if text else None


def visible_text(reply: Reply) -> str:
    """The reply without its reasoning (what judges and users see)."""
    return reply.text or ""


class Run:
    """One generate call's runtime: engine access, request counter, events, randomness."""

    def __init__(self, engine: Engine, request: GenerateRequest, call_id: str,
                 emit: Callable[[Event], None]) -> None:
        self.engine = engine
        self.request = request
        self.call_id = call_id
        self.emit = emit
        self.counter = RequestCounter()
        self.replies: list[Reply] = []  # every request's reply, for tokens and cost
        self.rng = random.Random(request.seed)
        #: The task asks for a number: a reply's last number may stand for its final answer.
        self.numeric = asks_for_number(request.question, request.gold)
        self.started = time.monotonic()
        s = engine.settings
        self.max_tokens = request.max_tokens or s.get("max_tokens")
        self.base_temperature = (s.get("temperature") if request.temperature is None
                                 else request.temperature)
        self.sampling_temperature = (SAMPLING_TEMPERATURE if request.temperature is None
                                     else request.temperature)
        self.k = 1  # candidates (beam / dvts: N beams), set by generate_events
        self.generators: list[ModelConfig] = []
        self.judges: list[ModelConfig] = []

    async def chat(self, model: ModelConfig, messages: list[dict[str, Any]], *,
                   temperature: float | None = None, max_tokens: int | None = None,
                   extra: dict[str, Any] | None = None,
                   labels: tuple[str, ...] | None = None) -> Reply:
        """One counted request through the engine's one ask path (health recorded there);
        a failure is raised as the ProviderError it was."""
        reply = await self.engine.asker.ask(
            model, messages, labels=labels, call_id=self.call_id,
            max_tokens=max_tokens or self.max_tokens,
            temperature=self.base_temperature if temperature is None else temperature,
            extra=extra, counter=self.counter)
        self.replies.append(reply)
        if not reply.ok:
            raise reply.exception or ProviderError(reply.error_kind or "error", reply.error or "")
        return reply

    def base_messages(self, system: str = ANSWER_SYSTEM) -> list[dict[str, str]]:
        """Context goes in the system message, the question in the user message."""
        if self.request.context:
            system += "\n\nContext:\n" + self.request.context
        return [{"role": "system", "content": system},
                {"role": "user", "content": self.request.question}]

    def generator_for(self, i: int) -> ModelConfig:
        return self.generators[i % len(self.generators)]

    def temperature_for(self, i: int, *, sampling: bool) -> float:
        """Distinct models answer at the base temperature; repeated draws must differ."""
        if sampling:
            return self.sampling_temperature
        if i < len(self.generators):
            return self.base_temperature
        return max(self.base_temperature, SAMPLING_TEMPERATURE)

    def judges_for(self, exclude_families: Sequence[str], offset: int = 0) -> list[ModelConfig]:
        """The judge list rotated by ``offset``, judges outside ``exclude_families`` first."""
        n = len(self.judges)
        rotated = [self.judges[(offset + j) % n] for j in range(n)]
        outside = [j for j in rotated if j.family not in set(exclude_families)]
        return outside + [j for j in rotated if j not in outside]


# -- model selection ---------------------------------------------------------------------------
def pick_generators(engine: Engine, request: GenerateRequest, n: int) -> list[ModelConfig]:
    """Up to ``n`` distinct generator models, diverse families first (registry rules).

    Members known to be down are replaced when the catalogue has a substitute. Strategies
    cycle through the list when they need more samples than there are models.
    """
    reg = engine.registry
    if request.models:
        members = reg.select(models=request.models)
    else:
        members = reg.select(panel=request.panel, k=n)
    used = {m.alias for m in members}
    out: list[ModelConfig] = []
    for m in members:
        if not reg.available(m):
            sub = reg.substitute(m, used)
            if sub is not None:
                used.add(sub.alias)
                out.append(sub)
                continue
        out.append(m)
    return out


def pick_judges(engine: Engine, request: GenerateRequest, generators: list[ModelConfig],
                m: int) -> list[ModelConfig]:
    """``m`` judges, from outside the generators' families wherever the catalogue allows.

    Preference, pass by pass: a family that is neither a generator's nor an already chosen
    judge's; any family outside the generators'; a model that is not itself a generator (same
    family); only when nothing else is usable, the generators themselves. Within a pass: the generators' own providers first (no new
    key or local server needed), user-configured before built-in, faster tier, lower cost,
    alias. Fewer distinct models than ``m`` are cycled (each call is still its own ballot
    with its own shuffle) rather than filled up with generators.
    """
    reg = engine.registry
    if request.judge_models:
        chosen = [reg.model(a) for a in request.judge_models]
        reg.select(models=[c.alias for c in chosen])  # raises a clear error if unusable
    else:
        gen_aliases = {g.alias for g in generators}
        gen_families = {g.family for g in generators}
        gen_providers = {g.provider for g in generators}
        pool = sorted((x for x in engine.settings.models.values() if reg.available(x)),
                      key=lambda x: (x.provider not in gen_providers, x.builtin,
                                     TIER_RANK.get(x.tier, 9), x.cost, x.alias))
        chosen = []
        families: set[str] = set()
        passes: list[Callable[[ModelConfig], bool]] = [
            lambda x: x.family not in gen_families and x.family not in families,
            lambda x: x.family not in gen_families,
            lambda x: x.alias not in gen_aliases,
        ]
        for accept in passes:
            for x in pool:
                if len(chosen) >= m:
                    break
                if x not in chosen and accept(x):
                    chosen.append(x)
                    families.add(x.family)
        if not chosen:  # only the generators themselves are usable
            chosen = list(generators)
    return [chosen[i % len(chosen)] for i in range(m)]
