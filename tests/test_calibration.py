"""Trust-or-Escalate calibration: exact binomial bounds, fixed-sequence scan, δ split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fscale_tui.engine.routing import risk as cal
from fscale_tui.engine.routing.risk import (apply_cascade, binom_cdf, calibrate_cascade,
                                            clopper_pearson_upper, fixed_sequence_threshold)


@pytest.mark.parametrize("k,n,p,expected", [
    (0, 10, 0.1, 0.9 ** 10),
    (2, 10, 0.5, 56 / 1024),
    (10, 10, 0.3, 1.0),
    (-1, 5, 0.5, 0.0),
    (3, 20, 0.2, 0.41144886),  # R: pbinom(3, 20, 0.2)
])
def test_binomial_cdf_known_values(k, n, p, expected):
    assert binom_cdf(k, n, p) == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize("errors,n,delta,expected", [
    (1, 10, 0.05, 0.39416),   # qbeta(0.95, 2, 9)
    (5, 100, 0.05, 0.10225),  # qbeta(0.95, 6, 95)
    (0, 30, 0.05, 1 - 0.05 ** (1 / 30)),
])
def test_clopper_pearson_upper_bound_known_values(errors, n, delta, expected):
    assert clopper_pearson_upper(errors, n, delta) == pytest.approx(expected, abs=2e-5)


def test_clopper_pearson_bound_solves_the_binomial_tail_equation():
    u = clopper_pearson_upper(7, 50, 0.1)
    assert binom_cdf(7, 50, u) == pytest.approx(0.1, abs=1e-9)
    assert clopper_pearson_upper(50, 50, 0.1) == 1.0


@pytest.mark.parametrize("errors,n,expected", [
    # scipy.stats.beta.ppf(0.95, e + 1, n - e), computed once with SciPy 1.x
    (0, 12, 0.22092219194555585),
    (3, 40, 0.18258685001590122),
    (17, 200, 0.12477113319232826),
    (99, 1000, 0.11592451141652606),
])
def test_matches_the_beta_quantile_of_an_independent_implementation(errors, n, expected):
    assert clopper_pearson_upper(errors, n, 0.05) == pytest.approx(expected, abs=1e-7)


def test_threshold_is_the_lowest_passing_value_of_the_scan():
    # 100 items at confidence 1.0 (2 wrong), 100 at 0.8 (10 wrong), 100 at 0.5 (60 wrong).
    conf = [1.0] * 100 + [0.8] * 100 + [0.5] * 100
    ok = [True] * 98 + [False] * 2 + [True] * 90 + [False] * 10 + [True] * 40 + [False] * 60
    res = fixed_sequence_threshold(conf, ok, alpha=0.1, delta=0.1, step=0)
    assert res.threshold == 0.8 and res.accepted == 200 and res.errors == 12
    assert [t["passed"] for t in res.tested] == [True, True, False]
    assert res.upper_bound == pytest.approx(clopper_pearson_upper(12, 200, 0.1))


def test_scan_stops_at_the_first_failure_even_if_a_lower_threshold_would_pass():
    # The top bin is bad, the next bins are perfect: a lower threshold would pass, but fixed-
    # sequence testing must stop at the first failure and never answer.
    conf = [1.0] * 40 + [0.9] * 400 + [0.8] * 400
    ok = [False] * 20 + [True] * 20 + [True] * 800
    res = fixed_sequence_threshold(conf, ok, alpha=0.2, delta=0.1, step=0)
    assert res.threshold is None and res.accepted == 0
    assert len(res.tested) == 1 and not res.tested[0]["passed"]


def test_tiny_top_bins_are_not_tested():
    conf = [0.99] * 3 + [0.9] * 200
    ok = [False] * 3 + [True] * 200
    res = fixed_sequence_threshold(conf, ok, alpha=0.1, delta=0.1, min_accepted=30, step=0)
    assert res.tested[0]["accepted"] == 203 and res.threshold == 0.9


def test_delta_is_split_across_stages(monkeypatch):
    seen = []
    real = cal.fixed_sequence_threshold

    def spy(conf, ok, alpha, delta, **kw):
        seen.append(delta)
        return real(conf, ok, alpha, delta, **kw)

    monkeypatch.setattr(cal, "fixed_sequence_threshold", spy)
    rng = np.random.default_rng(0)
    confs = [rng.random(300) for _ in range(3)]
    oks = [rng.random(300) < 0.9 for _ in range(3)]
    calibrate_cascade(confs, oks, alpha=0.2, delta=0.09)
    assert seen == pytest.approx([0.03, 0.03, 0.03])


def test_later_stages_are_calibrated_on_the_items_earlier_stages_did_not_accept():
    conf1 = np.array([1.0] * 100 + [0.5] * 100)
    ok1 = np.array([True] * 100 + [False] * 100)
    conf2 = np.array([1.0] * 200)
    ok2 = np.array([False] * 100 + [True] * 100)  # wrong only where stage 1 already answered
    stages = calibrate_cascade([conf1, conf2], [ok1, ok2], alpha=0.1, delta=0.1)
    assert stages[0].threshold == 1.0 and stages[0].accepted == 100
    assert stages[1].reached == 100 and stages[1].threshold == 1.0 and stages[1].errors == 0
    assert apply_cascade([conf1, conf2], [1.0, 1.0]).tolist() == [0] * 100 + [1] * 100


def test_guarantee_holds_on_fresh_data_most_of_the_time():
    # Simulated: confidence is informative; test risk must stay <= alpha in >= 1 - delta of draws.
    rng = np.random.default_rng(1)
    alpha, delta, ok_runs = 0.1, 0.1, 0
    for run in range(40):
        conf = rng.random(1000)
        correct = rng.random(1000) < 0.5 + 0.5 * conf
        st = fixed_sequence_threshold(conf[:500], correct[:500], alpha, delta)
        if st.threshold is None:
            ok_runs += 1
            continue
        sel = conf[500:] >= st.threshold
        ok_runs += (1 - correct[500:][sel].mean()) <= alpha + 1e-12
    assert ok_runs / 40 >= 1 - delta
    assert math.isfinite(alpha)
