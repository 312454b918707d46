"""Trust-or-Escalate threshold calibration (design §8) with exact binomial bounds.

For one stage: candidates are confidence values seen on the calibration items, taken at
coverage steps of 5% (a label-free grid; at least 30 accepted items each), scanned from the
highest down (fixed-sequence testing). At each candidate λ the items with
c ≥ λ are accepted; with e errors among n accepted, the exact one-sided Clopper–Pearson upper
bound u(e, n, δ) solves P(Binomial(n, u) ≤ e) = δ. The scan keeps going while u ≤ α and stops
at the first failure; the threshold is the last λ that passed (none passed: the stage never
answers). Fixed-sequence testing needs no multiplicity correction, so each stage is tested at
level δ/S (S stages, a union bound over stages).

A cascade is calibrated stage by stage on the items that reach the stage (those not accepted
earlier), as at run time, so each stage's accepted set has risk ≤ α with probability ≥ 1−δ/S
and the whole cascade's answered items have risk ≤ α with probability ≥ 1−δ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..base.errors import UsageError

if TYPE_CHECKING:
    import numpy.typing as npt

#: Candidates accepting fewer items than this are not tested (their bound would fail anyway,
#: and failing at a tiny top bin would stop the scan before the useful thresholds).
MIN_ACCEPTED = 30
#: Candidate thresholds sit at coverage steps of this share of the items reaching the stage.
#: A coarse, label-free grid keeps FST valid and stops a fine-grained signal (a posterior)
#: from failing on a handful of top items before the useful thresholds are reached.
COVERAGE_STEP = 0.05


def candidate_thresholds(confidence: npt.ArrayLike, *, step: float = COVERAGE_STEP,
                         min_accepted: int = MIN_ACCEPTED) -> list[float]:
    """Distinct thresholds, highest first, at coverage steps of ``step`` (label-free)."""
    conf = np.sort(np.asarray(confidence, dtype=float))[::-1]
    n = len(conf)
    if n == 0:
        return []
    values = {float(conf[min(n, max(1, math.ceil(q * n))) - 1])
              for q in np.arange(step, 1.0 + 1e-9, step)} if step else set(conf.tolist())
    return [v for v in sorted(values, reverse=True) if int((conf >= v).sum()) >= min_accepted]


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X ≤ k) for X ~ Binomial(n, p), exact (summed in log space)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """Exact one-sided (1−δ) upper confidence bound on an error rate: the p with
    P(Binomial(n, p) ≤ errors) = δ (equivalently the (1−δ) quantile of Beta(e+1, n−e))."""
    if n <= 0:
        return 1.0
    if errors >= n:
        return 1.0
    if errors == 0:
        root: float = delta ** (1.0 / n)
        return 1.0 - root
    lo, hi = errors / n, 1.0
    for _ in range(80):  # bisection: the cdf falls as p grows
        mid = (lo + hi) / 2
        if binom_cdf(errors, n, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass
class StageCalibration:
    threshold: float | None  # None: this stage never answers
    reached: int  # calibration items that reached the stage
    accepted: int
    errors: int
    upper_bound: float | None
    tested: list[dict[str, Any]] = field(default_factory=list)  # the fixed-sequence scan

    @property
    def risk(self) -> float | None:
        return self.errors / self.accepted if self.accepted else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["risk"] = None if self.risk is None else round(self.risk, 4)
        d["upper_bound"] = None if self.upper_bound is None else round(self.upper_bound, 4)
        return d


def fixed_sequence_threshold(confidence: npt.ArrayLike, correct: npt.ArrayLike, alpha: float,
                             delta: float, *, min_accepted: int = MIN_ACCEPTED,
                             step: float = COVERAGE_STEP) -> StageCalibration:
    """The smallest threshold whose accepted set passes, scanning down from the highest."""
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise UsageError("--alpha and --delta must be between 0 and 1")
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    result = StageCalibration(None, len(conf), 0, 0, None)
    for lam in candidate_thresholds(conf, step=step, min_accepted=min_accepted):
        accepted = conf >= lam
        n = int(accepted.sum())
        errors = int((~ok[accepted]).sum())
        ub = clopper_pearson_upper(errors, n, delta)
        result.tested.append({"threshold": round(lam, 6), "accepted": n, "errors": errors,
                              "upper_bound": round(ub, 4), "passed": ub <= alpha})
        if ub > alpha:
            break  # fixed-sequence testing: the first failure ends the scan
        result.threshold, result.accepted, result.errors, result.upper_bound = lam, n, errors, ub
    return result


class CascadeCalibrator:
    """Calibrates a cascade stage by stage, as it runs: stage s sees only the items that no
    earlier stage accepted, and is tested at level δ/S (S stages, a union bound)."""

    def __init__(self, items: int, stages: int, alpha: float, delta: float, *,
                 min_accepted: int = MIN_ACCEPTED, step: float = COVERAGE_STEP) -> None:
        if stages == 0:
            raise UsageError("a cascade needs at least one stage")
        self.stages = stages
        self.alpha, self.delta = alpha, delta
        self.min_accepted, self.step = min_accepted, step
        self.remaining = np.ones(items, dtype=bool)

    def stage(self, confidence: npt.ArrayLike, correct: npt.ArrayLike) -> StageCalibration:
        """Calibrate the next stage from its confidence and correctness on every item
        (values of items that never reach it are ignored)."""
        conf = np.asarray(confidence, dtype=float)
        ok = np.asarray(correct, dtype=bool)
        remaining = self.remaining
        cal = fixed_sequence_threshold(conf[remaining], ok[remaining], self.alpha,
                                       self.delta / self.stages, min_accepted=self.min_accepted,
                                       step=self.step)
        if cal.threshold is not None:
            self.remaining = remaining & ~(conf >= cal.threshold)
        return cal


def calibrate_cascade(confidences: Sequence[np.ndarray], correct: Sequence[np.ndarray], alpha: float,
                      delta: float, *, min_accepted: int = MIN_ACCEPTED,
                      step: float = COVERAGE_STEP) -> list[StageCalibration]:
    """Calibrate stage s on the items not accepted by stages < s, each at level δ/S.

    ``confidences[s][i]`` / ``correct[s][i]``: stage s's confidence and whether its answer is
    right for item i (values for items that never reach stage s are ignored).
    """
    if not confidences:
        raise UsageError("a cascade needs at least one stage")
    calibrator = CascadeCalibrator(len(confidences[0]), len(confidences), alpha, delta,
                                   min_accepted=min_accepted, step=step)
    return [calibrator.stage(conf, ok) for conf, ok in zip(confidences, correct)]


def apply_cascade(confidences: Sequence[np.ndarray], thresholds: Sequence[float | None]) -> np.ndarray:
    """Index of the stage that answers each item, or −1 when every stage abstains."""
    n = len(confidences[0])
    answered_by = np.full(n, -1, dtype=int)
    for s, (conf, tau) in enumerate(zip(confidences, thresholds)):
        if tau is None:
            continue
        take = (answered_by < 0) & (np.asarray(conf, dtype=float) >= tau)
        answered_by[take] = s
    return answered_by

