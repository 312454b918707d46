"""Model ratings from deployment evidence: real Elo with expected scores (design §7).

Two kinds of evidence move a rating:

**Consensus (every logged call).** Each model that replied plays one game against the
*leave-one-out* majority of the others: the label held by a strict majority of the *other*
valid voters, with at least ``MIN_SUPPORT`` of them behind it (so a model is never scored
against a majority it helped form). It scores 1 when its label is that label and 0 when it
answered something else or gave no answer; with no LOO majority there is no game. Its
expected score is the Elo logistic of its rating against the mean rating of the majority's
supporters::

    E_i = 1 / (1 + 10 ** ((R_opp - R_i) / 400))
    Δ_i = K · w · (S_i - E_i)          w = (supporters / other voters), the majority's strength

and the game is **zero-sum**: the supporters share ``-Δ_i`` between them. That is what keeps a
unanimous panel from drifting: when everyone agrees, every member "wins" as a player and pays
the same amount back as a supporter of the others, so equal ratings stay put and unequal ones
are pulled together; the pool's total rating never changes, so nobody rises without bound by
agreeing with a majority it is part of. What does move ratings is disagreement: a model that
departs from a strong majority of the others loses to it.

**Feedback (a user's verdict on a call).** The truth is known, so each model that replied plays
the truth, a fixed anchor at ``BASE`` rating: score 1 if its label is the true one, else 0.
``--prefer A --over B`` is one direct A-beats-B game. Feedback uses ``K_FEEDBACK`` = 4 × the
consensus K, so one verdict outweighs four consensus games.

New models start at ``BASE`` with a wide uncertainty ``sigma`` = ``SIGMA0 / sqrt(1 + games)``
(used by the challenger's Thompson sampling and shown by ``fscale ratings``), and use a doubled
K for their first ``PROVISIONAL_GAMES`` games so they find their level quickly.

**Replay.** The ratings are a function of the log: :func:`replay` plays every event again in
the order it was committed (each call's consensus games, each piece of *current* feedback where
it was given) from an empty table. The store uses it when feedback is replaced or undone, so
the result is exactly what a log that never had the withdrawn feedback would give (the same
floating-point operations in the same order as the incremental updates).

This module is pure (no I/O): the SQLite store lives in :mod:`.store`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

BASE = 1500.0
SCALE = 400.0
K_CONSENSUS = 16.0
K_FEEDBACK = 4 * K_CONSENSUS
PROVISIONAL_GAMES = 20
SETTLED_GAMES = 200
SIGMA0 = 350.0
SIGMA_MIN = 25.0
MIN_SUPPORT = 2  # supporters a leave-one-out majority needs to count as consensus


def expected_score(rating: float, opponent: float) -> float:
    """Elo expected score of ``rating`` against ``opponent`` (0..1, 0.5 when equal)."""
    odds: float = 10.0 ** ((opponent - rating) / SCALE)
    return 1.0 / (1.0 + odds)


def sigma(games: int) -> float:
    """Rating uncertainty after ``games`` games (shrinks like 1/sqrt(n))."""
    return max(SIGMA_MIN, SIGMA0 / math.sqrt(1.0 + max(0, games)))


@dataclass
class ModelRating:
    """One model's rating and the evidence behind it."""

    model: str
    rating: float = BASE
    games: int = 0  # consensus + feedback games played
    calls: int = 0  # logged calls in which it replied (answer or no answer)
    agree: int = 0  # consensus games won (agreed with the LOO majority)
    disagree: int = 0  # consensus games lost
    feedback: int = 0  # feedback games
    last_seen: float | None = None

    @property
    def sigma(self) -> float:
        return sigma(self.games)

    @property
    def agreement(self) -> float | None:
        n = self.agree + self.disagree
        return self.agree / n if n else None

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "rating": round(self.rating, 1), "sigma": round(self.sigma, 1),
                "games": self.games, "calls": self.calls, "agree": self.agree,
                "disagree": self.disagree,
                "agreement": None if self.agreement is None else round(self.agreement, 4),
                "feedback": self.feedback, "last_seen": self.last_seen}


@dataclass(frozen=True)
class Reply:
    """What one model said in a call, as the rating rules see it.

    ``answer`` is the parsed label, ``None`` for a reply without an answer. Failed and
    cancelled requests are not replies: they say nothing about the model's judgement.
    """

    model: str
    answer: str | None


@dataclass
class Update:
    """Rating changes of one call: per-model deltas plus the counters to bump."""

    delta: dict[str, float] = field(default_factory=dict)
    agree: Counter[str] = field(default_factory=Counter)
    disagree: Counter[str] = field(default_factory=Counter)
    games: Counter[str] = field(default_factory=Counter)
    feedback: Counter[str] = field(default_factory=Counter)

    def add(self, model: str, amount: float) -> None:
        self.delta[model] = self.delta.get(model, 0.0) + amount


def _k(base: float, games: int) -> float:
    """K-factor schedule (as FIDE's 40/20/10): doubled while provisional, halved once settled."""
    if games < PROVISIONAL_GAMES:
        return base * 2.0
    return base if games < SETTLED_GAMES else base / 2.0


def loo_majority(replies: Sequence[Reply], index: int) -> tuple[str, list[str]] | None:
    """The label a strict majority of the *other* valid voters gave, and who gave it."""
    others = [r for j, r in enumerate(replies) if j != index and r.answer is not None]
    if not others:
        return None
    counts = Counter(r.answer for r in others if r.answer is not None)
    label, top = counts.most_common(1)[0]
    if top < MIN_SUPPORT or top * 2 <= len(others):
        return None
    return label, [r.model for r in others if r.answer == label]


def consensus_update(replies: Sequence[Reply], ratings: Mapping[str, ModelRating],
                     k: float = K_CONSENSUS) -> Update:
    """Zero-sum games of each replier against the leave-one-out majority of the others.

    All games of a call are computed from the ratings *before* the call (simultaneous update),
    so the order of the replies does not matter.
    """
    def rating(m: str) -> ModelRating:
        return ratings.get(m) or ModelRating(m)

    update = Update()
    # One reply per model: a model listed twice (e.g. as member and challenger) counts once.
    seen: set[str] = set()
    unique: list[Reply] = []
    for r in replies:
        if r.model not in seen:
            seen.add(r.model)
            unique.append(r)
    for i, reply in enumerate(unique):
        majority = loo_majority(unique, i)
        if majority is None:
            continue
        label, supporters = majority
        others = sum(1 for j, r in enumerate(unique) if j != i and r.answer is not None)
        weight = len(supporters) / others
        me = rating(reply.model)
        opponent = sum(rating(s).rating for s in supporters) / len(supporters)
        score = 1.0 if reply.answer == label else 0.0
        change = _k(k, me.games) * weight * (score - expected_score(me.rating, opponent))
        update.add(reply.model, change)
        for s in supporters:
            update.add(s, -change / len(supporters))
        update.games[reply.model] += 1
        (update.agree if score else update.disagree)[reply.model] += 1
    return update


def feedback_update(replies: Sequence[Reply], ratings: Mapping[str, ModelRating], *,
                    truth: str | None = None, wrong: str | None = None,
                    prefer: tuple[str, ...] | None = None, k: float = K_FEEDBACK) -> Update:
    """Games against a user's verdict on one call.

    ``truth``: the right label (confirm / override); every replier plays the truth (a fixed
    anchor at ``BASE``) and wins if it gave that label. ``wrong``: only a label known to be
    wrong (reject with more than two labels): those who gave it lose, the others do not play.
    ``prefer=(a, b)``: one direct game that ``a`` wins against ``b``.
    """
    def rating(m: str) -> ModelRating:
        return ratings.get(m) or ModelRating(m)

    update = Update()
    if prefer is not None:
        a, b = rating(prefer[0]), rating(prefer[1])
        change = _k(k, a.games) * (1.0 - expected_score(a.rating, b.rating))
        update.add(a.model, change)
        update.add(b.model, -change)
        for m in prefer:
            update.games[m] += 1
            update.feedback[m] += 1
        return update
    seen: set[str] = set()
    for reply in replies:
        if reply.model in seen:
            continue
        seen.add(reply.model)
        if truth is not None:
            score = 1.0 if reply.answer == truth else 0.0
        elif wrong is not None and reply.answer == wrong:
            score = 0.0
        else:
            continue
        me = rating(reply.model)
        update.add(reply.model, _k(k, me.games) * (score - expected_score(me.rating, BASE)))
        update.games[reply.model] += 1
        update.feedback[reply.model] += 1
    return update


def apply(update: Update, ratings: dict[str, ModelRating], *, now: float | None = None,
          replied: Sequence[str] = ()) -> list[str]:
    """Apply an update in place; returns the models whose rating or counters changed."""
    touched = set(update.delta) | set(update.games) | set(replied)
    for m in touched:
        r = ratings.setdefault(m, ModelRating(m))
        r.rating += update.delta.get(m, 0.0)
        r.games += update.games[m]
        r.agree += update.agree[m]
        r.disagree += update.disagree[m]
        r.feedback += update.feedback[m]
    for m in dict.fromkeys(replied):
        ratings[m].calls += 1
        if now is not None:
            ratings[m].last_seen = now
    return sorted(touched)


def merge(updates: Sequence[Update]) -> Update:
    """Several updates computed from the same ratings, as one."""
    total = Update()
    for u in updates:
        for m, d in u.delta.items():
            total.add(m, d)
        total.games.update(u.games)
        total.feedback.update(u.feedback)
        total.agree.update(u.agree)
        total.disagree.update(u.disagree)
    return total


def verdict_update(replies: Sequence[Reply], ratings: Mapping[str, ModelRating], *,
                   truth: str | None = None, wrong: str | None = None,
                   pairs: Sequence[tuple[str, str]] = ()) -> Update:
    """The games of one piece of feedback: preference pairs (all from the same ratings), or the
    replies against a known truth / a known-wrong label."""
    if pairs:
        return merge([feedback_update(replies, ratings, prefer=tuple(p)) for p in pairs])
    return feedback_update(replies, ratings, truth=truth, wrong=wrong)


@dataclass(frozen=True)
class Event:
    """One thing that moves ratings, as the log recorded it.

    ``kind`` ``"consensus"``: the rated replies of one call (``replies``; the repliers' ``calls``
    and ``last_seen`` are bumped). ``kind`` ``"feedback"``: a verdict resolved to ``truth`` /
    ``wrong`` / ``pairs`` on that call's ``replies``. ``source`` names it in the history.
    """

    kind: str
    ts: float
    call_id: str
    replies: tuple[Reply, ...]
    source: str = "consensus"
    truth: str | None = None
    wrong: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()


def replay(events: Iterable[Event]) -> tuple[dict[str, ModelRating],
                                             list[tuple[str, float, float, str, str]]]:
    """Ratings from nothing, playing ``events`` in order.

    Returns the final table and the rating history rows ``(model, ts, rating, call_id, source)``
    for every rating that moved, oldest first (what the incremental updates would have written).
    """
    table: dict[str, ModelRating] = {}
    history: list[tuple[str, float, float, str, str]] = []
    for ev in events:
        if ev.kind == "consensus":
            if not ev.replies:
                continue
            update = consensus_update(ev.replies, table)
            touched = apply(update, table, now=ev.ts, replied=[r.model for r in ev.replies])
        else:
            update = verdict_update(ev.replies, table, truth=ev.truth, wrong=ev.wrong,
                                    pairs=ev.pairs)
            touched = apply(update, table, now=ev.ts)
        history.extend((m, ev.ts, table[m].rating, ev.call_id, ev.source)
                       for m in touched if update.delta.get(m))
    return table, history
