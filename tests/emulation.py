"""The CUDA kernels compiled for the CPU (csrc/cuda/emulation/: both runs, ``emulate`` and
``emulate_twin``) and the comparisons the CUDA tests make, shared by tests/test_cuda.py,
tests/test_cells.py and tests/test_twin.py."""
from __future__ import annotations

import functools
import os

import pytest
import torch

from cell_cases import F64, assert_columns_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def op_args(prep, device="cpu"):
    """Positional arguments of torch.ops.mdesc.tangent_run for a PreparedRun, on ``device``."""
    w = prep.weights
    mv = lambda ts: [t.to(device) for t in ts]  # noqa: E731
    return (prep.x.to(device), prep.lengths.to(device), mv(w.w_ih), mv(w.w_hh), mv(w.bias),
            prep.h0.to(device), prep.c0.to(device), prep.q0.to(device), prep.zero_input_steps,
            prep.warmup, prep.qr_every)


def assert_same_run(got, want, *, tol_state, tol_logs):
    """(block_logs, h_T, c_T) equal within tolerances.

    States: equal within tol_state (relative and absolute), non-finite entries in the same places.
    Block logs (docs/conventions.md §3): the same runs (checkpoint, sequence) are NaN somewhere,
    which is what the public API reports (the whole run as NaN); in the other runs, -inf (a column
    lost to a singular tangent map) in exactly the same places, and the finite logs equal column
    by column within ``tol_logs``: a number or one tolerance per column
    (cell_cases.column_tolerance; columns with an infinite tolerance, whose digits are rounding
    noise, are skipped)."""
    for name, a, b, tol in (("h_T", got[1], want[1], tol_state), ("c_T", got[2], want[2], tol_state)):
        a = a.cpu()
        fin = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), fin), f"{name}: non-finite entries differ"
        torch.testing.assert_close(a[fin], b[fin], rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")
    a, b = got[0].cpu(), want[0]
    nan_a = torch.isnan(a).flatten(2).any(dim=-1)
    nan_b = torch.isnan(b).flatten(2).any(dim=-1)
    assert torch.equal(nan_a, nan_b), "block_logs: the runs with a NaN log differ"
    a, b = a[~nan_b], b[~nan_b]
    tol = torch.as_tensor(tol_logs, dtype=F64).expand(b.shape[-1])
    exact = torch.isfinite(tol)
    assert torch.equal(torch.isneginf(a)[..., exact], torch.isneginf(b)[..., exact]), \
        "block_logs: the lost columns (-inf) differ"
    assert_columns_close(a, b, tol, "block_logs")


@functools.lru_cache(maxsize=1)
def emulator():
    from torch.utils.cpp_extension import is_ninja_available, load

    csrc = os.path.join(ROOT, "csrc")
    if not os.path.exists(os.path.join(csrc, "cuda", "emulation", "emulate.cpp")):
        pytest.skip("the CUDA sources (csrc/cuda) are not in this tree, e.g. testing an installed wheel")
    if not is_ninja_available():
        pytest.skip("building the CUDA emulation needs ninja (pip install ninja)")
    return load(name="mdesc_cuda_emulation", sources=[os.path.join(csrc, "cuda", "emulation", "emulate.cpp")],
                extra_include_paths=[csrc], extra_cflags=["-O1", "-std=c++20", "-pthread"],
                extra_ldflags=["-pthread"], verbose=False)


def emulate(args, path, bt=0, gc=0, max_ckpt=0, threads=0, cell="lstm"):
    """Outputs (block_logs, h_T, c_T) of the emulated CUDA path; they start as NaN, so an element
    the kernels never write shows up as a mismatch."""
    out = emulator().emulate(*args, cell, path, bt, gc, max_ckpt, threads)
    return tuple(out[:3])
