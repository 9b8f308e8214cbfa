"""Random LSTM problems shared by the core tests (hypothesis strategies and builders)."""
from __future__ import annotations

import torch
from hypothesis import strategies as st


def make_lstm(I: int, H: int, L: int, *, gain: float = 1.0, bias: bool = True, seed: int = 0,
              batch_first: bool = False, dtype=torch.float64) -> torch.nn.LSTM:
    """nn.LSTM with N(0, gain^2 / H) weights (so ``gain`` sets how expanding it is)."""
    g = torch.Generator().manual_seed(seed)
    lstm = torch.nn.LSTM(I, H, num_layers=L, bias=bias, batch_first=batch_first).to(dtype)
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * gain / H ** 0.5)
    return lstm.requires_grad_(False)


@st.composite
def problems(draw, max_k: int | None = None):
    """A random small problem: model, inputs and run settings."""
    L = draw(st.integers(1, 3))
    H = draw(st.integers(1, 6))
    I = draw(st.integers(1, 5))
    B = draw(st.integers(1, 4))
    T = draw(st.integers(1, 12))
    n = 2 * H * L
    k = draw(st.integers(1, n if max_k is None else min(n, max_k)))
    zero = draw(st.integers(0, 8))
    warmup = draw(st.integers(0, T + zero - 1))
    qr_every = draw(st.integers(1, 6))
    gain = draw(st.sampled_from([0.5, 1.0, 3.0]))
    seed = draw(st.integers(0, 2**16))
    lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
    lstm = make_lstm(I, H, L, gain=gain, seed=seed, bias=draw(st.booleans()))
    g = torch.Generator().manual_seed(seed + 1)
    seq = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    return dict(lstm=lstm, seq=seq, k=k, kwargs=dict(zero_input_steps=zero, warmup=warmup,
                qr_every=qr_every, lengths=lengths, seed=seed))


def conditioning(result) -> float:
    """Largest log growth ratio between frame columns within one block of ``result``.

    Gram-Schmidt (or Householder) loses ~eps * e^(this) of relative accuracy in the smallest
    columns, so two correct implementations agree only to that precision; tests restrict tight
    comparisons to well-conditioned cases.
    """
    growth = result.block_exponents * result.block_steps.to(result.block_exponents)[:, None]
    if not bool(torch.isfinite(growth).all()):
        return float("inf")  # a column collapsed to rounding noise: as ill-conditioned as it gets
    return float((growth.amax(dim=-1) - growth.amin(dim=-1)).max())


def problem_conditioning(p, k: int, qr_every: int) -> float:
    """:func:`conditioning` of problem ``p`` over *every* block, warm-up included.

    Warm-up blocks are not in a result's block exponents, but an ill-conditioned warm-up leaves
    the frame at its end accurate only to eps * e^(its spread), and that error carries into
    every counted exponent; so tests measure it on the same run with nothing discarded.
    """
    import mdesc

    kw = dict(p["kwargs"], warmup=0, qr_every=qr_every)
    run = mdesc.lyapunov_spectrum(p["lstm"], p["seq"], k, dtype=torch.float64, **kw)
    return conditioning(run)


def state_amplification(p) -> float:
    """How much problem ``p`` amplifies a rounding error of its state by the end of the run.

    With g_t the float64 one-step log growth of the leading direction (k = 1, renormalised every
    step), an error made at step t is amplified by at most about exp(max(0, g_t + ... + g_S))
    by the end; the sum over t bounds the accumulated forward error in units of the per-step
    rounding.  float32-vs-float64 state comparisons scale their tolerance by it instead of using
    a fixed cliff (an expanding draw legitimately differs by more).
    """
    import mdesc

    kw = dict(p["kwargs"], warmup=0, qr_every=1)
    run = mdesc.max_lyapunov(p["lstm"], p["seq"], dtype=torch.float64, **kw)
    g = run.block_exponents[..., 0]  # [B, steps]
    suffix = g.flip(-1).cumsum(-1).flip(-1)
    return float(suffix.clamp_min(0).exp().sum(-1).max())


def on(p, device):
    """Problem ``p`` with its model and inputs on ``device``."""
    import copy

    return dict(p, lstm=copy.deepcopy(p["lstm"]).to(device), seq=p["seq"].to(device))
