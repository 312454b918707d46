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
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from .ratings import BASE, ModelRating, sigma

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
