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
narrow it the same way, keeping its mean), and takes the ``k`` largest draws, never-rated models
first.

**Shadows on a budget** (:func:`plan`). Exploration is a share of spend, not a count per call:
over the last :data:`BUDGET_WINDOW` calls, the shadow requests may be at most ``shadow_budget``
(``[learning]``, default 0.1) times the decision requests (:func:`allowance`; the calls are
shared by every process of one FSCALE_HOME through the coordination backend). They go only to
outsiders **worth exploring** (:func:`worth_exploring`): not known already (a model with a
routing profile has a labelled accuracy), learnable on this call (some voter of another family
is asked: a family's votes never vouch for each other, so a shadow of the panel's only family
teaches nothing — the embedded local panel), and uncertain where it matters (posterior sd above
:data:`EXPLORE_SD` and it could still clear the panel's weakest member). When no outsider could
take a seat, nothing is spent; at most the ``challengers`` setting per call.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .ratings import BASE, ModelRating, sigma
from .reliability import PEER_MIN_PAIRS, PEERS, Estimate, prior_estimate
from ..wire.coordination import allowed

#: A model is still "uncertain" (worth a shadow) while its accuracy's posterior sd is above
#: this: 0.05 is about 100 rated replies of a 50 % model.
EXPLORE_SD = 0.05
#: Calls over which ``shadow_budget`` bounds the shadows' share of the decision requests.
BUDGET_WINDOW = 200

if TYPE_CHECKING:
    from ..base.settings import ModelConfig
    from ..base.calls import Vote


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


def worth_exploring(candidates: Iterable[str], estimates: Mapping[str, Estimate], *,
                    voters: Iterable[str] = (), family_of: Callable[[str], str] | None = None,
                    known: Iterable[str] = (), draws: Mapping[str, int] | None = None,
                    explore_sd: float = EXPLORE_SD, bar: float | None = None,
                    min_together: int = PEER_MIN_PAIRS, peers: int = PEERS) -> list[str]:
    """The candidates a shadow call would teach something about, sorted.

    - not ``known`` (a routing profile gives a labelled accuracy: nothing to learn label-free);
    - learnable: one of the call's ``voters`` is of another family (with ``family_of``; the
      estimate scores a reply only against other families' votes);
    - uncertain where it matters: posterior sd above ``explore_sd`` and (given ``bar``, the
      estimate of the weakest seat) mean + 2 sd ≥ ``bar`` — it could still take a seat;
    - or **not yet compared with the best voters**: fewer than ``min_together`` calls replied
      together with any voter among the ``peers`` best-estimated models (the strongest voter
      when none is). Its order among the best models rests on their agreement on the same
      calls (:func:`.reliability.peer_offsets`), with one of them is enough to place it (a
      new strongest voter does not start every outsider over); an estimate made beside
      weaker panels is the crowd's, whose shared mistakes misjudge the best models most, so
      no ``bar`` applies here — unless its agreement with the models the best ones placed
      already puts it clearly below them (``Estimate.below_peers``): the comparisons it had
      beside the panels before count, and it is not asked again.
    """
    known = set(known)
    voters = list(voters)
    rated = sorted((v for v in voters if v in estimates), key=lambda v: -estimates[v].accuracy)
    # The voters the peers' order is fitted on: those among the best-estimated models (the
    # call's strongest voter at least).
    best = set(sorted(estimates, key=lambda v: -estimates[v].accuracy)[:max(1, peers)])
    anchors = [v for v in rated if v in best] or rated[:1]
    families = {family_of(v) for v in voters} if family_of is not None else None
    out = []
    for m in sorted(set(candidates)):
        if m in known:
            continue
        if families is not None and family_of is not None and not (families - {family_of(m)}):
            continue
        alpha, beta = _posterior(m, estimates, draws)
        n = alpha + beta
        sd = (alpha * beta / (n * n * (n + 1.0))) ** 0.5
        e = estimates.get(m)
        unpaired = bool(anchors) and min_together > 0 and e is not None and e.replies > 0 \
            and max(e.together.get(v, 0) for v in anchors) < min_together and not e.below_peers
        if unpaired or (sd > explore_sd and (bar is None or alpha / n + 2 * sd >= bar)):
            out.append(m)
    return out


def allowance(window: Iterable[tuple[int, int]], share: float, reserved: int = 0,
              size: int = BUDGET_WINDOW) -> int:
    """Shadow requests a new call may start: ``share`` × the decision requests of the last
    ``size - 1`` calls (``window``: ``(decision, shadow)`` per call, oldest first), minus the
    shadows they and the ``reserved`` in-flight calls already spent. Checked before every call,
    so every run of ``size`` consecutive calls keeps shadows ≤ ``share`` × decisions (an
    in-flight call's own decisions count as none: conservative)."""
    if share <= 0:
        return 0
    recent = list(window)[-(size - 1):] if size > 1 else []
    return max(0, allowed(recent, share) - reserved)  # the shared ledger's rule


def plan(candidates: Iterable[str], estimates: Mapping[str, Estimate], *, budget: int,
         max_k: int, rng: random.Random | None = None, **worth: Any) -> list[str]:
    """The shadows of one call: at most ``budget`` (:func:`allowance`) and ``max_k`` (the
    ``challengers`` setting) of the outsiders :func:`worth_exploring` (``worth``: its keyword
    arguments), chosen by :func:`choose`. Empty when nothing is worth it or nothing is left."""
    k = min(int(budget), int(max_k))
    if k <= 0:
        return []
    pool = worth_exploring(candidates, estimates, **worth)
    return choose(pool, estimates, min(k, len(pool)), rng, draws=worth.get("draws"))


def choose(candidates: Iterable[str], estimates: Mapping[str, Estimate], k: int,
           rng: random.Random | None = None,
           draws: Mapping[str, int] | None = None) -> list[str]:
    """Thompson sampling on the Beta posteriors: the ``k`` models with the largest draws;
    models never rated nor drawn (newly added) come first."""
    rng = rng or random.Random()
    scored = []
    for m in sorted(set(candidates)):
        alpha, beta = _posterior(m, estimates, draws)
        e = estimates.get(m)
        new = (e is None or e.replies == 0) and not (draws and draws.get(m))
        scored.append((new, rng.betavariate(alpha, beta), m))
    scored.sort(reverse=True)
    return [m for _, _, m in scored[:max(0, k)]]


def eligible(models: Iterable["ModelConfig"], *, exclude: Iterable[str],
             available: Callable[["ModelConfig"], bool], allow_thinking: bool) -> list[str]:
    """Aliases that may be a challenger for a call whose members are ``exclude``."""
    taken = set(exclude)
    return [m.alias for m in models
            if m.alias not in taken and (allow_thinking or m.tier != "thinking") and available(m)]


async def collect(task: "asyncio.Task[Vote]", alias: str, grace_s: float) -> "Vote":
    """Wait at most ``grace_s`` for a running challenger, then cancel it (status cancelled)."""
    from ..base.calls import Vote

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
        from ..base.calls import Vote

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
