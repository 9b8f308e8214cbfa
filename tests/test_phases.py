"""Phase analysis on constructed run tables with known answers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mdesc.sweep import analysis as phases
from mdesc.sweep import PhaseSettings, phase_table

FLOOR = -15.0
# Most constructed series use the sharper thresholds of a float64 sweep (the defaults leave
# room for float32 rounding, see test_defaults_tolerate_float32_rounding).
SHARP = {"distance_margin": 1.0, "distance_ordered_tol": 0.1}


def analyse(table, settings=None, **kw):
    if settings is None:
        kw = {**SHARP, **kw}
    return phases.analyse(table, settings, **kw)


def make_table(excess, test_loss=None, lam=None, se=None, epoch=None):
    """A run table with D~ = floor + excess (and optional Lyapunov columns)."""
    excess = np.asarray(excess, float)
    n = excess.size
    epoch = np.arange(n, dtype=float) if epoch is None else np.asarray(epoch, float)
    t = {"epoch": epoch, "log_distance": FLOOR + excess,
         "test_loss": np.linspace(1.0, 0.5, n) if test_loss is None else np.asarray(test_loss, float),
         "train_loss": np.linspace(0.9, 0.1, n)}
    t["lyapunov_max"] = np.where(excess > 1.0, 0.02, -0.05) if lam is None else np.asarray(lam, float)
    t["lyapunov_stderr"] = np.full(n, 0.001) if se is None else np.asarray(se, float)
    return t


def test_planted_transitions_kinds_indices_and_interpolated_epochs():
    #           0  1  2  3   4   5   6  7  8  9  10  11
    excess = [0, 0, 0, 3, 10, 10, 0, 0, 0, 0, 0.5, 4]
    a = analyse(make_table(excess), distance_chaotic_level=8.0, measure="distance")
    kinds = [(t.kind, t.index_before, t.index_after) for t in a.transitions]
    assert kinds == [("order_to_chaos", 2, 3), ("chaos_to_order", 5, 6),
                     ("order_to_chaos", 10, 11)]
    # crossing of excess = margin (1.0) by linear interpolation
    assert a.transitions[0].epoch == pytest.approx(2 + 1 / 3)
    assert a.transitions[1].epoch == pytest.approx(5 + 9 / 10)
    assert a.transitions[2].epoch == pytest.approx(10 + 0.5 / 3.5)
    assert a.claims["n_order_to_chaos"] == 2 and a.claims["n_chaos_to_order"] == 1
    assert a.claims["first_order_to_chaos_epoch"] == pytest.approx(2 + 1 / 3)
    assert a.labels["distance"].tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1]


def test_edge_of_chaos_width_known_values():
    # clearly ordered until epoch 10, critical 11..13, clearly chaotic from 14 (level 8)
    excess = [0] * 11 + [0.5, 2.0, 3.0] + [10] * 6
    epoch = np.arange(20) * 2.0            # checkpoints every 2 epochs
    a = analyse(make_table(excess, epoch=epoch), distance_chaotic_level=8.0, measure="distance")
    assert len(a.transitions) == 1 and len(a.stretches) == 1
    st = a.stretches[0]
    assert (st.start_index, st.end_index) == (10, 14)
    assert st.width == pytest.approx(8.0) and st.centre_epoch == pytest.approx(24.0)
    assert st.n_critical == 3 and not st.open_start and not st.open_end
    assert a.regimes["distance"][10:15].tolist() == [-1, 0, 0, 0, 1]
    # a sharp transition is as wide as the checkpoint spacing, with no critical checkpoint
    b = analyse(make_table([0] * 5 + [10] * 5, epoch=np.arange(10) * 2.0), measure="distance")
    assert b.stretches[0].width == pytest.approx(2.0) and b.stretches[0].n_critical == 0


def test_open_stretch_when_never_clearly_chaotic():
    excess = [0, 0, 0, 2, 2.5, 3]          # rises above the margin but never to the level
    a = analyse(make_table(excess), distance_chaotic_level=8.0, measure="distance")
    st = a.stretches[0]
    assert st.open_end and not st.open_start
    assert (st.start_index, st.end_index) == (2, 5) and st.width == pytest.approx(3.0)


def test_automatic_chaotic_level_is_half_the_largest_excess():
    a = analyse(make_table([0, 0, 3, 6, 12, 12]))
    assert a.settings["distance_chaotic_level"] == pytest.approx(6.0)
    assert a.regimes["distance"].tolist() == [-1, -1, 0, 1, 1, 1]


@pytest.mark.parametrize("excess,word", [([0] * 8, "ordered"), ([9] * 8, "chaotic")])
def test_no_transition_gives_no_recommendation(excess, word):
    a = analyse(make_table(excess))
    assert a.transitions == [] and a.stretches == []
    assert a.recommended_epoch is None and a.recommended_index is None
    assert word in a.recommendation_reason
    assert math.isnan(a.claims["first_order_to_chaos_epoch"])
    assert a.claims["minima_near_transition_chance"] == 0.0
    json.dumps(a.to_dict(), allow_nan=False)


def test_single_checkpoint_run():
    a = analyse(make_table([0.0], test_loss=[0.6]))
    assert a.transitions == [] and a.minima == [] and a.cycles == []
    assert a.global_minimum == {"index": 0, "epoch": 0.0, "test_loss": 0.6}
    assert a.settings["window"] == 0.0
    assert math.isnan(a.claims["minima_near_transition_fraction"])
    d = a.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["claims"]["overtrained_spearman_distance"] is None


def test_empty_and_malformed_tables_raise():
    with pytest.raises(ValueError, match="empty"):
        analyse({"epoch": np.array([])})
    with pytest.raises(ValueError, match="epoch"):
        analyse({"test_loss": np.ones(3)})
    with pytest.raises(ValueError, match="duplicate"):
        analyse(make_table([0, 0, 5], epoch=[0, 1, 1]))
    with pytest.raises(ValueError, match="shape"):
        analyse({"epoch": np.arange(3), "test_loss": np.ones(4)})
    with pytest.raises(TypeError, match="unknown settings"):
        analyse(make_table([0, 1]), margin=3)
    with pytest.raises(ValueError, match="distance_chaotic_level"):
        analyse(make_table([0, 1]), distance_chaotic_level=0.5)
    with pytest.raises(ValueError, match="measure"):
        analyse(make_table([0, 1]), measure="entropy")


def test_nan_entries_are_unknown_skipped_and_reported():
    excess = np.array([0, 0, 0, np.nan, 10, 10, 10])
    loss = np.array([1.0, 0.8, np.nan, 0.5, 0.7, 0.9, 1.0])
    lam = np.array([-0.1, -0.1, -0.1, np.inf, 0.1, 0.1, 0.1])
    a = analyse(make_table(excess, test_loss=loss, lam=lam))
    assert a.labels["distance"][3] == -1 and a.regimes["distance"][3] == 2
    assert a.labels["lyapunov"][3] == -1
    (t,) = a.transitions
    assert (t.index_before, t.index_after) == (2, 4)
    assert a.nonfinite == {"test_loss": [2.0], "log_distance": [3.0], "lyapunov_max": [3.0]}
    assert any("log_distance" in w and "epochs 3" in w for w in a.warnings)
    assert a.global_minimum["epoch"] == 3.0
    assert [m.epoch for m in a.minima] == [3.0]
    assert a.stretches[0].n_critical == 0      # the unknown checkpoint does not count
    assert not any("tangent runs" in w for w in a.warnings)
    t = make_table(excess, test_loss=loss, lam=lam)
    t["nonfinite_fraction"] = np.array([0, 0, 0, 1.0, 0.25, 0, 0])
    assert any("tangent runs went non-finite at 2 checkpoints (epochs 3, 4" in w
               for w in analyse(t).warnings)
    json.dumps(a.to_dict(), allow_nan=False)


def test_shuffled_rows_give_the_same_analysis():
    excess = [0, 0, 0.4, 2, 9, 9, 9, 0, 0, 3]
    loss = [1, 0.8, 0.6, 0.5, 0.7, 0.9, 0.95, 0.6, 0.7, 0.9]
    t = make_table(excess, test_loss=loss)
    perm = np.random.default_rng(0).permutation(10)
    shuffled = {k: v[perm] for k, v in t.items()}
    assert analyse(shuffled).to_dict() == analyse(t).to_dict()


def test_lyapunov_labels_use_the_sign_and_stderr_band():
    lam = np.array([-0.05, -0.01, 0.005, 0.03, 0.04])
    se = np.array([0.01, 0.01, 0.01, 0.01, 0.01])
    t = make_table([0, 0, 0, 0, 0], lam=lam, se=se)
    a = analyse(t, measure="lyapunov")
    assert a.measure == "lyapunov"
    assert a.labels["lyapunov"].tolist() == [0, 0, 1, 1, 1]
    assert a.regimes["lyapunov"].tolist() == [-1, 0, 0, 1, 1]   # +-2 stderr around 0
    (tr,) = a.transitions
    assert tr.epoch == pytest.approx(1 + 0.01 / 0.015)
    st = a.stretches[0]
    assert (st.start_index, st.end_index, st.n_critical) == (0, 3, 2)
    # D~ stays at the floor: the other measure never transitions; labels disagree at 2..4
    assert a.secondary_transitions == []
    assert a.claims["label_agreement"] == pytest.approx(2 / 5)
    # auto measure falls back to lyapunov when D~ is absent
    t.pop("log_distance")
    assert analyse(t).measure == "lyapunov"
    b = analyse(t, lyapunov_threshold=0.02, lyapunov_sigmas=0)
    assert b.labels["lyapunov"].tolist() == [0, 0, 0, 1, 1]


def test_minima_prominence_and_smoothing_filter_noise():
    rng = np.random.default_rng(2)
    epoch = np.arange(60.0)
    clean = 0.6 + 0.2 * np.cos(2 * np.pi * epoch / 20)      # minima at 10, 30, 50
    loss = clean + 0.015 * rng.standard_normal(60)
    t = make_table(np.zeros(60), test_loss=loss)
    a = analyse(t)
    assert [m.epoch for m in a.minima] == pytest.approx([10, 30, 50], abs=2)
    noisy = analyse(t, minima_prominence=0.0)
    assert len(noisy.minima) >= 6                           # noise dips count without a floor
    smooth = analyse(t, minima_prominence=0.0, smooth=5)    # ... and averaging removes them
    assert [m.epoch for m in smooth.minima] == pytest.approx([10, 30, 50], abs=2)
    assert a.global_minimum["epoch"] == pytest.approx(float(np.argmin(loss)))
    for m in a.minima:                                      # each refined to the raw minimum
        assert m.test_loss == loss[m.index]


def test_claims_match_hand_computed_values():
    # 0..3 ordered, transition to chaos between 3 and 4; chaos->order between 7 and 8;
    # order->chaos between 10 and 11.
    excess = np.array([0, 0, 0, 0, 5, 7, 9, 11, 0, 0, 0, 6, 8])
    loss = np.array([.9, .8, .7, .4, .5, .6, .7, .8, .45, .55, .6, .65, .7])
    a = analyse(make_table(excess, test_loss=loss), distance_chaotic_level=4.0,
                measure="distance")
    c = a.claims
    # first transition: excess 0 -> 5 crosses 1 at 3 + 1/5
    assert c["first_order_to_chaos_epoch"] == pytest.approx(3.2)
    assert c["global_min_epoch"] == 3 and c["global_min_test_loss"] == pytest.approx(0.4)
    assert c["first_transition_minus_global_min"] == pytest.approx(0.2)
    assert c["first_transition_within_window_of_global_min"] is True
    # transitions at 3.2, 7 + 10/11, 10 + 1/6; window = spacing = 1
    assert [t.epoch for t in a.transitions] == pytest.approx([3.2, 7 + 10 / 11, 10 + 1 / 6])
    # local minima at 3 and 8 (both within 1 epoch of a transition)
    assert [m.epoch for m in a.minima] == [3.0, 8.0]
    assert c["minima_near_transition_fraction"] == 1.0
    # chance: interior checkpoints 1..11 within 1 epoch of {3.2, 7.91, 10.17}: 3,4,7,8,10,11
    assert c["minima_near_transition_chance"] == pytest.approx(6 / 11)
    # overtrained (epoch > 3): test loss against D~ and lambda_1
    after = slice(4, 13)
    x, y = FLOOR + excess[after], loss[after]
    # ranks by hand (ties share their mean rank): x = excess 5,7,9,11,0,0,0,6,8
    rx = np.array([4, 6, 8, 9, 2, 2, 2, 5, 7], float)
    ry = np.array([2, 4, 7, 9, 1, 3, 4, 6, 7], float)   # y = .5 .6 .7 .8 .45 .55 .6 .65 .7
    ry[[1, 6]] = 4.5                                     # .6 appears twice: ranks 4, 5
    ry[[2, 8]] = 7.5                                     # .7 appears twice: ranks 7, 8
    spearman = np.corrcoef(rx, ry)[0, 1]
    pearson = np.sum((x - x.mean()) * (y - y.mean())) / np.sqrt(
        np.sum((x - x.mean()) ** 2) * np.sum((y - y.mean()) ** 2))
    assert c["overtrained_n"] == 9
    assert c["overtrained_spearman_distance"] == pytest.approx(spearman)
    assert c["overtrained_pearson_distance"] == pytest.approx(pearson)
    # one cycle 3 -> peak 7 -> 8: rise 4 epochs, drop 1 epoch
    (cy,) = a.cycles
    assert (cy.start_index, cy.peak_index, cy.end_index) == (3, 7, 8)
    assert cy.asymmetry == pytest.approx(4.0) and cy.rise == pytest.approx(0.4)
    assert cy.drop == pytest.approx(0.35) and cy.transition_in_drop and cy.overtrained
    assert cy.chaotic_fraction_rise == 1.0
    assert c["fraction_cycles_sharp_drop"] == 1.0
    # stretches: 3->4 (width 1), 7->8 (width 1), 10->11 (width 1): first is the widest (tie)
    assert [s.width for s in a.stretches] == [1.0, 1.0, 1.0]
    assert c["first_transition_stretch_is_widest"] is True
    # recommendation: nearest checkpoint to 3.2 is epoch 3 -> regret 0
    assert a.recommended_epoch == 3.0 and c["recommended_regret"] == pytest.approx(0.0)


def test_recommendation_rules_differ_as_defined():
    # first transition sharp (3 -> 4); second order->chaos transition wide (9 .. 15)
    excess = [0, 0, 0, 0, 9, 9, 0, 0, 0, 0, 0.5, 0.6, 2, 3, 4, 9, 9]
    t = make_table(excess)
    first = analyse(t, distance_chaotic_level=8.0, measure="distance")
    assert first.recommended_epoch == 3.0              # nearest to crossing 3 + 1/9
    widest = analyse(t, distance_chaotic_level=8.0, recommend="widest_stretch",
                     measure="distance")
    st = max(widest.stretches, key=lambda s: s.width)
    assert (st.start_epoch, st.end_epoch) == (9.0, 15.0)
    assert widest.recommended_epoch == 12.0
    assert widest.claims["first_transition_stretch_is_widest"] is False
    assert "widest" in widest.recommendation_reason


def test_settings_object_and_to_dict_round_trip():
    s = PhaseSettings(distance_margin=2.0, distance_ordered_tol=0.1, window=3.0,
                      measure="distance")
    a = analyse(make_table([0, 0, 5, 5]), s, smooth=3)
    assert a.settings["distance_margin"] == 2.0 and a.settings["smooth"] == 3
    assert a.settings["window"] == 3.0 and a.settings["measure"] == "distance"
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["labels"]["distance"] == ["ordered", "ordered", "chaotic", "chaotic"]
    assert d["transitions"][0]["kind"] == "order_to_chaos"


def test_phase_table_columns():
    excess = [0, 0, 0.5, 3, 9, 9]
    loss = [1, 0.7, 0.5, 0.6, 0.8, 0.9]
    t = make_table(excess, test_loss=loss)
    pt = phase_table(t, distance_chaotic_level=8.0, measure="distance", **SHARP)
    assert pt["label"].tolist() == ["ordered"] * 3 + ["chaotic"] * 3
    assert pt["regime"].tolist() == ["ordered", "ordered", "critical", "critical",
                                     "chaotic", "chaotic"]
    assert pt["in_critical_stretch"].tolist() == [False, True, True, True, True, False]
    assert pt["transition"].tolist() == ["", "", "", "order_to_chaos", "", ""]
    assert pt["global_min"].tolist() == [False, False, True, False, False, False]
    assert pt["recommended"].sum() == 1 and pt["local_min"][2]
    assert all(len(v) == 6 for v in pt.values())
    with pytest.raises(TypeError):
        phase_table(t, analyse(t), smooth=3)


def test_command_line_options_map_to_settings():
    import argparse

    from mdesc.sweep.cli_options import add_phase_options, phase_settings_from_args

    p = argparse.ArgumentParser()
    add_phase_options(p)
    assert phase_settings_from_args(p.parse_args([])) == {}
    args = p.parse_args(["--distance-margin", "2", "--measure", "lyapunov", "--smooth", "3",
                         "--recommend", "widest_stretch"])
    over = phase_settings_from_args(args)
    assert over == {"distance_margin": 2.0, "measure": "lyapunov", "smooth": 3,
                    "recommend": "widest_stretch"}
    a = analyse(make_table([0, 0, 5, 5]), **over)
    assert a.settings["distance_margin"] == 2.0 and a.measure == "lyapunov"
    with pytest.raises(SystemExit):
        p.parse_args(["--measure", "entropy"])


def test_defaults_tolerate_float32_rounding():
    # an ordered network swept in float32: every |h' - h| ~ 1e-7..5e-7 instead of 0
    rng = np.random.default_rng(0)
    noise = rng.uniform(1e-7, 5e-7, size=(30, 60))
    ld = np.log(noise + np.exp(FLOOR)).mean(axis=1)
    t = make_table(ld - FLOOR, lam=np.full(30, -0.1))
    a = phases.analyse(t)
    assert a.settings["distance_margin"] == 2.0 and a.settings["distance_ordered_tol"] == 1.0
    assert np.all(a.regimes["distance"] == -1) and a.transitions == []
    # ... while a checkpoint with a fifth of the reviews diverging (ln D ~ 0) is chaotic
    ld2 = ld.copy()
    ld2[20:] = 0.8 * ld[20:] + 0.2 * 0.0
    b = phases.analyse(make_table(ld2 - FLOOR))
    assert [(tr.kind, tr.index_after) for tr in b.transitions] == [("order_to_chaos", 20)]
