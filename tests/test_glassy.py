"""Glassy-dynamics analyses on planted answers, and the resumable training run."""
import json
import math
import shutil

import numpy as np
import pytest

from mdesc import glassy
from mdesc.data import chorales as ch


# --- power law -------------------------------------------------------------------------------

def _noisy(y, rel, seed):
    return y * np.exp(rel * np.random.default_rng(seed).standard_normal(y.shape))


@pytest.mark.parametrize("l_inf,amp,alpha", [(0.3, 2.0, 0.5), (0.05, 5.0, 1.2)])
def test_power_law_recovers_planted_positive_asymptote(l_inf, amp, alpha):
    t = glassy.log_spaced_times(10**5, 50).astype(float)
    loss = _noisy(l_inf + amp * t ** -alpha, 0.01, seed=1)
    fit = glassy.fit_power_law(t, loss)
    assert fit.l_inf_positive
    for got, err, want in [(fit.l_inf, fit.l_inf_err, l_inf), (fit.alpha, fit.alpha_err, alpha),
                           (fit.amplitude, fit.amplitude_err, amp)]:
        assert abs(got - want) < 4 * err + 1e-9
        assert abs(got - want) < 0.1 * want
    assert fit.rms_log_residual < 0.02
    np.testing.assert_allclose(fit.predict(t), loss, rtol=0.05)


def test_power_law_with_zero_asymptote_is_not_significant():
    t = glassy.log_spaced_times(10**5, 50).astype(float)
    loss = _noisy(3.0 * t ** -0.7, 0.02, seed=2)
    fit = glassy.fit_power_law(t, loss)
    assert not fit.l_inf_positive
    assert fit.l_inf < 3 * fit.l_inf_err + 1e-4
    assert abs(fit.alpha - 0.7) < 0.03


def test_power_law_bootstrap_and_fit_range():
    t = glassy.log_spaced_times(10**4, 40).astype(float)
    # an early plateau (t < 10) that the t_min cut must remove
    loss = np.where(t < 10, 3.0, 0.2 + 4.0 * t ** -0.8)
    loss = _noisy(loss, 0.01, seed=3)
    fit = glassy.fit_power_law(t, loss, t_min=10, bootstrap=40, seed=0)
    assert fit.method == "bootstrap" and fit.t_min >= 10
    assert fit.l_inf_positive
    assert abs(fit.l_inf - 0.2) < 0.02 and abs(fit.alpha - 0.8) < 0.08
    assert 0 < fit.alpha_err < 0.1
    zero = glassy.fit_power_law(t, _noisy(4.0 * t ** -0.8, 0.01, 4), t_min=10, bootstrap=40)
    assert not zero.l_inf_positive
    with pytest.raises(ValueError, match="at least 4 points"):
        glassy.fit_power_law(t, loss, t_min=5000)


# --- learning time and critical width --------------------------------------------------------

def test_learning_time_interpolates_power_law_exactly():
    t = glassy.log_spaced_times(10**4, 17).astype(float)
    loss = 1.0 / t
    assert glassy.learning_time(t, loss, 0.01) == pytest.approx(100.0, rel=1e-9)
    assert glassy.learning_time(t, loss, 0.0037) == pytest.approx(1 / 0.0037, rel=1e-9)
    assert glassy.learning_time(t, loss, 1e-5) == math.inf
    assert glassy.learning_time(t, loss, 2.0) == t[0]


def test_critical_width_recovers_planted_w_c():
    widths = np.array([4, 6, 7, 8, 10, 12, 16, 24, 32], dtype=float)
    w_c, c = 5.0, 300.0
    t_star = np.where(widths > w_c, c / np.clip(widths - w_c, 1e-9, None), np.inf)
    fin = np.isfinite(t_star)
    t_star[fin] = _noisy(t_star[fin], 0.03, seed=5)
    fit = glassy.fit_critical_width(widths, t_star)
    assert abs(fit.w_c - w_c) < 0.3 and abs(fit.w_c - w_c) < 4 * fit.w_c_err
    assert abs(fit.amplitude - c) < 0.1 * c
    assert list(fit.unreached_widths) == [4.0]
    assert not fit.w_c_at_bound
    np.testing.assert_allclose(fit.predict(widths[fin]), c / (widths[fin] - w_c), rtol=0.1)
    # a different planted value moves the answer
    fit2 = glassy.fit_critical_width(widths[fin], 300.0 / (widths[fin] - 2.0))
    assert fit2.w_c == pytest.approx(2.0, abs=1e-3)


def test_critical_width_without_divergence_hits_the_bound():
    widths = np.array([4, 8, 16, 32], dtype=float)
    t_star = 100.0 + 5.0 * widths  # grows with width: no divergence from above
    fit = glassy.fit_critical_width(widths, t_star)
    assert fit.w_c_at_bound
    with pytest.raises(ValueError, match=">= 2 widths"):
        glassy.fit_critical_width([4, 8], [np.inf, 10.0])


# --- aging -----------------------------------------------------------------------------------

def _weights_at(times, law, p=64, seed=0):
    v = np.random.default_rng(seed).standard_normal(p)
    return np.stack([law(float(t)) * v for t in times])


def test_aging_measure_collapses_a_series_that_scales_with_tau_over_tau_w():
    tws = [10, 40, 160, 640]
    times = glassy.aging_schedule(tws, t_max=20000, n_lags=30)
    assert set(tws) <= set(times.tolist()) and times.max() == 20000
    # w(t) = v ln t: Delta = <v^2> ln(1 + tau/tau_w)^2, a function of tau/tau_w only
    aging = glassy.aging_correlation(times, _weights_at(times, math.log), tws)
    for tw, lag, delta in zip(aging.waiting_times, aging.lags, aging.delta):
        assert np.all(lag > 0) and np.all(tw + lag <= 20000)
        v2 = np.mean(np.random.default_rng(0).standard_normal(64) ** 2)
        np.testing.assert_allclose(delta, v2 * np.log1p(lag / tw) ** 2, rtol=1e-10)
    col = glassy.aging_collapse(aging)
    assert col.spread_rescaled < 1e-6 and col.spread_raw > 0.1 and col.ratio < 1e-4
    # w(t) = v t (steady drift): Delta = <v^2> tau^2, the same for every tau_w: no aging
    steady = glassy.aging_correlation(times, _weights_at(times, lambda t: t), tws)
    col = glassy.aging_collapse(steady)
    assert col.spread_raw < 1e-6 and col.spread_rescaled > 0.1 and col.ratio > 1e4


def test_aging_collapse_with_noise_ranks_the_two_cases():
    rng = np.random.default_rng(7)
    tws = np.array([20, 80, 320])
    lags = [np.unique(np.geomspace(1, 5000, 40).astype(int)) for _ in tws]
    scaling = glassy.AgingCurves(tws, lags, [
        (lag / tw) ** 0.8 / (1 + lag / tw) ** 0.3 * np.exp(0.05 * rng.standard_normal(lag.size))
        for tw, lag in zip(tws, lags)])
    stationary = glassy.AgingCurves(tws, lags, [
        lag / (1 + lag / 100.0) * np.exp(0.05 * rng.standard_normal(lag.size)) for lag in lags])
    assert glassy.aging_collapse(scaling).ratio < 0.1
    assert glassy.aging_collapse(stationary).ratio > 10
    with pytest.raises(ValueError, match="not among the snapshot times"):
        glassy.aging_correlation([1, 2, 3], np.zeros((3, 2)), [5])


# --- training run ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data():
    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    train, test = s.split(0.25, seed=0)
    tok, lens = ch.padded_tokens(train, vocab, max_len=24)
    ttok, tlens = ch.padded_tokens(test, vocab, max_len=24)
    return tok, lens, ttok, tlens, vocab.sizes


def _cfg(**kw):
    base = dict(width=6, depth=2, steps=60, lr=0.5, grad_clip=1.0, batch_size=3, n_records=12,
                n_lags=6, seed=3)
    base.update(kw)
    return glassy.GlassyConfig(**base)


def test_training_records_log_spaced_losses_and_snapshots(tmp_path, tiny_data):
    tok, lens, ttok, tlens, sizes = tiny_data
    cfg = _cfg()
    run = glassy.train_glassy_run(tmp_path / "r", tok, lens, cfg, sizes, ttok, tlens,
                                  progress=False)
    assert run.times[0] == 0 and run.times[-1] == cfg.steps
    assert np.array_equal(run.times[1:], glassy.log_spaced_times(cfg.steps, cfg.n_records))
    ratios = run.times[2:] / run.times[1:-1]
    assert ratios.max() <= 2.0 + 1e-9  # log spacing (integer rounding at small t)
    assert np.all(np.isfinite(run.train_loss)) and np.all(np.isfinite(run.test_loss))
    assert run.train_loss[0] == pytest.approx(np.mean(np.log(sizes)), abs=0.3)  # ~uniform guess
    assert run.train_loss[-1] < run.train_loss[0] - 0.5
    wts = cfg.resolved_waiting_times()
    assert wts == (1, 7) and len(wts) == len(set(wts))
    assert np.array_equal(run.snapshot_times, glassy.aging_schedule(wts, cfg.steps, cfg.n_lags))
    assert run.snapshots.shape == (run.snapshot_times.size, run.info["n_parameters"])
    ag = run.aging()
    assert list(ag.waiting_times) == list(wts) and all(np.all(d > 0) for d in ag.delta)
    # reloading gives the same records; without snapshots the stored aging curves remain
    back = glassy.load_glassy_run(tmp_path / "r")
    assert np.array_equal(back.train_loss, run.train_loss)
    assert np.array_equal(back.snapshots, run.snapshots)
    (tmp_path / "r" / glassy.SNAPSHOT_FILE).unlink()
    slim = glassy.load_glassy_run(tmp_path / "r")
    assert slim.snapshots is None
    assert all(np.array_equal(a, b) for a, b in zip(slim.aging().delta, ag.delta))
    rec = json.loads((tmp_path / "r" / glassy.RUN_FILE).read_text())
    assert rec["config"]["seed"] == 3 and rec["config"]["lr"] == 0.5


def test_training_resumes_after_interruption_exactly(tmp_path, tiny_data):
    tok, lens, ttok, tlens, sizes = tiny_data
    cfg = _cfg()
    ref = glassy.train_glassy_run(tmp_path / "ref", tok, lens, cfg, sizes, ttok, tlens,
                                  progress=False)
    # planned stop (saves state, returns None), then resume
    assert glassy.train_glassy_run(tmp_path / "a", tok, lens, cfg, sizes, ttok, tlens,
                                   progress=False, stop_after=23) is None
    assert (tmp_path / "a" / glassy.STATE_FILE).exists()
    assert not (tmp_path / "a" / glassy.RUN_FILE).exists()
    done = glassy.train_glassy_run(tmp_path / "a", tok, lens, cfg, sizes, ttok, tlens,
                                   progress=False)
    # a kill in the middle (state saved at record times): resumes from the last save
    steps_seen = []

    def killer(step):
        steps_seen.append(step)
        if step == 41 and len(steps_seen) == 41:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        glassy.train_glassy_run(tmp_path / "b", tok, lens, cfg, sizes, ttok, tlens,
                                progress=False, save_every_s=0.0, callback=killer)
    killed = glassy.train_glassy_run(tmp_path / "b", tok, lens, cfg, sizes, ttok, tlens,
                                     progress=False, save_every_s=0.0, callback=killer)
    assert steps_seen[41] < 41  # it went back to the last saved record time, not to 0
    for run in (done, killed):
        assert np.array_equal(run.times, ref.times)
        np.testing.assert_array_equal(run.train_loss, ref.train_loss)
        np.testing.assert_array_equal(run.snapshots, ref.snapshots)
    assert not (tmp_path / "b" / glassy.STATE_FILE).exists()
    # a finished run is loaded, not retrained; other settings in that folder are refused
    calls = []
    glassy.train_glassy_run(tmp_path / "a", tok, lens, cfg, sizes, ttok, tlens, progress=False,
                            callback=calls.append)
    assert calls == []
    with pytest.raises(ValueError, match="other settings"):
        glassy.train_glassy_run(tmp_path / "a", tok, lens, _cfg(lr=0.3), sizes, ttok, tlens,
                                progress=False)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_other_cells_train(tmp_path, tiny_data, cell):
    tok, lens, _, _, sizes = tiny_data
    run = glassy.train_glassy_run(tmp_path / cell, tok, lens, _cfg(cell=cell, steps=20, lr=1.0),
                                  sizes, progress=False)
    assert np.all(np.isnan(run.test_loss))
    assert run.train_loss[-1] < run.train_loss[0]
    model = glassy.VoiceRNN(sizes, 5, 2, cell=cell)
    assert model.flat_weights().numel() == sum(p.numel() for p in model.parameters())


# --- the command -----------------------------------------------------------------------------

def test_sweep_command_end_to_end(tmp_path):
    from mdesc.cli import main

    out, res = tmp_path / "sweep", tmp_path / "results"
    argv = ["glassy", "sweep", "--out", str(out), "--results", str(res), "--data", "fixture",
            "--window", "16", "--depths", "1", "2", "--widths", "3", "6", "12", "--seeds", "0",
            "1", "--steps", "40", "--lr", "0.5", "--n-records", "12", "--n-lags", "6",
            "--thresholds", "2.6", "--round-robin", "15", "--no-progress"]
    assert main(argv) == 0
    fits = json.loads((res / "fits.json").read_text())
    assert [(r["depth"], r["width"], r["seed"]) for r in fits["nets"]][:3] == [
        (1, 3, 0), (1, 3, 1), (1, 6, 0)]
    assert fits["settings"]["seeds"] == [0, 1] and fits["settings"]["steps"] == 40
    assert all(r["step"] == 40 for r in fits["nets"])
    for name in ("loss_curves.png", "learning_time.png", "aging.png", "minibatch_loss.png",
                 "nets.csv", "critical_width.csv", "curves.safetensors", "scaling.json"):
        assert (res / name).stat().st_size > 0
    assert (out / "settings.json").exists() and (out / "runs" / "d1" / "result.json").exists()
    assert main(["glassy", "analyze", str(out), "--results", str(res), "--thresholds",
                 "2.9"]) == 0
    assert "t_star@2.9" in json.loads((res / "fits.json").read_text())["nets"][0]
    # same folder, other settings: one clear error (exit 2), nothing retrained
    assert main(argv[:-1] + ["--lr", "0.3", "--no-progress"]) == 2
    shutil.rmtree(out / "runs" / "d2")
    assert main(["glassy", "analyze", str(out)]) == 2       # unfinished run: a clear error
    assert main(["glassy", "analyze", str(out), "--partial"]) == 0
    assert main(["glassy", "sweep", "--out", str(tmp_path / "x"), "--data", "fixture",
                 "--n-train", "99"]) == 2


def test_lstm_voice_rnn_works_with_the_lyapunov_core():
    import torch

    import mdesc

    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    tok, _ = ch.padded_tokens(s, vocab, max_len=16)
    model = glassy.VoiceRNN(vocab.sizes, 8, 2, cell="lstm")
    r = mdesc.max_lyapunov(model, model.one_hot(torch.as_tensor(tok)), zero_input_steps=20)
    assert r.exponents.shape == (8, 1) and torch.isfinite(r.exponents).all()


def test_analyze_sweep_on_planted_runs():
    # loss = A(w) / t with A(w) = L* C / (w - w_c): t*(w) = C / (w - w_c) exactly; w = 3 < w_c
    # plateaus at L_inf = 0.8 > L*; aging curves Delta = ln(1 + tau/tau_w)^2 collapse exactly
    from mdesc.glassy.summary import analyze_sweep
    from mdesc.glassy.sweep import NetRecord

    w_c, c, thr, steps = 4.0, 500.0, 0.1, 10**4
    times = np.concatenate([[0], glassy.log_spaced_times(steps, 40)])
    tws = np.array([10, 40, 160])
    lags = [np.unique(np.geomspace(1, steps - tw, 20).astype(np.int64)) for tw in tws]
    curves = glassy.AgingCurves(tws, lags, [np.log1p(l / tw) ** 2 for l, tw in zip(lags, tws)])
    nets = []
    for seed, scale in ((0, 1.0), (1, 1.02), (2, 0.98)):
        for w in (3, 5, 6, 8, 12, 20):
            t = np.maximum(times, 1).astype(float)
            loss = 0.8 + 5.0 * t ** -0.5 if w < w_c else thr * scale * c / (w - w_c) / t
            nan = np.full(times.shape, np.nan)
            nets.append(NetRecord(1, w, seed, 10 * w, times, loss, loss * 1.1, nan, nan, curves,
                                  steps, steps))
    out = analyze_sweep(nets, [thr], fit_from=0.001)
    rows = {(r["width"], r["seed"]): r for r in out["nets"]}
    assert rows[3, 0]["l_inf_positive"] and rows[3, 0]["l_inf"] == pytest.approx(0.8, rel=1e-3)
    assert rows[3, 0]["t_star@0.1"] == math.inf
    for w in (5, 6, 8, 12, 20):
        assert rows[w, 0]["t_star@0.1"] == pytest.approx(c / (w - w_c), rel=1e-9)
        assert rows[w, 1]["t_star@0.1"] == pytest.approx(1.02 * c / (w - w_c), rel=1e-9)
        assert not rows[w, 0]["l_inf_positive"] and rows[w, 0]["alpha"] == pytest.approx(1, abs=1e-3)
        assert rows[w, 0]["aging_ratio"] < 1e-3  # interpolation error only
    (crit,) = out["critical_width"]
    assert crit["pooled"]["w_c"] == pytest.approx(w_c, abs=1e-4)
    assert crit["pooled"]["C"] == pytest.approx(c, rel=1e-4)
    assert crit["pooled"]["unreached_widths"] == [3.0] and crit["pooled"]["n_points"] == 5
    # every seed's t* scales C only: each seed recovers w_c, so the interval is tight around it
    seeds = crit["w_c_seeds"]
    assert seeds["n"] == 3 and crit["fraction_fitted"] == 1.0
    assert seeds["lo"] - 1e-6 <= w_c <= seeds["hi"] + 1e-6 and seeds["hi"] - seeds["lo"] < 1e-3
    by_w = {r["width"]: r for r in out["widths"]}
    assert by_w[3]["fraction_l_inf_positive"] == 1.0 and by_w[3]["fraction_reached@0.1"] == 0.0
    assert by_w[8]["t_star@0.1"]["mean"] == pytest.approx(c / 4, rel=0.02)
    # phases split at the pooled w_c: one under-parametrised width (3), four over
    under, over = out["aging"]
    assert (under["phase"], under["widths"], over["widths"]) == ("under", [3], [5, 6, 8, 12, 20])
    assert under["fraction_collapsing"] == 1.0 and over["n_nets"] == 15


def test_sweep_options_come_from_the_settings_dataclasses():
    from mdesc.cli import build_parser
    from mdesc.glassy.cli import _settings

    parser = build_parser("glassy")
    args = parser.parse_args(["glassy", "sweep", "--out", "x"])
    assert _settings(args) == glassy.SweepSettings()  # every default from the dataclass
    args = parser.parse_args(["glassy", "sweep", "--out", "x", "--depths", "1", "3",
                              "--depth-steps", "3=50", "--grad-clip", "0", "--no-analysis"])
    s = _settings(args)
    assert s.depths == (1, 3) and s.depth_steps == {3: 50} and s.grad_clip is None
    assert args.analysis is False
    text = parser.format_help() + "".join(
        a.format_help() for a in parser._subparsers._group_actions[0].choices["glassy"]
        ._subparsers._group_actions[0].choices.values())
    assert "[default: 2000]" in text and "[default: 1.4 1.2 1.0]" in text
