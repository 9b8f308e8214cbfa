"""GRU and vanilla-RNN (tanh, relu) cells in the fused path, beside the LSTM: the kernels against
the float64 autograd reference and against identities that cannot be tuned to
(docs/conventions.md): determinant identity, qr_every independence, leading-k consistency, twin
runs, an order-to-chaos gain sweep; model extraction and the messages for what is not supported;
and the CUDA kernels of every cell through the CPU emulation (marked slow)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import mdesc
from mdesc.core import _ops, reference
from mdesc.core.engine import prepare
from cell_cases import (CELLS, DETERMINISTIC, F64, assert_columns_close, column_tolerance, make_rnn,
                        problems, run_tolerance, state_dim)
from emulation import assert_same_run, emulate, emulator, op_args

EXAMPLES = 12  # per cell; every test below draws the same examples on every run
# the LSTM's identities are tested in tests/test_lyapunov.py; here the cells added beside it
NEW_CELLS = ("gru", "rnn_tanh", "rnn_relu")


def _flat_step(rnn: nn.RNNBase, x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """One step of one sequence on the flat state s [n] (rows [h_1, c_1, ...] or [h_1, ...]) with
    PyTorch's cell functions and the module's own parameters."""
    H, L = rnn.hidden_size, rnn.num_layers
    halves = 2 if isinstance(rnn, nn.LSTM) else 1
    out, inp = [], x_t
    for layer in range(L):
        p = [getattr(rnn, f"{name}_l{layer}", None) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = s[halves * layer * H:(halves * layer + 1) * H][None]
        if isinstance(rnn, nn.LSTM):
            c = s[(2 * layer + 1) * H:(2 * layer + 2) * H][None]
            h, c = torch.lstm_cell(inp[None], (h, c), *p)
            out += [h[0], c[0]]
        else:
            fn = torch.gru_cell if isinstance(rnn, nn.GRU) else (
                torch.rnn_relu_cell if rnn.nonlinearity == "relu" else torch.rnn_tanh_cell)
            h = fn(inp[None], h, *p)
            out.append(h[0])
        inp = h[0]
    return torch.cat(out)


def _drive(seq_b: torch.Tensor, length: int, zero: int) -> list[torch.Tensor]:
    T = seq_b.shape[0]
    return [seq_b[t] if t < length else torch.zeros_like(seq_b[0]) for t in range(T)] + \
        [torch.zeros_like(seq_b[0])] * zero


def _time_major(p) -> torch.Tensor:
    return p["seq"].transpose(0, 1) if p["rnn"].batch_first else p["seq"]


def _tolerance(p, k: int, qr_every: int | None = None, q0=None) -> torch.Tensor:
    """column_tolerance of problem p, with at least 1e-9 (the issue's bound) on every column."""
    kw = dict(p["kwargs"], **({} if qr_every is None else {"qr_every": qr_every}))
    prep = prepare(p["rnn"], p["seq"], k=k, dtype=F64, q0=q0, **kw)
    return column_tolerance(prep).clamp_min(1e-9)


# ------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("cell", NEW_CELLS)
@settings(max_examples=EXAMPLES, **DETERMINISTIC)
@given(data=st.data())
def test_fused_matches_float64_reference(cell, data):
    """Same q0 (the seeded default frame), every depth, bias or not, batch_first either way:
    exponents and block exponents to <= 1e-9 (or the columns' conditioning, where worse), final
    states within the run's rounding growth (cell_cases.run_tolerance)."""
    p = data.draw(problems(cell, max_k=4))
    kw = dict(p["kwargs"], dtype=F64)
    fused = mdesc.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], **kw)
    ref = reference.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], **kw)
    tol_state = run_tolerance(prepare(p["rnn"], p["seq"], k=p["k"], **kw))
    torch.testing.assert_close(fused.h_T, ref.h_T, rtol=tol_state, atol=tol_state)
    torch.testing.assert_close(fused.c_T, ref.c_T, rtol=tol_state, atol=tol_state)
    tol = _tolerance(p, p["k"])
    assert_columns_close(fused.exponents, ref.exponents, tol, "exponents")
    assert_columns_close(fused.block_exponents, ref.block_exponents, tol, "block exponents")


@pytest.mark.parametrize("cell", NEW_CELLS)
@settings(max_examples=EXAMPLES, **DETERMINISTIC)
@given(data=st.data())
def test_full_spectrum_sum_is_mean_log_det_jacobian(cell, data):
    """Sum of all n exponents = mean over counted steps of log|det J_t| (torch.func.jacfwd of
    PyTorch's own cells)."""
    p = data.draw(problems(cell))
    rnn, seq, kw = p["rnn"], _time_major(p), p["kwargs"]
    n = state_dim(rnn)
    res = mdesc.lyapunov_spectrum(rnn, p["seq"], n, **{**kw, "qr_every": 1}, dtype=F64)
    tol = _tolerance(p, n, qr_every=1)
    if not bool(torch.isfinite(tol).all()) or bool(res.nonfinite.any()):
        return  # a column is lost to rounding (e.g. a relu unit switched off): no identity to test
    for b in range(seq.shape[1]):
        state = torch.zeros(n, dtype=F64)
        logdets = []
        for t, x_t in enumerate(_drive(seq[:, b], kw["lengths"][b], kw["zero_input_steps"])):
            if t >= kw["warmup"]:
                J = torch.func.jacfwd(lambda s: _flat_step(rnn, x_t, s))(state)
                logdets.append(torch.linalg.slogdet(J).logabsdet)
            state = _flat_step(rnn, x_t, state)
        expected = float(torch.stack(logdets).mean())
        assert math.isfinite(expected)
        bound = 1e-8 * max(1.0, abs(expected)) + float(tol.sum())
        assert abs(float(res.exponents[b].sum()) - expected) <= bound


@pytest.mark.parametrize("cell", NEW_CELLS)
@settings(max_examples=EXAMPLES, **DETERMINISTIC)
@given(data=st.data(), other=st.integers(2, 9))
def test_independent_of_qr_every(cell, data, other):
    p = data.draw(problems(cell, max_k=3))
    kw = dict(p["kwargs"], dtype=F64)
    one = mdesc.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], **{**kw, "qr_every": 1})
    many = mdesc.lyapunov_spectrum(p["rnn"], p["seq"], p["k"], **{**kw, "qr_every": other})
    tol = torch.maximum(_tolerance(p, p["k"], qr_every=1), _tolerance(p, p["k"], qr_every=other))
    # a frame that loses a column to exact zeros (a relu layer switching units off) is flagged
    # non-finite with one interval and left as rounding noise with another: compare the rest
    ok = ~(one.nonfinite | many.nonfinite)
    assert_columns_close(many.exponents[ok], one.exponents[ok], tol, "exponents")


@pytest.mark.parametrize("cell", NEW_CELLS)
@settings(max_examples=EXAMPLES, **DETERMINISTIC)
@given(data=st.data())
def test_leading_k_equal_top_of_full_spectrum(cell, data):
    p = data.draw(problems(cell))
    rnn, kw = p["rnn"], dict(p["kwargs"], dtype=F64)
    n = state_dim(rnn)
    q0 = mdesc.random_frame(n, n, seed=3)
    full = mdesc.lyapunov_spectrum(rnn, p["seq"], n, q0=q0, **kw)
    part = mdesc.lyapunov_spectrum(rnn, p["seq"], p["k"], q0=q0[:, :p["k"]], **kw)
    tol = _tolerance(p, n, q0=q0)[:p["k"]]
    ok = ~full.nonfinite  # a collapsed trailing column flags the whole full run (see above)
    assert_columns_close(part.exponents[ok], full.exponents[ok, :p["k"]], tol, "exponents")


def _twin_lambda(rnn, seq_b, zero: int, warmup: int, delta: float = 1e-7) -> float:
    """Largest exponent from a renormalised two-trajectory run (no Jacobians)."""
    n = state_dim(rnn)
    u = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=F64)
    a = torch.zeros(n, dtype=F64)
    b = a + delta * u / u.norm()
    total, counted = 0.0, 0
    for t, x_t in enumerate(_drive(seq_b, seq_b.shape[0], zero)):
        a, b = _flat_step(rnn, x_t, a), _flat_step(rnn, x_t, b)
        d = float((b - a).norm())
        if t >= warmup:
            total += math.log(d / delta)
            counted += 1
        b = a + (b - a) * (delta / d)
    return total / counted


# (a relu RNN past gain ~1.4 grows without bound, and a twin 1e-7 apart drowns in its rounding)
@pytest.mark.parametrize("cell, gain", [(c, g) for c in CELLS for g in (0.8, 1.3 if c == "rnn_relu" else 3.0)])
def test_lambda1_agrees_with_renormalised_twin(cell, gain):
    rnn = make_rnn(cell, 3, 8, 2, gain=gain, seed=11)
    seq = torch.randn(60, 1, 3, dtype=F64, generator=torch.Generator().manual_seed(11))
    res = mdesc.max_lyapunov(rnn, seq, zero_input_steps=140, warmup=100, qr_every=1, dtype=F64)
    twin = _twin_lambda(rnn, seq[:, 0], 140, warmup=100)
    # the frame aligns with the leading direction during warm-up; what remains is O(delta)
    assert abs(float(res) - twin) < 1e-4 + 1e-3 * abs(twin), (float(res), twin)


# gains that put each cell's zero-input dynamics on either side of the order-chaos transition
# (H = 64, no bias, N(0, gain^2 / H) weights; a relu RNN grows without bound past gain ~1.4, so
# its run is short and in float64)
SWEEP = {"lstm": (0.5, 20.0), "gru": (0.5, 20.0), "rnn_tanh": (0.5, 3.0), "rnn_relu": (0.5, 3.0)}


@pytest.mark.parametrize("cell", CELLS)
def test_gain_moves_lambda1_from_order_to_chaos(cell):
    lams = {}
    for gain in SWEEP[cell]:
        rnn = make_rnn(cell, 4, 64, 1, gain=gain, seed=5, bias=False)
        h0 = 0.1 * torch.randn(1, 4, 64, dtype=F64, generator=torch.Generator().manual_seed(5))
        res = mdesc.max_lyapunov(rnn, torch.zeros(1, 4, 4, dtype=F64), h0=h0, zero_input_steps=400,
                                 warmup=100, dtype=F64)
        assert not res.nonfinite.any()
        lams[gain] = res.exponents[:, 0]
    low, high = SWEEP[cell]
    assert bool((lams[low] < -0.05).all()), lams
    assert bool((lams[high] > 0.01).all()), lams


# ------------------------------------------------------------------------------- models


class Classifier(nn.Module):
    """Embedding -> cell -> Linear, as the papers' LSTM model."""

    def __init__(self, cell: str, vocab=20, emb=4, hidden=5, layers=2, batch_first=True):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.rnn = make_rnn(cell, emb, hidden, layers, gain=1.5, seed=2, batch_first=batch_first)
        self.readout = nn.Linear(hidden, 1)


@pytest.mark.parametrize("cell", CELLS)
def test_classifier_from_token_ids_equals_embedded_inputs(cell):
    model = Classifier(cell).double()
    ids = torch.randint(0, 20, (3, 7), generator=torch.Generator().manual_seed(1))  # (B, T)
    a = mdesc.lyapunov_spectrum(model, ids, 2, zero_input_steps=4, dtype=F64)
    b = mdesc.lyapunov_spectrum(model.rnn, model.embedding(ids).detach(), 2, zero_input_steps=4, dtype=F64)
    torch.testing.assert_close(a.exponents, b.exponents, rtol=0, atol=0, equal_nan=True)
    assert a.settings["state_dim"] == (2 if cell == "lstm" else 1) * 5 * 2


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
def test_final_state_matches_the_module_forward(cell, bias):
    rnn = make_rnn(cell, 3, 6, 3, gain=2.0, bias=bias, seed=4)
    seq = torch.randn(9, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    r = mdesc.max_lyapunov(rnn, seq, zero_input_steps=5, dtype=F64)
    _, state = rnn(torch.cat([seq, torch.zeros(5, 4, 3, dtype=F64)]))
    h = state[0] if cell == "lstm" else state
    torch.testing.assert_close(r.h_T, h, rtol=1e-12, atol=1e-12)
    if cell == "lstm":
        torch.testing.assert_close(r.c_T, state[1], rtol=1e-12, atol=1e-12)
    else:
        assert r.c_T.shape == (3, 4, 0)


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
def test_checkpoints_and_asymptotic_distance_take_every_cell(cell):
    models = [make_rnn(cell, 3, 5, 2, gain=g, seed=1) for g in (0.5, 3.0)]
    seq = torch.randn(6, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    batch = mdesc.lyapunov_checkpoints(models, seq, k=2, zero_input_steps=5, dtype=F64)
    for c, m in enumerate(models):
        single = mdesc.lyapunov_spectrum(m, seq, 2, zero_input_steps=5, dtype=F64)
        torch.testing.assert_close(batch.exponents[c], single.exponents, rtol=1e-13, atol=1e-13)
    for at in ("drive_end", "start"):
        d = mdesc.asymptotic_distance(models, seq, zero_input_steps=20, perturbation=1e-3, perturb_at=at,
                                      lengths=[6, 2, 4])
        r = reference.asymptotic_distance(models, seq, zero_input_steps=20, perturbation=1e-3, perturb_at=at,
                                          lengths=[6, 2, 4])
        torch.testing.assert_close(d.distance, r.distance, rtol=1e-9, atol=1e-15)
    d = mdesc.asymptotic_distance(models, seq, zero_input_steps=20, perturbation=1e-3, perturb_at="start")
    # by hand with the module: the twin starts from h0 + noise (every layer's h)
    noise = 1e-3 * torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = torch.cat([seq, torch.zeros(20, 3, 3, dtype=F64)])
    for c, m in enumerate(models):
        _, h = m(x)
        _, h2 = m(x, noise)
        torch.testing.assert_close(d.distance[c], (h2[-1] - h[-1]).norm(dim=-1) + math.exp(-15), rtol=1e-9, atol=1e-15)


def test_cell_state_is_refused_for_cells_without_one():
    with pytest.raises(ValueError, match="nn.GRU has no cell state"):
        mdesc.max_lyapunov(nn.GRU(3, 4), torch.randn(5, 2, 3), c0=torch.zeros(1, 2, 4))


@pytest.mark.parametrize(
    "model, match",
    [
        (nn.LSTM(3, 4, proj_size=2), "proj_size"),
        (nn.GRU(3, 4, bidirectional=True), "bidirectional nn.GRU"),
        (nn.RNN(3, 4, bidirectional=True), "bidirectional nn.RNN"),
        (nn.Sequential(nn.LSTM(3, 4), nn.GRU(4, 4)), r"2 recurrent modules \(1 nn.GRU, 1 nn.LSTM\)"),
        (nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 4)), "0 nn.LSTM, nn.GRU or nn.RNN"),
    ],
)
def test_unsupported_models_list_what_is_supported(model, match):
    with pytest.raises(ValueError, match=match) as err:
        mdesc.max_lyapunov(model, torch.randn(5, 2, 3))
    assert "nn.LSTM, nn.GRU and nn.RNN (tanh or relu)" in str(err.value)


def test_direct_op_call_checks_the_cells_shapes():
    x = torch.randn(1, 4, 2, 3)
    lengths = torch.tensor([4, 4])
    h0 = torch.zeros(1, 1, 2, 4)
    w = [torch.randn(1, 16, 3)], [torch.randn(1, 16, 4)], [torch.randn(1, 16)]
    with pytest.raises(RuntimeError, match=r"w_ih\[0\] must be \[1, 4, 3\] for cell rnn_tanh"):
        _ops.tangent_run(x, lengths, *w, h0, h0[..., :0], torch.zeros(1, 1, 4, 1), 0, 0, 1, cell="rnn_tanh")
    with pytest.raises(RuntimeError, match=r"c0 must be \[C\|1, L=1, B=2, 0\] for cell gru"):
        _ops.tangent_run(x, lengths, *w, h0, h0, torch.zeros(1, 1, 4, 1), 0, 0, 1, cell="gru")
    with pytest.raises(RuntimeError, match="cell must be one of lstm, gru, rnn_tanh, rnn_relu"):
        _ops.tangent_run(x, lengths, *w, h0, h0, torch.zeros(1, 1, 8, 1), 0, 0, 1, cell="elman")


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck(cell):
    prep = prepare(make_rnn(cell, 3, 4, 2, seed=1), torch.randn(5, 2, 3, dtype=F64), k=3, zero_input_steps=2,
                   dtype=F64, warmup=1, qr_every=2)
    w = prep.weights
    args = (prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0, prep.q0, 2, 1, 2)
    torch.library.opcheck(torch.ops.mdesc.tangent_run.default, args, dict(cell=cell))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_options_change_nothing_but_rounding(cell, dtype):
    rnn = make_rnn(cell, 5, 9, 2, gain=1.5, seed=1, dtype=dtype)
    seq = torch.randn(20, 5, 5, dtype=dtype, generator=torch.Generator().manual_seed(1))
    base = mdesc.lyapunov_spectrum(rnn, seq, 3)
    for options in (dict(portable_gemm=True), dict(cpu_tile_columns=1), dict(cpu_tile_columns=1000)):
        other = mdesc.lyapunov_spectrum(rnn, seq, 3, kernel_options=options)
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        torch.testing.assert_close(other.exponents, base.exponents, rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="unknown kernel_options"):
        mdesc.lyapunov_spectrum(rnn, seq, 3, kernel_options=dict(tile=4))


# ------------------------------------------------------------------------------- CUDA


gpu = pytest.mark.skipif(not (torch.cuda.is_available() and _ops.WITH_CUDA),
                         reason="no CUDA device, or mdesc built without its CUDA kernels")


@gpu
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("path", ["fused", "stepwise"])
@settings(max_examples=EXAMPLES, **DETERMINISTIC)
@given(data=st.data())
def test_cuda_matches_cpu(cell, path, data):
    p = data.draw(problems(cell, max_k=6))
    prep = prepare(p["rnn"], p["seq"], k=p["k"], dtype=F64, **p["kwargs"])
    want = _ops.tangent_run(*op_args(prep), cell=cell)
    got = _ops.tangent_run(*op_args(prep, "cuda"), cell=cell, cuda_path=path, poison_outputs=True)
    assert_same_run(got, want, tol_state=run_tolerance(prep), tol_logs=column_tolerance(prep))


@gpu
@pytest.mark.parametrize("cell", CELLS)
def test_cuda_gain_sweep_and_reference(cell):
    """The public API on the device: float64 against the reference, and the order-chaos sweep."""
    rnn = make_rnn(cell, 4, 16, 2, gain=2.0, seed=3)
    seq = torch.randn(12, 3, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    ref = reference.lyapunov_spectrum(rnn, seq, 3, zero_input_steps=10, dtype=F64)
    tol = column_tolerance(prepare(rnn, seq, k=3, zero_input_steps=10, dtype=F64)).clamp_min(1e-9)
    got = mdesc.lyapunov_spectrum(rnn.cuda(), seq.cuda(), 3, zero_input_steps=10, dtype=F64)
    assert_columns_close(got.exponents, ref.exponents, tol, "exponents")
    low, high = SWEEP[cell]
    lams = [float(mdesc.max_lyapunov(make_rnn(cell, 4, 64, 1, gain=g, seed=5, bias=False).cuda(),
                                     torch.zeros(1, 4, 4, dtype=F64, device="cuda"), zero_input_steps=400,
                                     warmup=100, dtype=F64,
                                     h0=0.1 * torch.randn(1, 4, 64, dtype=F64, device="cuda",
                                                          generator=torch.Generator("cuda").manual_seed(5))))
            for g in (low, high)]
    assert lams[0] < -0.05 and lams[1] > 0.01, lams


# ------------------------------------------------------------------------------- CUDA, emulated


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
@settings(max_examples=12, **DETERMINISTIC)
@given(data=st.data(), path=st.sampled_from(["fused", "stepwise"]), bt=st.integers(0, 3),
       threads=st.sampled_from([0, 64]))
def test_emulated_cuda_matches_cpu(cell, data, path, bt, threads):
    """Both CUDA paths of every cell, compiled for the CPU (tests/test_cuda.py's emulator), against
    the CPU kernel in float64; outputs start as NaN, so an element never written fails."""
    p = data.draw(problems(cell, max_k=5))
    prep = prepare(p["rnn"], p["seq"], k=p["k"], dtype=F64, **p["kwargs"])
    args = op_args(prep)
    want = _ops.tangent_run(*args, cell=cell)
    got = emulate(args, path, bt=bt, threads=threads, cell=cell)
    assert_same_run(got, want, tol_state=run_tolerance(prep), tol_logs=column_tolerance(prep))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("path", ["fused", "stepwise"])
def test_emulated_float32_with_the_h100_tile(cell, path):
    """Hidden 61, float32 and float64, two checkpoints, padded batch, the tile an H100 would pick.
    An RNN's rows of gate pre-activations (61 values) are no multiple of 16 bytes, so the fused
    path loads its weights and prefetches its input projection with plain loads; a GRU's
    (4 * 61 values) are, so it uses the 16-byte copies: both branches run."""
    for dtype in (torch.float32, torch.float64):
        rnns = [make_rnn(cell, 32, 61, 1, gain=g, seed=s, dtype=dtype) for s, g in enumerate((1.0, 3.0))]
        seq = torch.randn(6, 20, 32, dtype=dtype, generator=torch.Generator().manual_seed(0))
        prep = prepare(rnns, seq, k=1, lengths=[6, 3] * 10, zero_input_steps=4, warmup=2, qr_every=3,
                       dtype=dtype, checkpoint_axis=True)
        args = op_args(prep)
        want = _ops.tangent_run(*args, cell=cell)
        if path == "fused":
            assert emulator().h100_fused_config(2, 20, 1, 61, 1, dtype.itemsize, cell)[0] > 0
        # libm's tanh/exp (emulation) against the CPU's approximations, and another GEMM
        # summation order, amplified by the gain-3 checkpoint's chaos over 10 steps: the
        # tolerance follows from the dtype, the steps and the run's measured growth
        tol = run_tolerance(prep, eps=torch.finfo(dtype).eps)
        assert_same_run(emulate(args, path, cell=cell), want, tol_state=tol, tol_logs=tol)
