"""Sweep-level analyses of study 2 on planted answers (deterministic: fixed seeds only)."""
import json
import math

import numpy as np
import pytest

from mdesc import glassy
from mdesc.glassy import summary


def test_seed_interval_is_the_student_t_interval():
    got = summary.seed_interval([1.0, 2.0, 3.0, np.inf, np.nan])
    assert got["n"] == 3 and got["n_total"] == 5 and got["mean"] == 2.0
    assert got["sem"] == pytest.approx(1 / math.sqrt(3))
    assert got["hi"] - 2.0 == pytest.approx(4.302652729911275 / math.sqrt(3))  # t_{0.975, 2}
    assert math.isnan(summary.seed_interval([5.0])["lo"])
    assert summary.seed_interval([])["n"] == 0


def _t_star(widths, w_c, c, rel_noise, seed):
    rng = np.random.default_rng(seed)
    t = np.where(widths > w_c, c / np.clip(widths - w_c, 1e-9, None), np.inf)
    fin = np.isfinite(t)
    t[fin] *= np.exp(rel_noise * rng.standard_normal(fin.sum()))
    return t


@pytest.mark.parametrize("w_c", [3.5, 7.0])
def test_critical_width_over_noisy_seeds_covers_the_planted_value(w_c):
    widths = np.array([3, 4, 6, 8, 11, 16, 23, 32], dtype=float)
    table = np.stack([_t_star(widths, w_c, 2000.0, 0.05, seed) for seed in range(5)])
    out = summary.critical_width_over_seeds(widths, table)
    ci = out["w_c_seeds"]
    assert out["fraction_fitted"] == 1.0 and ci["n"] == 5
    assert ci["lo"] <= w_c <= ci["hi"]
    assert ci["hi"] - ci["lo"] < 1.5                    # informative, not just wide
    pooled = out["pooled"]
    assert not pooled["at_bound"]
    assert abs(pooled["w_c"] - w_c) < 4 * pooled["w_c_err"] + 0.05
    assert pooled["unreached_widths"] == [w for w in widths.tolist() if w <= w_c]


def test_a_sweep_without_divergence_is_reported_at_the_bound_not_as_a_w_c():
    widths = np.array([3, 4, 6, 8, 11, 16], dtype=float)
    table = np.stack([100.0 + 10.0 * widths * (1 + 0.01 * s) for s in range(3)])  # grows with w
    out = summary.critical_width_over_seeds(widths, table)
    assert out["fraction_fitted"] == 0.0 and out["w_c_seeds"]["n"] == 0
    assert out["pooled"]["at_bound"]


def test_depth_trend_sees_a_falling_w_c():
    widths = np.array([3, 4, 6, 8, 11, 16, 23, 32], dtype=float)
    critical = []
    for depth, w_c in ((1, 7.0), (2, 5.0), (3, 3.5)):
        table = np.stack([_t_star(widths, w_c, 1000.0, 0.03, 10 * depth + s) for s in range(4)])
        critical.append({"depth": depth, "threshold": 1.0}
                        | summary.critical_width_over_seeds(widths, table))
    (trend,) = summary.depth_trend(critical)
    assert [s["to_depth"] for s in trend["steps"]] == [2, 3]
    for s, want in zip(trend["steps"], (-2.0, -1.5)):
        assert s["difference"] == pytest.approx(want, abs=4 * s["difference_err"] + 0.05)
        assert s["difference"] + 3 * s["difference_err"] < 0     # significant fall
        assert s["fraction_decreasing"] == 1.0 and s["n_seed_pairs"] == 4


def _family(tws, law, n_lags=30, t_max=20000, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    lags = [np.unique(np.geomspace(1, t_max - tw, n_lags).astype(np.int64)) for tw in tws]
    delta = [law(lag.astype(float), float(tw)) * np.exp(noise * rng.standard_normal(lag.size))
             for lag, tw in zip(lags, tws)]
    return glassy.AgingCurves(np.asarray(tws), lags, delta)


def test_collapse_windows_separate_short_time_scaling_from_long_time_breakdown():
    tws = [10, 40, 160, 640]
    # tau/tau_w scaling everywhere (the under-parametrised picture)
    aging = _family(tws, lambda lag, tw: np.log1p(lag / tw) ** 2, noise=0.02, seed=1)
    # scaling for tau <= tau_w, then a tau_w-independent plateau (the over-parametrised picture:
    # the weights stop moving once the loss reaches its SGD floor)
    def broken(lag, tw):
        x = lag / tw
        return np.where(x <= 1, x ** 1.5, 1.0 + 1e-3 * lag)

    over = _family(tws, broken, noise=0.02, seed=2)
    full = glassy.aging_collapse(aging)
    short = glassy.aging_collapse(aging, max_ratio=1.0)
    long = glassy.aging_collapse(aging, min_ratio=1.0)
    assert full.ratio < 0.05 and short.ratio < 0.05 and long.ratio < 0.05
    o_short = glassy.aging_collapse(over, max_ratio=1.0)
    o_long = glassy.aging_collapse(over, min_ratio=1.0)
    assert o_short.ratio < 0.05                      # short times: still a function of tau/tau_w
    assert o_long.ratio > 1.0                        # long times: depends on tau, not tau/tau_w
    assert o_short.range_rescaled[1] <= 1.0 + 1e-12 and o_long.range_rescaled[0] >= 1.0 - 1e-12


def test_collapse_scores_a_planted_tau_only_family_poorly():
    tws = [10, 40, 160, 640]
    stationary = _family(tws, lambda lag, tw: lag / (1 + lag / 100.0), noise=0.02, seed=3)
    scaling = _family(tws, lambda lag, tw: (lag / tw) ** 0.8 / (1 + lag / tw) ** 0.3, noise=0.02,
                      seed=4)
    assert glassy.aging_collapse(stationary).ratio > 20
    assert glassy.aging_collapse(scaling).ratio < 0.05


def test_loss_spikes_are_flagged_and_smooth_decay_is_not():
    from mdesc.glassy.sweep import NetRecord

    times = np.concatenate([[0], glassy.log_spaced_times(10**4, 30)])
    smooth = 0.5 + 3.0 * np.maximum(times, 1.0) ** -0.5
    bumped = smooth.copy()
    bumped[-5] *= 1.3                                   # a spike caught by one record
    tws = np.array([10, 100])
    lags = [np.arange(1, 50), np.arange(1, 50)]
    curves = glassy.AgingCurves(tws, lags, [np.log1p(l / tw) for l, tw in zip(lags, tws)])
    batch_mean = smooth * 1.01
    rows = []
    for loss, bmax in ((smooth, smooth * 1.3), (bumped, smooth * 4.0)):
        net = NetRecord(1, 8, 0, 100, times, loss, loss, batch_mean, bmax, curves, 10**4, 10**4)
        rows.append(summary.summarize_net(net, [1.0], 0.05))
    assert rows[0]["max_loss_rise"] == 0.0 and rows[0]["max_spike_ratio"] == pytest.approx(1.3 / 1.01)
    assert rows[1]["max_loss_rise"] > 0.2 and rows[1]["max_spike_ratio"] == pytest.approx(4 / 1.01)


def test_late_waiting_times_isolate_aging_after_a_transient():
    tws = [10, 30, 1000, 3000, 10000]
    # early waiting times: stationary (tau only); late ones: a function of tau/tau_w
    law = lambda lag, tw: (lag / 50.0) ** 2 if tw < 100 else np.log1p(lag / tw) ** 2  # noqa: E731
    curves = _family(tws, law, t_max=40000, noise=0.01, seed=5)
    late = summary.late_waiting_times(curves, 1000)
    assert list(late.waiting_times) == [1000, 3000, 10000]
    assert summary.late_waiting_times(curves, None) is curves
    late_ratio, all_ratio = glassy.aging_collapse(late).ratio, glassy.aging_collapse(curves).ratio
    assert late_ratio < 1e-3 and late_ratio < 0.01 * all_ratio  # the transient spoils the rest


def test_spiking_nets_are_censored_at_their_first_spike():
    from mdesc.glassy.sweep import NetRecord

    times = np.concatenate([[0], glassy.log_spaced_times(10**4, 30)])
    loss = 0.5 + 3.0 * np.maximum(times, 1.0) ** -0.5
    bmean, bmax = loss * 1.01, loss * 1.4
    k = int(np.searchsorted(times, 2000))
    spiked = loss.copy()
    spiked[k:] = loss[k:] * 3.0                     # the loss jumps at times[k] and stays up
    tws = np.array([10, 1000])
    lags = [np.arange(1, 9000), np.arange(1, 9000)]
    curves = glassy.AgingCurves(tws, lags, [np.log1p(l / tw) for l, tw in zip(lags, tws)])
    calm = NetRecord(1, 8, 0, 100, times, loss, loss, bmean, bmax, curves, 10**4, 10**4)
    bad = NetRecord(1, 16, 0, 100, times, spiked, spiked, bmean, bmax, curves, 10**4, 10**4)
    assert summary.first_spike_time(calm) == math.inf
    assert summary.first_spike_time(bad) == times[k]
    assert summary.censor_at(calm, math.inf) is calm
    cut = summary.censor_at(bad, times[k])
    assert np.all(np.isnan(cut.train_loss[k:])) and np.all(np.isfinite(cut.train_loss[:k]))
    assert all(np.all(tw + lag < times[k]) for tw, lag in zip(cut.aging.waiting_times, cut.aging.lags))
    out = summary.analyze_sweep([calm, bad], [0.55], censor_spikes=True)
    rows = {r["width"]: r for r in out["nets"]}
    assert rows[16]["censored"] and not rows[8]["censored"] and out["n_spiked"] == 1
    assert math.isnan(rows[16]["t_star@0.55"])    # reached only after the spike: unknown
    assert 2000 < rows[8]["t_star@0.55"] < math.inf


def test_unknown_learning_times_are_left_out_not_counted_as_unreached():
    widths = np.array([3, 4, 6, 8, 11, 16, 23, 32], dtype=float)
    t = _t_star(widths, 5.0, 1000.0, 0.0, 0)
    t_unknown = t.copy()
    t_unknown[-1] = np.nan                           # the widest net's time is unknown
    fit = glassy.fit_critical_width(widths, t_unknown)
    assert fit.widths.tolist() == [6, 8, 11, 16, 23] and fit.unreached_widths.tolist() == [3, 4]
    assert fit.w_c == pytest.approx(5.0, abs=1e-3)
    out = summary.critical_width_over_seeds(widths, np.stack([t, t_unknown]))
    assert out["median_t_star"][-1] == pytest.approx(t[-1])  # the known seed decides


def test_the_recorded_analysis_reproduces_from_its_recorded_curves(tmp_path):
    """results/glassy: the analysis of the recorded sweep, re-run from curves.safetensors (the
    run folder is not committed), gives the committed tables byte for byte, and the tests of
    the curve shapes (scaling.json, results/glassy/reanalyse.py) too."""
    from pathlib import Path

    from mdesc import store
    from mdesc.glassy.claims import scaling_analysis
    from mdesc.glassy.cli import _write_tables
    from mdesc.glassy.sweep import records_from_results

    src = Path(__file__).resolve().parents[1] / "results" / "glassy"
    fits, nets = records_from_results(src)
    a = fits["analysis"]
    result = glassy.analyze_sweep(nets, a["thresholds"], a["fit_from"],
                                  aging_min_tw=a["aging_min_tw"], censor_spikes=a["censor_spikes"])
    result.update(settings=fits["settings"], analysis=a, curves_file=fits["curves_file"])
    _write_tables(tmp_path, result, nets)
    for name in ("fits.json", "nets.csv", "critical_width.csv", "curves.safetensors"):
        assert (tmp_path / name).read_bytes() == (src / name).read_bytes(), name
    analysed = [summary.censor_at(n, summary.first_spike_time(n)) for n in nets] \
        if a["censor_spikes"] else nets
    got = store.to_json(scaling_analysis(analysed, result))
    want = json.loads((src / "scaling.json").read_text())
    _same(got, want, "scaling.json")


def _same(got, want, where: str) -> None:
    """Equal JSON trees: strings, booleans, nulls and structure exactly, numbers to 1e-6
    relative (the fits' last digits follow the CPU's vectorised exp/log)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for k in want:
            _same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), where
        assert got == pytest.approx(want, rel=1e-6, abs=1e-12), where
    else:
        assert got == want, where
