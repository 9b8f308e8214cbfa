"""Batched ensembles, the paper's preset, the training-map spectrum and regime statistics.

Known answers:
* diagonal quadratic, tangent started off the top eigenvector: the growth is NOT the same at
  every step, so the exponent over a window [warmup, T) has one exact value and a window off by
  one step at either end gives a different one;
* logistic map (GD at lr = 1 on r/3 w^3 - (r-1)/2 w^2): ln 2 at r = 4; type-I intermittency
  just below the period-3 window (r = 3.8284); period 2 at r = 3.2, period 4 at r = 3.5;
* the MLP's softmax is unchanged by adding c(x) = a.h + b to every logit: 11 exact neutral
  directions of the 4-10-3 network, whose exponents are exactly 0.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mdesc import trajectories as tr
from mdesc.store import SettingsMismatch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These small batched products are fastest on one thread (and a shared machine's cores
    oversubscribed by intra-op threads slow them down many times)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paper():
    return tr.paper_problem()


def _logistic(r, n, x0=0.3, skip=1000):
    x, out = x0, np.empty(n)
    for _ in range(skip):
        x = r * x * (1 - x)
    for i in range(n):
        x = r * x * (1 - x)
        out[i] = x
    return out


# ------------------------------------------------------------------ the paper's problem
def test_paper_problem_matches_an_autograd_module(paper):
    """Keras layout (x @ W + b, weights then biases per layer), sigmoid, softmax CE."""
    W = paper.init(3, seed=5)
    losses, g = paper.loss_and_grad(W)
    for m in range(3):
        W1, b1, W2, b2 = (t[m] for t in paper.unflatten(W))
        w = [t.clone().requires_grad_(True) for t in (W1, b1, W2, b2)]
        logits = torch.sigmoid(paper.x @ w[0] + w[1]) @ w[2] + w[3]
        loss = torch.nn.functional.cross_entropy(logits, paper.y)
        grads = torch.autograd.grad(loss, w)
        assert float(losses[m]) == pytest.approx(float(loss.detach()), rel=1e-13)
        torch.testing.assert_close(g[m], torch.cat([q.reshape(-1) for q in grads]),
                                   rtol=1e-12, atol=1e-14)


def test_hessian_vector_product_is_the_derivative_of_the_gradient(paper):
    W = paper.init(2, seed=1)
    V = torch.randn(W.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, g, hv = paper.grad_and_hvp(W, V)
    h = 1e-5
    fd = (paper.loss_and_grad(W + h * V)[1] - paper.loss_and_grad(W - h * V)[1]) / (2 * h)
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(g, paper.loss_and_grad(W)[1], rtol=0, atol=0)


def test_paper_setting_initialisation_and_data(paper):
    assert paper.sizes == [4, 10, 3] and paper.n_params == 83
    assert paper.x.shape == (120, 4) and paper.x_test.shape == (30, 4)
    assert float(paper.x.min()) >= 0.1 and float(paper.x.max()) <= 7.9  # raw features (cm)
    assert int(paper.weight_mask.sum()) == 4 * 10 + 10 * 3
    W = paper.init(400, seed=0)
    w, b = W[:, paper.weight_mask], W[:, ~paper.weight_mask]
    assert torch.all(b == 0)
    assert abs(float(w.mean())) < 0.02 and float(w.std()) == pytest.approx(1.0, abs=0.02)
    # an initialisation is the same network whichever batch it is drawn in
    torch.testing.assert_close(paper.init(2, seed=0, start=7), W[7:9], rtol=0, atol=0)
    x, y, xt, yt, order = tr.iris_split()
    assert sorted(order.tolist()) == list(range(150)) and len(xt) == 30
    assert set(np.bincount(y)) != {120}  # the seeded order mixes the classes
    with pytest.raises(ValueError, match="n_train"):
        tr.iris_split(200)


def test_perturbations_are_uniform_on_weights_only(paper):
    eps = [1e-3, 1e-9]
    pert, u = tr.ensemble_draws(paper, [0, 1], seed=0, eps=eps, n_pert=5)
    assert pert.shape == (2, 2, 5, 83)
    assert torch.all(pert[..., ~paper.weight_mask] == 0)
    for e, size in enumerate(eps):
        p = pert[:, e][..., paper.weight_mask]
        assert float(p.abs().max()) < size and float(p.abs().max()) > 0.9 * size
    torch.testing.assert_close(u.norm(dim=1), torch.ones(2, dtype=torch.float64))


# ------------------------------------------------------------------ batched == one at a time
def test_batched_ensemble_equals_one_initialisation_at_a_time(paper):
    W = paper.init(4, seed=2)
    kw = dict(eps=[1e-10, 1e-4], n_pert=3, seed=9)
    batch = tr.run_ensemble(paper, W, 0.5, 25, **kw)
    for m in range(4):
        one = tr.run_ensemble(paper, W[m:m + 1], 0.5, 25, init_ids=[m], **kw)
        for key in ("loss", "twin_log", "tan_log", "weight_l1"):  # (T or T+1, M)
            np.testing.assert_allclose(one[key][:, 0], batch[key][:, m], rtol=1e-10,
                                       atol=1e-13, err_msg=key)
        for key in ("w_final", "test_accuracy", "train_accuracy"):  # (M, ...)
            np.testing.assert_allclose(one[key][0], batch[key][m], rtol=1e-10, atol=1e-13,
                                       err_msg=key)
        np.testing.assert_allclose(one["log_dist"][:, 0], batch["log_dist"][:, m], rtol=1e-5)


def test_ensemble_tangent_equals_the_single_trajectory_code(paper):
    W = paper.init(1, seed=4)
    res = tr.run_ensemble(paper, W, 0.7, 25, n_pert=0, seed=3)
    _, u = tr.ensemble_draws(paper, [0], 3, [], 0)
    single = tr.train_replicas(paper.as_problem(W[0]), 0.7, 25, n_replicas=0, tangent=u[0])
    # autograd and the written-out gradient round differently; 25 steps amplify that little
    np.testing.assert_allclose(res["tan_log"][:, 0], single.jvp_log_growth, rtol=1e-8,
                               atol=1e-12)
    np.testing.assert_allclose(res["loss"][:, 0], single.loss, rtol=1e-10)


# ------------------------------------------------------------------ known answers
def test_exponent_window_with_non_uniform_growth_is_exact():
    a, lr, T, warmup = np.array([1.0, 0.1]), 1.5, 12, 3
    f = np.abs(1 - lr * a)  # 0.5 and 0.85: the tangent turns, so growth changes every step
    u = np.array([1.0, 1.0]) / math.sqrt(2)

    def log_norm(t):
        return 0.5 * math.log(np.sum((u * f ** t) ** 2))

    exact = (log_norm(T) - log_norm(warmup)) / (T - warmup)
    wrong = [(log_norm(T) - log_norm(warmup + 1)) / (T - warmup),
             (log_norm(T - 1) - log_norm(warmup)) / (T - warmup),
             (log_norm(T) - log_norm(warmup - 1)) / (T - warmup)]
    assert min(abs(exact - w) for w in wrong) > 1e-3  # an off-by-one is visible
    problem = tr.quadratic_batched(a)
    res = tr.run_ensemble(problem, torch.full((1, 2), 1e-3, dtype=torch.float64), lr, T,
                          n_pert=0)
    # the ensemble's random start u: recompute its exact answer
    _, u_t = tr.ensemble_draws(problem, [0], 0, [], 0)
    u = u_t[0].numpy()
    exact = (log_norm(T) - log_norm(warmup)) / (T - warmup)
    for series in ("tan_log", "twin_log"):
        lam, _ = tr.exponent_per_run(res[series], warmup=warmup)
        assert lam[0] == pytest.approx(exact, abs=1e-7 if series == "twin_log" else 1e-12)
    # the one-trajectory code counts the same window
    run = tr.train_replicas(tr.quadratic_problem(a, w0=1e-3), lr, T, n_replicas=0,
                            warmup=warmup, tangent=torch.from_numpy(u))
    assert run.lyapunov_jvp == pytest.approx(exact, abs=1e-12)
    assert run.lyapunov_twin == pytest.approx(exact, abs=1e-7)


def test_logistic_map_exponent_is_ln2_in_the_ensemble():
    res = tr.run_ensemble(tr.logistic_batched(4.0), torch.tensor([[0.3], [0.7123]],
                                                                 dtype=torch.float64),
                          1.0, 2000, eps=[1e-10], n_pert=2)
    lam, se = tr.exponent_per_run(res["tan_log"])
    np.testing.assert_allclose(lam, math.log(2), atol=0.03)
    twin, _ = tr.exponent_per_run(res["twin_log"])
    np.testing.assert_allclose(twin, math.log(2), atol=0.03)
    # raw replicas saturate at the size of the interval, the renormalised twin does not
    assert np.all(res["log_dist"][-1] > math.log(1e-3))


def test_spectrum_of_a_quadratic_is_exact():
    a = np.array([3.0, 1.0, 0.4, 0.1])
    lr = 0.8
    exact = np.sort(np.log(np.abs(1 - lr * a)))[::-1]
    problem = tr.quadratic_batched(a)
    w0 = torch.ones(1, 4, dtype=torch.float64)
    q0 = torch.eye(4, dtype=torch.float64)[None]
    spec = tr.training_spectrum(problem, w0, lr, 20, q0=q0)
    np.testing.assert_allclose(spec["exponents"][0], exact, atol=1e-12)
    spec = tr.training_spectrum(problem, w0, lr, 400, seed=3)  # random frame: converges
    np.testing.assert_allclose(spec["exponents"][0], exact, atol=0.02)
    top2 = tr.training_spectrum(problem, w0, lr, 400, k=2, seed=3)["exponents"][0]
    np.testing.assert_allclose(top2, exact[:2], atol=0.02)
    with pytest.raises(ValueError, match="k must be"):
        tr.training_spectrum(problem, w0, lr, 10, k=5)


def _softmax_shift_directions(paper):
    """The 11 directions a -> W_2 + a 1^T (one per hidden unit) and b_2 + c 1, orthonormal."""
    P = paper.n_params
    offset = 4 * 10 + 10  # W_1, b_1
    vs = []
    for j in range(10):
        v = torch.zeros(P, dtype=torch.float64)
        v[offset + 3 * j: offset + 3 * j + 3] = 1.0
        vs.append(v)
    v = torch.zeros(P, dtype=torch.float64)
    v[offset + 30:] = 1.0
    vs.append(v)
    q, _ = torch.linalg.qr(torch.stack(vs, 1))
    return q


def test_softmax_shifts_are_exact_neutral_directions_of_the_training_map(paper):
    N = _softmax_shift_directions(paper)  # (83, 11)
    W = paper.init(1, seed=0)
    _, _, hv = paper.grad_and_hvp(W.expand(11, -1).contiguous(), N.T.contiguous())
    assert float(hv.abs().max()) < 1e-12
    rest = torch.linalg.qr(torch.cat([N, torch.randn(83, 72, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(1))],
                                     1))[0]
    spec = tr.training_spectrum(paper, W, 1.0, 30, q0=rest[None])
    assert np.sum(np.abs(spec["exponents"][0]) < 1e-12) >= 11
    assert np.all(np.abs(spec["log_r"][:, 0, :11]) < 1e-12)  # first 11 columns stay neutral
    assert tr.near_zero_count(spec["exponents"], 1e-12)[0] >= 11


def test_full_spectrum_sums_to_the_mean_log_determinant(paper):
    W = paper.init(1, seed=3)
    lr, T = 1.0, 3
    spec = tr.training_spectrum(paper, W, lr, T)
    total, w = 0.0, W[0].clone()
    for _ in range(T):
        H = torch.func.hessian(lambda v: paper.losses(v[None])[0])(w)
        total += float(torch.linalg.slogdet(torch.eye(83, dtype=torch.float64) - lr * H)[1])
        w = w - lr * paper.loss_and_grad(w[None])[1][0]
    assert float(spec["exponents"][0].sum()) == pytest.approx(total / T, abs=1e-9)


# ------------------------------------------------------------------ regimes
@pytest.mark.parametrize("r,label,period", [(3.2, "periodic", 2), (3.5, "periodic", 4),
                                            (3.8284, "intermittent", 3), (4.0, "chaotic", None)])
def test_regimes_of_the_logistic_map(r, label, period):
    c = tr.loss_regime(0.1 + _logistic(r, 10000))
    assert c.label == label, c.stats
    if period:
        assert c.stats["period"] == period
    if label == "intermittent":  # type-I: many laminar (period-3) phases between bursts
        assert c.stats["n_phases"] >= 20 and c.stats["mean_laminar"] >= 50
        assert 0.3 <= c.stats["laminar_fraction"] <= 0.95
    if label == "chaotic":
        assert c.stats["laminar_fraction"] < 0.02


def test_regimes_of_constructed_series():
    t = np.arange(4000)
    assert tr.loss_regime(2 * np.exp(-t / 300) + 0.01).label == "converging"
    frozen = np.r_[np.linspace(2.0, 1.2, 200), math.log(3) - 1e-9 * np.arange(3800)]
    assert tr.loss_regime(frozen).label == "stalled"  # saturated net predicting chance
    phi = (1 + 5 ** 0.5) / 2
    qp = np.exp(0.3 * np.sin(2 * np.pi * t / 17.3) + 0.2 * np.sin(2 * np.pi * t / (17.3 * phi)))
    assert tr.loss_regime(qp).label == "quasi-periodic"
    assert tr.loss_regime(np.where(t < 3000, 1.0 + 0 * t, np.nan)).label == "diverged"
    with pytest.raises(ValueError, match="at least 32"):
        tr.loss_regime(np.ones(20))
    phases = tr.laminar_phases(np.r_[np.tile([0.0, 1.0], 100), _logistic(4.0, 200),
                                     np.tile([0.0, 1.0], 100)])
    assert phases["n_phases"] == 2 and phases["n_bursts"] == 1
    assert abs(int(phases["burst_lengths"][0]) - 200) <= 10


def test_rate_regime_rules():
    assert tr.rate_regime(0.2, (0.15, 0.25), 0.9, {"chaotic": 1.0}) == "chaotic"
    assert tr.rate_regime(2e-4, (-1e-4, 5e-4), 0.4, {"converging": 1.0}) == "marginal"
    assert tr.rate_regime(-0.1, (-0.12, -0.08), 0.0, {"converging": 1.0}) == "contracting"
    assert tr.rate_regime(0.01, (0.005, 0.02), 0.8, {"intermittent": 0.5, "periodic": 0.5}) == \
        "intermittent"
    assert tr.rate_regime(0.0, (0, 0), 0, {"diverged": 0.9, "chaotic": 0.1}) == "diverged"


# ------------------------------------------------------------------ statistics
def test_statistics_helpers():
    g = np.r_[np.full(50, 0.2), np.full(50, 0.4)][:, None] * np.ones((1, 3))
    lam, se = tr.exponent_per_run(g, warmup=50)
    np.testing.assert_allclose(lam, 0.4)
    np.testing.assert_allclose(se, 0.0, atol=1e-15)
    with pytest.raises(ValueError, match="warmup"):
        tr.exponent_per_run(g, warmup=100)
    x = np.random.default_rng(0).normal(1.0, 1.0, 400)
    med, lo, hi = tr.bootstrap_median(x)
    assert lo < med < hi and lo < 1.0 < hi and hi - lo < 0.4
    assert tr.bootstrap_median(x) == (med, lo, hi)  # seeded: reproducible
    fr = tr.fraction_beyond_error(np.array([1.0, 1.0, -1.0, 0.1]), np.array([0.1, 0.1, 0.1, 0.1]))
    assert fr["positive"] == 0.5 and fr["negative"] == 0.25 and fr["n"] == 4
    assert fr["positive_interval"][0] < 0.5 < fr["positive_interval"][1]
    t = np.arange(101)[:, None, None]
    ld = np.minimum(math.log(1e-8) + 0.3 * t, math.log(0.5)) * np.ones((1, 2, 1))
    lam, ts = tr.finite_time_exponents(ld, np.full((101, 2), 10.0))  # saturates at 0.01*10
    np.testing.assert_allclose(lam, 0.3)
    assert np.all(ts == int((math.log(0.1) - math.log(1e-8)) / 0.3))


def test_ensemble_statistics_survive_a_different_summation_order_single_runs_do_not():
    """At η = 1 single trajectories amplify rounding differences (λ ≈ +0.2 per epoch), so
    reversing the order of the 120 samples in the sums changes them; the medians over the
    ensemble agree within their bootstrap intervals."""
    order = np.arange(120)[::-1].copy()
    fwd, rev = tr.paper_problem(), tr.paper_problem(sample_order=order)
    W = fwd.init(24, seed=11)
    a = tr.run_ensemble(fwd, W, 1.0, 150, n_pert=0, twin=False)
    b = tr.run_ensemble(rev, W, 1.0, 150, n_pert=0, twin=False)
    np.testing.assert_allclose(a["loss"][0], b["loss"][0], rtol=1e-13)  # the same loss at t=0
    rel = np.abs(a["w_final"] - b["w_final"]).max(1) / np.abs(a["w_final"]).max(1)
    assert np.mean(rel > 1e-6) > 0.25, "single trajectories did not separate"
    lam_a, _ = tr.exponent_per_run(a["tan_log"])
    lam_b, _ = tr.exponent_per_run(b["tan_log"])
    assert np.max(np.abs(lam_a - lam_b)) > 1e-6
    ma, la, ha = tr.bootstrap_median(lam_a)
    mb, lb, hb = tr.bootstrap_median(lam_b)
    assert la <= mb <= ha and lb <= ma <= hb
    assert ma > 0.05 and mb > 0.05  # and both say chaos


# ------------------------------------------------------------------ sweep, store, CLI
def test_ensemble_sweep_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    jobs = [tr.RateJob(1.0, 40, 3, [1e-8], 2, spectrum_inits=1, keep_loss=2)]
    out = tmp_path / "sw"
    first = tr.ensemble_sweep(out, jobs, log=lambda m: None)
    assert (out / "chunks" / "lr=1" / "c000.safetensors").exists()
    import mdesc.trajectories.ensemble as ens

    monkeypatch.setattr(ens, "run_ensemble", lambda *a, **k: pytest.fail("recomputed"))
    again = tr.ensemble_sweep(out, jobs, log=lambda m: None)
    assert again[0]["tangent"] == first[0]["tangent"]
    with pytest.raises(SettingsMismatch, match="n_init"):
        tr.ensemble_sweep(out, [tr.RateJob(1.0, 40, 4, [1e-8], 2)], log=lambda m: None)
    with pytest.raises(SettingsMismatch, match="seed"):
        tr.ensemble_sweep(out, jobs, seed=1, log=lambda m: None)
    (summary, arrays), = tr.load_sweep(out)
    assert summary["key"] == "lr=1" and len(summary["loss_labels"]) == 3
    for m in range(2):  # the labels the figures print are those of the series they show
        assert tr.loss_regime(arrays["loss_kept"][:, m]).label == summary["loss_labels"][m]
    assert arrays["spectrum"].shape == (1, 83)
    # a later job on initialisations 1 and 2 trains the same networks again
    monkeypatch.undo()
    later = tr.RateJob(1.0, 40, 2, [1e-8], 2, spectrum_inits=0, init_start=1, tag="more")
    assert tr.ensemble_sweep(out, jobs + [later], log=lambda m: None)[1]["n_init"] == 2
    (_, arr_a), (more, arr_b) = tr.load_sweep(out)
    assert more["key"] == "lr=1+more"
    np.testing.assert_allclose(arr_b["lam_tangent"], arr_a["lam_tangent"][1:3], rtol=1e-9)


def test_cli_paper_preset_writes_under_runs_and_refuses_other_settings(tmp_path, monkeypatch,
                                                                      capsys):
    from mdesc.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["trajectories", "--preset", "paper", "--only", "lr=0.01", "--steps-001", "40",
            "--n-init-001", "2"]
    assert main(args) == 0
    out = tmp_path / "runs" / "trajectories-paper"
    for name in ("settings.json", "summary.md", "summary.csv", "summary.json", "sweep.png",
                 "command.json"):
        assert (out / name).exists(), name
    text = capsys.readouterr().out
    assert "weights N(0, 1), biases 0" in text and "1e-14" in text  # the setting is printed
    assert main(args[:-1] + ["4"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["trajectories", "--preset", "paper", "--only", "lr=7"]) == 2
    assert "no rate lr=7" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_trajectories_import_without_the_compiled_extension():
    code = ("import sys; sys.modules['mdesc._C'] = None\n"
            "import mdesc\n"
            "tr = mdesc.trajectories\n"
            "r = tr.train_replicas(tr.quadratic_problem([1.0], w0=[1e-6]), 2.5, 20, n_replicas=0)\n"
            "assert abs(r.lyapunov_jvp - __import__('math').log(1.5)) < 1e-9\n"
            "e = tr.run_ensemble(tr.paper_problem(), tr.paper_problem().init(1), 1.0, 3, n_pert=0)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


def test_the_recorded_tables_reproduce_from_the_rate_records(tmp_path):
    """results/trajectories: summary.csv/.md/.json re-derived from the committed rate records
    (the raw chunks are not committed) equal the committed ones byte for byte."""
    import shutil
    from pathlib import Path

    from mdesc.trajectories import report

    src = Path(__file__).resolve().parents[1] / "results" / "trajectories"
    shutil.copytree(src, tmp_path / "run")
    for name in ("summary.csv", "summary.md", "summary.json"):
        (tmp_path / "run" / name).unlink()
    report.write_report(tmp_path / "run", figures=False, resummarise=False)
    for name in ("summary.csv", "summary.md", "summary.json"):
        assert (tmp_path / "run" / name).read_bytes() == (src / name).read_bytes(), name
