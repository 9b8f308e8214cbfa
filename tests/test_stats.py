"""mdesc.stats: known values and planted cases that cannot be tuned to."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sp

from mdesc import stats


def test_holm_equals_a_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06
    got = stats.holm([0.01, 0.04, 0.03, 0.005, None, math.nan])
    assert got[4] is None and got[5] is None
    assert np.allclose(got[:4], [0.03, 0.06, 0.06, 0.02], rtol=0, atol=1e-15)
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0] and stats.holm([]) == []


def test_intervals_match_their_formulas():
    lo, hi = stats.wilson_interval(5, 10)
    assert abs(lo - 0.236593) < 1e-6 and abs(hi - 0.763407) < 1e-6
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))
    f = stats.fraction_interval([True, False, None, True])
    assert (f["k"], f["n"], f["n_total"]) == (2, 3, 4) and f["interval"][0] < 2 / 3 < f["interval"][1]
    v = [1.0, 2.0, 4.0, math.nan]
    m = stats.mean_interval(v)
    half = sp.t.ppf(0.975, 2) * np.std([1, 2, 4], ddof=1) / math.sqrt(3)
    assert m["n"] == 3 and m["n_total"] == 4 and abs(m["hi"] - (7 / 3 + half)) < 1e-12
    med, lo, hi = stats.bootstrap_median(np.arange(101.0), seed=1)
    assert med == 50 and lo < 50 < hi


def _jump_world(seed: int, events_cause_drops: bool):
    """300 gaps; 10 % carry a large weight jump.  Jumps cause stability events (prob 0.8);
    drops are caused by jumps (prob 0.8) or, when ``events_cause_drops``, by events off jumps."""
    rng = np.random.default_rng(seed)
    n = 300
    jump = rng.random(n) < 0.1
    if events_cause_drops:
        event = rng.random(n) < np.where(jump, 0.1, 0.1)
        drop = (event & (rng.random(n) < 0.9)) | (rng.random(n) < 0.02)
    else:
        event = (jump & (rng.random(n) < 0.8)) | (rng.random(n) < 0.02)
        drop = (jump & (rng.random(n) < 0.8)) | (rng.random(n) < 0.02)
    return n, jump, event, drop


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confounded_association_is_not_claimed_beyond_the_common_cause(seed):
    n, jump, event, drop = _jump_world(seed, events_cause_drops=False)
    gaps, targets = np.flatnonzero(event), np.flatnonzero(drop) + 0.5
    naive = stats.event_hits_test(n, gaps, targets, tolerance=0, draws=2000, seed=seed)
    strat = stats.event_hits_test(n, gaps, targets, tolerance=0, null="stratified",
                                  strata=jump.astype(int), draws=2000, seed=seed)
    assert naive["p_value"] < 0.001                      # the unconditional test is fooled
    assert strat["p_value"] > 0.05 and strat["excess_interval"][0] <= 0 <= strat["excess_interval"][1]
    lrt = stats.logistic_lrt(drop, event, {"jump": jump.astype(float)})
    assert lrt["p_value"] > 0.05
    assert lrt["odds_ratio_interval"][0] < 1 < lrt["odds_ratio_interval"][1]
    assert stats.logistic_lrt(drop, event)["p_value"] < 1e-6    # without the control: fooled


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_association_beyond_the_common_cause_is_found(seed):
    n, jump, event, drop = _jump_world(seed, events_cause_drops=True)
    gaps, targets = np.flatnonzero(event), np.flatnonzero(drop) + 0.5
    strat = stats.event_hits_test(n, gaps, targets, tolerance=0, null="stratified",
                                  strata=jump.astype(int), draws=2000, seed=seed)
    assert strat["p_value"] < 0.001 and strat["excess_interval"][0] > 0 and strat["ratio"] > 2
    lrt = stats.logistic_lrt(drop, event, {"jump": jump.astype(float)})
    assert lrt["p_value"] < 1e-6 and lrt["odds_ratio_interval"][0] > 1


def test_circular_null_keeps_clustering():
    # events in one tight cluster, targets in another cluster far away: no association
    n = 200
    events = np.arange(50, 60)
    targets = np.arange(150, 160) + 0.5
    for null in ("uniform", "circular"):
        r = stats.event_hits_test(n, events, targets, tolerance=1, null=null, draws=500)
        assert r["observed"] == 0 and r["p_value"] == 1.0
    # targets inside the event cluster: the circular null (clusters move as a block) is
    # stricter than the uniform one (scattered events hit a cluster of targets less often)
    targets = np.arange(50, 60) + 0.5
    uni = stats.event_hits_test(n, events, targets, tolerance=0, null="uniform", draws=2000)
    circ = stats.event_hits_test(n, events, targets, tolerance=0, null="circular", draws=2000)
    assert uni["observed"] == circ["observed"] == 10
    assert uni["p_value"] < 0.001 and circ["p_value"] < 0.05


def test_event_tests_refuse_what_cannot_be_tested():
    assert stats.event_hits_test(10, [], [1.5])["refused"]
    assert stats.event_hits_test(10, [1], [])["refused"]
    assert "every gap" in stats.event_hits_test(3, [0, 1, 2], [1.5])["refused"]
    assert "stratum" in stats.event_hits_test(4, [0, 1], [1.5], null="stratified",
                                              strata=[0, 0, 1, 1])["refused"]
    with pytest.raises(ValueError, match="null must be"):
        stats.event_hits_test(10, [1], [1.5], null="bogus")
    assert "does not vary" in stats.logistic_lrt([0, 0, 0, 0, 0], [0, 1, 0, 1, 0])["refused"]
    assert "does not vary" in stats.logistic_lrt([0, 1, 0, 1, 0], [1, 1, 1, 1, 1])["refused"]
    assert stats.logistic_lrt([0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 0],
                              {"flat": [2] * 6})["dropped"] == ["flat"]


def test_separated_events_stay_finite():
    y = np.array([0] * 20 + [1] * 5)
    t = y.copy()  # every drop at an event, no event without a drop: perfect separation
    r = stats.logistic_lrt(y, t)
    assert math.isfinite(r["odds_ratio"]) and r["odds_ratio"] > 10 and r["p_value"] < 1e-4


def test_drifting_series_are_not_correlated_by_their_trends():
    rng = np.random.default_rng(3)
    t = np.arange(200.0)
    x = t + rng.normal(0, 5, t.size)          # both drift with training time, independently
    y = 0.5 * t + rng.normal(0, 5, t.size)
    naive = sp.spearmanr(x, y)
    r = stats.series_correlation(x, y)
    assert naive.pvalue < 1e-30 and r["levels"] > 0.9
    assert r["differences_p"] > 0.05
    # a real coupling of the changes is found
    walk = np.cumsum(rng.normal(0, 1, 200))
    coupled = stats.series_correlation(walk, walk + rng.normal(0, 0.3, 200))
    assert coupled["differences"] > 0.5 and coupled["differences_p"] < 1e-6
    assert stats.series_correlation([1, 2, 3], [1, 2, 3])["refused"]
