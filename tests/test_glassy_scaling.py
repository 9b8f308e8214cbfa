"""Study 2's tests of curve shapes on planted answers: each can fail (fixed seeds only)."""
import math

import numpy as np
import pytest

from mdesc import glassy
from mdesc.data import chorales as ch
from mdesc.glassy import collapse, scaling

GRID = np.array([3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 32], dtype=float)


def _t_star(w_c, nu, noise, seed, grid=GRID, c=2000.0):
    rng = np.random.default_rng(seed)
    t = np.where(grid > w_c, c / np.clip(grid - w_c, 1e-9, None) ** nu, np.inf)
    fin = np.isfinite(t)
    t[fin] *= np.exp(noise * rng.standard_normal(fin.sum()))
    return t


@pytest.mark.parametrize("w_c, nu", [(5.5, 0.7), (9.0, 1.5)])
def test_free_exponent_fit_recovers_planted_w_c_and_nu_and_rejects_nu_1(w_c, nu):
    fit = scaling.fit_divergence(GRID, _t_star(w_c, nu, 0.05, seed=1), t_max=1e7)
    assert fit.refused is None
    lo, hi = fit.w_c_interval
    assert lo < w_c < hi and hi - lo < 0.6                    # covers, and is informative
    assert fit.nu_interval[0] < nu < fit.nu_interval[1]
    assert fit.nu1_p_value < 1e-3 and fit.nu1_p_value_f < 1e-3  # nu = 1 is rejected
    assert fit.unreached_widths.tolist() == [w for w in GRID.tolist() if w <= w_c]


def test_planted_nu_1_is_not_rejected_and_its_interval_holds_it():
    fit = scaling.fit_divergence(GRID, _t_star(6.5, 1.0, 0.05, seed=3), t_max=1e7)
    assert fit.refused is None
    assert fit.nu_interval[0] < 1.0 < fit.nu_interval[1]
    assert fit.nu1_p_value > 0.05
    assert fit.w_c_nu1 == pytest.approx(6.5, abs=0.2)


def test_profile_interval_widens_with_the_small_sample_calibration():
    t = _t_star(5.5, 0.8, 0.05, seed=2)
    chi, f = (scaling.fit_divergence(GRID, t, calibration=c) for c in ("chi2", "f"))
    assert f.w_c_interval[0] < chi.w_c_interval[0] and f.w_c_interval[1] > chi.w_c_interval[1]


def test_divergence_is_refused_when_the_grid_cannot_resolve_it():
    # three widths with a learning time: 3 parameters, nothing left to test them
    few = scaling.fit_divergence(GRID[-4:], _t_star(17.0, 1.0, 0.05, 0, grid=GRID[-4:]))
    assert "at least 4 widths" in few.refused
    # all widths far above w_c: the interval of w_c runs below the narrowest width
    far = GRID[6:]
    off = scaling.fit_divergence(far, _t_star(2.0, 1.0, 0.05, 4, grid=far))
    assert off.refused and ("off the width grid" in off.refused or "open" in off.refused)
    # t* growing with w (no divergence at all)
    grows = scaling.fit_divergence(GRID, 100.0 + 10.0 * GRID * np.exp(0.01 * np.arange(13)))
    assert grows.refused is not None
    # a width above w_c that never learned, where the fit says it should have: contradiction
    t = _t_star(5.5, 1.0, 0.02, 5)
    t[GRID == 10] = np.inf
    bad = scaling.fit_divergence(GRID, t, t_max=1e5)
    assert bad.refused and "never reached" in bad.refused
    assert scaling.fit_divergence(GRID, _t_star(5.5, 1.0, 0.02, 5), t_max=1e5).refused is None
    # widths >= 10 diverge at 9.5, but width 8 learned too (slowly): w_c rests on that width
    t = _t_star(9.5, 0.7, 0.03, 6)
    t[GRID == 8] = 6e4
    pinned = scaling.fit_divergence(GRID, t)
    assert pinned.refused and "rests on the narrowest width 8" in pinned.refused
    assert 7 < pinned.w_c_interval[0] < pinned.w_c_interval[1] < 8  # what the fit alone claims
    assert scaling.fit_divergence(GRID, t, check_narrowest=False).refused is None


TIMES = np.unique(np.geomspace(100, 1e5, 40).astype(np.int64)).astype(float)


def test_decay_shapes_pick_the_planted_one_and_report_the_span():
    rng = np.random.default_rng(0)
    noise = np.exp(0.01 * rng.standard_normal(TIMES.size))
    power = scaling.compare_decays(TIMES, 3.0 * TIMES ** -0.4 * noise)
    assert power.best in ("power", "power_offset")
    assert power.models["power"]["alpha"] == pytest.approx(0.4, abs=0.01)
    assert power.decades == pytest.approx(3.0, abs=0.01) and power.n_points == TIMES.size
    stretched = scaling.compare_decays(TIMES, (0.5 + 2 * np.exp(-(TIMES / 3000) ** 0.5)) * noise)
    assert stretched.best == "stretched_exp"
    assert min(stretched.models[m]["delta_aicc"] for m in ("power", "power_offset")) > 10
    assert stretched.models["stretched_exp"]["beta"] == pytest.approx(0.5, abs=0.05)
    assert sum(m["weight"] for m in stretched.models.values()) == pytest.approx(1.0)
    short = scaling.compare_decays(TIMES, 3.0 * TIMES ** -0.4 * noise, t_min=1e4)
    assert short.decades < 1.01 and short.t_min >= 1e4


def test_l_inf_interval_excludes_zero_only_for_a_planted_positive_asymptote():
    rng = np.random.default_rng(1)
    noise = np.exp(0.003 * rng.standard_normal(TIMES.size))
    pos = scaling.l_inf_interval(TIMES, (0.6 + 3 * TIMES ** -0.5) * noise)
    assert pos["positive"] and pos["lo"] < 0.6 < pos["hi"] and pos["hi"] - pos["lo"] < 0.05
    zero = scaling.l_inf_interval(TIMES, 3 * TIMES ** -0.5 * noise)
    assert not zero["positive"] and zero["lo"] == 0.0


def _family(tws, law, seed=0, noise=0.03, n_lags=30, t_max=200_000):
    rng = np.random.default_rng(seed)
    lags = [np.unique(np.geomspace(1, t_max - tw, n_lags).astype(np.int64)) for tw in tws]
    delta = [law(lag.astype(float), float(tw)) * np.exp(noise * rng.standard_normal(lag.size))
             for lag, tw in zip(lags, tws)]
    return glassy.AgingCurves(np.asarray(tws), lags, delta)


TWS = [10, 30, 100, 300, 1000, 3000, 10000]


@pytest.mark.parametrize("mu", [0.6, 1.0])
def test_aging_exponent_recovers_planted_mu(mu):
    fit = collapse.fit_aging_exponent(_family(TWS, lambda lag, tw: np.log1p(lag / tw ** mu) ** 2))
    assert fit.mu == pytest.approx(mu, abs=0.02)
    assert fit.residual_fraction < 0.01 and fit.ratio_mu < 0.01
    assert (fit.ratio_1 < 0.01) == (mu == 1.0)


def test_equilibrium_and_non_collapsing_families_are_told_apart():
    # tau alone (no aging): the best mu is 0 and tau/tau_w is far worse
    eq = collapse.fit_aging_exponent(_family(TWS, lambda lag, tw: np.log1p(lag / 50) ** 2))
    assert eq.mu < 0.02 and eq.ratio_1 > 10 and eq.residual_fraction < 0.01
    # plateaus that grow with tau_w: no horizontal rescaling collapses them
    broken = collapse.fit_aging_exponent(_family(
        TWS, lambda lag, tw: (1 + np.log10(tw)) ** 3 * (1 - np.exp(-lag / 100))))
    assert broken.residual_fraction > 0.2 and broken.ratio_mu > 0.5


def test_seed_bootstrap_gives_verdicts_that_can_fail():
    def group(law):
        fits = [collapse.fit_aging_exponent(_family(TWS, law, seed=s, noise=0.1))
                for s in range(4)]
        return collapse.scaling_over_seeds(fits, [0, 1, 2, 3], n_boot=500)

    aging = group(lambda lag, tw: np.log1p(lag / tw ** 0.7) ** 2)
    assert aging["mu"]["lo"] < 0.7 < aging["mu"]["hi"] and aging["mu"]["hi"] < 0.75
    assert aging["collapses"] and aging["beats_no_scaling"] and aging["aging"]
    assert not aging["simple_aging_inside"]
    simple = group(lambda lag, tw: np.log1p(lag / tw) ** 2)
    assert simple["simple_aging_inside"] and simple["aging"]
    eq = group(lambda lag, tw: np.log1p(lag / 50) ** 2)
    assert eq["collapses"] and not eq["beats_no_scaling"] and not eq["aging"]
    broken = group(lambda lag, tw: (1 + np.log10(tw)) ** 3 * (1 - np.exp(-lag / 100)))
    assert not broken["collapses"]
    one = collapse.scaling_over_seeds(
        [collapse.fit_aging_exponent(_family(TWS, lambda lag, tw: np.log1p(lag / tw) ** 2))], [0])
    assert one["aging"] is None and math.isnan(one["mu"]["lo"])


def test_training_subsets_are_seeded_nested_and_checked():
    s = ch.load_fixture_chorales()
    a, b = s.nested_subset(3, seed=1), s.nested_subset(5, seed=1)
    assert len(a) == 3 and set(a.names) <= set(b.names)
    assert a.names == [n for n in s.names if n in a.names]     # original order kept
    assert s.nested_subset(3, seed=1).names == a.names
    assert s.nested_subset(3, seed=2).names != a.names or len(s) <= 3
    with pytest.raises(ValueError, match="cannot choose"):
        s.nested_subset(len(s) + 1)


def test_subset_sweep_records_its_rule_and_refuses_another_on_resume(tmp_path):
    import json

    from mdesc.cli import main

    out = tmp_path / "sweep"
    argv = ["glassy", "sweep", "--out", str(out), "--data", "fixture", "--window", "16",
            "--depths", "1", "--widths", "3", "6", "--steps", "20", "--n-records", "8",
            "--n-lags", "4", "--n-train", "3", "--subset-seed", "2", "--no-analysis",
            "--no-progress"]
    assert main(argv) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["n_train"] == 3 and settings["subset_seed"] == 2
    data = json.loads((out / "data.json").read_text())
    train, _ = ch.load_fixture_chorales().split(0.2, seed=0)
    assert data["train_names"] == train.nested_subset(3, seed=2).names
    assert main(argv[:-3] + ["3", "--no-analysis", "--no-progress"]) == 2  # other subset seed


def test_lr_check_finds_the_largest_stable_rate_and_shows_the_check(tmp_path):
    import json

    from mdesc.cli import main

    out = tmp_path / "lr"
    assert main(["glassy", "lr-check", "--out", str(out), "--data", "fixture", "--window", "16",
                 "--depths", "1", "--widths", "4", "8", "--steps", "60", "--n-records", "12",
                 "--n-lags", "4", "--lrs", "0.05", "1000", "--max-rise", "0.1"]) == 0
    check = json.loads((out / "lr_check.json").read_text())
    assert [e["lr"] for e in check["per_lr"]] == [0.05, 1000.0]
    assert check["per_lr"][0]["stable"] and not check["per_lr"][1]["stable"]  # lr 1000 blows up
    assert check["largest_stable_lr"] == 0.05 and check["largest_stable_lr_by_depth"] == {"1": 0.05}
    assert {(n["width"], n["seed"]) for n in check["per_lr"][0]["nets"]} == {(4, 0), (8, 0)}
    assert (out / "lr_check.png").stat().st_size > 0


def test_lr_stability_needs_every_smaller_rate_stable():
    from mdesc.glassy.lrcheck import lr_stability

    t = np.array([0, 1, 10, 100, 200, 400, 1000], dtype=np.int64)
    smooth = 3.0 * (1 + t) ** -0.3
    spiky = smooth.copy()
    spiky[5] = spiky[4] * 1.5                       # the full loss jumps: a spike at t = 400
    def net(loss):
        return glassy.NetRecord(1, 4, 0, 10, t, loss, loss, loss, loss * 1.2,
                                glassy.AgingCurves(np.array([1]), [np.array([1])],
                                                   [np.array([1.0])]), 1000, 1000)
    check = lr_stability({0.1: [net(smooth)], 0.2: [net(spiky)], 0.5: [net(smooth)]})
    assert [e["stable"] for e in check["per_lr"]] == [True, False, True]
    assert check["largest_stable_lr"] == 0.1          # 0.5 is stable but 0.2 is not
    assert check["per_lr"][1]["nets"][0]["first_spike"] == 400
