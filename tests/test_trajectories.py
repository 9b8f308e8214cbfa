"""Known-answer tests for mdesc.trajectories (chaos of the gradient-descent training map).

The answers come from maps whose exponents are known exactly:
* GD on L = 1/2 sum_i a_i w_i^2 is w -> (1 - lr*a) w: exponent max_i ln|1 - lr*a_i|, and a
  perturbation along e_i shrinks/grows by |1 - lr*a_i| per step;
* GD with lr = 1 on L = 4/3 w^3 - 3/2 w^2 is the logistic map w -> 4w(1-w): exponent ln 2,
  a bounded chaotic map where raw replica distances saturate but the renormalised twin does not.
"""
import json
import math

import numpy as np
import pytest
import torch

from mdesc import trajectories as tr
from mdesc.trajectories import run as run_mod


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny problems: one intra-op thread (oversubscribed shared cores slow them down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _twin_jvp(problem, lr, steps, **kw):
    run = tr.train_replicas(problem, lr, steps, n_replicas=0, **kw)
    return run.lyapunov_twin, run.lyapunov_jvp


# ------------------------------------------------------------------ quadratic: exponent
@pytest.mark.parametrize("lr", [0.05, 0.5, 1.5, 1.9, 2.1, 2.5, 3.0])
def test_scalar_quadratic_exponent_is_log_abs_one_minus_lr_a(lr):
    a = 1.0
    exact = math.log(abs(1 - lr * a))
    # start close to the minimum so that the unstable cases (lr > 2/a) stay far from overflow
    # and the absolute twin offset eps stays resolvable next to |w|
    problem = tr.quadratic_problem([a], w0=[1e-6])
    twin, jvp = _twin_jvp(problem, lr, 30)
    assert jvp == pytest.approx(exact, abs=1e-10)
    assert twin == pytest.approx(exact, abs=1e-5)
    assert (twin < 0) == (lr < 2 / a)


@pytest.mark.parametrize("lr", [0.5, 1.5, 2.4])
def test_diagonal_quadratic_exponent_is_the_largest_factor(lr):
    a = np.array([1.0, 0.4, 0.1])
    exact = float(np.max(np.log(np.abs(1 - lr * a))))
    steps, warmup = (40, 10) if lr > 2 else (300, 100)  # warmup: the tangent aligns with e_max
    problem = tr.quadratic_problem(a, w0=1e-6)
    for seed in (0, 1):
        twin, jvp = _twin_jvp(problem, lr, steps, warmup=warmup, seed=seed)
        assert jvp == pytest.approx(exact, abs=1e-6)
        assert twin == pytest.approx(exact, abs=1e-4)


def test_twin_is_independent_of_renormalisation_interval_on_linear_map():
    problem = tr.quadratic_problem([1.0, 0.3], w0=1e-6)
    exact = math.log(abs(1 - 1.7 * 1.0))
    for m in (1, 3, 7):  # 7 does not divide 40: a final partial block is counted too
        run = tr.train_replicas(problem, 1.7, 40, n_replicas=0, renorm_every=m, jvp=False,
                                warmup=0, tangent=torch.tensor([1.0, 0.0]))
        assert run.lyapunov_twin == pytest.approx(exact, abs=1e-5)
        assert run.twin_block_steps.sum() == 40


# ------------------------------------------------------------------ quadratic: replica distance
def test_replica_distance_follows_analytic_decay_at_small_lr():
    lr, a, eps = 0.05, 2.0, 1e-8
    problem = tr.quadratic_problem([a])
    run = tr.train_replicas(problem, lr, 200, n_replicas=3, eps=eps)
    t = np.arange(201)
    expected = eps * np.abs(1 - lr * a) ** t
    np.testing.assert_allclose(run.distance, np.broadcast_to(expected, run.distance.shape),
                               rtol=1e-6)


def test_replica_distance_along_given_directions_on_diagonal_quadratic():
    lr, eps = 0.1, 1e-8
    a = np.array([3.0, 1.0, 0.2])
    u = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    problem = tr.quadratic_problem(a)
    run = tr.train_replicas(problem, lr, 100, n_replicas=2, eps=eps, directions=torch.tensor(u))
    t = np.arange(101)[:, None]
    for r in range(2):
        unit = u[r] / np.linalg.norm(u[r])
        expected = eps * np.linalg.norm(unit * (1 - lr * a) ** t, axis=1)
        np.testing.assert_allclose(run.distance[r], expected, rtol=1e-6)
    # loss of the reference: 1/2 sum a_i (1 - lr a_i)^(2t)
    np.testing.assert_allclose(run.loss, 0.5 * np.sum(a * (1 - lr * a) ** (2 * t), axis=1),
                               rtol=1e-12)


# ------------------------------------------------------------------ chaotic, bounded map
def test_logistic_map_exponent_ln2_and_twin_not_capped_by_saturation():
    # GD with lr = 1 on L(w) = 4/3 w^3 - 3/2 w^2 is w -> 4 w (1 - w)
    problem = tr.TrainingProblem(loss_fn=lambda w: (4 * w ** 3 / 3 - 1.5 * w ** 2).sum(),
                                 w0=torch.tensor([0.3123], dtype=torch.float64), name="logistic")
    run = tr.train_replicas(problem, 1.0, 2000, n_replicas=2, warmup=10)
    assert run.lyapunov_jvp == pytest.approx(math.log(2), abs=5e-3)
    assert run.lyapunov_twin == pytest.approx(math.log(2), abs=5e-3)
    # the raw replicas saturate at the size of the attractor after ~ln(1/eps)/ln 2 = 27 steps
    assert run.saturation_step < 40
    assert np.all(run.distance[:, -1] < 1.0)
    assert run.regime == "irregular"


# ------------------------------------------------------------------ tangent map
# torch's forward-mode AD scripts its decompositions on first use (a torch-internal warning)
@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_hessian_vector_product_equals_forward_jvp_and_finite_difference():
    problem = tr.dataset_problem("iris", hidden=8, seed=3)
    lr = 0.7
    gen = torch.Generator().manual_seed(0)
    w = problem.w0 + 0.1 * torch.randn(problem.n_params, dtype=torch.float64, generator=gen)
    v = torch.randn(problem.n_params, dtype=torch.float64, generator=gen)
    g, loss, hv = run_mod._grad_hvp(problem.loss_fn, w, v)
    step = lambda u: u - lr * torch.func.grad(problem.loss_fn)(u)  # noqa: E731
    new_w, jv = torch.func.jvp(step, (w,), (v,))
    torch.testing.assert_close(v - lr * hv, jv, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w - lr * g, new_w, rtol=1e-12, atol=1e-12)
    assert float(loss) == pytest.approx(float(problem.loss_fn(w)), rel=1e-12)
    h = 1e-6
    fd = (step(w + h * v) - step(w - h * v)) / (2 * h)
    torch.testing.assert_close(fd, jv, rtol=1e-6, atol=1e-7)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:DeprecationWarning")
def test_forward_mode_tangent_gives_the_same_exponent():
    problem = tr.dataset_problem("iris", hidden=6, seed=2)
    a = tr.train_replicas(problem, 0.8, 40, n_replicas=1)
    b = tr.train_replicas(problem, 0.8, 40, n_replicas=1, tangent_mode="forward")
    # same map; only the rounding of H v differs, and the dynamics amplifies it a little
    np.testing.assert_allclose(a.jvp_log_growth, b.jvp_log_growth, atol=1e-6)
    assert a.lyapunov_jvp == pytest.approx(b.lyapunov_jvp, abs=1e-8)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-7)
    assert b.settings()["tangent_mode"] == "forward"
    with pytest.raises(ValueError, match="tangent_mode"):
        tr.train_replicas(problem, 0.8, 40, tangent_mode="reverse")


def test_batched_gradient_matches_single_gradients():
    problem = tr.dataset_problem("iris", hidden=5, seed=1)
    ws = problem.w0 + 0.01 * torch.randn(3, problem.n_params, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(2))
    g, losses = run_mod._batched_grad(torch.func.vmap(problem.loss_fn), ws)
    for i in range(3):
        torch.testing.assert_close(g[i], torch.func.grad(problem.loss_fn)(ws[i]))
        assert float(losses[i]) == pytest.approx(float(problem.loss_fn(ws[i])), rel=1e-12)


# ------------------------------------------------------------------ loss-curve classes
T = np.arange(2000)
RNG = np.random.default_rng(0)


def _logistic(n, x0=0.1234):
    x = np.empty(n)
    x[0] = x0
    for i in range(1, n):
        x[i] = 4 * x[i - 1] * (1 - x[i - 1])
    return x


def _pomeau_manneville(n, x0=0.3):
    # type-I intermittency: long laminar stretches near x = 0, chaotic bursts
    x = np.empty(n)
    x[0] = x0
    for i in range(1, n):
        x[i] = (x[i - 1] + x[i - 1] ** 2 + 1e-4) % 1.0
    return x


def _bursty():
    loss = 0.5 * np.exp(-T / 3000) * np.exp(1e-3 * RNG.standard_normal(T.size))
    for s in (1100, 1250, 1420, 1600, 1770, 1900):
        loss[s:s + 8] *= np.exp(np.abs(RNG.standard_normal(8)) + 0.5)
    return loss


PHI = (1 + 5 ** 0.5) / 2
CONSTRUCTED = {
    "monotone": [2 * np.exp(-T / 300) + 0.01, 1 / (1 + T) ** 0.7,
                 # converged to a floor with float rounding jitter: still monotone
                 np.maximum(np.exp(-T / 50), 1e-12) * (1 + 1e-15 * RNG.standard_normal(T.size))],
    "oscillating": [(np.exp(-T / 1000) + 0.1) * (1 + 0.2 * (-1.0) ** T),  # period 2
                    1 + 0.3 * np.sin(2 * np.pi * T / 7),
                    np.exp(0.3 * np.sin(2 * np.pi * T / 17.3)
                           + 0.2 * np.sin(2 * np.pi * T / (17.3 * PHI)))],  # quasi-periodic
    "intermittent": [0.05 + _pomeau_manneville(T.size), _bursty()],
    "irregular": [1 + _logistic(T.size), np.exp(0.5 * RNG.standard_normal(T.size)),
                  np.exp(np.cumsum(0.05 * RNG.standard_normal(T.size)))],  # random walk
    "diverged": [np.exp(T / 100), np.where(T < 1500, np.exp(-T / 300), np.nan),
                 np.r_[np.ones(10), 1e5 * np.ones(T.size - 10)]],
}


@pytest.mark.parametrize("label,index", [(k, i) for k, v in CONSTRUCTED.items()
                                         for i in range(len(v))])
def test_classify_constructed_loss_series(label, index):
    result = tr.classify_loss_curve(CONSTRUCTED[label][index])
    assert result.label == label, result.stats
    assert result.label in tr.LOSS_CURVE_LABELS


def test_classify_reports_period_of_oscillation():
    stats = tr.classify_loss_curve(1 + 0.3 * np.sin(2 * np.pi * T / 7)).stats
    assert stats["dominant_period"] == pytest.approx(7, rel=0.02)
    assert tr.classify_loss_curve((1 + 0.2 * (-1.0) ** T)).stats["dominant_period"] == \
        pytest.approx(2, rel=0.01)


def test_classify_judges_only_the_tail():
    # a chaotic transient, then monotone convergence: the late behaviour decides
    loss = np.r_[1 + _logistic(800), 2 * np.exp(-np.arange(1200) / 200)]
    assert tr.classify_loss_curve(loss).label == "monotone"
    assert tr.classify_loss_curve(loss, tail=1.0).label != "monotone"


def test_classify_rejects_too_short_series():
    with pytest.raises(ValueError, match="window"):
        tr.classify_loss_curve(np.ones(20))


def test_unstable_quadratic_is_flagged_diverged():
    run = tr.train_replicas(tr.quadratic_problem([1.0]), 3.0, 1500, n_replicas=1, jvp=True)
    assert 0 < run.diverged_step <= 1500
    assert run.regime == "diverged"
    assert np.isnan(run.loss[-1])
    assert run.lyapunov_jvp == pytest.approx(math.log(2), abs=1e-9)


# ------------------------------------------------------------------ sweep, storage, CLI
def test_sweep_is_resumable_and_checks_settings(tmp_path, monkeypatch):
    problem = tr.quadratic_problem([1.0, 0.5], w0=1e-6)
    lrs = [0.5, 1.2, 2.2]
    first = tr.learning_rate_sweep(problem, lrs, 40, n_replicas=2, out=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("lr_*.safetensors")) == \
        sorted(tr.run_filename(x) for x in lrs)

    def fail(*a, **k):
        raise AssertionError("a finished learning rate was recomputed")

    import mdesc.trajectories.run as run_module

    monkeypatch.setattr(run_module, "train_replicas", fail)
    again = tr.learning_rate_sweep(problem, lrs, 40, n_replicas=2, out=tmp_path, progress=False)
    for r1, r2 in zip(first.runs, again.runs):
        assert r1.lr == r2.lr and r1.lyapunov_twin == r2.lyapunov_twin
        np.testing.assert_array_equal(r1.distance, r2.distance)
        assert r1.loss_class.label == r2.loss_class.label
    with pytest.raises(tr.SettingsMismatch, match="steps"):
        tr.learning_rate_sweep(problem, lrs, 50, n_replicas=2, out=tmp_path, progress=False)
    exact = [max(math.log(abs(1 - x * a)) for a in (1.0, 0.5)) for x in lrs]
    np.testing.assert_allclose([r.lyapunov_jvp for r in first.runs], exact, atol=0.05)
    csv_path, json_path = first.write_table(tmp_path)
    rows = json.loads(json_path.read_text())["rows"]
    assert [row["lr"] for row in rows] == lrs
    assert csv_path.read_text().splitlines()[0].startswith("lr,lyapunov_twin")


def test_runs_are_reproducible_and_record_settings():
    problem = tr.dataset_problem("iris", hidden=4, seed=7)
    a = tr.train_replicas(problem, 0.5, 30, n_replicas=2, seed=11)
    b = tr.train_replicas(tr.dataset_problem("iris", hidden=4, seed=7), 0.5, 30, n_replicas=2,
                          seed=11)
    np.testing.assert_array_equal(a.distance, b.distance)
    np.testing.assert_array_equal(a.loss, b.loss)
    s = a.settings()
    assert s["seed"] == 11 and s["eps"] == 1e-8 and s["problem_settings"]["model_seed"] == 7
    assert s["problem_settings"]["hidden"] == [4] and a.n_params == 4 * 4 + 4 + 4 * 3 + 3
    np.testing.assert_allclose(a.distance[:, 0], 1e-8, rtol=1e-6)


def test_save_load_roundtrip(tmp_path):
    run = tr.train_replicas(tr.quadratic_problem([1.0]), 0.3, 30, n_replicas=2)
    run.save(tmp_path / "x.safetensors")
    back = tr.ReplicaRun.load(tmp_path / "x.safetensors")
    assert back.settings() == run.settings()
    assert back.lyapunov_jvp == run.lyapunov_jvp and back.regime == run.regime
    np.testing.assert_array_equal(back.jvp_log_growth, run.jvp_log_growth)


def test_training_lyapunov_methods():
    problem = tr.quadratic_problem([1.0], w0=[1e-6])
    out = tr.training_lyapunov(problem, 2.5, 30)
    assert set(out) == {"twin", "jvp"}
    assert out["jvp"] == pytest.approx(math.log(1.5), abs=1e-10)
    assert set(tr.training_lyapunov(problem, 2.5, 30, method="twin")) == {"twin"}
    with pytest.raises(ValueError, match="method"):
        tr.training_lyapunov(problem, 2.5, 30, method="qr")


def test_bad_arguments_are_named():
    problem = tr.quadratic_problem([1.0])
    with pytest.raises(ValueError, match="learning rate"):
        tr.train_replicas(problem, -1.0, 10)
    with pytest.raises(ValueError, match="warmup"):
        tr.train_replicas(problem, 0.1, 10, warmup=10)
    with pytest.raises(ValueError, match="unknown data set"):
        tr.dataset_problem("mnist")


def test_short_runs_are_not_classified_and_directions_are_checked():
    problem = tr.quadratic_problem([1.0, 2.0])
    run = tr.train_replicas(problem, 0.1, 20, n_replicas=1)
    assert run.regime == "n/a" and run.early_regime == "n/a"
    assert run.summary()["regime"] == "n/a"
    with pytest.raises(ValueError, match="directions must have shape"):
        tr.train_replicas(problem, 0.1, 20, n_replicas=2, directions=torch.ones(2, 3))


def test_module_problem_accepts_any_module():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    x = torch.randn(20, 3)
    y = x.sum(1, keepdim=True)
    problem = tr.module_problem(model, x, y, "mse")
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    run = tr.train_replicas(problem, 0.05, 50, n_replicas=1)
    assert run.loss[-1] < run.loss[0]
    assert math.isfinite(run.lyapunov_twin) and math.isfinite(run.lyapunov_jvp)


def test_cli_writes_results_and_resumes(tmp_path, capsys):
    from mdesc.cli import main

    out = tmp_path / "res"
    args = ["trajectories", "--lrs", "0.1,2", "--steps", "40", "--replicas", "2",
            "--hidden", "6", "--out", str(out)]
    assert main(args) == 0
    for name in ("lr_0.1.safetensors", "lr_2.safetensors", "summary.csv", "summary.json",
                 "sweep.png", "command.json", "settings.json"):
        assert (out / name).exists(), name
    stamp = (out / "lr_0.1.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # resumes: nothing recomputed
    assert (out / "lr_0.1.safetensors").stat().st_mtime_ns == stamp
    assert main(args[:-1] + [str(out), "--steps", "50"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["trajectories", "--lrs", "zero"]) == 2


def test_cli_help_is_plain_text_with_each_default_once():
    from mdesc.cli import build_parser
    from mdesc.trajectories.cli import SingleNetSettings, TrajectoriesCommand

    parser = build_parser("trajectories")
    sub = parser._subparsers._group_actions[0].choices["trajectories"]
    text = sub.format_help()
    assert "``" not in text and ":func:" not in text and "* " not in text
    assert "[default: 500]" in text and "[default: 2000]" in text
    args = parser.parse_args(["trajectories"])
    from mdesc.options import from_args
    assert from_args(SingleNetSettings, args) == SingleNetSettings()
    assert from_args(tr.PaperPreset, args).jobs() == tr.paper_jobs()
    assert from_args(TrajectoriesCommand, parser.parse_args(
        ["trajectories", "--no-figure"])).figure is False


def _synthetic_run(steep: float):
    """ln d(t), t = 0..200: a slow, wiggly transient (0.02 per step + 0.5 sin(pi t / 10)) for
    60 steps, a clean steep stretch (``steep`` per step) until saturation, a noisy plateau;
    and the tangent's per-step log growth (the same curve without saturation)."""
    t = np.arange(201, dtype=float)
    free = math.log(1e-8) + np.where(t < 60, 0.02 * t + 0.5 * np.sin(np.pi * t / 10),
                                     1.2 + steep * (t - 60))
    plateau = 0.78 + 0.1 * np.sin(t)
    top = 60 + (0.78 - free[60]) / steep  # where the free curve reaches the plateau
    return np.where(t <= top, np.minimum(free, plateau + 1), plateau), np.diff(free)


def test_three_estimators_on_a_synthetic_distance_curve():
    """Tangent exponent (every step), endpoint slope (t = 0 to saturation) and the authors'
    windowed max-R² slope return their known values on a curve with a slow transient and a
    steep stretch."""
    from mdesc.trajectories import analysis as an

    log_d, tan_log = _synthetic_run(0.3)
    lam, _ = an.exponent_per_run(tan_log)
    assert lam[0] == pytest.approx((0.02 * 60 + 0.3 * 140) / 200, abs=1e-12)  # 0.216
    # endpoint: saturation at 1 % of |w|_1 = 100, i.e. ln d = 0, first passed at t = 118
    ft, ts = an.finite_time_exponents(log_d[:, None, None], np.full((201, 1), 100.0))
    assert ts[0, 0] == 117
    assert ft[0, 0] == pytest.approx((1.2 + 0.3 * 57) / 117, abs=1e-12)  # 0.1564
    slope, r2, window = an.windowed_exponents(log_d)
    assert slope == pytest.approx(0.3, abs=1e-9) and r2 > 1 - 1e-9
    assert 60 <= window[0] and window[1] <= 119  # inside the steep stretch
    # the authors' summary: runs passing R^2 > 0.9 and slope > 0.05, mean +- std, fraction
    runs = np.stack([_synthetic_run(s)[0] for s in (0.3, 0.2, 0.04)], axis=1)
    slopes, r2s, _ = an.windowed_exponents(runs)
    assert slopes == pytest.approx([0.3, 0.2, 0.04], abs=1e-9)
    summary = an.windowed_summary(slopes, r2s)
    assert summary["n_pass"] == 2 and summary["fraction_pass"] == pytest.approx(2 / 3)
    assert summary["mean"] == pytest.approx(0.25) and summary["std"] == pytest.approx(0.05)
    assert summary["median"] == pytest.approx(0.25)
