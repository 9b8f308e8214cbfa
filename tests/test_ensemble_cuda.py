"""The CUDA ensemble recurrence (csrc/cuda/ensemble*.{cu,cuh,h}: mdesc::ensemble_rnn_forward and
_backward on the GPU) against the torch autograd reference (mdesc.ensemble.recurrent.recurrence_torch)
and the CPU op.

Two groups, as in tests/test_cuda.py:

* ``emulated``: the CUDA kernels and their host loop compiled unchanged for the CPU
  (csrc/cuda/emulation/, one OS thread per CUDA thread; the batched GEMMs run through ATen on the
  CPU).  Checks the kernels' index arithmetic, the saved layout, the reverse-time loop and that
  every output element is written (outputs start as NaN), on every machine.
* ``gpu``: the compiled extension on a real device, skipped (with the reason) where there is none;
  the device x dtype matrix of tests/utils.py.

What the ops return (csrc/mdesc.cpp): forward (xproj, w_hh, b_hh, cell) -> (h_all, saved); backward
(dh_all, h_all, saved, w_hh, cell) -> (dxproj, dhproj), dhproj = dL/d(W_hh h_{t-1} + b_hh).  The
weight gradients follow from dhproj: dW_hh = sum_{t,b} dhproj_t^T h_{t-1}, db_hh = sum dhproj.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cell_cases import DETERMINISTIC
from emulation import emulator
from mdesc.core import _ops
from mdesc.ensemble.recurrent import CELL_GATES, ensemble_recurrent, recurrence_torch
from utils import DEVICE_DTYPES, ids

F64 = torch.float64
CELLS = list(CELL_GATES)


def _problem(cell, E, T, B, H, dtype=F64, seed=0, gain=1.5):
    """Random xproj (E, T, B, GH), w_hh (E, GH, H), b_hh (E, GH) and an upstream gradient dh_all."""
    g = torch.Generator().manual_seed(seed)
    GH = CELL_GATES[cell] * H
    rnd = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=F64) * scale).to(dtype)  # noqa: E731
    return dict(xproj=rnd(E, T, B, GH), w_hh=rnd(E, GH, H, scale=gain / H ** 0.5), b_hh=rnd(E, GH, scale=0.3),
                dh_all=rnd(E, T, B, H))


def _reference(p, cell):
    """h_all and the gradients of sum(h_all * dh_all) wrt xproj, w_hh, b_hh, by autograd."""
    leaves = [p[k].detach().clone().requires_grad_(True) for k in ("xproj", "w_hh", "b_hh")]
    h = recurrence_torch(*leaves, cell)
    grads = torch.autograd.grad(h, leaves, p["dh_all"])
    return h.detach(), grads


def _weight_grads(dhproj, h_all):
    """dW_hh and db_hh from the op's dhproj (what mdesc/ensemble/_op.py forms)."""
    h_prev = torch.cat([torch.zeros_like(h_all[:, :1]), h_all[:, :-1]], 1)
    return torch.einsum("etbg,etbh->egh", dhproj, h_prev), dhproj.sum((1, 2))


def _assert_close(got, want, tol, what):
    """Equal within tol relative to the largest entry of ``want`` (at least 1): gradients of a tanh
    or relu RNN reach ~100 here, so a bare atol would depend on the draw's scale."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0  # rnn: saved is empty
    got = got.to(want.device, want.dtype)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def _assert_matches_reference(h_all, dxproj, dhproj, p, cell, tol):
    want_h, (dx, dw, db) = _reference(p, cell)
    dw_got, db_got = _weight_grads(dhproj, h_all)
    for name, got, want in (("h_all", h_all, want_h), ("dxproj", dxproj, dx), ("dw_hh", dw_got, dw),
                            ("db_hh", db_got, db)):
        _assert_close(got, want, tol, f"{cell} {name}")


# ------------------------------------------------------------------------------------------------
# emulated: the CUDA kernels compiled for the CPU

emulated = pytest.mark.slow


def _emulate(p, cell, threads=0, sms=1):
    emu = emulator()
    h_all, saved = emu.emulate_ensemble_forward(p["xproj"], p["w_hh"], p["b_hh"], cell, threads, sms)
    dxproj, dhproj = emu.emulate_ensemble_backward(p["dh_all"], h_all, saved, p["w_hh"], cell, threads, sms)
    return h_all, saved, dxproj, dhproj


@emulated
@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=10, **DETERMINISTIC)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 9), st.sampled_from([0, 32, 64]),
       st.sampled_from([1, 2]))
def test_emulated_matches_torch_reference_float64(cell, E, T, B, H, threads, sms):
    """Forward and every gradient equal autograd through the torch loop to rounding; threads and
    sms shrink the grid so the grid-stride loop runs several rounds."""
    p = _problem(cell, E, T, B, H, seed=E * 100 + T * 10 + H)
    h_all, saved, dxproj, dhproj = _emulate(p, cell, threads, sms)
    assert torch.isfinite(saved).all() and torch.isfinite(dhproj).all()  # every element written
    _assert_matches_reference(h_all, dxproj, dhproj, p, cell, tol=1e-12)


@emulated
@pytest.mark.parametrize("cell", CELLS)
def test_emulated_matches_torch_reference_float32(cell):
    """float32 at a size where a grid covers E*B*H = 2*3*70 units with 64-thread blocks; against
    the float64 reference the worst error is ~8e-7 of each output's scale (measured), 2e-5 allowed."""
    p = _problem(cell, 2, 12, 3, 70, dtype=torch.float32, seed=5)
    h_all, _, dxproj, dhproj = _emulate(p, cell, threads=64, sms=2)
    p64 = {k: v.double() for k, v in p.items()}
    _assert_matches_reference(h_all.double(), dxproj.double(), dhproj.double(), p64, cell, tol=2e-5)


@emulated
@pytest.mark.parametrize("cell", CELLS)
def test_emulated_equals_cpu_op(cell):
    """The emulated CUDA op returns what the CPU op returns: the same saved layout (one header
    defines it) and the same four outputs to rounding, in float64 and float32 (measured: <= 7e-16
    and 4e-7 of each output's scale)."""
    for dtype, tol in ((F64, 1e-13), (torch.float32, 1e-5)):
        p = _problem(cell, 3, 7, 2, 6, dtype=dtype, seed=11)
        h_all, saved, dxproj, dhproj = _emulate(p, cell, threads=32)
        h_cpu, saved_cpu = torch.ops.mdesc.ensemble_rnn_forward(p["xproj"], p["w_hh"], p["b_hh"], cell)
        dx_cpu, dhp_cpu = torch.ops.mdesc.ensemble_rnn_backward(p["dh_all"], h_cpu, saved_cpu, p["w_hh"], cell)
        for name, got, want in (("h_all", h_all, h_cpu), ("saved", saved, saved_cpu), ("dxproj", dxproj, dx_cpu),
                                ("dhproj", dhproj, dhp_cpu)):
            _assert_close(got, want, tol, f"{cell} {dtype} {name}")


@emulated
def test_emulated_nonfinite_stays_in_its_model_and_sequence():
    """A NaN in one model's input poisons only that (model, sequence) from that step on, forward
    and backward, as on the CPU: models and sequences never mix."""
    p = _problem("lstm", 3, 5, 2, 4, seed=3)
    p["xproj"][1, 2, 0, 5] = float("nan")
    h_all, _, dxproj, _ = _emulate(p, "lstm", threads=32)
    bad = torch.zeros(3, 5, 2, dtype=torch.bool)
    bad[1, 2:, 0] = True
    assert torch.isnan(h_all).any(-1).equal(bad)
    assert torch.isfinite(h_all[~bad]).all()
    # backward: the NaN reaches every step of that (model, sequence), and nothing else
    bad_back = torch.zeros(3, 5, 2, dtype=torch.bool)
    bad_back[1, :, 0] = True
    assert torch.isnan(dxproj).any(-1).equal(bad_back)
    assert torch.isfinite(dxproj[~bad_back]).all()


@emulated
def test_emulated_rejects_bad_input_like_the_cpu_op():
    """Each bad argument is refused with the CPU op's message (one check, readable on both devices)."""
    emu = emulator()
    p = _problem("gru", 2, 3, 2, 4)
    h_all, saved = emu.emulate_ensemble_forward(p["xproj"], p["w_hh"], p["b_hh"], "gru", 0, 1)
    cases = [
        (("lstm",), dict(), r"w_hh must be \(E, G\*H, H\) with G the cell's gate blocks, got \[2, 12, 4\]"),
        (("lsmt",), dict(), "cell must be one of lstm, gru, rnn_tanh, rnn_relu, got 'lsmt'"),
        (("gru",), dict(b_hh=p["b_hh"][:, :-1]), r"b_hh must be \(E, G\*H\)"),
        (("gru",), dict(b_hh=p["b_hh"].float()), r"b_hh must have the dtype of the others \(Double\)"),
        (("gru",), dict(xproj=p["xproj"].int()), "tensors must be float32 or float64"),
    ]
    for (cell,), over, msg in cases:
        q = dict(p, **over)
        for f in (emu.emulate_ensemble_forward, None):
            with pytest.raises(RuntimeError, match=msg):
                if f is None:
                    torch.ops.mdesc.ensemble_rnn_forward(q["xproj"], q["w_hh"], q["b_hh"], cell)
                else:
                    f(q["xproj"], q["w_hh"], q["b_hh"], cell, 0, 1)
    for args, msg in (((p["dh_all"], h_all, saved[..., 1:]), r"saved must be \(E, T, B, S\*H\)"),
                      ((p["dh_all"][:, 1:], h_all, saved), "dh_all must be .* the shape of h_all")):
        with pytest.raises(RuntimeError, match=msg):
            emu.emulate_ensemble_backward(*args, p["w_hh"], "gru", 0, 1)
        with pytest.raises(RuntimeError, match=msg):
            torch.ops.mdesc.ensemble_rnn_backward(*args, p["w_hh"], "gru")


# ------------------------------------------------------------------------------------------------
# gpu: the compiled kernels on a device

_NO_GPU = (not torch.cuda.is_available(), "no CUDA device")
_NO_KERNELS = (not _ops.WITH_CUDA, "mdesc was built without its CUDA kernels (build with FORCE_CUDA=1)")
gpu = pytest.mark.skipif(_NO_GPU[0] or _NO_KERNELS[0], reason=_NO_GPU[1] if _NO_GPU[0] else _NO_KERNELS[1])
CUDA_DTYPES = [(torch.device("cuda"), dt) for dt in (torch.float32, F64)]


def _on(p, device, dtype):
    return {k: v.to(device=device, dtype=dtype) for k, v in p.items()}


@gpu
def test_gpu_kernels_are_registered():
    for op in ("ensemble_rnn_forward", "ensemble_rnn_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mdesc::{op}", "CUDA")


@gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("device, dtype", CUDA_DTYPES, ids=ids(CUDA_DTYPES))
def test_gpu_op_equals_cpu_op(cell, device, dtype):
    """The four outputs on the device equal the CPU op's (same dtype), at a size with several
    blocks per step (E*B*H = 4*8*60).  Recurrent gain 1: float32 rounding (the GPU's fast-math
    activations against the CPU's) is not amplified much over the 20 steps."""
    tol = 1e-12 if dtype == F64 else 1e-4
    p = _problem(cell, 4, 20, 8, 60, dtype=dtype, seed=2, gain=1.0)
    h_cpu, saved_cpu = torch.ops.mdesc.ensemble_rnn_forward(p["xproj"], p["w_hh"], p["b_hh"], cell)
    dx_cpu, dhp_cpu = torch.ops.mdesc.ensemble_rnn_backward(p["dh_all"], h_cpu, saved_cpu, p["w_hh"], cell)
    q = _on(p, device, dtype)
    h, saved = torch.ops.mdesc.ensemble_rnn_forward(q["xproj"], q["w_hh"], q["b_hh"], cell)
    dx, dhp = torch.ops.mdesc.ensemble_rnn_backward(q["dh_all"], h, saved, q["w_hh"], cell)
    for name, got, want in (("h_all", h, h_cpu), ("saved", saved, saved_cpu), ("dxproj", dx, dx_cpu),
                            ("dhproj", dhp, dhp_cpu)):
        assert got.device.type == "cuda"
        _assert_close(got, want, tol, f"{cell} {dtype} {name}")


@gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, ids=ids(DEVICE_DTYPES))
def test_gpu_matrix_extension_equals_torch_backend(cell, device, dtype):
    """ensemble_recurrent(backend="extension") equals backend="torch" on every device and dtype,
    forward and every gradient (the autograd Function of mdesc/ensemble/_op.py around the op)."""
    tol = 1e-11 if dtype == F64 else 1e-4
    g = torch.Generator().manual_seed(4)
    E, T, B, I, H = 3, 15, 5, 7, 20
    GH = CELL_GATES[cell] * H
    shapes = dict(x=(E, T, B, I), w_ih=(E, GH, I), w_hh=(E, GH, H), b_ih=(E, GH), b_hh=(E, GH))
    args = {k: (torch.randn(*s, generator=g, dtype=F64) * (0.3 if k != "x" else 1.0)).to(device, dtype)
            for k, s in shapes.items()}
    dh = torch.randn(E, T, B, H, generator=g, dtype=F64).to(device, dtype)
    outs = {}
    for backend in ("torch", "extension"):
        leaves = {k: v.clone().requires_grad_(True) for k, v in args.items()}
        h = ensemble_recurrent(*leaves.values(), cell, backend=backend)
        outs[backend] = [h.detach()] + list(torch.autograd.grad(h, list(leaves.values()), dh))
    for name, a, b in zip(["h_all", *shapes], outs["extension"], outs["torch"]):
        _assert_close(a, b, tol, f"{cell} {device} {dtype} {name}")


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_runs_are_bit_identical(cell):
    p = _on(_problem(cell, 2, 9, 3, 33, seed=8), "cuda", torch.float32)
    first = torch.ops.mdesc.ensemble_rnn_forward(p["xproj"], p["w_hh"], p["b_hh"], cell)
    back = torch.ops.mdesc.ensemble_rnn_backward(p["dh_all"], *first, p["w_hh"], cell)
    again = torch.ops.mdesc.ensemble_rnn_forward(p["xproj"], p["w_hh"], p["b_hh"], cell)
    back2 = torch.ops.mdesc.ensemble_rnn_backward(p["dh_all"], *again, p["w_hh"], cell)
    for a, b in zip(first + back, again + back2):
        assert torch.isfinite(b).all() and torch.equal(a, b)


@gpu
def test_gpu_rejects_mixed_devices():
    p = _problem("rnn_tanh", 2, 3, 2, 4)
    with pytest.raises(RuntimeError, match="must be on cuda"):
        torch.ops.mdesc.ensemble_rnn_forward(p["xproj"].cuda(), p["w_hh"], p["b_hh"].cuda(), "rnn_tanh")


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_gpu_opcheck(cell):
    p = _on(_problem(cell, 2, 4, 3, 5, seed=1), "cuda", F64)
    torch.library.opcheck(torch.ops.mdesc.ensemble_rnn_forward.default, (p["xproj"], p["w_hh"], p["b_hh"], cell))
    h, saved = torch.ops.mdesc.ensemble_rnn_forward(p["xproj"], p["w_hh"], p["b_hh"], cell)
    torch.library.opcheck(torch.ops.mdesc.ensemble_rnn_backward.default, (p["dh_all"], h, saved, p["w_hh"], cell))
