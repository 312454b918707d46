"""Label-free reliability: each model's accuracy estimated jointly from the call log.

Elo against the leave-one-out majority (:mod:`.ratings`) trusts the majority: when the panel is
bad, a better outsider who disagrees with it *loses*. This module does what annotation work does
when there is no gold label: a **one-coin Dawid–Skene** model fitted by EM over every logged
vote (Dawid & Skene 1979; "one-coin": each model ``m`` has one accuracy ``p_m``, and a wrong
vote is spread evenly over the call's other labels).

- **Items** are logged ``scale`` calls with their offered labels; **votes** are every member's
  and challenger's parsed label (one per model per call). An unparseable reply is no vote on the
  label, but it counts as a reply that was not right (see ``accuracy`` below); failed and
  cancelled requests say nothing.
- **E-step**: the posterior over each call's true label, ``q_i(l) ∝ Π_m p_m^[v=l] ·
  ((1-p_m)/(L_i-1))^[v≠l]`` (uniform label prior).
- **M-step**: ``s_m = Σ q_i(v_mi)`` (expected right votes), and with a Beta(``a``, ``b``) prior
  ``p_m = (s_m + a - 1) / (n_m + a + b - 2)`` (MAP; ``n_m`` votes).

Agreement with *everyone*, weighted by how reliable everyone is, is what moves an estimate, so
three weak models that disagree with each other cannot out-vote one strong outsider whose
answers line up with each of theirs more often than they line up with one another.

**Feedback** (``confirm`` / ``override``, ``reject`` with two labels, and ``prefer`` fix a
call's label; a ``reject`` with more labels rules one out) is a label, and labels are few and
fall on the panel's calls. They move the estimate only where they are evidence: two models
whose **paired record** on the labelled calls both replied to (fairly: neither heard only
because the others disagreed) shows one right more often than the other, by a test that stays
valid however often it is checked (:func:`label_order`), change places. They do not enter the
EM nor shift levels: a correction of the labelled models' levels (the panel's) and not of the
others' made them incomparable, and the backtest's panels worse than without labels
(docs/performance.md, "Learning"). Each model also reports its record on the labelled calls
(``labelled_accuracy``), and a labelled call's posterior is its label.

**What is reported** (:class:`Estimate`): ``accuracy`` = the chance that a *reply* of the model is
right, posterior ``Beta(a + s_m, b + r_m - s_m)`` over its ``r_m`` rated replies (no answer =
not right), with ``sd`` its posterior standard deviation and ``lower`` = mean − ``z``·sd; plus
``vote_accuracy`` (``p_m``, right when it answers), ``answer_rate`` and the counts. ``sd`` comes
from the effective counts (it ignores the labels' own uncertainty, so it is a little narrow).

Decisions use it: ``evolve`` ranks by ``lower`` with a minimum of replies, the shadow
challengers are Thompson draws from the Beta posterior (:mod:`.challenger`), and ``--tie-break
rating`` prefers the backer with the higher ``accuracy``.

**Speed**: vectorised numpy (``bincount`` over the vote arrays, one ``items × labels`` matrix);
:class:`ReliabilityTracker` keeps the arrays and the last estimates, reads only calls it has not
seen, and warm-starts EM from the last fit, so a refresh costs a few iterations.

Pure (numpy, no I/O): the rows come from :func:`.rows.reliability_rows`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..base.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

#: Beta prior on a model's accuracy (vote right when it answers): mean 0.5, worth 4 replies.
PRIOR_A = 2.0
PRIOR_B = 2.0
#: Lower bound = mean − Z · sd (evolve's ranking).
Z = 1.0
#: Most a model's vote accuracy may be in the EM. Where the voters of a call are one family and
#: one other model (gemini-1.5-pro and -flash beside Llama-3.1-70B: two voters, as a family
#: counts as one), the one-coin model cannot tell which side is right, and EM drifted to
#: making the lone model the truth (p ≈ 0.999, every disagreement the family's fault); those
#: levels then dominated every posterior, and a hundred labels moved the fit to another basin.
#: Chosen on the tuning streams of bench/learning.py (seeds 100-109; 0.85 and 0.95 were worse).
P_MAX = 0.9
MAX_ITER = 200
TOL = 1e-5
#: How many of the best-estimated models are ordered among themselves by their mutual agreement
#: (:func:`peer_offsets`; 0 or 1: off).
PEERS = 3
#: Calls two of those models must have both replied to before their agreement counts.
PEER_MIN_PAIRS = 50
#: A model compared with none of the anchors but with models they placed is "below the peers"
#: when its agreement with those puts its ``u`` (accuracy above chance) this share under the
#: weakest anchor's: the shadow challengers need not compare it with the best models
#: (:func:`.challenger.worth_exploring`). 1: never.
BELOW = 0.2
#: Times the anchors are chosen again down the agreement's order (0: the consensus's choice).
REANCHOR = 3


@dataclass(frozen=True)
class Estimate:
    """One model's label-free reliability and the evidence behind it."""

    model: str
    accuracy: float  # P(a reply is right): posterior mean
    sd: float  # posterior sd of ``accuracy``
    replies: int  # rated replies (answers + no answers)
    votes: int  # replies with a parseable label
    right: float  # expected right votes (effective count)
    vote_accuracy: float  # P(right | it answered): the EM's p_m
    alpha: float  # posterior Beta(alpha, beta) of ``accuracy``
    beta: float
    feedback: int = 0  # of its votes, on calls whose label feedback fixed
    #: Of its replies to labelled calls, the share that was right (None: no labelled reply).
    labelled_accuracy: float | None = None
    #: Calls it replied to together with each other model (what its order among them rests on).
    together: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    #: Compared with none of the best models but placed clearly below them through the models
    #: it was compared with (:data:`BELOW`): no shadow needs to compare it with them.
    below_peers: bool = field(default=False, compare=False, repr=False)

    @property
    def answer_rate(self) -> float:
        return self.votes / self.replies if self.replies else 0.0

    def lower(self, z: float = Z) -> float:
        return self.accuracy - z * self.sd

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 4), "sd": round(self.sd, 4),
                "lower": round(self.lower(), 4), "replies": self.replies, "votes": self.votes,
                "vote_accuracy": round(self.vote_accuracy, 4),
                "answer_rate": round(self.answer_rate, 4), "feedback": self.feedback,
                "labelled_accuracy": (None if self.labelled_accuracy is None
                                      else round(self.labelled_accuracy, 4))}


def prior_estimate(model: str, a: float = PRIOR_A, b: float = PRIOR_B) -> Estimate:
    """What is believed about a model with no rated reply: the prior."""
    mean = a / (a + b)
    return Estimate(model, mean, beta_sd(a, b), 0, 0, 0.0, mean, a, b)


def beta_sd(a: float, b: float) -> float:
    n = a + b
    return math.sqrt(a * b / (n * n * (n + 1.0)))


@dataclass
class Call:
    """One logged call as the estimator sees it: labels, votes, and what feedback says."""

    labels: Sequence[str]
    votes: Sequence[tuple[str, str | None]]  # (model, label or None for no answer)
    truth: str | None = None
    wrong: str | None = None
    #: Models whose reply was waited for only because the replies before it did not settle
    #: the call (a member after the first majority to arrive, :func:`.rows.late_members`):
    #: whether it replied depends on the others' answers, so its agreement with them is no
    #: fair sample of how often they agree.
    late: Collection[str] = ()


@dataclass
class VoteArrays:
    """Every rated reply of the log as flat arrays (appendable)."""

    models: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    n_labels: list[int] = field(default_factory=list)  # per item
    truth: list[int] = field(default_factory=list)  # per item: label index, -1 unknown
    wrong: list[int] = field(default_factory=list)  # per item: label index ruled out, -1 none
    v_item: list[int] = field(default_factory=list)  # per vote
    v_model: list[int] = field(default_factory=list)
    v_label: list[int] = field(default_factory=list)
    r_model: list[int] = field(default_factory=list)  # per reply (no answers included)
    r_item: list[int] = field(default_factory=list)
    r_late: list[bool] = field(default_factory=list)  # per reply: Call.late

    def model_id(self, model: str) -> int:
        j = self.index.get(model)
        if j is None:
            j = self.index[model] = len(self.models)
            self.models.append(model)
        return j

    def add(self, call: Call) -> int:
        """Append one call; returns its item index (-1 when it has no rated reply)."""
        labels = list(dict.fromkeys(call.labels))
        pos = {lab: k for k, lab in enumerate(labels)}
        seen: set[str] = set()
        votes = []
        for model, answer in call.votes:
            if model in seen:  # a model listed twice (member and challenger) counts once
                continue
            seen.add(model)
            if answer is not None and answer not in pos:
                answer = None  # not one of the call's labels: no vote on them
            votes.append((model, answer))
        if not votes or len(labels) < 2:
            return -1
        item = len(self.n_labels)
        self.n_labels.append(len(labels))
        self.truth.append(pos.get(call.truth, -1) if call.truth is not None else -1)
        self.wrong.append(pos.get(call.wrong, -1) if call.wrong is not None else -1)
        late = set(call.late)
        for model, answer in votes:
            j = self.model_id(model)
            self.r_model.append(j)
            self.r_item.append(item)
            self.r_late.append(model in late)
            if answer is not None:
                self.v_item.append(item)
                self.v_model.append(j)
                self.v_label.append(pos[answer])
        return item

    def set_feedback(self, item: int, truth: int, wrong: int) -> None:
        self.truth[item], self.wrong[item] = truth, wrong


@dataclass
class Fit:
    """The result of one EM fit: per-model estimates and the per-call label posteriors."""

    estimates: dict[str, Estimate]
    iterations: int
    converged: bool
    posterior: np.ndarray  # items × max labels (rows sum to 1)

    def __getitem__(self, model: str) -> Estimate:
        return self.estimates[model]


def fit(arrays: VoteArrays, *, a: float = PRIOR_A, b: float = PRIOR_B,
        init: Mapping[str, float] | None = None, max_iter: int = MAX_ITER,
        tol: float = TOL, family_of: Callable[[str], str] | None = None,
        peers: int | None = None) -> Fit:
    """One-coin Dawid–Skene EM over ``arrays``; ``init``: p_m to start from (warm start).

    Families (``family_of``; default: each model its own, which is plain Dawid–Skene): models
    of one line make the same mistakes and must not vouch for each other, so on each call a
    family's votes count as one voter's (each weighs 1/its family's votes there), and the M-step
    scores each vote against the call's posterior **without the other votes of its family**.
    Only votes on calls where another family voted are evidence. Cold start: every model at
    the prior's mode, clipped to [0.55, 0.9]: better than a coin, so the fit starts on the side
    where models mean what they say. Feedback stays out of the EM (see the module's text).
    """
    n_models, n_items = len(arrays.models), len(arrays.n_labels)
    if n_items == 0:
        return Fit({}, 0, True, np.zeros((0, 0)))
    L = np.asarray(arrays.n_labels, dtype=np.int64)
    width = int(L.max())
    vi = np.asarray(arrays.v_item, dtype=np.int64)
    vm = np.asarray(arrays.v_model, dtype=np.int64)
    vl = np.asarray(arrays.v_label, dtype=np.int64)
    ri = np.asarray(arrays.r_item, dtype=np.int64)
    rm = np.asarray(arrays.r_model, dtype=np.int64)
    flat = vi * width + vl
    invalid = np.arange(width)[None, :] >= L[:, None]  # labels a call did not offer
    truth = np.asarray(arrays.truth, dtype=np.int64)
    wrong = np.asarray(arrays.wrong, dtype=np.int64)
    clamped = np.flatnonzero(truth >= 0)
    is_clamped = truth >= 0
    ruled = np.flatnonzero((wrong >= 0) & (truth < 0))
    mask = np.where(invalid, -np.inf, 0.0)  # the EM's: what the votes alone say
    told = mask.copy()  # the reported posterior's: feedback's ruled-out labels too
    told[ruled, wrong[ruled]] = -np.inf
    onehot = np.zeros((clamped.size, width))
    onehot[np.arange(clamped.size), truth[clamped]] = 1.0
    log_other = np.log(np.maximum(L - 1, 1)).astype(float)[vi]  # log(L_i - 1) per vote

    # (call, family) groups of votes: what each vote's leave-family-out posterior removes.
    names = [family_of(m) if family_of else m for m in arrays.models]
    fam_ids = {f: k for k, f in enumerate(dict.fromkeys(names))}
    fam = np.asarray([fam_ids[f] for f in names], dtype=np.int64)
    n_fam = max(1, len(fam_ids))
    keys, pv = np.unique(vi * n_fam + fam[vm], return_inverse=True)
    pv = pv.reshape(-1)
    n_pairs = keys.size
    pair_votes = np.bincount(pv, minlength=n_pairs)
    item_votes = np.bincount(vi, minlength=n_items)
    own = pair_votes[pv]
    share = 1.0 / own  # a family's votes on a call count as one voter's
    informative_v = (item_votes[vi] - own) > 0
    # Replies (no answers too): informative when some other family voted on the call.
    r_keys = ri * n_fam + fam[rm] if rm.size else np.zeros(0, dtype=np.int64)
    at = np.searchsorted(keys, r_keys)
    found = (at < n_pairs) & (keys[np.minimum(at, max(n_pairs - 1, 0))] == r_keys) \
        if n_pairs else np.zeros(r_keys.size, dtype=bool)
    own_r = np.where(found, pair_votes[np.minimum(at, max(n_pairs - 1, 0))] if n_pairs else 0, 0)
    informative_r = (item_votes[ri] - own_r) > 0
    n_votes = np.bincount(vm, weights=informative_v.astype(float), minlength=n_models)
    n_replies = np.bincount(rm, weights=informative_r.astype(float), minlength=n_models)
    all_votes = np.bincount(vm, minlength=n_models)
    all_replies = np.bincount(rm, minlength=n_models)
    pair_flat = pv * width + vl

    start = min(0.9, max(0.55, (a - 1) / (a + b - 2) if a + b > 2 else 0.5))
    p = np.full(n_models, start)
    if init:
        for j, m in enumerate(arrays.models):
            if m in init:
                p[j] = float(init[m])
    p = np.clip(p, 1e-4, P_MAX)
    q = np.zeros((n_items, width))
    right: np.ndarray = np.zeros(n_models)
    iterations, converged = 0, False
    for iterations in range(1, max_iter + 1):
        lp, lw = np.log(p), np.log1p(-p)
        wrong_term = lw[vm] - log_other  # log((1-p)/(L-1)) for each vote
        bonus_term = lp[vm] - wrong_term
        base = np.bincount(vi, weights=wrong_term * share, minlength=n_items)
        bonus = np.bincount(flat, weights=bonus_term * share, minlength=n_items * width)
        logit = base[:, None] + bonus.reshape(n_items, width) + mask
        # Each vote's posterior without the *other* votes of its family on that call (a
        # label-constant term cancels in the softmax, so only the label bonuses are removed).
        c_bonus = np.bincount(pair_flat, weights=bonus_term * share,
                              minlength=n_pairs * width).reshape(n_pairs, width)
        shared = own > 1
        right_v = np.empty(vm.size)
        if shared.any():
            k = np.flatnonzero(shared)
            rows = logit[vi[k]] - c_bonus[pv[k]]
            rows[np.arange(k.size), vl[k]] += bonus_term[k]
            rows -= rows.max(axis=1, keepdims=True)
            e = np.exp(rows)
            right_v[k] = e[np.arange(k.size), vl[k]] / e.sum(axis=1)
        solo = np.flatnonzero(~shared)
        if solo.size:
            z = logit - logit.max(axis=1, keepdims=True)
            qz = np.exp(z)
            qz /= qz.sum(axis=1, keepdims=True)
            right_v[solo] = qz[vi[solo], vl[solo]]
        right = np.bincount(vm, weights=right_v * informative_v, minlength=n_models)
        new = (right + a - 1.0) / np.maximum(n_votes + a + b - 2.0, 1e-9)
        new = np.clip(new, 1e-4, P_MAX)
        delta = float(np.abs(new - p).max()) if n_models else 0.0
        p = new
        if delta < tol:
            converged = True
            break
    # The label posterior of each call (all votes; what feedback says), from the final p.
    lp, lw = np.log(p), np.log1p(-p)
    wrong_term = lw[vm] - log_other
    logit = (np.bincount(vi, weights=wrong_term * share, minlength=n_items)[:, None]
             + np.bincount(flat, weights=(lp[vm] - wrong_term) * share,
                           minlength=n_items * width).reshape(n_items, width) + told)
    logit -= logit.max(axis=1, keepdims=True)
    q = np.exp(logit)
    q /= q.sum(axis=1, keepdims=True)
    if clamped.size:
        q[clamped] = onehot
    on_feedback = np.bincount(vm, weights=is_clamped[vi].astype(float), minlength=n_models)
    offset, together, best, below = peer_offsets(
        vi, vm, vl, ri, rm, L, right, n_replies, PEERS if peers is None else peers,
        PEER_MIN_PAIRS, family=fam, late=np.asarray(arrays.r_late, dtype=bool))
    right = right + offset * n_replies
    labelled_acc = np.full(n_models, np.nan)
    if clamped.size:
        # The labelled calls as a matrix: who replied to each (fairly: not heard only because
        # the first replies disagreed, which selects the calls on the others' answers), and
        # who was right.
        row = np.full(n_items, -1, dtype=np.int64)
        row[clamped] = np.arange(clamped.size)
        hit = is_clamped[vi] & (vl == truth[vi])
        on = np.bincount(rm, weights=is_clamped[ri].astype(float), minlength=n_models)
        won = np.bincount(vm, weights=hit.astype(float), minlength=n_models)
        np.divide(won, on, out=labelled_acc, where=on > 0)
        replied = np.zeros((clamped.size, n_models))
        was_right = np.zeros((clamped.size, n_models))
        sel = is_clamped[ri] & ~np.asarray(arrays.r_late, dtype=bool)
        replied[row[ri[sel]], rm[sel]] = 1.0
        was_right[row[vi[hit]], vm[hit]] = 1.0
        # The peers' order first (their levels reassigned in it), then the labels'.
        if best.size:
            right[best] = np.sort(right[best] / n_replies[best])[::-1] * n_replies[best]
        group = np.union1d(best, np.flatnonzero(replied.sum(axis=0) >= LABELLED_MIN))
        group = group[n_replies[group] > 0]
        if group.size > 1:
            level = right[group] / n_replies[group]
            beats = label_beats(was_right[:, group], replied[:, group])
            order = order_by(level, beats)
            level[order] = np.sort(level)[::-1]  # the levels, reassigned in that order
            for above, under in zip(order, order[1:]):  # a tie must not hide what labels show
                if beats[above, under] and level[under] >= level[above]:
                    level[under] = level[above] - 1e-6
            right[group] = level * n_replies[group]
    out: dict[str, Estimate] = {}
    for j, m in enumerate(arrays.models):
        alpha = a + max(0.0, min(right[j], n_replies[j]))
        beta = b + max(0.0, n_replies[j] - right[j])
        out[m] = Estimate(m, alpha / (alpha + beta), beta_sd(alpha, beta), int(all_replies[j]),
                          int(all_votes[j]), float(right[j]), float(p[j]), float(alpha),
                          float(beta), int(on_feedback[j]),
                          None if np.isnan(labelled_acc[j]) else float(labelled_acc[j]),
                          {arrays.models[t]: int(together[j, t])
                           for t in np.flatnonzero(together[j])}, bool(below[j]))
    return Fit(out, iterations, converged, q)


#: Labels reorder two models when the paired record on the labelled calls both replied to
#: rejects "they are equally good" at this level, by a test that stays valid however often it is
#: checked (:func:`paired_evidence`): the estimate is refreshed after every few calls, and a
#: fixed-sample test checked that often reorders on noise sooner or later. Before, two standard
#: errors of the paired difference (``ORDER_Z = 2``), checked at every refresh: with 10 %
#: feedback the tuning streams of bench/learning.py (seeds 100-109) ended 0.65 / 2.70 points
#: from the best panel against 0.40 / 1.90 without labels (worse on 3 seeds, better on 2); now
#: 0.40 / 1.90 with 2 % and 10 % feedback, the same as without labels on every seed.
ORDER_ALPHA = 0.05
#: Labelled calls two models must share before their record reorders them.
ORDER_MIN_SHARED = 10
#: Labelled replies that put a model outside the best ones in the group the labels order.
LABELLED_MIN = 20


def paired_evidence(i_only: np.ndarray, j_only: np.ndarray) -> np.ndarray:
    """The log of the evidence that the first of two models is right more often than the second,
    from the labelled calls where exactly one of them was right (``i_only`` / ``j_only``
    calls each): the likelihood ratio of "the first wins such a call with probability p,
    p uniform" against "p = 1/2", ``2^d · B(i + 1, j + 1)`` with ``d = i + j``. Under "equally
    good" it is a nonnegative martingale as labels arrive, so by Ville's inequality it ever
    reaches 1/α with probability at most α, however often it is looked at (Robbins' method of
    mixtures; a sign test that may be checked after every label)."""
    i_only = np.asarray(i_only, dtype=float)
    j_only = np.asarray(j_only, dtype=float)
    lgamma = np.vectorize(math.lgamma, otypes=[float])
    d = i_only + j_only
    out: np.ndarray = d * math.log(2.0) + lgamma(i_only + 1.0) + lgamma(j_only + 1.0) \
        - lgamma(d + 2.0)
    return out


def label_beats(right: np.ndarray, replied: np.ndarray, alpha: float = ORDER_ALPHA,
                min_shared: int = ORDER_MIN_SHARED) -> np.ndarray:
    """``[i, j]``: the labelled calls show model i right more often than model j (see
    :func:`label_order`)."""
    n = replied.T @ replied  # [i, j]: labelled calls both replied to
    hits = right * replied
    wins = hits.T @ replied  # [i, j]: of those, where i was right
    i_only = wins - hits.T @ hits  # [i, j]: i right, j not
    evidence = paired_evidence(i_only, i_only.T)
    beats: np.ndarray = (n >= min_shared) & (i_only > i_only.T) \
        & (evidence >= math.log(1.0 / alpha))
    return beats


def label_order(level: np.ndarray, right: np.ndarray, replied: np.ndarray,
                alpha: float = ORDER_ALPHA, min_shared: int = ORDER_MIN_SHARED) -> list[int]:
    """The models (indices into ``level``), best first: by ``level``, except where the labelled
    calls show a model below another right more often than it, on ``min_shared`` calls both
    replied to (``right`` / ``replied``: labelled calls × models, 1 where the model was right /
    replied), by the anytime-valid test of :func:`paired_evidence` at level ``alpha``; such a
    model moves up just above it.

    Why paired, and why the record and not the levels: the best models sit on the same calls,
    so their record on the same labelled calls compares like with like (the calls' difficulty
    cancels), while the label-free levels keep the consensus's error; and the label-free order
    between two relatives and one other model rests on the family's shared mistakes, which no
    amount of unlabelled calls corrects."""
    return order_by(level, label_beats(right, replied, alpha, min_shared))


def order_by(level: np.ndarray, beats: np.ndarray) -> list[int]:
    """By ``level``, best first, each model moved up just above any it ``beats``."""
    order = [int(j) for j in np.argsort(-level, kind="stable")]
    for _ in range(len(order) ** 2):  # bounded: a cycle of records must not loop forever
        moved = next(((p, q) for q in range(1, len(order)) for p in range(q)
                      if beats[order[q], order[p]]), None)
        if moved is None:
            break
        order.insert(moved[0], order.pop(moved[1]))
    return order


def peer_offsets(vi: np.ndarray, vm: np.ndarray, vl: np.ndarray, ri: np.ndarray,
                 rm: np.ndarray, n_labels: np.ndarray, right: np.ndarray, replies: np.ndarray,
                 k: int, min_pairs: int = PEER_MIN_PAIRS,
                 family: np.ndarray | None = None, late: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per model: what to add to its label-free P(reply right) so that the best models are
    ordered by their agreement with the strongest others only; the calls each pair of models
    replied to together (``models × models``); the anchors, best first (empty when the
    order is not fitted); and which models are placed clearly below the anchors only through
    the models they placed (:data:`BELOW`).

    Agreement is counted only on **fair** pairs: neither reply ``late`` (a member heard only
    because the first ones to arrive disagreed: counted, the best model looked like the one
    that disagrees). The anchors are chosen down the consensus's ranking, then again down the
    fitted order (:data:`REANCHOR` times, until they stay the same).

    The consensus misjudges the best models most: weaker models share mistakes (the same
    tempting wrong option), so a model better than the consensus disagrees with it exactly
    where it is right and scores below models that share the crowd's mistakes. Between the
    strongest models the crowd is no referee; their *mutual* agreement is. Under the one-coin
    model two models agree (same label, on calls both replied to) with probability
    ``c + (1-c)·u_i·u_j`` (``c``: chance, 1/labels; ``u``: accuracy above chance, rescaled),
    a rank-one structure (as in the Spectral Meta-Learner, Parisi et al. 2014):

    - the **anchors** are ``k`` of the best-estimated models whose every pair replied together
      on ``min_pairs`` calls (down the ranking, each one paired with all taken before it; at
      least 3, else nothing moves): ``log u`` is the
      least-squares fit of ``log((agree - c)/(1 - c)) = log u_i + log u_j`` over their pairs
      (for three models, ``i`` outranks ``j`` exactly when the third agrees more with ``i``);
    - every other model that replied together with an anchor of another ``family`` on
      ``min_pairs`` calls gets ``log u`` from its agreement with those anchors (weighted by the
      calls; a relative would vouch for it with their shared mistakes);
    - the order of all these models follows ``u``, the **levels stay the consensus's**: they
      take the same set of estimates, reassigned in that order, so every other model compares
      with them as before, and no model leaves or enters the top by a change of scale.
    """
    n_models = right.size
    out = np.zeros(n_models)
    acc = np.divide(right, replies, out=np.zeros(n_models), where=replies > 0)
    # Calls each pair of models replied to together, and on how many they gave the same label.
    order = np.lexsort((rm, ri))
    r_i, r_m = ri[order], rm[order]
    fair = np.ones(r_i.size, dtype=bool) if late is None else ~late[order]
    together = np.zeros((n_models, n_models), dtype=np.int64)
    paired = np.zeros((n_models, n_models))  # of those, both replies fair (neither late)
    agree = np.zeros((n_models, n_models))
    chance_sum = np.zeros((n_models, n_models))
    if r_i.size == 0:
        return out, together, np.zeros(0, dtype=np.int64), np.zeros(n_models, dtype=bool)
    label = np.full(r_i.size, -1, dtype=np.int64)  # each reply's label (-1: no answer)
    key_r = r_i * n_models + r_m
    key_v = vi * n_models + vm
    at = np.searchsorted(key_r, key_v)
    ok = (at < key_r.size) & (key_r[np.minimum(at, key_r.size - 1)] == key_v)
    label[at[ok]] = vl[ok]
    chance_of = 1.0 / np.maximum(n_labels, 2).astype(float)
    starts = np.flatnonzero(np.r_[True, r_i[1:] != r_i[:-1]])
    sizes = np.diff(np.r_[starts, r_i.size])
    for size in np.unique(sizes):
        if size < 2:
            continue
        first = starts[sizes == size]
        idx = first[:, None] + np.arange(size)[None, :]  # calls × voters
        mods, labs, ok = r_m[idx], label[idx], fair[idx]
        ch = chance_of[r_i[first]]
        for x in range(size):
            for y in range(x + 1, size):
                a, b = mods[:, x], mods[:, y]
                both = (ok[:, x] & ok[:, y]).astype(float)
                same = ((labs[:, x] == labs[:, y]) & (labs[:, x] >= 0)).astype(float)
                np.add.at(together, (a, b), 1)
                np.add.at(paired, (a, b), both)
                np.add.at(agree, (a, b), same * both)
                np.add.at(chance_sum, (a, b), ch * both)
    together += together.T
    paired += paired.T
    agree += agree.T
    chance_sum += chance_sum.T
    if k < 3 or n_models < 3:
        return out, together, np.zeros(0, dtype=np.int64), np.zeros(n_models, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = agree / paired
        chance = chance_sum / paired
        lift = (rate - chance) / (1.0 - chance)
    known = (paired >= min_pairs) & (lift > 0)
    logc = np.where(known, np.log(np.where(known, lift, 1.0)), np.nan)

    def pick(ranking: Iterable[int]) -> list[int]:
        chosen: list[int] = []  # down the ranking: each one paired with every anchor before it
        for j in ranking:
            j = int(j)
            if len(chosen) >= k:
                break
            if replies[j] >= min_pairs and all(known[j, t] for t in chosen):
                chosen.append(j)
        return chosen

    def through(j: int, by: list[int], logu: Mapping[int, float]) -> float | None:
        """``log u`` of model ``j`` from its agreement with the placed models ``by`` (never a
        relative: they would vouch for it with their shared mistakes), or None."""
        w = np.array([paired[j, t] if known[j, t]
                      and (family is None or family[j] != family[t]) else 0
                      for t in by], dtype=float)
        if w.sum() <= 0:
            return None
        return float(sum(wt * (logc[j, t] - logu[t]) for wt, t in zip(w, by) if wt > 0)
                     / w.sum())

    def place(anchors: list[int]) -> dict[int, float]:
        top = len(anchors)
        pairs = [(int(a), int(b)) for a, b in zip(*np.triu_indices(top, 1))]
        design = np.zeros((len(pairs), top))
        for r, (x, y) in enumerate(pairs):
            design[r, x] = design[r, y] = 1.0
        y_obs = np.array([logc[anchors[x], anchors[y]] for x, y in pairs])  # all known
        logu = dict(zip(anchors, np.linalg.lstsq(design, y_obs, rcond=None)[0]))
        for j in range(n_models):
            if j not in logu and replies[j] >= min_pairs:
                u = through(j, anchors, logu)
                if u is not None:
                    logu[j] = u
        return logu

    anchors = pick(np.argsort(-acc, kind="stable"))
    if len(anchors) < 3:
        return out, together, np.zeros(0, dtype=np.int64), np.zeros(n_models, dtype=bool)
    logu = place(anchors)
    seen = [sorted(anchors)]
    for _ in range(REANCHOR):
        # The anchors are meant to be the best models, and the consensus that chose them
        # misjudges the best models most: choose them again down the agreement's order.
        again = pick(sorted(logu, key=lambda j: -logu[j]))
        if len(again) < 3 or sorted(again) in seen:
            break
        seen.append(sorted(again))
        anchors, logu = again, place(again)
    # A model compared with none of the anchors but with models they placed (say, asked
    # beside a panel the best models have since replaced) is placed through those: only to
    # tell whether it is clearly below every anchor (:data:`BELOW`), never for its level.
    below = np.zeros(n_models, dtype=bool)
    placed = [t for t in logu if t not in anchors]
    # Below this log u, clearly below every anchor (BELOW = 1: nothing is).
    cut = min(logu[t] for t in anchors) + math.log(1.0 - BELOW) if BELOW < 1.0 else -math.inf
    for j in range(n_models):
        if j not in logu and replies[j] >= min_pairs:
            u = through(j, placed, logu)
            below[j] = u is not None and u < cut
    members = np.array(sorted(logu, key=lambda j: -logu[j]))
    levels = np.sort(acc[members])[::-1]
    out[members] = levels - acc[members]
    return out, together, np.array(sorted(anchors, key=lambda j: -logu[j]), dtype=np.int64), \
        below


def estimate(calls: Iterable[Call], **kwargs: Any) -> dict[str, Estimate]:
    """Estimates from scratch for a list of calls (tests, one-shot reads)."""
    arrays = VoteArrays()
    for call in calls:
        arrays.add(call)
    return fit(arrays, **kwargs).estimates


class ReliabilityTracker:
    """The estimates of a growing log, refreshed incrementally and warm-started.

    ``refresh(rows, feedback)`` takes the calls logged since the last refresh (``(seq, Call)``
    rows, in order) and the *current* feedback of the whole log (``{seq: (truth, wrong)}``;
    small), and refits from the last estimates.
    """

    def __init__(self, *, a: float = PRIOR_A, b: float = PRIOR_B,
                 family_of: Callable[[str], str] | None = None,
                 peers: int | None = None) -> None:
        self.a, self.b = a, b
        self.peers = peers
        self.family_of = family_of
        self.reset()

    def reset(self) -> None:
        """Forget everything (the log was replaced)."""
        self.arrays = VoteArrays()
        self.item_of: dict[int, int] = {}  # call seq -> item
        self.labels_of: list[list[str]] = []
        self.last_seq = 0
        self.estimates: dict[str, Estimate] = {}
        self.iterations = 0
        self._feedback: dict[int, tuple[str | None, str | None]] = {}

    def refresh(self, rows: Iterable[tuple[int, Call]],
                feedback: Mapping[int, tuple[str | None, str | None]]) -> dict[str, Estimate]:
        added = False
        for seq, call in rows:
            self.last_seq = max(self.last_seq, seq)
            added_item = self.arrays.add(Call(call.labels, call.votes, late=call.late))
            if added_item >= 0:
                self.item_of[seq] = added_item
                self.labels_of.append(list(dict.fromkeys(call.labels)))
                added = True
        changed = dict(feedback) != self._feedback
        if changed:
            for seq in set(self._feedback) | set(feedback):
                item = self.item_of.get(seq)
                if item is None:
                    continue
                truth, wrong = feedback.get(seq, (None, None))
                labels = self.labels_of[item]
                self.arrays.set_feedback(item, labels.index(truth) if truth in labels else -1,
                                         labels.index(wrong) if wrong in labels else -1)
            self._feedback = dict(feedback)
        if added or changed or not self.estimates:
            result = fit(self.arrays, a=self.a, b=self.b, family_of=self.family_of,
                         peers=self.peers,
                         init={m: e.vote_accuracy for m, e in self.estimates.items()})
            self.estimates, self.iterations = result.estimates, result.iterations
        return self.estimates
