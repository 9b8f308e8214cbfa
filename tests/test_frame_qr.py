"""The CPU kernel's re-orthonormalisation of large frames (k > 8: csrc/cpu/cholesky_qr.h, CholeskyQR
in float64 for the leading columns it can vouch for, Gram-Schmidt twice for the rest; csrc/cpu/qr.h)
against a float64 Householder reference, in float32 and float64, on well- and ill-conditioned
frames, and on frames only the Gram-Schmidt fallback can get right.

The frame is chosen exactly: a bias-free tanh RNN at its zero fixed point (zero state, zero input)
has the tangent map W_hh (tanh'(0) = 1, exact), so with q0 = the first k unit vectors and
qr_every = 1 the first re-orthonormalisation factors A = W_hh[:, :k] itself and its block logs are
log R_jj of A's QR.  The rule for lost columns (docs/conventions.md §3) decides from R_jj / nu_j
(nu_j the column's norm) against LOST_COLUMN_EPS * eps(dtype); columns within a factor 4 of that
threshold have no correct answer and are not compared.
"""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mdesc.core import _ops, reference_backend
from mdesc.core.engine import prepare
from cell_cases import DETERMINISTIC, F64
from emulation import op_args

DTYPES = [torch.float64, torch.float32]
PATHS = {"blas": dict(), "portable": dict(portable_gemm=True), "gemm": dict(cpu_path="gemm")}


def frame_logs(A: torch.Tensor, k: int | None = None, steps: int = 1, **options) -> torch.Tensor:
    """Block logs of the CPU kernel whose first frame is A [n, k] (then W_hh Q, ...): [k] for one
    step, [steps, k] for more."""
    n = A.shape[0]
    k = A.shape[1] if k is None else k
    W = torch.zeros(n, n, dtype=A.dtype)
    W[:, :A.shape[1]] = A
    m = torch.nn.RNN(1, n, bias=False).to(A.dtype).requires_grad_(False)
    m.weight_hh_l0.copy_(W)
    m.weight_ih_l0.zero_()
    seq = torch.zeros(1, 1, 1, dtype=A.dtype)
    prep = prepare(m, seq, k=k, zero_input_steps=steps - 1, warmup=0, qr_every=1,
                   q0=torch.eye(n, k, dtype=A.dtype))
    logs = _ops.tangent_run(*op_args(prep), cell="rnn_tanh", **options)[0]
    return logs[0, 0] if steps > 1 else logs[0, 0, 0]


def reference_logs(A: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(log R_jj of A's float64 Householder QR, with the convention's -inf from the first lost column
    on; per-column tolerance, inf where no answer is correct).  A holds dtype's values."""
    A = A.to(F64)
    k = A.shape[1]
    R = torch.linalg.qr(A).R
    r = R.diagonal().abs()
    nu = A.norm(dim=0)
    rho = r / nu
    eps = torch.finfo(dtype).eps
    threshold = reference_backend.LOST_COLUMN_EPS * eps
    logs = r.log()
    # Householder's R is backward stable: |dR_jj| <= c eps |A|, relative c eps sqrt(k) / rho_j
    tol = 64 * eps * math.sqrt(k) / rho + 1e-12
    for j in range(k):
        if rho[j] <= 4 * threshold:
            if rho[j] <= threshold / 4:
                logs[j:] = -math.inf
                tol[j:] = 0.0
            else:  # within a factor 4 of the threshold: either answer; later columns undefined too
                tol[j:] = math.inf
            break
    return logs, tol


def assert_logs(got: torch.Tensor, want: torch.Tensor, tol: torch.Tensor, what: str):
    for j in range(want.shape[0]):
        if math.isinf(tol[j]):
            continue
        if math.isinf(want[j]):
            assert got[j] == -math.inf, f"{what}: column {j} should be lost, got {got[j]}"
        else:
            assert math.isfinite(got[j]) and abs(got[j] - want[j]) <= tol[j], \
                f"{what}: column {j}: {got[j]} vs {want[j]} (tol {tol[j]:.2e})"


def conditioned(n: int, k: int, log10_kappa: float, seed: int, graded: bool = False) -> torch.Tensor:
    """A [n, k] float64 frame with singular values log-spaced over log10_kappa decades (graded: the
    small ones in the last columns, as a tangent frame's growth rates order them)."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64)).Q
    s = torch.logspace(0, -log10_kappa, k, dtype=F64)
    if graded:  # upper triangular mixing: column j grows out of the directions before it
        V = torch.eye(k, dtype=F64) + torch.triu(torch.randn(k, k, generator=g, dtype=F64), 1) / k
        return U @ (V * s)
    V = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=F64)).Q
    return (U * s) @ V.T


@settings(max_examples=24, **DETERMINISTIC)
@given(n=st.sampled_from([12, 24, 40, 64]), frac=st.sampled_from([0.5, 1.0]),
       log10_kappa=st.sampled_from([0.0, 2.0, 4.0, 7.0, 10.0, 14.0]), graded=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2 ** 16))
def test_frame_logs_match_householder(n, frac, log10_kappa, graded, dtype, seed):
    """Every path (BLAS: CholeskyQR + Gram-Schmidt; portable and gemm paths alike) gives float64
    Householder's log R_jj within its backward-error bound, and the convention's lost columns."""
    k = max(9, int(n * frac))
    A = conditioned(n, k, log10_kappa, seed, graded).to(dtype)
    want, tol = reference_logs(A, dtype)
    for name, options in PATHS.items():
        assert_logs(frame_logs(A, **options), want, tol, f"{name}, {dtype}, kappa 1e{log10_kappa:g}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("n", [16, 48, 120])
def test_frames_stay_orthonormal(dtype, n):
    """Four steps of W_hh = A (kappa 1e3): each block's logs are those of A Q_{t-1} with the exact
    float64 Q's, which needs every Q the kernel hands on orthonormal (to its dtype's rounding)."""
    A = conditioned(n, n, 3.0, seed=n, graded=True).to(dtype)
    got = frame_logs(A, steps=4)
    Q = torch.eye(n, dtype=F64)
    A64 = A.to(F64)
    for t in range(4):
        Q, R = torch.linalg.qr(A64 @ Q)
        want = R.diagonal().abs().log()
        tol = 1e-11 if dtype == F64 else 2e-3
        torch.testing.assert_close(got[t], want, rtol=0, atol=tol, msg=lambda m: f"step {t}: {m}")
        Q = Q * R.diagonal().sign()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_exactly_dependent_column_is_lost(dtype):
    """Column 20 = 2 x column 7 exactly: CholeskyQR alone would report rounding noise (R_jj / nu_j
    ~ sqrt(eps64) ~ 1e-8, above float64's threshold 1.4e-14); the kernel must hand it to
    Gram-Schmidt, which finds it lost: -inf from column 20 on, the leading 20 exact."""
    A = conditioned(40, 40, 1.0, seed=3).to(dtype)
    A[:, 20] = 2 * A[:, 7]
    got = frame_logs(A)
    want, tol = reference_logs(A, dtype)
    assert bool(torch.isneginf(got[20:]).all()), got
    assert_logs(got, want, tol, f"{dtype}")


def test_ill_conditioned_float64_frame_takes_the_fallback():
    """kappa 1e12 with no column lost in float64: one or two CholeskyQR passes cannot factor it (eps64 *
    kappa^2 >> 1) -- the condition estimate must stop the Cholesky part and Gram-Schmidt finish;
    the logs of the smallest directions are then right to Householder's own accuracy."""
    A = conditioned(64, 64, 12.0, seed=5, graded=True)
    want, tol = reference_logs(A, F64)
    assert bool(torch.isfinite(want).all())
    got = frame_logs(A)
    assert_logs(got, want, tol, "float64, kappa 1e12")
    assert float((got - want).abs().max()) < 1e-3


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_zero_trailing_columns_are_lost_and_the_rest_exact(dtype):
    """A frame whose last columns are exactly zero (lost at an earlier block): they are -inf, the
    live columns exact; a zero column in the middle likewise ends the frame there."""
    A = conditioned(30, 30, 2.0, seed=9).to(dtype)
    A[:, 18:] = 0
    got = frame_logs(A)
    want, tol = reference_logs(A[:, :18], dtype)
    assert_logs(got[:18], want, tol, f"{dtype}")
    assert bool(torch.isneginf(got[18:]).all())
    A = conditioned(30, 30, 2.0, seed=9).to(dtype)
    A[:, 11] = 0
    got = frame_logs(A)
    assert bool(torch.isneginf(got[11:]).all()) and bool(torch.isfinite(got[:11]).all())


@pytest.mark.parametrize("rho, lost", [(1e-6, True), (3e-5, False)])
def test_float32_columns_near_the_threshold(rho, lost):
    """float32 (threshold 64 eps = 7.6e-6): a column with R_jj / nu_j = 1e-6 is lost although
    CholeskyQR in float64 would measure it to many digits; one at 3e-5 is kept with its exact log,
    below the Cholesky part's margin (8x the threshold), so Gram-Schmidt decides both."""
    n = 24
    A = torch.eye(n, dtype=F64)
    A[0, 13], A[13, 13] = 1.0, rho  # column 13 = e_1 + rho e_14: R_13,13 / nu = rho / sqrt(1 + rho^2)
    A = A.to(torch.float32)
    got = frame_logs(A)
    assert bool(torch.isfinite(got[:13]).all()) and float(got[:13].abs().max()) < 1e-6
    if lost:
        assert bool(torch.isneginf(got[13:]).all()), got
    else:
        want = math.log(float(A[13, 13]))  # R_13,13 = rho exactly (column 13's part along e_14)
        assert abs(float(got[13]) - want) < 1e-4, (float(got[13]), want)
        assert bool(torch.isfinite(got).all())
