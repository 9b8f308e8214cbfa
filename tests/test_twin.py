"""The twin run without cancellation (mdesc.core.twin, csrc/cpu/run.cpp's twin variant, csrc/common/twin_math.h).

Against the plain twin in float64 where that is accurate, against mpmath (50 digits) where float64
twins lose digits, ordered models exactly on the floor in float32, a chaotic model's D_i
distribution against float64 past the Lyapunov time, and the drive's contraction not collapsing
the twin.  Every test is seeded and deterministic.
"""
from __future__ import annotations

import math

import pytest
import torch

import mdesc
from mdesc.core import engine, twin
from emulation import emulator as _emulator
from lstm_cases import make_lstm

F32, F64 = torch.float32, torch.float64


def _seq(T, B, I, seed, scale=1.0):
    return scale * torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _op(prep, dh0, dc0, **kw):
    from mdesc.core import _twin_ops

    w = prep.weights
    return _twin_ops.lstm_twin_run(prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0, dh0, dc0,
                                   prep.q0, prep.zero_input_steps, prep.warmup, prep.qr_every, **kw)


# --------------------------------------------------------------------------------------------
# the op itself


@pytest.mark.parametrize("L", [1, 3])
def test_state_and_tangent_columns_equal_the_tangent_run(L):
    """The state and the k tangent columns are the tangent kernel's, whatever the delta does."""
    m = make_lstm(3, 5, L, gain=2.5, seed=L)
    prep = engine.prepare(m, _seq(9, 4, 3, 1), k=3, lengths=[9, 4, 7, 9], zero_input_steps=6, warmup=2,
                            qr_every=3, dtype=F64)
    want = engine.run_prepared(prep)
    dh0 = 1e-2 * torch.randn(prep.h0.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    logs, h, c, dh, dc = _op(prep, dh0, torch.zeros_like(dh0))
    torch.testing.assert_close(logs, want[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(h, want[1], rtol=0, atol=1e-13)
    torch.testing.assert_close(c, want[2], rtol=0, atol=1e-13)
    assert bool((dh != 0).any())


def test_delta_equals_the_difference_of_two_float64_runs():
    """A perturbation large enough for the plain float64 difference to be accurate (1e-2): the
    delta equals twin - run to ~1e-14, per layer, for h and c, per checkpoint."""
    ms = [make_lstm(2, 4, 2, gain=3.0, seed=s) for s in range(3)]
    prep = engine.prepare(ms, _seq(12, 5, 2, 3), k=0, lengths=[12, 3, 8, 12, 1], zero_input_steps=10,
                            dtype=F64, checkpoint_axis=True)
    g = torch.Generator().manual_seed(4)
    dh0 = 1e-2 * torch.randn(3, *prep.h0.shape[1:], generator=g, dtype=F64)
    dc0 = 1e-2 * torch.randn(3, *prep.h0.shape[1:], generator=g, dtype=F64)
    _, h, c, dh, dc = _op(prep, dh0, dc0)
    import dataclasses

    h0 = prep.h0.expand(3, -1, -1, -1)
    _, h2, c2 = engine.run_prepared(dataclasses.replace(prep, h0=h0 + dh0, c0=h0 * 0 + prep.c0 + dc0))
    torch.testing.assert_close(dh, h2 - h, rtol=0, atol=1e-14)
    torch.testing.assert_close(dc, c2 - c, rtol=0, atol=1e-14)


def test_kernel_options_change_nothing_but_rounding():
    m = make_lstm(3, 6, 2, gain=3.0, seed=5)
    prep = engine.prepare(m, _seq(10, 7, 3, 5), k=2, zero_input_steps=8, qr_every=4, dtype=F64)
    dh0 = 1e-7 * torch.randn(prep.h0.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    base = _op(prep, dh0, torch.zeros_like(dh0))
    for kw in (dict(portable_gemm=True), dict(cpu_tile_columns=1), dict(cpu_tile_columns=500)):
        other = _op(prep, dh0, torch.zeros_like(dh0), **kw)
        for a, b in zip(base, other):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-20)


def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    m = make_lstm(3, 4, 2, seed=0)
    prep = engine.prepare(m, _seq(5, 2, 3, 0), k=2, zero_input_steps=7, qr_every=3, dtype=F32)
    real = _op(prep, torch.zeros_like(prep.h0), torch.zeros_like(prep.h0))
    with FakeTensorMode(allow_non_fake_inputs=True):
        fake = _op(prep, torch.zeros_like(prep.h0), torch.zeros_like(prep.h0))
    assert [tuple(t.shape) for t in fake] == [tuple(t.shape) for t in real]
    assert [t.dtype for t in fake] == [t.dtype for t in real]


def test_bad_inputs_are_refused_with_the_reason():
    m = make_lstm(3, 4, 1, seed=0)
    prep = engine.prepare(m, _seq(5, 2, 3, 0), k=0, dtype=F64)
    with pytest.raises(RuntimeError, match="dh0 and dc0 must be"):
        _op(prep, torch.zeros(1, 1, 2, 5, dtype=F64), torch.zeros(1, 1, 2, 5, dtype=F64))
    with pytest.raises(RuntimeError, match="dtype"):
        _op(prep, torch.zeros_like(prep.h0, dtype=F32), torch.zeros_like(prep.h0, dtype=F32))


# --------------------------------------------------------------------------------------------
# a high-precision reference where float64 twins lose digits


def _mp_twin(m: torch.nn.LSTM, seq: torch.Tensor, dh0: torch.Tensor, steps: int, dps: int = 50):
    """h'_T - h_T of a one-layer LSTM, B = 1, both runs in mpmath at ``dps`` digits."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = dps
    H = m.hidden_size
    W_ih, W_hh = m.weight_ih_l0.double().tolist(), m.weight_hh_l0.double().tolist()
    b = (m.bias_ih_l0 + m.bias_hh_l0).double().tolist() if m.bias else [0.0] * 4 * H
    xs = seq[:, 0].double().tolist()
    sig = lambda v: 1 / (1 + mp.exp(-v))  # noqa: E731

    def run(h):
        h = [mp.mpf(v) for v in h]
        c = [mp.mpf(0)] * H
        for t in range(steps):
            x = xs[t] if t < len(xs) else [0.0] * len(xs[0])
            a = [mp.mpf(b[r]) + mp.fsum(mp.mpf(W_ih[r][j]) * x[j] for j in range(len(x)))
                 + mp.fsum(mp.mpf(W_hh[r][j]) * h[j] for j in range(H)) for r in range(4 * H)]
            i, f = [sig(a[u]) for u in range(H)], [sig(a[H + u]) for u in range(H)]
            g, o = [mp.tanh(a[2 * H + u]) for u in range(H)], [sig(a[3 * H + u]) for u in range(H)]
            c = [f[u] * c[u] + i[u] * g[u] for u in range(H)]
            h = [o[u] * mp.tanh(c[u]) for u in range(H)]
        return h

    h = run([0.0] * H)
    h2 = run([mp.mpf(v) for v in dh0.double().tolist()])
    return [float(h2[u] - h[u]) for u in range(H)]


@pytest.mark.parametrize("dtype", [F64, F32])
def test_delta_matches_mpmath_where_the_plain_twin_loses_digits(dtype):
    """perturbation 1e-10: the plain float64 twin keeps ~5 digits of h' - h (float32: none); the
    delta keeps them all (float64: 1e-12 relative; float32: 1e-4, the state's own rounding)."""
    H, T, steps = 3, 8, 30
    m = make_lstm(2, H, 1, gain=2.0, seed=7).to(dtype).double()  # weights exactly representable in dtype
    seq = _seq(T, 1, 2, 8).to(dtype).double()
    dh0 = 1e-10 * torch.randn(H, generator=torch.Generator().manual_seed(9), dtype=F64)
    dh0 = dh0.to(dtype).double()
    want = torch.tensor(_mp_twin(m, seq, dh0, steps), dtype=F64)
    prep = engine.prepare(m.to(dtype), seq.to(dtype), k=0, zero_input_steps=steps - T, dtype=dtype)
    _, h, _, dh, _ = _op(prep, dh0.to(dtype).view(1, 1, 1, H), torch.zeros(1, 1, 1, H, dtype=dtype))
    import dataclasses

    _, h2, _ = engine.run_prepared(dataclasses.replace(prep, h0=prep.h0 + dh0.to(dtype).view(1, 1, 1, H)))
    rel = lambda got: float((got.double().flatten() - want).norm() / want.norm())  # noqa: E731
    delta_err, plain_err = rel(dh), rel(h2 - h)
    if dtype == F64:
        assert delta_err < 1e-12 and plain_err > 1e-8, (delta_err, plain_err)
    else:
        assert delta_err < 1e-4 and plain_err > 0.1, (delta_err, plain_err)


# --------------------------------------------------------------------------------------------
# asymptotic_distance(method="delta") and stability_record


@pytest.mark.parametrize("perturb_at", ["drive_end", "start"])
def test_delta_agrees_with_the_float64_plain_twin(perturb_at):
    """Where the float64 plain twin is accurate (perturbation 1e-3, a chaotic-ish model, short
    run), method="delta" in float64 agrees to 1e-9 and in float32 to 1e-3 on every D_i."""
    ms = [make_lstm(3, 8, 2, gain=g, seed=1) for g in (1.0, 4.0)]
    seq = _seq(30, 6, 3, 0)
    kw = dict(zero_input_steps=60, perturb_at=perturb_at, perturbation=1e-3, lengths=[30, 12, 30, 5, 30, 20])
    plain = mdesc.asymptotic_distance(ms, seq, **kw)
    d64 = mdesc.asymptotic_distance(ms, seq, method="delta", **kw)
    d32 = mdesc.asymptotic_distance(ms, seq, dtype=F32, **kw)
    assert plain.settings["method"] == "plain" and d32.settings["method"] == "delta"
    assert d64.settings["dtype"] == "float64" if "dtype" in d64.settings else True
    # The plain twin forms h' - h by subtraction: each step adds ~eps*|h| to a difference of size
    # D, so its ln D_i is good to about steps*eps/D_i (|h| <= 1), and no better; the delta is the
    # accurate side.  Compare within that resolution (the floor 1e-9 where D is large).
    steps = 30 + 60
    resolution = 8 * steps * torch.finfo(torch.float64).eps / plain.distance
    diff = (d64.distance.log() - plain.distance.log()).abs()
    assert bool((diff <= 1e-9 + resolution).all()), (diff, resolution)
    torch.testing.assert_close(d32.distance.log(), plain.distance.log(), rtol=0, atol=1e-3)
    torch.testing.assert_close(d32.reduced_sum, plain.reduced_sum, rtol=0, atol=1e-4)
    assert not bool(d64.collapsed.any())


def test_ordered_model_is_exactly_on_the_floor_in_float32():
    """A contracting model: the plain float32 twin is lifted off the floor by rounding (the reason
    D~ defaulted to float64; measured -14.49), the plain float64 twin sits on it only to rounding
    (-14.99999999974); the delta sits exactly on it, in float32 as in float64."""
    m = make_lstm(4, 20, 1, gain=2.5, seed=1)
    seq = _seq(50, 8, 4, 1)
    kw = dict(zero_input_steps=400)
    plain64 = mdesc.asymptotic_distance(m, seq, dtype=F64, **kw)
    assert bool(plain64.ordered) and float(plain64.log_distance) != -15.0
    plain32 = mdesc.asymptotic_distance(m, seq, dtype=F32, method="plain", **kw)
    assert float(plain32.log_distance) > -15.0 + 1e-3  # what the delta fixes
    d32 = mdesc.asymptotic_distance(m, seq, dtype=F32, **kw)
    assert float(d32.log_distance) == -15.0 and bool(d32.ordered) and not bool(d32.chaotic)
    assert float(mdesc.asymptotic_distance(m, seq, dtype=F64, method="delta", **kw).log_distance) == -15.0


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    grid = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a.sort().values, grid, right=True) / a.numel()
    fb = torch.searchsorted(b.sort().values, grid, right=True) / b.numel()
    return float((fa - fb).abs().max())


def test_chaotic_model_agrees_with_float64_in_distribution():
    """lambda_1 > 0 (Lyapunov time ~30 steps), 500 zero-input steps: the float32 delta and the
    float64 plain twin disagree sequence by sequence (trajectories decorrelated) but their ln D_i
    distributions agree: means within 3 combined standard errors, two-sample KS statistic below
    its 1% critical value."""
    m = make_lstm(4, 16, 1, gain=5.0, seed=3)
    seq = _seq(50, 128, 4, 3)
    kw = dict(zero_input_steps=500, perturbation=1e-3)
    lam = mdesc.lyapunov_spectrum(m, seq, 1, zero_input_steps=500, window="zero_input").exponents.mean()
    assert float(lam) > 0.01
    a = mdesc.asymptotic_distance(m, seq, dtype=F64, method="plain", **kw).distance.log()
    b = mdesc.asymptotic_distance(m, seq, dtype=F32, **kw).distance.log()
    assert float((a - b).abs().max()) > 1.0  # past the Lyapunov time: no trajectory agreement
    se = math.sqrt((a.var() + b.var()) / a.numel())
    assert abs(float(a.mean() - b.mean())) < 3 * se
    assert _ks(a, b) < 1.63 * math.sqrt(2 / a.numel())


def test_contracting_drive_does_not_collapse_the_twin():
    """Large inputs saturate the gates and contract the twins by ~e^-20 over the drive.  The plain
    float32 t = 0 twin ends the drive bit-identical to its run (collapsed); the delta keeps the
    difference (to 1e-3 of the float64 delta), and the drive-end twin is never collapsed."""
    m = make_lstm(3, 10, 1, gain=1.0, seed=11)
    with torch.no_grad():
        m.weight_ih_l0.mul_(4.0)
    seq = _seq(40, 6, 3, 12, scale=2.0)
    # floor -120: D_i = |delta| + e^-120 resolves the contracted delta itself
    kw = dict(zero_input_steps=1, perturb_at="start", perturbation=1e-6, floor=-120.0)
    plain = mdesc.asymptotic_distance(m, seq, dtype=F32, method="plain", **kw)
    assert bool(plain.collapsed.all())
    d32 = mdesc.asymptotic_distance(m, seq, dtype=F32, **kw)
    d64 = mdesc.asymptotic_distance(m, seq, dtype=F64, method="delta", **kw)
    assert not bool(d32.collapsed.any())
    assert float(d64.distance.max()) < 1e-15  # the drive contracted the perturbation by > e^-20
    torch.testing.assert_close(d32.distance.log(), d64.distance.log(), rtol=0, atol=1e-3)
    end = mdesc.asymptotic_distance(m, seq, dtype=F32, zero_input_steps=1, perturbation=1e-6)
    assert not bool(end.collapsed.any()) and float(end.log_distance) > -15.0


def test_stability_record_equals_the_two_separate_calls():
    ms = [make_lstm(3, 6, 2, gain=g, seed=2) for g in (1.0, 3.0, 5.0)]
    seq = _seq(20, 5, 3, 2)
    kw = dict(lengths=[20, 7, 20, 15, 3], zero_input_steps=80, seed=4)
    lyap, dist = twin.stability_record(ms, seq, k=2, warmup=10, qr_every=5, **kw)
    want_l = mdesc.lyapunov_checkpoints(ms, seq, k=2, warmup=10, qr_every=5, window="zero_input", **kw)
    want_d = mdesc.asymptotic_distance(ms, seq, method="delta", **kw)
    torch.testing.assert_close(lyap.exponents, want_l.exponents, rtol=0, atol=1e-12)
    torch.testing.assert_close(lyap.driven_exponents, want_l.driven_exponents, rtol=0, atol=1e-12)
    torch.testing.assert_close(dist.distance, want_d.distance, rtol=1e-12, atol=0)
    torch.testing.assert_close(dist.reduced_sum, want_d.reduced_sum, rtol=0, atol=1e-12)
    assert dist.settings["perturb_at"] == "drive_end" and dist.settings["method"] == "delta"


def test_refusals():
    m = make_lstm(3, 4, 1, seed=0)
    seq = _seq(5, 2, 3, 0)
    with pytest.raises(ValueError, match="method must be"):
        mdesc.asymptotic_distance(m, seq, method="linear")
    with pytest.raises(ValueError, match="backend='fused'"):
        mdesc.asymptotic_distance(m, seq, method="delta", backend="reference")
    with pytest.raises(ValueError, match="zero_input_steps > warmup"):
        twin.stability_record(m, seq, zero_input_steps=5, warmup=5)
    gru = torch.nn.GRU(3, 4)
    with pytest.raises(ValueError, match="supports LSTM models only.*method='plain'"):
        mdesc.asymptotic_distance(gru, seq, method="delta")
    with pytest.raises(ValueError, match="supports LSTM models only"):
        twin.stability_record(gru, seq, zero_input_steps=10)


def test_default_method_is_delta_only_for_float32_lstms():
    seq = _seq(5, 2, 3, 0)
    lstm = make_lstm(3, 4, 1, seed=0)
    assert mdesc.asymptotic_distance(lstm, seq, zero_input_steps=3).settings["method"] == "plain"
    assert mdesc.asymptotic_distance(lstm, seq, zero_input_steps=3, dtype=F32).settings["method"] == "delta"
    ref = mdesc.asymptotic_distance(lstm, seq, zero_input_steps=3, dtype=F32, backend="reference")
    assert ref.settings["method"] == "plain"
    gru = torch.nn.GRU(3, 4)
    assert mdesc.asymptotic_distance(gru, seq, zero_input_steps=3, dtype=F32).settings["method"] == "plain"


# --------------------------------------------------------------------------------------------
# the CUDA path (csrc/cuda/run_host.h's stepwise path, its twin variant), compiled for the CPU by
# the emulation (tests/emulation.py), and on a GPU


def _emulated_case(dtype):
    import dataclasses

    ms = [make_lstm(3, 5, 2, gain=g, seed=3) for g in (1.0, 4.0, 6.0)]
    prep = engine.prepare(ms, _seq(9, 5, 3, 4), k=2, lengths=[9, 2, 6, 9, 5], zero_input_steps=7, warmup=3,
                            qr_every=4, dtype=dtype, checkpoint_axis=True)
    g = torch.Generator().manual_seed(5)
    dh0 = (1e-9 * torch.randn(3, *prep.h0.shape[1:], generator=g, dtype=F64)).to(dtype)
    dc0 = (1e-9 * torch.randn(3, *prep.h0.shape[1:], generator=g, dtype=F64)).to(dtype)
    return dataclasses.replace(prep, q0=prep.q0.expand(3, 5, -1, -1).contiguous()), dh0, dc0


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("max_ckpt,sms", [(0, 4), (2, 1)])
def test_emulated_cuda_twin_matches_cpu(dtype, max_ckpt, sms):
    """Per-checkpoint deltas and frames, padded lengths, two layers, k = 2, launches of 2
    checkpoints and a one-SM grid: the emulated CUDA path (outputs start as NaN) equals the CPU
    kernel, the delta to relative precision."""
    prep, dh0, dc0 = _emulated_case(dtype)
    want = _op(prep, dh0, dc0)
    w = prep.weights
    got = _emulator().emulate_twin(prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0, dh0, dc0, prep.q0,
                                   prep.zero_input_steps, prep.warmup, prep.qr_every, max_ckpt, sms)
    tol = 1e-11 if dtype == F64 else 2e-4
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=tol)
    for a, b in zip(got[1:3], want[1:3]):
        torch.testing.assert_close(a, b, rtol=0, atol=tol)
    for a, b in zip(got[3:], want[3:]):  # delta: relative to its own size
        scale = b.abs().amax()
        assert float(scale) > 0
        torch.testing.assert_close(a / scale, b / scale, rtol=0, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [F64, F32])
def test_cuda_twin_matches_cpu(dtype):
    from mdesc.core import _twin_ops

    if not _twin_ops.has_kernel("cuda"):
        pytest.skip("this build of mdesc has no CUDA kernels")
    prep, dh0, dc0 = _emulated_case(dtype)
    want = _op(prep, dh0, dc0)
    w = prep.weights
    cu = lambda ts: [t.cuda() for t in ts]  # noqa: E731
    got = _twin_ops.lstm_twin_run(prep.x.cuda(), prep.lengths.cuda(), cu(w.w_ih), cu(w.w_hh), cu(w.bias),
                                  prep.h0.cuda(), prep.c0.cuda(), dh0.cuda(), dc0.cuda(), prep.q0.cuda(),
                                  prep.zero_input_steps, prep.warmup, prep.qr_every)
    tol = 1e-10 if dtype == F64 else 1e-3
    for a, b in zip(got, want):
        scale = max(float(b.abs().amax()), 1e-300)
        torch.testing.assert_close(a.cpu() / scale, b / scale, rtol=0, atol=tol)
