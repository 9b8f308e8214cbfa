"""Exactly singular tangent maps (docs/conventions.md §3, "Singular tangent maps"): a dead ReLU, a
zero weight row, gates whose tangent rows vanish.  Every implementation -- the float64 autograd
reference, the CPU kernel on each of its paths (AVX-512 and AVX2 fused steps, BLAS + pointwise, the
portable loops; Gram-Schmidt and LAPACK frames), the twin kernel's frame and the CUDA kernels
through their CPU emulation -- must give the convention's answer, not just agree: the columns the
map removes are -inf from the first one on, exactly; the others are the exact exponents; the run is
counted in ``lost_columns``, not ``nonfinite``.  Nothing here may depend on a CPU's rounding: the models
are built so that the singular rows are exact zeros (or exact multiples of other rows) in every
dtype.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mdesc
from mdesc.core import _ops, reference, reference_backend
from mdesc.core.engine import prepare
from cell_cases import CELLS, F64, assert_columns_close, column_tolerance, run_tolerance
from emulation import emulate, op_args

DTYPES = [torch.float64, torch.float32]
LANES64 = _ops.cpu_fused_lanes(8)
# every CPU path that runs here: name -> kernel_options
CPU_PATHS = {"auto": dict(cpu_path="auto"), "gemm": dict(cpu_path="gemm"),
             "portable": dict(portable_gemm=True)}
if LANES64:
    CPU_PATHS["fused"] = dict(cpu_path="fused")
if LANES64 == 8:  # AVX-512 machine: its AVX2 code is forced too
    CPU_PATHS["fused_avx2"] = dict(cpu_path="fused_avx2")


def singular_model(cell: str, H: int, dtype=F64) -> tuple[nn.RNNBase, int]:
    """(model, lost): a bias-free one-layer model whose tangent map at its zero fixed point (zero
    state, zero input) is exactly singular, and how many of its n exponents the convention makes
    -inf.  Activations at 0 are exact in every implementation (sigma(0) = 1/2, tanh(0) = 0).

    lstm      i = f = o = 1/2, g = 0 at 0: dh' = dc'/2 exactly, so rank <= H of n = 2H
    gru       W_hn's first row -2 e_1: dh'_1 = (1/2)(1/2)(-2 dh_1) + (1/2) dh_1 = 0 exactly
    rnn_tanh  W_hh's first row zero: a zero row of the Jacobian
    rnn_relu  relu'(0) = 0 (PyTorch's convention, 1[a > 0]): the Jacobian is zero
    """
    g = torch.Generator().manual_seed(11)
    if cell == "lstm":
        m = nn.LSTM(3, H, bias=False)
    elif cell == "gru":
        m = nn.GRU(3, H, bias=False)
    else:
        m = nn.RNN(3, H, bias=False, nonlinearity="relu" if cell == "rnn_relu" else "tanh")
    m = m.to(dtype).requires_grad_(False)
    m.weight_ih_l0.copy_(torch.randn(m.weight_ih_l0.shape, generator=g, dtype=F64) / H ** 0.5)
    # orthogonal recurrent blocks: the kept exponents stay well conditioned (their block
    # log-growth gaps far below float32's precision), so only the singular rows decide what is lost
    for b in range(m.weight_hh_l0.shape[0] // H):
        q = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=F64))[0]
        m.weight_hh_l0[b * H:(b + 1) * H].copy_(q)
    if cell == "gru":
        m.weight_hh_l0[2 * H].zero_()
        m.weight_hh_l0[2 * H, 0] = -2.0
    if cell == "rnn_tanh":
        m.weight_hh_l0[0].zero_()
    lost = {"lstm": H, "gru": 1, "rnn_tanh": 1, "rnn_relu": H}[cell]
    return m, lost


def _zero_drive(dtype, T=3, B=2):
    return torch.zeros(T, B, 3, dtype=dtype)


def _assert_convention(res, n: int, lost: int, what: str):
    """The last ``lost`` of n exponents are -inf in every run and every counted block, the others
    finite; the runs count them in lost_columns, not nonfinite."""
    e = res.exponents
    assert bool(torch.isneginf(e[..., n - lost:]).all()), f"{what}: lost columns are not -inf: {e}"
    assert bool(torch.isfinite(e[..., :n - lost]).all()), f"{what}: kept columns are not finite: {e}"
    be = res.block_exponents
    assert bool(torch.isneginf(be[..., n - lost:]).all()), f"{what}: a block of a lost column is not -inf"
    assert bool((res.lost_columns == lost).all()) and not bool(res.nonfinite.any()), what


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [8, 12])
@pytest.mark.parametrize("qr_every", [1, 3])
def test_singular_map_gives_the_convention_on_every_cpu_path(cell, dtype, H, qr_every):
    """k = n: H = 8 and 12 take the Gram-Schmidt frame (k <= 8) and the float64 CholeskyQR with its Gram-Schmidt fallback (k > 8)."""
    model, lost = singular_model(cell, H, dtype)
    n = (2 if cell == "lstm" else 1) * H
    seq = _zero_drive(dtype)
    kw = dict(zero_input_steps=4, qr_every=qr_every)
    ref = reference.lyapunov_spectrum(model, seq, n, **kw)
    _assert_convention(ref, n, lost, "reference")
    # the kept exponents against the float64 reference of the same (exactly representable) model
    model64 = model.to(F64)
    ref64 = reference.lyapunov_spectrum(model64, seq.to(F64), n, **kw)
    prep64 = prepare(model64, seq.to(F64), k=n, **kw)
    eps = torch.finfo(dtype).eps
    tol = torch.maximum(column_tolerance(prep64), torch.tensor(run_tolerance(prep64, eps=eps)))
    tol[n - lost:] = math.inf
    model = model64.to(dtype)
    for name, options in CPU_PATHS.items():
        if name.startswith("fused") and H < (LANES64 if dtype == F64 else 2 * LANES64):
            continue  # narrower than one vector: the fused step refuses it (tested elsewhere)
        res = mdesc.lyapunov_spectrum(model, seq, n, kernel_options=options, **kw)
        _assert_convention(res, n, lost, f"cpu path {name}")
        assert_columns_close(res.exponents, ref64.exponents, tol, f"cpu path {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
@pytest.mark.parametrize("window", ["all", "zero_input"])
def test_annihilated_perturbation_is_minus_infinity(cell, dtype, window):
    """A Jacobian that is exactly zero (every ReLU dead; a GRU with W_hn = -2 I at its fixed point)
    kills every perturbation: lambda_1 = -inf, on every backend, in both windows."""
    H = 8
    model, _ = singular_model(cell, H, dtype)
    if cell == "gru":
        model.weight_hh_l0[2 * H:].copy_(-2.0 * torch.eye(H, dtype=dtype))
    seq = _zero_drive(dtype)
    for backend in ("fused", "reference"):
        res = mdesc.max_lyapunov(model, seq, zero_input_steps=5, window=window, backend=backend)
        assert bool(torch.isneginf(res.exponents).all()), (backend, res.exponents)
        assert bool((res.lost_columns == 1).all()) and not bool(res.nonfinite.any())
        assert float(res.mean[0]) == -math.inf


def _near_collinear(delta: float, dtype, k: int, H: int = 12):
    """A tanh RNN at its zero fixed point with J = W_hh = I except W_hh[0, 1] = 1, W_hh[1, 1] =
    delta: J e_2 = e_1 + delta e_2, so frame column 2 has R_22 / |J e_2| = delta / sqrt(1 +
    delta^2) = delta to rounding, with q0 = the first k unit vectors."""
    m = nn.RNN(1, H, bias=False).to(dtype).requires_grad_(False)
    w = torch.eye(H, dtype=dtype)
    w[0, 1], w[1, 1] = 1.0, delta
    m.weight_hh_l0.copy_(w)
    m.weight_ih_l0.zero_()
    q0 = torch.eye(H, k, dtype=dtype)
    return m, torch.zeros(1, 1, 1, dtype=dtype), q0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("k", [2, 12])
def test_lost_column_threshold_is_the_documented_one(dtype, k):
    """R_jj / norm just below LOST_COLUMN_EPS * eps is lost, just above it is kept with its exact log,
    in the reference and on every CPU path (k = 2: Gram-Schmidt, k = 12: CholeskyQR with the Gram-Schmidt fallback)."""
    tau = reference_backend.LOST_COLUMN_EPS * torch.finfo(dtype).eps
    for delta, lost in ((0.5 * tau, True), (2.0 * tau, False)):
        m, seq, q0 = _near_collinear(delta, dtype, k)
        runs = {"reference": reference.lyapunov_spectrum(m, seq, k, q0=q0, qr_every=1)}
        for name, options in CPU_PATHS.items():
            if name.startswith("fused") and 12 < (LANES64 if dtype == F64 else 2 * LANES64):
                continue
            runs[name] = mdesc.lyapunov_spectrum(m, seq, k, q0=q0, qr_every=1, kernel_options=options)
        for name, res in runs.items():
            e = res.exponents[0]
            assert float(e[0]) == pytest.approx(0.0, abs=1e-6), name
            if lost:
                assert bool(torch.isneginf(e[1:]).all()), (name, e)
            else:
                assert float(e[1]) == pytest.approx(math.log(delta), rel=1e-5), (name, e)
                assert bool(torch.isfinite(e).all()), (name, e)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_cuda_gives_the_convention(cell, dtype, path):
    """The CUDA kernels (both paths, compiled for the CPU): the same lost columns, exactly, and the
    kept logs of the CPU kernel."""
    H = 8
    model, lost = singular_model(cell, H, dtype)
    n = (2 if cell == "lstm" else 1) * H
    prep = prepare(model, _zero_drive(dtype), k=n, zero_input_steps=4, qr_every=2, warmup=1)
    args = op_args(prep)
    want = _ops.tangent_run(*args, cell=cell)
    got = emulate(args, path, cell=cell)
    assert torch.equal(torch.isneginf(got[0]), torch.isneginf(want[0]))
    assert bool(torch.isneginf(want[0][..., n - lost:]).all())
    assert not bool(torch.isnan(got[0]).any())
    kept = want[0][..., :n - lost]
    tol = 64 * torch.finfo(dtype).eps * prep.steps
    torch.testing.assert_close(got[0][..., :n - lost], kept, rtol=tol, atol=tol)
    torch.testing.assert_close(got[1], want[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_twin_kernel_frame_loses_columns_like_the_tangent_kernel(dtype):
    """The twin kernel (stability_record's, LSTM only) carries its frame through the same
    re-orthonormalisation: the same lost columns, the same kept logs."""
    from mdesc.core import _twin_ops

    H = 8
    model, lost = singular_model("lstm", H, dtype)
    n = 2 * H
    prep = prepare(model, _zero_drive(dtype), k=n, zero_input_steps=4, qr_every=2)
    args = op_args(prep)
    want = _ops.tangent_run(*args, cell="lstm")
    zeros = torch.zeros_like(args[5])
    got = _twin_ops.lstm_twin_run(*args[:7], zeros, zeros, *args[7:])
    assert torch.equal(torch.isneginf(got[0]), torch.isneginf(want[0]))
    assert bool(torch.isneginf(want[0][..., n - lost:]).all())
    tol = 64 * torch.finfo(dtype).eps * prep.steps
    torch.testing.assert_close(got[0][..., :n - lost], want[0][..., :n - lost], rtol=tol, atol=tol)
