"""What every generation strategy shares: one run's runtime (:class:`Run`) and how generators
and judges are picked. The request and the result are ``base.calls.GenerateRequest`` /
``GenerateResult``.

A strategy is ``async def strategy(run: Run) -> GenerateResult``: it asks models through
``run.chat`` (which counts every HTTP request sent, retries included, in ``run.counter``) and
reports progress with ``run.emit(event)``. ``generate.generate_events`` wraps it, streams the
events and fills in the accounting (calls, time, gold checks).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..ask.context import Context
from ..decide.answers import asks_for_number, final_answer
from ..base.calls import GenerateRequest, Reply, RequestCounter
from ..base.settings import ModelConfig
from ..base.errors import ProviderError
from ..base.events import Event

#: Sampling temperature for strategies that need diverse samples (self-consistency, search),
#: and for repeated draws of the same model in ``judge``. search-and-learn uses 0.8.
SAMPLING_TEMPERATURE = 0.7
TIER_RANK = {"fast": 0, "medium": 1, "slow": 2, "thinking": 3}

#: Candidate prompt: harmless for free-form tasks, and it makes final answers extractable.
ANSWER_SYSTEM = ("Answer the user's request as well as you can. If it asks for a single result "
                 "(a number, a word, a choice), end your reply with a final line of the form "
                 "'The answer is: <answer>'.")


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
    """One generate call's runtime: the engine's context, request counter, events, randomness."""

    def __init__(self, ctx: Context, request: GenerateRequest, call_id: str,
                 emit: Callable[[Event], None]) -> None:
        self.ctx = ctx
        self.request = request
        self.call_id = call_id
        self.emit = emit
        self.counter = RequestCounter()
        self.replies: list[Reply] = []  # every request's reply, for tokens and cost
        self.rng = random.Random(request.seed)
        #: The task asks for a number: a reply's last number may stand for its final answer.
        self.numeric = asks_for_number(request.question, request.gold)
        self.started = time.monotonic()
        s = ctx.settings
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
        reply = await self.ctx.asker.ask(
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
def pick_generators(ctx: Context, request: GenerateRequest, n: int) -> list[ModelConfig]:
    """Up to ``n`` distinct generator models, diverse families first (registry rules).

    Members known to be down are replaced when the catalogue has a substitute. Strategies
    cycle through the list when they need more samples than there are models.
    """
    reg = ctx.registry
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


def pick_judges(ctx: Context, request: GenerateRequest, generators: list[ModelConfig],
                m: int) -> list[ModelConfig]:
    """``m`` judges, from outside the generators' families wherever the catalogue allows.

    Preference, pass by pass: a family that is neither a generator's nor an already chosen
    judge's; any family outside the generators'; a model that is not itself a generator (same
    family); only when nothing else is usable, the generators themselves. Within a pass: the generators' own providers first (no new
    key or local server needed), user-configured before built-in, faster tier, lower cost,
    alias. Fewer distinct models than ``m`` are cycled (each call is still its own ballot
    with its own shuffle) rather than filled up with generators.
    """
    reg = ctx.registry
    if request.judge_models:
        chosen = [reg.model(a) for a in request.judge_models]
        reg.select(models=[c.alias for c in chosen])  # raises a clear error if unusable
    else:
        gen_aliases = {g.alias for g in generators}
        gen_families = {g.family for g in generators}
        gen_providers = {g.provider for g in generators}
        pool = sorted((x for x in ctx.settings.models.values() if reg.available(x)),
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
