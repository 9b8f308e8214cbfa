"""Random recurrent problems for every cell the kernels support, and the conditioning-derived
tolerance the exact comparisons use (shared by tests/test_cells.py and tests/test_cuda.py)."""
from __future__ import annotations

import dataclasses
import math

import torch
from hypothesis import strategies as st

from mdesc.core import cells, reference_backend, schedule

CELLS = cells.CELLS  # "lstm", "gru", "rnn_tanh", "rnn_relu"
F64 = torch.float64
EPS64 = torch.finfo(F64).eps
# hypothesis settings of the tests that use these strategies: the same examples on every run
DETERMINISTIC = dict(derandomize=True, database=None, deadline=None)


def make_rnn(cell: str, I: int, H: int, L: int, *, gain: float = 1.0, bias: bool = True, seed: int = 0,
             batch_first: bool = False, dtype=F64) -> torch.nn.RNNBase:
    """nn.LSTM / nn.GRU / nn.RNN (tanh or relu) with N(0, gain^2 / H) parameters."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(num_layers=L, bias=bias, batch_first=batch_first)
    if cell == "lstm":
        rnn = torch.nn.LSTM(I, H, **kw)
    elif cell == "gru":
        rnn = torch.nn.GRU(I, H, **kw)
    else:
        rnn = torch.nn.RNN(I, H, nonlinearity="relu" if cell == "rnn_relu" else "tanh", **kw)
    rnn = rnn.to(dtype)
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * gain / H ** 0.5)
    return rnn.requires_grad_(False)


def state_dim(rnn: torch.nn.RNNBase) -> int:
    return (2 if isinstance(rnn, torch.nn.LSTM) else 1) * rnn.hidden_size * rnn.num_layers


@st.composite
def problems(draw, cell=None, max_k: int | None = None, hidden: tuple[int, int] = (1, 6), max_layers: int = 3):
    """A random small problem for one cell (drawn when ``cell`` is None): model, inputs (T, B, I),
    or (B, T, I) for a batch_first model, and run settings.  ``hidden``: the range of H."""
    cell = draw(st.sampled_from(CELLS)) if cell is None else cell
    L = draw(st.integers(1, max_layers))
    H = draw(st.integers(*hidden))
    I = draw(st.integers(1, 5))
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, 12))
    batch_first = draw(st.booleans())
    rnn = make_rnn(cell, I, H, L, gain=draw(st.sampled_from([0.5, 1.0, 3.0])), bias=draw(st.booleans()),
                   seed=draw(st.integers(0, 2**16)), batch_first=batch_first)
    n = state_dim(rnn)
    k = draw(st.integers(1, n if max_k is None else min(n, max_k)))
    zero = draw(st.integers(0, 8))
    seed = draw(st.integers(0, 2**16))
    seq = torch.randn(T, B, I, generator=torch.Generator().manual_seed(seed + 1), dtype=F64)
    return dict(cell=cell, rnn=rnn, seq=seq.transpose(0, 1) if batch_first else seq, k=k,
                kwargs=dict(zero_input_steps=zero, warmup=draw(st.integers(0, T + zero - 1)),
                            qr_every=draw(st.integers(1, 6)),
                            lengths=draw(st.lists(st.integers(1, T), min_size=B, max_size=B)), seed=seed))


def column_tolerance(prep, floor: float = 1e-12, factor: float = 64.0) -> torch.Tensor:
    """Per-column tolerance [k] on block logs for two correct float64 implementations of ``prep``.

    c_j = the largest log-growth gap max_{i <= j} g_i - g_j between column j and an earlier one
    over one block, over every re-orthonormalisation of the run, warm-up included (measured with
    the float64 reference), and the tolerance is floor + factor * eps * e^(c_j): Gram-Schmidt and
    Householder agree on column j to ~eps * e^(c_j).  (Measured on 150 random LSTM problems: the
    CPU and the emulated CUDA kernels stay below 6 * eps * e^(c_j).)  Columns from the first
    non-finite one on (a lost column, docs/conventions.md §3, or NaN), columns whose tolerance
    exceeds 1e-3 (no digits left), and every column after one of those, get inf: they are not
    compared (a later column is orthogonalised against the earlier one's rounding noise, so it
    carries none either).
    """
    g = reference_backend.run_prepared(prep, every_qr=True)[0].reshape(-1, prep.k)
    lost = torch.cumsum((~torch.isfinite(g)).to(torch.int64), dim=-1) > 0
    g = g.masked_fill(lost, 0.0)
    gap = (torch.cummax(g, dim=-1).values - g).masked_fill(lost, math.inf)
    worst = gap.amax(dim=0) if gap.shape[0] else torch.zeros(prep.k, dtype=F64)
    tol = floor + factor * EPS64 * (torch.exp(worst) + saturation(prep))
    return torch.cummax(tol.masked_fill(tol > 1e-3, math.inf), dim=0).values


def saturation(prep) -> float:
    """The largest, over re-orthonormalisation blocks, of the sum over the block's steps of
    max_units 1 / (1 - y) for every activation y of the step that a tangent coefficient takes
    1 - y or 1 - y^2 of (sigma gates: 1 - sigma; tanh: 1 - tanh^2 = (1 - t)(1 + t)).  Two
    implementations whose activations differ by an ulp (the CPU's approximations, libm, CUDA's
    intrinsics) differ in such a coefficient by eps / (1 - y) relatively, so in a block's log
    growth by about eps times this sum: a saturated unit's log-coefficient carries few digits."""
    w = prep.weights
    L, H = w.shape.num_layers, w.shape.hidden_size
    cell = w.cell
    halves = 2 if cell == "lstm" else 1
    T, B = prep.x.shape[1], prep.x.shape[2]
    S = prep.steps
    worst = 0.0
    t_idx = torch.arange(T)
    for c in range(w.checkpoints):
        params = [cells.layer_parameters(w.modules[c], layer) for layer in range(L)]
        params = [tuple(None if p is None else p.to(F64) for p in ps) for ps in params]
        x = prep.x[c if prep.x.shape[0] > 1 else 0].to(F64)
        x = x * (t_idx[:, None] < prep.lengths[None, :]).to(F64)[..., None]
        h = [prep.h0[c if prep.h0.shape[0] > 1 else 0][layer].to(F64) for layer in range(L)]
        cs = [prep.c0[c if prep.c0.shape[0] > 1 else 0][layer].to(F64) for layer in range(L)]
        block = torch.zeros(B, dtype=F64)
        for t in range(S):
            inp = x[t] if t < T else torch.zeros_like(x[0])
            kappa = torch.ones(B, dtype=F64)
            for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(params):
                gi = inp @ w_ih.T + (0 if b_ih is None else b_ih)
                gh = h[layer] @ w_hh.T + (0 if b_hh is None else b_hh)
                if cell == "lstm":
                    i, f, g, o = (gi + gh).chunk(4, dim=-1)
                    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
                    cs[layer] = f * cs[layer] + i * g
                    tc = torch.tanh(cs[layer])
                    h[layer] = o * tc
                    ys = [i, f, o, g.abs(), tc.abs()]
                elif cell == "gru":
                    ir, iz, in_ = gi.chunk(3, dim=-1)
                    hr, hz, hn = gh.chunk(3, dim=-1)
                    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                    n = torch.tanh(in_ + r * hn)
                    h[layer] = (1 - z) * n + z * h[layer]
                    ys = [r, z, n.abs()]
                else:
                    a = gi + gh
                    h[layer] = torch.tanh(a) if cell == "rnn_tanh" else torch.relu(a)
                    ys = [h[layer].abs()] if cell == "rnn_tanh" else []
                for y in ys:
                    kappa = torch.maximum(kappa, (1.0 / (1.0 - y).clamp_min(EPS64)).amax(dim=-1))
                inp = h[layer]
            block = block + kappa
            if schedule.qr_block_after_step(t + 1, prep.warmup, prep.qr_every, S) != -2:
                worst = max(worst, float(block.max()))
                block = torch.zeros(B, dtype=F64)
    return max(worst, float(block.max()) if block.numel() else 0.0)


def growth_bound(prep) -> float:
    """e^G, G >= 0 the largest log growth of the leading tangent vector over any stretch of
    re-orthonormalisation blocks of any run of ``prep`` (the float64 reference's every-QR logs of
    its first frame column): how much a rounding difference made at one step can grow by a later
    one.  Infinite growth (a non-finite run) gives inf."""
    lead = dataclasses.replace(prep, q0=prep.q0[..., :1].contiguous())
    g = reference_backend.run_prepared(lead, every_qr=True)[0][..., 0]   # [C, B, events]
    g = g.reshape(-1, g.shape[-1])
    g = torch.nan_to_num(g, nan=math.inf, posinf=math.inf, neginf=-1e300)
    best = torch.zeros(g.shape[0], dtype=F64)
    run = torch.zeros(g.shape[0], dtype=F64)
    for e in range(g.shape[1]):  # Kadane: the largest sum of consecutive blocks, >= 0
        run = torch.clamp_min(run + g[:, e], 0.0)
        best = torch.maximum(best, run)
    return float(torch.exp(best.max()))


def run_tolerance(prep, eps: float = EPS64, factor: float = 32.0) -> float:
    """Tolerance (relative and absolute) for two correct implementations' final states and block
    logs of ``prep`` that sum, round and approximate activations differently: each step adds
    differences of a few eps (``eps``: the coarser dtype compared), which later steps grow by at
    most ``growth_bound``, over the run's S steps: factor * eps * S * growth_bound.  It follows
    from what is compared, so no machine's rounding falls off a fixed cliff."""
    return factor * eps * max(prep.steps, 1) * growth_bound(prep)


def assert_columns_close(got: torch.Tensor, want: torch.Tensor, tol: torch.Tensor, what: str = "") -> None:
    """got, want [..., k] equal column by column within tol [k] (absolute), non-finite entries in
    the same places; columns with an infinite tolerance are skipped."""
    got = got.cpu()
    for j in range(want.shape[-1]):
        t = float(tol[j])
        if not math.isfinite(t):
            continue
        a, b = got[..., j], want[..., j]
        fin = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), fin), f"{what} column {j}: non-finite entries differ"
        err = float((a[fin] - b[fin]).abs().max()) if fin.any() else 0.0
        assert err <= t, f"{what} column {j}: difference {err:.3g} > tolerance {t:.3g}"
