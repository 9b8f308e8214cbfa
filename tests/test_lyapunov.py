"""The fused kernels against the autograd reference and against identities that cannot be tuned to
(docs/conventions.md): determinant identity, qr_every independence, leading-k consistency, twin runs."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mdesc
from mdesc.core import reference
from lstm_cases import conditioning, make_lstm, on, problem_conditioning, problems, state_amplification
from cell_cases import run_tolerance
from mdesc.core.engine import prepare
from utils import devices

F64 = dict(dtype=torch.float64)


def _step_flat(lstm: torch.nn.LSTM, x_t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    """One step of a single sequence on the flat state [h_1, c_1, ..., h_L, c_L] (torch.lstm_cell)."""
    H, L = lstm.hidden_size, lstm.num_layers
    out, inp = [], x_t
    for layer in range(L):
        h = state[2 * layer * H:(2 * layer + 1) * H]
        c = state[(2 * layer + 1) * H:(2 * layer + 2) * H]
        b_ih = getattr(lstm, f"bias_ih_l{layer}", None)
        b_hh = getattr(lstm, f"bias_hh_l{layer}", None)
        h, c = torch.lstm_cell(inp[None], (h[None], c[None]), getattr(lstm, f"weight_ih_l{layer}"),
                               getattr(lstm, f"weight_hh_l{layer}"), b_ih, b_hh)
        out += [h[0], c[0]]
        inp = h[0]
    return torch.cat(out)


def _drive(seq_b: torch.Tensor, length: int, zero: int) -> list[torch.Tensor]:
    """Inputs of one sequence: its first `length` steps, then zeros to T + zero steps."""
    T = seq_b.shape[0]
    xs = [seq_b[t] if t < length else torch.zeros_like(seq_b[0]) for t in range(T)]
    return xs + [torch.zeros_like(seq_b[0])] * zero


@devices
@given(p=problems(max_k=4))
def test_fused_matches_reference_float64(device, p):
    kw = dict(p["kwargs"], **F64)
    q = on(p, device)
    fused = mdesc.lyapunov_spectrum(q["lstm"], q["seq"], p["k"], **kw)
    ref = reference.lyapunov_spectrum(p["lstm"], p["seq"], p["k"], **kw)
    tol_state = run_tolerance(prepare(p["lstm"], p["seq"], k=p["k"], **kw))
    torch.testing.assert_close(fused.h_T.cpu(), ref.h_T, rtol=tol_state, atol=tol_state)
    torch.testing.assert_close(fused.c_T.cpu(), ref.c_T, rtol=tol_state, atol=tol_state)
    # GS and Householder agree to ~eps * e^12 < 1e-10 here
    assume(problem_conditioning(p, p["k"], kw["qr_every"]) < 12.0)
    torch.testing.assert_close(fused.exponents, ref.exponents, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fused.block_exponents, ref.block_exponents, rtol=1e-9, atol=1e-9)


@devices
@given(p=problems(max_k=4))
def test_float32_fused_matches_float64_reference(device, p):
    """float32 propagation (the default), with the kernels' fast activations and blocked GEMMs,
    against the float64 autograd reference.  Bound: float32 rounding amplified by the frame's
    spread (< e^6 here); the fused path's float64-accumulated Gram-Schmidt stays within it, while
    the reference run in float32 (Householder in float32) strays about 4x further.  States: float32
    rounding times the measured amplification of errors by the end of the run (an expanding
    draw legitimately differs by more than a fixed bound)."""
    kw = dict(p["kwargs"])
    truth = reference.lyapunov_spectrum(p["lstm"], p["seq"], p["k"], dtype=torch.float64, **kw)
    q = on(p, device)
    fused = mdesc.lyapunov_spectrum(q["lstm"].float(), q["seq"].float(), p["k"], **kw)
    bound = max(1e-5, 64 * torch.finfo(torch.float32).eps * state_amplification(p))
    torch.testing.assert_close(fused.h_T.double().cpu(), truth.h_T, rtol=bound, atol=bound)
    assume(problem_conditioning(p, p["k"], kw["qr_every"]) < 6.0)
    torch.testing.assert_close(fused.exponents, truth.exponents, rtol=1e-3, atol=1e-3)


@devices
@given(p=problems())
def test_full_spectrum_sum_is_mean_log_det_jacobian(device, p):
    lstm, seq, kw = p["lstm"], p["seq"], p["kwargs"]
    n = 2 * lstm.hidden_size * lstm.num_layers
    q = on(p, device)
    res = mdesc.lyapunov_spectrum(q["lstm"], q["seq"], n, **{**kw, "qr_every": 1}, **F64)
    assume(not bool(res.nonfinite.any()) and problem_conditioning(p, n, 1) < 12.0)
    for b in range(seq.shape[1]):
        state = torch.zeros(n, dtype=torch.float64)
        logdets = []
        for t, x_t in enumerate(_drive(seq[:, b], kw["lengths"][b], kw["zero_input_steps"])):
            J = torch.func.jacfwd(lambda s: _step_flat(lstm, x_t, s))(state)
            if t >= kw["warmup"]:
                logdets.append(torch.linalg.slogdet(J.detach()).logabsdet)
            state = _step_flat(lstm, x_t, state).detach()
        expected = torch.stack(logdets).mean()
        assume(torch.isfinite(expected))
        assert abs(float(res.exponents[b].sum()) - float(expected)) <= 1e-8 * max(1.0, abs(float(expected)))


@devices
@given(p=problems(max_k=3), other=st.integers(2, 9))
def test_independent_of_qr_every(device, p, other):
    kw = dict(p["kwargs"], **F64)
    q = on(p, device)
    one = mdesc.lyapunov_spectrum(q["lstm"], q["seq"], p["k"], **{**kw, "qr_every": 1})
    many = mdesc.lyapunov_spectrum(q["lstm"], q["seq"], p["k"], **{**kw, "qr_every": other})
    assume(problem_conditioning(p, p["k"], other) < 12.0)
    torch.testing.assert_close(one.exponents, many.exponents, rtol=1e-9, atol=1e-9)


@devices
@given(p=problems())
def test_leading_k_equal_top_of_full_spectrum(device, p):
    q = on(p, device)
    lstm, seq, kw = q["lstm"], q["seq"], dict(p["kwargs"], **F64)
    n = 2 * lstm.hidden_size * lstm.num_layers
    q0 = mdesc.random_frame(n, n, seed=3)
    full = mdesc.lyapunov_spectrum(lstm, seq, n, q0=q0, **kw)
    part = mdesc.lyapunov_spectrum(lstm, seq, p["k"], q0=q0[:, :p["k"]], **kw)
    assume(problem_conditioning(p, n, kw["qr_every"]) < 12.0)
    torch.testing.assert_close(part.exponents, full.exponents[:, :p["k"]], rtol=1e-9, atol=1e-9)


def _twin_lambda(lstm, seq_b, steps_zero: int, warmup: int, delta: float = 1e-7) -> float:
    """Largest exponent from a renormalised two-trajectory run (no Jacobians)."""
    n = 2 * lstm.hidden_size * lstm.num_layers
    g = torch.Generator().manual_seed(0)
    u = torch.randn(n, generator=g, dtype=torch.float64)
    a = torch.zeros(n, dtype=torch.float64)
    b = a + delta * u / u.norm()
    total, counted = 0.0, 0
    with torch.no_grad():
        for t, x_t in enumerate(_drive(seq_b, seq_b.shape[0], steps_zero)):
            a, b = _step_flat(lstm, x_t, a), _step_flat(lstm, x_t, b)
            d = float((b - a).norm())
            if t >= warmup:
                total += math.log(d / delta)
                counted += 1
            b = a + (b - a) * (delta / d)
    return total / counted


@devices
@pytest.mark.parametrize("gain", [0.8, 6.0])
def test_jacobian_lambda1_agrees_with_twin_trajectory(device, gain):
    lstm = make_lstm(3, 8, 2, gain=gain, seed=11)
    seq = torch.randn(60, 1, 3, dtype=torch.float64)
    res = mdesc.max_lyapunov(lstm.to(device), seq.to(device), zero_input_steps=140, warmup=100,
                             qr_every=1, **F64)
    lstm, seq = lstm.cpu(), seq.cpu()
    twin = _twin_lambda(lstm, seq[:, 0], 140, warmup=100)
    # the frame aligns with the leading direction during warm-up; what remains is O(delta)
    assert abs(float(res) - twin) < 1e-4 + 1e-3 * abs(twin), (float(res), twin)


@devices
def test_gain_moves_lambda1_from_order_to_chaos(device):
    seq = torch.zeros(1, 4, 4, device=device)
    lams = {}
    for gain in (0.5, 20.0):
        lstm = make_lstm(4, 64, 1, gain=gain, seed=5, bias=False, dtype=torch.float32).to(device)
        lams[gain] = float(mdesc.max_lyapunov(lstm, seq, zero_input_steps=3000, warmup=1000))
    assert lams[0.5] < -0.05, lams
    assert lams[20.0] > 0.01, lams


@devices
def test_float32_close_to_float64(device):
    lstm = make_lstm(8, 32, 2, gain=2.0, seed=2).to(device)
    seq = torch.randn(100, 6, 8, dtype=torch.float64).to(device)
    r64 = mdesc.lyapunov_spectrum(lstm, seq, 6, zero_input_steps=100, **F64)
    r32 = mdesc.lyapunov_spectrum(lstm.float(), seq.float(), 6, zero_input_steps=100)
    torch.testing.assert_close(r32.exponents, r64.exponents, rtol=0, atol=1e-4)


@pytest.mark.parametrize("k", [4, 12])  # Gram-Schmidt, and LAPACK QR unless portable
def test_portable_gemm_matches_blas(k):
    """The fallback GEMM and QR (torch builds without an exported BLAS) give the same answer."""
    lstm = make_lstm(5, 9, 2, seed=1)
    seq = torch.randn(20, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    outs = [mdesc.lyapunov_spectrum(lstm, seq, k, kernel_options=dict(portable_gemm=portable), **F64)
            for portable in (False, True)]
    torch.testing.assert_close(outs[0].exponents, outs[1].exponents, rtol=1e-12, atol=1e-12)


@devices
def test_exponent_bookkeeping_on_identity_like_dynamics(device):
    """Zero weights and bias: c_t = sigmoid(0) c_{t-1}, so every c-direction shrinks by exactly
    1/2 per step (and h-directions by more), independent of qr_every and warm-up."""
    lstm = make_lstm(2, 3, 1, gain=0.0, bias=False).to(device)
    seq = torch.zeros(10, 2, 2, dtype=torch.float64, device=device)
    for qr_every in (1, 3, 7):
        r = mdesc.lyapunov_spectrum(lstm, seq, 3, zero_input_steps=7, warmup=4, qr_every=qr_every,
                                    q0=torch.eye(6, dtype=torch.float64)[:, 3:], **F64)
        torch.testing.assert_close(r.exponents, torch.full((2, 3), math.log(0.5), dtype=torch.float64))
        assert r.block_steps.sum() == 13


def test_opcheck():
    from mdesc.core.engine import prepare

    lstm = make_lstm(3, 4, 2, seed=1)
    prep = prepare(lstm, torch.randn(5, 2, 3, dtype=torch.float64), k=3, zero_input_steps=2,
                   dtype=torch.float64, warmup=1, qr_every=2)
    w = prep.weights
    args = (prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0, prep.q0, 2, 1, 2)
    torch.library.opcheck(torch.ops.mdesc.tangent_run.default, args)


# k <= 8: Gram-Schmidt in the kernel; k > 8: LAPACK Householder.  float32 only on the leading
# part of the spectrum: its tail is limited by float32 conditioning in any implementation.
@pytest.mark.parametrize("k, dtype", [(8, torch.float64), (9, torch.float64), (24, torch.float64),
                                      (8, torch.float32), (9, torch.float32)])
@devices
def test_both_qr_paths_match_reference(device, k, dtype):
    lstm = make_lstm(3, 6, 2, gain=1.5, seed=8, dtype=dtype)
    seq = torch.randn(25, 3, 3, dtype=dtype)
    kw = dict(zero_input_steps=10, warmup=3, qr_every=1, dtype=dtype)
    fused = mdesc.lyapunov_spectrum(lstm.to(device), seq.to(device), k, **kw)
    lstm, seq = lstm.cpu(), seq.cpu()
    ref = reference.lyapunov_spectrum(lstm, seq, k, **kw)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    assert conditioning(ref) < 12.0
    torch.testing.assert_close(fused.exponents, ref.exponents, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 6e-7), (torch.float64, 1e-15)])
@devices
def test_fast_activations_are_accurate(device, dtype, tol):
    """The kernels' vectorised exp/tanh: one step over pre-activations spanning [-30, 30]
    (saturated and linear regimes alike) against torch's float64 cell."""
    lstm = make_lstm(1, 512, 1, gain=0.0, bias=True)
    with torch.no_grad():
        lstm.bias_ih_l0.copy_(torch.linspace(-30, 30, 4 * 512, dtype=torch.float64))
        lstm.bias_hh_l0.zero_()
    seq = torch.zeros(1, 1, 1, dtype=torch.float64)
    c0 = torch.linspace(-3, 3, 512, dtype=torch.float64).reshape(1, 1, 512)
    r = mdesc.max_lyapunov(lstm.to(device, dtype), seq.to(device, dtype), c0=c0.to(device, dtype), dtype=dtype)
    _, (h, c) = lstm.cpu().double()(seq, (torch.zeros_like(c0), c0))
    assert (r.h_T.double().cpu() - h).abs().max() <= tol
    assert (r.c_T.double().cpu() - c).abs().max() <= 4 * tol
