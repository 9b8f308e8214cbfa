"""Issue 10 items 2, 5, 7: claims refused on flat values, one verdict from two measures,
stability events and their permutation test, twins compared, seeds pooled (constructed tables
with known answers; deterministic)."""
from __future__ import annotations

import numpy as np
import pytest

from mdesc.sweep import analysis, claims, events

FLOOR = -15.0


def table(n=40, seed=0, d_excess=None, lam=None, loss=None, red=None):
    rng = np.random.default_rng(seed)
    epoch = np.arange(n, dtype=float)
    t = {"epoch": epoch,
         "test_loss": (np.linspace(1.0, 2.0, n) + 0.01 * rng.standard_normal(n)
                       if loss is None else np.asarray(loss, float)),
         "train_loss": np.linspace(0.7, 0.01, n),
         "log_distance": FLOOR + (np.zeros(n) if d_excess is None else np.asarray(d_excess)),
         "lyapunov_max": (-0.1 + 0.001 * rng.standard_normal(n) if lam is None
                          else np.asarray(lam, float)),
         "lyapunov_stderr": np.full(n, 1e-4)}
    if red is not None:
        t["reduced_sum"] = np.asarray(red, float)
    return t


def test_correlation_on_floor_level_distance_is_refused_with_the_reason():
    # D~ within 1.5e-9 of the floor (float64 rounding), test loss rising: the case
    n = 30
    wiggle = 1.5e-9 * np.sin(np.arange(n))
    loss = np.r_[np.linspace(1.0, 0.5, 5), np.linspace(0.5, 2.0, n - 5)]
    a = analysis.analyse(table(n, d_excess=wiggle, loss=loss))
    r = a.claims["overtrained_distance"]
    assert r["refused"] and "within 1e-06 of the floor" in r["refused"]
    assert np.isnan(r["spearman"]) and np.isnan(a.claims["overtrained_spearman_p_distance"])
    assert "D~" in a.claims["distance_refused"]
    # the same correlation on D~ that does vary is computed (so the refusal can fail)
    a2 = analysis.analyse(table(n, d_excess=np.linspace(0, 5, n), loss=loss))
    assert a2.claims["overtrained_distance"]["refused"] is None
    assert a2.claims["overtrained_spearman_distance"] == pytest.approx(1.0)


def test_lyapunov_values_within_their_errors_are_refused():
    reason = claims.flat_reason([-0.1, -0.1 + 1e-5, -0.1 - 1e-5], 2e-4, "lambda_1")
    assert reason and "within their numerical resolution" in reason
    assert claims.flat_reason([-0.1, -0.05, 0.0], 2e-4, "lambda_1") is None
    assert claims.lyapunov_resolution([1e-4, 3e-4, 2e-4]) == pytest.approx(4e-4)


def test_one_verdict_from_two_measures_says_when_and_why_they_disagree():
    v, why = claims.verdicts([0, 1, 1, 0, -1, 1], [0, 1, 0, 1, 0, 0],
                             [-0.1, 0.05, -0.02, 0.001, -0.1, -0.002],
                             [-15, -10, -12, -15, np.nan, -8], FLOOR)
    assert v == ["ordered", "chaotic", "disagree", "disagree", "unknown", "disagree"]
    assert "left the basin" in why[2] and "had not separated" in why[3]
    assert "limit cycle" in why[5]
    a = analysis.analyse(table(6, d_excess=[0, 0, 5, 5, 0, 0], lam=[-.1, -.1, -.1, .1, .1, -.1]),
                         distance_margin=1.0, distance_ordered_tol=0.1)
    assert a.verdicts == ["ordered", "ordered", "disagree", "chaotic", "disagree", "ordered"]
    assert a.claims["verdict_counts"]["disagree"] == 2


def test_lyapunov_jump_beyond_errors_is_an_event_and_small_wiggles_are_not():
    lam = np.r_[np.full(10, -0.10), np.full(10, -0.05)] + 1e-4 * np.sin(np.arange(20))
    ev = events.lyapunov_events(np.arange(20.0), lam, np.full(20, 1e-4))
    assert [(e.kind, e.gap) for e in ev] == [("lyapunov", 9)]
    # the same jump hidden in errors as large as itself is not an event
    assert events.lyapunov_events(np.arange(20.0), lam, np.full(20, 0.05)) == []


def test_attractor_rearrangement_is_a_structure_event():
    rng = np.random.default_rng(1)
    red = np.tile(rng.standard_normal(8), (12, 1))
    red[7:, :4] += 3.0                      # half the reviews move to another fixed point
    red += 1e-9 * rng.standard_normal(red.shape)
    ev = events.structure_events(np.arange(12.0), red)
    assert [e.gap for e in ev] == [6]
    assert events.attractor_count(red[0]) == 8 and events.attractor_count([1, 1, 1.0005]) == 1


def test_permutation_test_finds_minima_planted_at_events_and_not_elsewhere():
    n_gaps, event_gaps = 99, [10, 30, 50, 70, 90]
    at = events.permutation_test(n_gaps, event_gaps, [11, 31, 51, 71, 91], tolerance=0,
                                 permutations=2000, seed=3)
    assert at["observed"] == 5 and at["p_value"] < 0.01 and at["n_events"] == 5
    away = events.permutation_test(n_gaps, event_gaps, [20, 40, 60, 80, 95], tolerance=0,
                                   permutations=2000, seed=3)
    assert away["observed"] == 0 and away["p_value"] == 1.0
    again = events.permutation_test(n_gaps, event_gaps, [11, 31, 51, 71, 91], tolerance=0,
                                    permutations=2000, seed=3)
    assert again == at                      # seeded: reproducible
    assert events.permutation_test(n_gaps, [], [5])["refused"].startswith("no stability events")
    assert events.permutation_test(n_gaps, [3], [])["refused"].startswith("no targets")


def test_analysis_reports_events_drops_and_their_tests():
    n = 60
    loss = np.linspace(1.0, 2.0, n)
    lam = np.full(n, -0.1)
    for g in (14, 29, 44):                  # a sharp drop of the test loss at each lambda jump
        loss[g + 1:] -= 0.5
        lam[g + 1:] += 0.02
    loss += 0.001 * np.sin(np.arange(n))
    a = analysis.analyse(table(n, lam=lam, loss=loss), permutations=2000)
    assert sorted({e.gap for e in a.events}) == [14, 29, 44]
    assert a.drops == [14, 29, 44]
    d = a.claims["drops_at_events"]
    assert d["observed"] == 3 and d["p_value"] < 0.01
    assert a.claims["event_epochs"] == [15.0, 30.0, 45.0]
    pt = analysis.phase_table(table(n, lam=lam, loss=loss), a)
    assert pt["event"][15] == "lyapunov" and pt["event"][16] == ""


def test_no_events_when_lambda_does_not_vary_beyond_resolution():
    n = 20
    a = analysis.analyse(table(n, lam=np.full(n, -0.1) + 1e-6 * np.sin(np.arange(n))))
    assert a.events == [] or all(e.kind == "structure" for e in a.events)
    assert a.claims["minima_at_events"]["refused"]


def test_twins_compared_and_collapsed_t0_twins_reported():
    tw = claims.twin_comparison([0, 1, 2, 3], [-15, -10, -15, -15], [-15, -15, -15, -9],
                                [0, 10, 10, 0], n_reviews=10, floor=FLOOR, margin=1.0)
    assert tw["n_disagree"] == 2 and tw["disagree_epochs"] == [1.0, 3.0]
    assert tw["n_all_collapsed"] == 2 and tw["collapsed_epochs"] == [1.0, 2.0]
    assert "never as ordered" in tw["note"]
    one = claims.twin_comparison([0, 1], [-15, -15], [np.nan, np.nan], [np.nan, np.nan], 10,
                                 FLOOR, 1.0)
    assert one == {"available": False, "reason": "the sweep ran one twin only"}


def test_seeds_pooled_with_the_fraction_holding_each_claim():
    ok = {"minima_at_events": {"p_value": 0.01, "refused": None},
          "drops_at_events": {"p_value": 0.5, "refused": None}, "n_transitions": 0,
          "first_transition_within_window_of_global_min": None}
    refused = {"minima_at_events": {"p_value": None, "refused": "no stability events"},
               "drops_at_events": {"p_value": 0.01, "refused": None}, "n_transitions": 2,
               "first_transition_within_window_of_global_min": True}
    p = claims.pool(["s1", "s2", "s3"], [ok, ok, refused])
    m = p["pooled"]["minima_at_events_significant"]
    assert (m["holds"], m["defined"], m["seeds"], m["fraction"]) == (2, 2, 3, 1.0)
    d = p["pooled"]["drops_at_events_significant"]
    assert d["fraction"] == pytest.approx(1 / 3)
    assert p["pooled"]["has_order_chaos_transition"]["fraction"] == pytest.approx(1 / 3)
    assert p["per_seed"]["s3"]["minima_at_events_significant"] is None


def test_collapsed_t0_twins_are_never_labelled_ordered():
    t = table(4, d_excess=[0, 0, 0, 3])
    t["n_collapsed_start"] = np.array([0, 5, 0, 0.0])
    t["settings"] = {"twins": ["start"]}
    a = analysis.analyse(t, distance_margin=1.0, distance_ordered_tol=0.1)
    assert a.labels["distance"].tolist() == [0, -1, 0, 1]
    assert any("collapsed" in w for w in a.warnings)
    t["settings"] = {"twins": ["drive_end", "start"]}     # the primary twin is the drive-end one
    assert analysis.analyse(t, distance_margin=1.0).labels["distance"].tolist() == [0, 0, 0, 1]


def test_rounding_wiggles_rank_as_ties_not_as_signal():
    # the case: all but one D~ within 1.5e-9 of the floor; the wiggles must not rank
    n = 30
    x = FLOOR + 1.5e-9 * np.sin(np.arange(n))
    x[7] = FLOOR + 0.03
    r = claims.correlation(x, np.linspace(0, 1, n) + 0.1 * np.sin(np.arange(n)) ** 2, "D~",
                           1e-6, x_floor=FLOOR)
    assert r["refused"] and "only 2 distinct values" in r["refused"]
    x[20] = FLOOR + 0.5                     # three distinct levels: a correlation is made
    assert claims.correlation(x, np.arange(n, dtype=float), "D~", 1e-6,
                              x_floor=FLOOR)["refused"] is None


def test_uniform_grid_drops_refined_rows():
    t = table(21)
    keep = np.r_[np.arange(0, 21, 5), [11, 12, 13]]
    sub = {k: (v[np.sort(keep)] if isinstance(v, np.ndarray) else v) for k, v in t.items()}
    g, k = analysis.uniform_grid(sub)
    assert k == 5 and g["epoch"].tolist() == [0, 5, 10, 15, 20]
    assert analysis.uniform_grid(t)[1] == 1
