"""The shadow challenger: one extra model per scale call, outside the panel (design §7).

It is asked the same question in parallel with the panel, never takes part in the decision,
and its reply is logged and rated like a member's, so models outside the panel earn evidence.

**Choice: Thompson sampling** over each eligible model's rating uncertainty: draw
``θ_m ~ Normal(rating_m, sigma_m²)`` (``sigma`` shrinks as a model plays games, see
:func:`.ratings.sigma`) and pick the largest draw. Unrated models have a wide ``sigma`` and are
tried early; a model that keeps losing is drawn rarely but is never ruled out; a strong outsider is
drawn often until its rating is sure — not "the same best outsider forever".

Eligible: known models outside the call's members, usable (a key or local install), not known
to be dead / unavailable / rate-limited (engine.health), and not thinking-tier unless the
``challenger_thinking`` setting allows it (they are slow and costly).

**Timing.** The challenger starts with the panel. When the decision is made the engine waits at
most ``challenger_grace`` seconds more for it (it has had the whole call's time already), then
cancels it; a cancelled challenger is logged as such and gives no rating evidence. The decision
itself never waits for, nor depends on, the challenger.

**Shared exploration counts.** Each draw is counted by the coordination backend (embedded:
``challenger.json`` in the state directory; Redis: one hash shared by the fleet). With ``n =
max(games rated in this call log, times drawn by any process)``, a model's draw is
``Normal(rating - (sigma(games) - sigma(n)), sigma(n)²)``: exploration the fleet has already
spent on a model (draws this log has not rated yet, e.g. made on other hosts) takes away its
optimism and narrows its spread, so the never-drawn outsiders get their turn instead of every
process drawing the same one. Without shared draws (or when ``draws <= games``) this is plain
Thompson sampling.

**Label-free choice (what the engine uses).** :func:`choose` draws from each model's Beta
posterior of its accuracy (:mod:`.reliability`, Dawid–Skene over the log; the fleet's draws
narrow it the same way, keeping its mean), and takes the ``k`` largest draws. ``k``
(:func:`how_many`) is the number of eligible models still uncertain (posterior sd above
:data:`EXPLORE_SD`, about 100 rated replies) that could still beat the panel's weakest member,
at least 1 and at most the ``challengers`` setting: several shadows per call while there is much
to learn (the first calls, a newly added model), one once every outsider is known.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .ratings import BASE, ModelRating, sigma
from .reliability import Estimate, prior_estimate

#: A model is still "uncertain" (worth an extra shadow) while its accuracy's posterior sd is above
#: this: 0.05 is about 100 rated replies of a 50 % model.
EXPLORE_SD = 0.05

if TYPE_CHECKING:
    from ..config import ModelConfig
    from ..vote import Vote


def thompson_pick(candidates: Iterable[str], ratings: Mapping[str, ModelRating],
                  rng: random.Random | None = None,
                  draws: Mapping[str, int] | None = None) -> str | None:
    """The candidate with the largest draw from Normal(rating, sigma²); None if there is none.

    ``draws``: how often each model was drawn fleet-wide; it narrows sigma like rated games."""
    rng = rng or random.Random()
    best: tuple[float, str] | None = None
    for m in sorted(set(candidates)):
        r = ratings.get(m)
        mean, games = (r.rating, r.games) if r is not None else (BASE, 0)
        spread = sigma(games)
        if draws and int(draws.get(m, 0)) > games:
            spread = sigma(int(draws[m]))
            mean -= sigma(games) - spread  # the fleet already spent this model's optimism
        draw = rng.gauss(mean, spread)
        if best is None or draw > best[0]:
            best = (draw, m)
    return None if best is None else best[1]


def _posterior(model: str, estimates: Mapping[str, Estimate],
               draws: Mapping[str, int] | None) -> tuple[float, float]:
    """Beta(alpha, beta) of a model's accuracy; draws the fleet made beyond the replies this log
    rated count as replies at the current mean (narrower, same mean)."""
    e = estimates.get(model) or prior_estimate(model)
    alpha, beta = e.alpha, e.beta
    extra = int(draws.get(model, 0)) - e.replies if draws else 0
    if extra > 0:
        scale = (alpha + beta + extra) / (alpha + beta)
        alpha, beta = alpha * scale, beta * scale
    return alpha, beta


def how_many(candidates: Iterable[str], estimates: Mapping[str, Estimate], max_k: int,
             draws: Mapping[str, int] | None = None, explore_sd: float = EXPLORE_SD,
             bar: float | None = None) -> int:
    """Shadows for this call: the eligible models still worth learning about, at least 1, at
    most ``max_k``. Worth it: the posterior sd is above ``explore_sd`` and (given ``bar``, the
    estimate of the panel's weakest member: the seat an outsider could take) the model could
    still clear the bar (mean + 2 sd ≥ ``bar``). A model known to be far below needs no more
    than plain Thompson sampling's occasional draw."""
    pool = sorted(set(candidates))
    if not pool or max_k <= 0:
        return 0
    uncertain = 0
    for m in pool:
        alpha, beta = _posterior(m, estimates, draws)
        n = alpha + beta
        sd = (alpha * beta / (n * n * (n + 1.0))) ** 0.5
        uncertain += sd > explore_sd and (bar is None or alpha / n + 2 * sd >= bar)
    return max(1, min(max_k, uncertain, len(pool)))


def choose(candidates: Iterable[str], estimates: Mapping[str, Estimate], k: int,
           rng: random.Random | None = None,
           draws: Mapping[str, int] | None = None) -> list[str]:
    """Thompson sampling on the Beta posteriors: the ``k`` models with the largest draws."""
    rng = rng or random.Random()
    scored = []
    for m in sorted(set(candidates)):
        alpha, beta = _posterior(m, estimates, draws)
        scored.append((rng.betavariate(alpha, beta), m))
    scored.sort(reverse=True)
    return [m for _, m in scored[:max(0, k)]]


def eligible(models: Iterable["ModelConfig"], *, exclude: Iterable[str],
             available: Callable[["ModelConfig"], bool], allow_thinking: bool) -> list[str]:
    """Aliases that may be a challenger for a call whose members are ``exclude``."""
    taken = set(exclude)
    return [m.alias for m in models
            if m.alias not in taken and (allow_thinking or m.tier != "thinking") and available(m)]


async def collect(task: "asyncio.Task[Vote]", alias: str, grace_s: float) -> "Vote":
    """Wait at most ``grace_s`` for a running challenger, then cancel it (status cancelled)."""
    from ..vote import Vote

    if not task.done():
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, grace_s))
        except (TimeoutError, asyncio.TimeoutError):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return Vote(alias, status="cancelled",
                        error="still running after the decision's grace period")
    if task.cancelled():
        return Vote(alias, status="cancelled")
    return task.result()


@dataclass
class Shadows:
    """The shadow challengers of one call: started with the panel, collected after it."""

    aliases: list[str]
    tasks: list[asyncio.Task[Vote]]
    counter: Any  # the RequestCounter all of them count their requests on

    def done(self) -> bool:
        return all(t.done() for t in self.tasks)

    async def cancel(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def collect(self, grace_s: float) -> list[Vote]:
        """Every shadow's vote, first drawn first: all of them get the same ``grace_s`` after
        the decision (they ran in parallel with the panel), then the rest are cancelled."""
        from ..vote import Vote

        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, grace_s))
        votes = []
        for alias, task in zip(self.aliases, self.tasks):
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                votes.append(Vote(alias, status="cancelled",
                                  error="still running after the decision's grace period"))
            elif task.cancelled():
                votes.append(Vote(alias, status="cancelled"))
            else:
                votes.append(task.result())
        return votes
