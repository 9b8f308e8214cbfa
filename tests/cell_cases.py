"""Random recurrent problems for every cell the kernels support, and the conditioning-derived
tolerance the exact comparisons use (shared by tests/test_cells.py and tests/test_cuda.py)."""
from __future__ import annotations

import math

import torch
from hypothesis import strategies as st

from mdesc.core import cells, reference

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
    non-finite one on, and columns whose tolerance exceeds 1e-3 (no digits left), get inf: they
    are not compared.
    """
    g = reference.run_prepared(prep, every_qr=True)[0].reshape(-1, prep.k)
    lost = torch.cumsum((~torch.isfinite(g)).to(torch.int64), dim=-1) > 0
    g = g.masked_fill(lost, 0.0)
    gap = (torch.cummax(g, dim=-1).values - g).masked_fill(lost, math.inf)
    worst = gap.amax(dim=0) if gap.shape[0] else torch.zeros(prep.k, dtype=F64)
    tol = floor + factor * EPS64 * torch.exp(worst)
    return tol.masked_fill(tol > 1e-3, math.inf)


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
