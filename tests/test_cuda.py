"""The CUDA implementation of mdesc::tangent_run (csrc/cuda/) against the CPU kernel, the
autograd reference and the identities of docs/conventions.md; and the one rule both share with
Python (csrc/common/cell_math.h: the QR schedule and the block count, mdesc/core/schedule.py).

Two groups:

* ``emulated``: the CUDA kernels and their host code, compiled unchanged for the CPU with the
  shim in csrc/cuda/emulation/ (one OS thread per CUDA thread), against the CPU kernel.  Needs no
  GPU, so the index arithmetic, shared-memory layout, barriers and NaN propagation of both CUDA
  paths are checked on every machine.  Slow (a ~1-2 minute compile on first use, cached after).
* ``gpu``: the compiled extension on a real device, skipped (with the reason) where there is none.

Tuning arguments of the op used here (csrc/mdesc.cpp): cuda_path forces the fused or the stepwise
path, cuda_max_checkpoints limits checkpoints per launch, poison_outputs fills the outputs with NaN
before the run.

Tolerances.  Two correct orthonormalisations (the CPU's Gram-Schmidt, the CUDA kernels' two-pass
MGS, LAPACK's Householder) agree on log R_jj only to about eps * e^(c_j), where c_j is the
conditioning of column j: the largest log-growth gap between it and an earlier column over one
block, over every block of the run, warm-up included (cell_cases.column_tolerance).  Comparisons use
that per-column tolerance, measured on the run compared, so no draw can fall off a cliff; columns
whose tolerance exceeds 1e-3 carry no digits and are not compared.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mdesc
from mdesc.core import _ops, reference, schedule
from mdesc.core.engine import prepare
from cell_cases import DETERMINISTIC, column_tolerance, run_tolerance
from emulation import assert_same_run as _assert_same_run
from emulation import emulate as _emulate
from emulation import emulator as _emulator
from emulation import op_args as _op_args
from lstm_cases import make_lstm, problems

F64 = torch.float64


def _prep(p, dtype=F64, k=None):
    kw = dict(p["kwargs"])
    return prepare(p["lstm"].to(dtype), p["seq"].to(dtype), k=p["k"] if k is None else k, dtype=dtype, **kw)


# ------------------------------------------------------------------------------------------------
# the schedule: one rule in C++ (csrc/common/cell_math.h), one copy in Python (mdesc/core/schedule.py)


def test_block_count_and_sizes_are_the_kernels_rule():
    """For every (T, zero_input_steps, warmup, qr_every) of small runs, the op's block count (its
    output shape), its block sizes and the fake kernel's shape equal mdesc.core.schedule's.  The
    sizes are read off the logs of a model whose tangent dynamics shrink by exactly 1/2 per step
    (zero weights, a c-direction: after the first step every step halves it exactly)."""
    lstm = make_lstm(1, 1, 1, gain=0.0, bias=False)
    q0 = torch.tensor([[0.0], [1.0]], dtype=F64)  # the c direction
    checked = 0
    for T in (1, 3):
        for zero in (0, 2, 7):
            S = T + zero
            for warmup in range(1, S):
                for qr_every in range(1, S + 2):
                    prep = prepare(lstm, torch.zeros(T, 1, 1, dtype=F64), k=1, zero_input_steps=zero,
                                   warmup=warmup, qr_every=qr_every, q0=q0, dtype=F64)
                    args = _op_args(prep)
                    logs = _ops.tangent_run(*args)[0]
                    sizes = schedule.block_sizes(S, warmup, qr_every)
                    assert logs.shape[2] == schedule.counted_blocks(S, warmup, qr_every) == len(sizes)
                    assert (logs[0, 0, :, 0] / math.log(0.5)).round().long().tolist() == sizes
                    assert prep.block_steps().tolist() == sizes
                    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
                        fake = _ops.tangent_run(*[mode.from_tensor(a) if isinstance(a, torch.Tensor) else
                                                  [mode.from_tensor(t) for t in a] if isinstance(a, list) else a
                                                  for a in args])
                    assert fake[0].shape == logs.shape
                    checked += 1
    assert checked > 100


# ------------------------------------------------------------------------------------------------
# emulated: the CUDA kernels compiled for the CPU


emulated = pytest.mark.slow


@emulated
@settings(max_examples=int(os.environ.get("MDESC_EMULATED_EXAMPLES", "12")), **DETERMINISTIC)
@given(problems(max_k=5), st.sampled_from(["fused", "stepwise"]), st.integers(0, 3), st.integers(0, 6),
       st.sampled_from([0, 64, 96]))
def test_emulated_cuda_matches_cpu_float64(p, path, bt, gc, threads):
    prep = _prep(p)
    args = _op_args(prep)
    want = _ops.tangent_run(*args)
    got = _emulate(args, path, bt=bt, gc=gc, threads=threads)
    _assert_same_run(got, want, tol_state=run_tolerance(prep), tol_logs=column_tolerance(prep))


@emulated
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_full_spectrum_three_layers_in_chunks(path):
    """k = n with tangent chunks narrower than the tile (fused GC = 5), three layers.  The smallest
    exponents of this model are ill-conditioned (block log-growth gaps ~ 8 with qr_every = 1), so
    any two correct orthonormalisations agree only to ~1e-16 * e^8 per block (the CPU uses LAPACK's
    Householder QR for k > 8, the CUDA kernels Gram-Schmidt)."""
    lstm = make_lstm(3, 3, 3, gain=1.5, seed=4)
    seq = torch.randn(6, 2, 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    prep = prepare(lstm, seq, k=18, zero_input_steps=3, warmup=2, qr_every=1, lengths=[6, 3], dtype=F64)
    args = _op_args(prep)
    want = _ops.tangent_run(*args)
    tol = column_tolerance(prep)
    assert torch.isfinite(tol).all() and float(tol.max()) < 1e-7
    got = _emulate(args, path, bt=1, gc=5, threads=64)
    _assert_same_run(got, want, tol_state=run_tolerance(prep), tol_logs=tol)


@emulated
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_paper_size_model_with_the_h100_tile(path, dtype):
    """The paper's model size (embedding 32, hidden 60), two checkpoints, padded batch, 256 threads
    per block and the tile the fused path would pick on an H100 (BT = 4 here)."""
    lstms = [make_lstm(32, 60, 1, gain=g, seed=s, dtype=dtype) for s, g in enumerate((1.0, 3.0))]
    seq = torch.randn(6, 20, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
    prep = prepare(lstms, seq, k=1, lengths=[6, 3] * 10, zero_input_steps=4, warmup=2, qr_every=3,
                   dtype=dtype, checkpoint_axis=True)
    args = _op_args(prep)
    want = _ops.tangent_run(*args)
    if path == "fused":
        assert _emulator().h100_fused_config(2, 20, 1, 60, 1, dtype.itemsize, "lstm")[:2] == [4, 4]
    tol = run_tolerance(prep, eps=torch.finfo(dtype).eps)
    _assert_same_run(_emulate(args, path), want, tol_state=tol, tol_logs=tol)


@emulated
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_checkpoints_with_own_inputs_states_and_frames(path):
    """x, h0, c0 and q0 per checkpoint (and q0 per sequence), split over launches of 2 checkpoints."""
    C, T, B, I, H, L, k = 3, 5, 4, 2, 5, 2, 2
    g = torch.Generator().manual_seed(9)
    lstms = [make_lstm(I, H, L, gain=2.0, seed=s) for s in range(C)]
    from mdesc.core import cells

    w = cells.flatten(lstms, F64, torch.device("cpu"))
    x = torch.randn(C, T, B, I, generator=g, dtype=F64)
    h0 = torch.randn(C, L, B, H, generator=g, dtype=F64) * 0.3
    c0 = torch.randn(C, L, B, H, generator=g, dtype=F64) * 0.3
    q0 = torch.linalg.qr(torch.randn(C, B, 2 * H * L, k, generator=g, dtype=F64))[0].contiguous()
    lengths = torch.tensor([5, 1, 3, 4])
    args = (x, lengths, w.w_ih, w.w_hh, w.bias, h0, c0, q0, 4, 1, 3)
    want = _ops.tangent_run(*args)
    got = _emulate(args, path, bt=3, max_ckpt=2, threads=96)
    _assert_same_run(got, want, tol_state=1e-12, tol_logs=1e-10)


@emulated
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_nonfinite_propagates_like_cpu(path):
    """A NaN input poisons exactly its own sequence, as on the CPU (reported as NaN by the public
    API); a zero tangent frame is lost (docs/conventions.md §3): log R = -inf in every block."""
    lstm = make_lstm(2, 4, 1, seed=2)
    seq = torch.randn(6, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(2))
    prep = prepare(lstm, seq, k=2, zero_input_steps=2, qr_every=2, dtype=F64)
    args = list(_op_args(prep))
    args[0] = args[0].clone()
    args[0][0, 2, 1, 0] = float("nan")  # x [1, T, B, I]: step 2 of sequence 1
    want = _ops.tangent_run(*args)
    assert not torch.isfinite(want[0][0, 1, 1:]).any() and torch.isfinite(want[0][0, 0]).all()
    _assert_same_run(_emulate(tuple(args), path, threads=64), want, tol_state=1e-12, tol_logs=1e-10)
    args[7] = torch.zeros_like(args[7])  # q0 = 0
    want = _ops.tangent_run(*args)
    assert bool((want[0][0, [0, 2]] == -math.inf).all()) and bool(torch.isnan(want[0][0, 1, 1:]).all())
    _assert_same_run(_emulate(tuple(args), path, threads=64), want, tol_state=1e-12, tol_logs=1e-10)


# ------------------------------------------------------------------------------------------------
# gpu: the compiled kernels on a device

_NO_GPU = (not torch.cuda.is_available(), "no CUDA device")
_NO_KERNELS = (not _ops.WITH_CUDA, "mdesc was built without its CUDA kernels (build with FORCE_CUDA=1)")
gpu = pytest.mark.skipif(_NO_GPU[0] or _NO_KERNELS[0], reason=_NO_GPU[1] if _NO_GPU[0] else _NO_KERNELS[1])
PATHS = ["fused", "stepwise"]


@pytest.fixture(params=PATHS)
def cuda_path(request):
    """kernel_options forcing one CUDA path."""
    return dict(cuda_path=request.param)


@gpu
def test_cuda_kernel_is_registered():
    assert torch._C._dispatch_has_kernel_for_dispatch_key("mdesc::tangent_run", "CUDA")


@gpu
@pytest.mark.parametrize("path", PATHS)
@settings(**DETERMINISTIC)
@given(problems(max_k=6), st.booleans())
def test_cuda_matches_cpu_float64(path, p, poison):
    prep = _prep(p)
    args = _op_args(prep)
    want = _ops.tangent_run(*args)
    got = _ops.tangent_run(*_op_args(prep, "cuda"), cuda_path=path, poison_outputs=poison)
    _assert_same_run(got, want, tol_state=run_tolerance(prep), tol_logs=column_tolerance(prep))


@gpu
@settings(**DETERMINISTIC)
@given(problems(max_k=3))
def test_cuda_matches_autograd_reference(p):
    kw = dict(p["kwargs"], dtype=F64)
    lstm, seq = p["lstm"], p["seq"]
    got = mdesc.lyapunov_spectrum(lstm.cuda(), seq.cuda(), p["k"], **kw)
    ref = reference.lyapunov_spectrum(lstm.cpu(), seq, p["k"], **kw)
    torch.testing.assert_close(got.h_T.cpu(), ref.h_T, rtol=1e-12, atol=1e-12)
    tol = column_tolerance(_prep(p))  # exponents are step-weighted means of the block logs
    for j in range(p["k"]):
        if math.isfinite(float(tol[j])):
            torch.testing.assert_close(got.exponents[:, j], ref.exponents[:, j], rtol=0, atol=float(tol[j]))


@gpu
def test_cuda_float32_paper_size_matches_cpu(cuda_path):
    """The paper's model size (embedding 32, hidden 60) in float32 on both paths, several
    checkpoints, padded batch.  Short enough that float32 rounding stays ~1e-4 on the exponents."""
    lstms = [make_lstm(32, 60, 1, gain=g, seed=s, dtype=torch.float32) for s, g in enumerate((0.5, 1.0, 3.0))]
    g = torch.Generator().manual_seed(0)
    seq = torch.randn(40, 24, 32, generator=g)
    lengths = torch.randint(5, 41, (24,), generator=g).tolist()
    kw = dict(k=1, lengths=lengths, zero_input_steps=60, warmup=10, qr_every=10)
    cpu = mdesc.lyapunov_checkpoints(lstms, seq, **kw)
    cuda = mdesc.lyapunov_checkpoints([m.cuda() for m in lstms], seq.cuda(), kernel_options=cuda_path, **kw)
    torch.testing.assert_close(cuda.exponents, cpu.exponents, rtol=0, atol=2e-4)
    torch.testing.assert_close(cuda.h_T.cpu(), cpu.h_T, rtol=0, atol=1e-4)


@gpu
def test_cuda_full_spectrum_sum_is_mean_log_det_jacobian(cuda_path):
    """Sum of the full spectrum on the device = mean log|det J_t| from autograd Jacobians."""
    lstm = make_lstm(3, 4, 2, gain=2.0, seed=7)
    seq = torch.randn(12, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    zero, warmup = 6, 3
    res = mdesc.lyapunov_spectrum(lstm.cuda(), seq.cuda(), None, zero_input_steps=zero, warmup=warmup,
                                  qr_every=1, dtype=F64, kernel_options=cuda_path)
    H, L = lstm.hidden_size, lstm.num_layers
    lstm = lstm.cpu()

    def step(x_t, s):
        out, inp = [], x_t
        for layer in range(L):
            h, c = s[2 * layer * H:(2 * layer + 1) * H], s[(2 * layer + 1) * H:(2 * layer + 2) * H]
            h, c = torch.lstm_cell(inp[None], (h[None], c[None]), getattr(lstm, f"weight_ih_l{layer}"),
                                   getattr(lstm, f"weight_hh_l{layer}"), getattr(lstm, f"bias_ih_l{layer}"),
                                   getattr(lstm, f"bias_hh_l{layer}"))
            out += [h[0], c[0]]
            inp = h[0]
        return torch.cat(out)

    for b in range(seq.shape[1]):
        s = torch.zeros(2 * H * L, dtype=F64)
        logdets = []
        for t in range(seq.shape[0] + zero):
            x_t = seq[t, b] if t < seq.shape[0] else torch.zeros(3, dtype=F64)
            if t >= warmup:
                logdets.append(torch.linalg.slogdet(torch.func.jacfwd(lambda v: step(x_t, v))(s)).logabsdet)
            s = step(x_t, s)
        expected = float(torch.stack(logdets).mean())
        assert abs(float(res.exponents[b].sum()) - expected) <= 1e-8 * max(1.0, abs(expected))


@gpu
@pytest.mark.parametrize("other", [3, 7, 50])
def test_cuda_independent_of_qr_every(cuda_path, other):
    lstm = make_lstm(4, 16, 2, gain=2.5, seed=3).cuda()
    seq = torch.randn(30, 5, 4, dtype=F64, device="cuda")
    kw = dict(zero_input_steps=40, warmup=5, dtype=F64, kernel_options=cuda_path)
    one = mdesc.lyapunov_spectrum(lstm, seq, 3, qr_every=1, **kw)
    many = mdesc.lyapunov_spectrum(lstm, seq, 3, qr_every=other, **kw)
    torch.testing.assert_close(one.exponents, many.exponents, rtol=1e-9, atol=1e-9)


@gpu
def test_cuda_runs_are_bit_identical_and_fully_written(cuda_path):
    lstm = make_lstm(8, 24, 2, gain=2.0, seed=1, dtype=torch.float32)
    prep = prepare(lstm, torch.randn(20, 9, 8), k=4, zero_input_steps=30, warmup=4, qr_every=6)
    args = _op_args(prep, "cuda")
    first = _ops.tangent_run(*args, **cuda_path)
    for _ in range(2):  # outputs start as NaN: every element must be written
        again = _ops.tangent_run(*args, **cuda_path, poison_outputs=True)
        for a, b in zip(first, again):
            assert torch.isfinite(b).all()
            assert torch.equal(a, b)


@gpu
def test_cuda_checkpoint_launch_split_changes_nothing(cuda_path):
    lstms = [make_lstm(3, 10, 1, gain=1.5, seed=s) for s in range(5)]
    seq = torch.randn(15, 4, 3, dtype=F64)
    kw = dict(k=2, zero_input_steps=10, qr_every=4, dtype=F64)
    whole = mdesc.lyapunov_checkpoints([m.cuda() for m in lstms], seq.cuda(), kernel_options=cuda_path, **kw)
    split = mdesc.lyapunov_checkpoints([m.cuda() for m in lstms], seq.cuda(), **kw,
                                       kernel_options=dict(cuda_path, cuda_max_checkpoints=2))
    torch.testing.assert_close(split.exponents, whole.exponents, rtol=1e-12, atol=1e-12)


@gpu
def test_cuda_forced_fused_path_too_big_is_an_error():
    lstm = make_lstm(4, 256, 1).cuda()
    with pytest.raises(RuntimeError, match="shared memory"):
        mdesc.max_lyapunov(lstm, torch.randn(3, 2, 4, dtype=F64, device="cuda"), dtype=F64,
                           kernel_options=dict(cuda_path="fused"))
    # the default, cuda_path="auto", falls back to the stepwise path
    r = mdesc.max_lyapunov(lstm, torch.randn(3, 2, 4, dtype=F64, device="cuda"), dtype=F64)
    assert torch.isfinite(r.exponents).all()


@gpu
def test_cuda_rejects_bad_lengths_like_cpu():
    prep = prepare(make_lstm(2, 3, 1), torch.randn(4, 2, 2, dtype=F64), k=1, dtype=F64)
    args = list(_op_args(prep, "cuda"))
    args[1] = torch.tensor([4, 5], device="cuda")
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 5 must be in \[1, T = 4\]"):
        _ops.tangent_run(*args)


@gpu
def test_cuda_opcheck():
    prep = prepare(make_lstm(3, 4, 2, seed=1), torch.randn(5, 2, 3, dtype=F64), k=3, zero_input_steps=2,
                   dtype=F64, warmup=1, qr_every=2)
    torch.library.opcheck(torch.ops.mdesc.tangent_run.default, _op_args(prep, "cuda"))
