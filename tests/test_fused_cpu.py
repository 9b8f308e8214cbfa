"""The CPU kernel's fused step (csrc/cpu/fused_step.h: packed weights, register-tiled products and
the cell update in one pass, double-buffered h) against the float64 autograd reference and against
the unfused BLAS + pointwise path, on layers wide enough to take it (H >= one vector: the other
core tests use H <= 6, which runs the unfused path).

The fused path exists where the CPU has AVX2+FMA or AVX-512; :func:`test_detection_matches_cpu_flags`
checks that it is detected wherever /proc/cpuinfo says so, so the skip below cannot hide a
detection bug on an x86 machine.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mdesc
from mdesc.core import _ops, reference
from cell_cases import (CELLS, DETERMINISTIC, F64, assert_columns_close, column_tolerance, make_rnn, problems,
                        run_tolerance)
from mdesc.core.engine import prepare

LANES64 = _ops.cpu_fused_lanes(8)
LANES32 = _ops.cpu_fused_lanes(4)
fused_cpu = pytest.mark.skipif(LANES64 == 0, reason="this CPU has neither AVX2+FMA nor AVX-512: no fused step")
FUSED = dict(cpu_path="fused")
# On an AVX-512 CPU the AVX2 code is forced as well (cpu_path="fused_avx2"), so both instruction
# sets' code is tested wherever AVX-512 is; an AVX2-only CPU runs the AVX2 code under "fused".
PATHS = ["fused", "fused_avx2"] if LANES64 == 8 else ["fused"]


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_detection_matches_cpu_flags():
    """The instruction-set levels the code is compiled for (x86-64-v4 / -v3) against /proc/cpuinfo."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    v3 = {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"}
    v4 = v3 | {"avx512f", "avx512vl", "avx512dq", "avx512bw", "avx512cd"}
    if v4 <= flags:
        assert (LANES32, LANES64) == (16, 8)
    elif v3 <= flags:
        assert (LANES32, LANES64) == (8, 4)
    elif "avx2" not in flags or "fma" not in flags:
        assert (LANES32, LANES64) == (0, 0)
    else:
        pytest.skip("AVX2 without the rest of x86-64-v3: either answer is defensible")


def _wide(draw, cell=None, max_k=4):
    # H from one vector to past two (the last unit vector overlapping the one before, or not)
    return draw(problems(cell, max_k=max_k, hidden=(LANES64, 2 * LANES64 + 5), max_layers=2))


@fused_cpu
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=12, **DETERMINISTIC)
@given(data=st.data(), tile=st.sampled_from([1, 3, 7, 48]))
def test_fused_matches_float64_reference(cell, path, data, tile):
    """Every cell, 1-2 layers, sequences of their own lengths, tiles that leave partial column
    blocks: final states within the run's rounding growth, exponents within the columns' conditioning (>= 1e-9)."""
    p = _wide(data.draw, cell)
    kw = dict(p["kwargs"], dtype=F64)
    fused = mdesc.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], kernel_options=dict(cpu_path=path, cpu_tile_columns=tile),
                                    **kw)
    ref = reference.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], **kw)
    prep = prepare(p["rnn"], p["seq"], k=p["k"], **kw)
    tol_state = run_tolerance(prep)
    torch.testing.assert_close(fused.h_T, ref.h_T, rtol=tol_state, atol=tol_state)
    torch.testing.assert_close(fused.c_T, ref.c_T, rtol=tol_state, atol=tol_state)
    tol = column_tolerance(prep).clamp_min(1e-9)
    assert_columns_close(fused.exponents, ref.exponents, tol, "exponents")
    assert_columns_close(fused.block_exponents, ref.block_exponents, tol, "block exponents")


@fused_cpu
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=8, **DETERMINISTIC)
@given(data=st.data())
def test_fused_equals_unfused_path(cell, path, data):
    """The fused step and BLAS + pointwise (cpu_path='gemm') run the same arithmetic but for the
    order of the products' sums: float64 results agree to rounding (exponents: within the columns'
    conditioning, e.g. a ReLU net whose Jacobian loses rank), across checkpoints too."""
    p = _wide(data.draw, cell)
    kw = dict(p["kwargs"], dtype=F64)
    r = p["rnn"]
    models = [r, make_rnn(cell, r.input_size, r.hidden_size, r.num_layers, gain=1.5, seed=7, bias=r.bias,
                          batch_first=r.batch_first)]
    states = [m.state_dict() for m in models]
    runs = {path: mdesc.lyapunov_checkpoints(states, p["seq"], k=p["k"], template=models[0],
                                             kernel_options=dict(cpu_path=path), **kw)
            for path in (path, "gemm")}
    preps = [prepare(m, p["seq"], k=p["k"], **kw) for m in models]
    tol_state = max(run_tolerance(prep) for prep in preps)
    torch.testing.assert_close(runs[path].h_T, runs["gemm"].h_T, rtol=tol_state, atol=tol_state)
    tol = torch.stack([column_tolerance(prep) for prep in preps]).amax(0)
    assert_columns_close(runs[path].exponents, runs["gemm"].exponents, tol.clamp_min(1e-9), "exponents")


@fused_cpu
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cell", CELLS)
def test_float32_fused_at_the_paper_size(cell, path):
    """H = 60 (the paper's LSTM; the last float32 vector of 16 units overlaps), 2 layers, float32
    through the fused step against the float64 reference: exponents to 1e-3."""
    rnn = make_rnn(cell, 8, 60, 2, gain=1.2, seed=3)
    seq = torch.randn(30, 5, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    kw = dict(zero_input_steps=40, qr_every=5)
    truth = reference.lyapunov_spectrum(rnn, seq, 3, dtype=F64, **kw)
    got = mdesc.lyapunov_spectrum(rnn.float(), seq.float(), 3, kernel_options=dict(cpu_path=path), **kw)
    torch.testing.assert_close(got.exponents, truth.exponents, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(got.h_T.double(), truth.h_T, rtol=1e-4, atol=1e-4)


def test_cpu_path_is_checked():
    rnn = make_rnn("lstm", 3, 3, 1, seed=1)  # H = 3: narrower than a float64 vector with AVX2 (4) or AVX-512 (8)
    seq = torch.randn(5, 2, 3, dtype=F64)
    with pytest.raises(RuntimeError, match="cpu_path must be 'auto', 'fused', 'fused_avx2' or 'gemm'"):
        mdesc.lyapunov_spectrum(rnn, seq, 1, kernel_options=dict(cpu_path="fast"))
    with pytest.raises(RuntimeError, match="cpu_path='fused' cannot run here"):
        mdesc.lyapunov_spectrum(rnn, seq, 1, kernel_options=FUSED)
    # 'auto' falls back to the unfused path for narrow layers and gives the reference's answer
    auto = mdesc.lyapunov_spectrum(rnn, seq, 1, dtype=F64)
    ref = reference.lyapunov_spectrum(rnn, seq, 1, dtype=F64)
    torch.testing.assert_close(auto.exponents, ref.exponents, rtol=1e-9, atol=1e-9)


@fused_cpu
@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=10, **DETERMINISTIC)
@given(H=st.integers(1, 3).map(lambda m: m * LANES64 + 3 * (m - 1)), L=st.integers(1, 2), k=st.integers(1, 3),
       B=st.integers(1, 6), gain=st.sampled_from([0.5, 1.5, 4.0]), seed=st.integers(0, 2**16),
       start=st.booleans())
def test_twin_fused_equals_unfused(path, H, L, k, B, gain, seed, start):
    """The twin kernel's fused step (state, delta, tangents; csrc/cpu/fused_twin.cpp) against its
    BLAS + pointwise path, float64: the deltas keep relative precision, so D_i agree to 1e-12
    relative even where they are far below the floor; the record's exponents to 1e-9."""
    lstm = make_rnn("lstm", 4, H, L, gain=gain, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    seq = torch.randn(9, B, 4, dtype=F64, generator=g)
    lengths = torch.randint(1, 10, (B,), generator=g)
    kw = dict(lengths=lengths, zero_input_steps=25, perturbation=1e-6, seed=seed, dtype=F64, floor=-700.0)
    runs = {}
    for p in (path, "gemm"):
        opts = dict(cpu_path=p)
        d = mdesc.asymptotic_distance(lstm, seq, perturb_at="start" if start else "drive_end", method="delta",
                                      kernel_options=opts, **kw)
        lyap, rec = mdesc.stability_record(lstm, seq, k=k, qr_every=3, kernel_options=opts,
                                           **{key: v for key, v in kw.items()})
        runs[p] = (d, lyap, rec)
    (d1, l1, r1), (d2, l2, r2) = runs[path], runs["gemm"]
    for a, b in ((d1, d2), (r1, r2)):
        torch.testing.assert_close(a.distance, b.distance, rtol=1e-12, atol=0)
        torch.testing.assert_close(a.h_T, b.h_T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(l1.exponents, l2.exponents, rtol=1e-9, atol=1e-9)


@fused_cpu
@pytest.mark.parametrize("path", PATHS)
def test_twin_fused_float32_at_the_paper_size(path):
    """H = 60 in float32 (16-lane vectors, the last one overlapping): the fused twin's D~ against the
    float64 run of the same twin, for a contracting and an expanding model."""
    seq = torch.randn(40, 6, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    for gain in (0.8, 6.0):
        lstm = make_rnn("lstm", 8, 60, 1, gain=gain, seed=4)
        kw = dict(zero_input_steps=60, perturbation=1e-3, method="delta")
        want = mdesc.asymptotic_distance(lstm, seq, dtype=F64, **kw)
        got = mdesc.asymptotic_distance(lstm.float(), seq.float(), kernel_options=dict(cpu_path=path), **kw)
        torch.testing.assert_close(got.log_distance.double(), want.log_distance, rtol=1e-3, atol=1e-3)
