"""Pure-PyTorch autograd implementation of the same analyses: test oracle and benchmark baseline.

Nothing here shares math with the kernels.  A step of the stacked LSTM is ``torch.lstm_cell``
(PyTorch's own cell), tangent vectors are pushed through it by forward-mode autodiff
(``torch.func.jvp``, vmapped over the k vectors), and the frame is re-orthonormalised with
LAPACK's Householder QR (``torch.linalg.qr``) with signs fixed so that diag R > 0.  One Python
iteration per step, checkpoints one after another: this is the straightforward script a
researcher would write, which is why it is also the benchmark baseline.

The public functions mirror :mod:`mdesc.lyapunov` and :mod:`mdesc.stability` (same arguments and
results); input handling is shared with them through :func:`mdesc.lyapunov.prepare`.
"""
from __future__ import annotations

import functools

import torch
from torch.func import jvp, vmap

from mdesc.core import lyapunov as _lyapunov
from mdesc.core import stability as _stability


def _step(weights, c: int, h, cc, x_t):
    """One step of every layer: (h, c) [L, B, H] -> new (h, c); x_t [B, I]."""
    hs, cs = [], []
    inp = x_t
    for layer in range(len(weights.w_hh)):
        h_new, c_new = torch.lstm_cell(inp, (h[layer], cc[layer]), weights.w_ih[layer][c],
                                       weights.w_hh[layer][c], weights.bias[layer][c], None)
        hs.append(h_new)
        cs.append(c_new)
        inp = h_new
    return torch.stack(hs), torch.stack(cs)


def _frame_to_blocks(q: torch.Tensor, L: int, H: int):
    """[B, n, k] with rows [h_1, c_1, ...] -> (dh, dc) each [k, L, B, H]."""
    B, n, k = q.shape
    blocks = q.reshape(B, L, 2, H, k).permute(2, 4, 1, 0, 3)  # [2, k, L, B, H]
    return blocks[0], blocks[1]


def _blocks_to_frame(dh: torch.Tensor, dc: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_frame_to_blocks`."""
    k, L, B, H = dh.shape
    return torch.stack([dh, dc]).permute(3, 2, 0, 4, 1).reshape(B, 2 * L * H, k)


def _qr(q: torch.Tensor):
    """Householder QR with diag R > 0: (Q [B, n, k], log R_ii [B, k] float64)."""
    qq, r = torch.linalg.qr(q)
    diag = torch.diagonal(r, dim1=-2, dim2=-1)
    return qq * torch.sign(diag).unsqueeze(-2), torch.log(diag.abs()).to(torch.float64)


def run_prepared(prep: _lyapunov.PreparedRun):
    """Same contract as ``torch.ops.mdesc.lstm_tangent_run`` on a prepared problem."""
    w = prep.weights
    C = w.checkpoints
    L, H = w.shape.num_layers, w.shape.hidden_size
    T, B = prep.x.shape[1], prep.x.shape[2]
    k, S = prep.k, prep.steps
    nblocks = len(prep.block_steps()) if k > 0 else 0
    logs = torch.zeros(C, B, nblocks, k, dtype=torch.float64)
    h_out, c_out = [], []
    t_idx = torch.arange(T, device=prep.x.device)
    for c in range(C):
        x = prep.x[c if prep.x.shape[0] > 1 else 0]
        # zero input after each sequence's own drive length
        x = x * (t_idx[:, None] < prep.lengths[None, :]).to(x.dtype)[..., None]
        zero = torch.zeros_like(x[0])
        h = prep.h0[c if prep.h0.shape[0] > 1 else 0]
        cc = prep.c0[c if prep.c0.shape[0] > 1 else 0]
        q = prep.q0[c if prep.q0.shape[0] > 1 else 0].expand(B, -1, -1)
        dh, dc = _frame_to_blocks(q, L, H)
        for t in range(S):
            step = functools.partial(_step, w, c, x_t=x[t] if t < T else zero)
            if k > 0:
                push = lambda th, tc: jvp(step, (h, cc), (th, tc))[1]  # noqa: E731
                dh, dc = vmap(push)(dh, dc)
            h, cc = step(h, cc)
            s = t + 1
            do_qr = (s <= prep.warmup and (s % prep.qr_every == 0 or s == prep.warmup)) or (
                s > prep.warmup and ((s - prep.warmup) % prep.qr_every == 0 or s == S))
            if k > 0 and do_qr:
                q, log_r = _qr(_blocks_to_frame(dh, dc))
                if s > prep.warmup:
                    logs[c, :, (s - prep.warmup - 1) // prep.qr_every] += log_r.cpu()
                dh, dc = _frame_to_blocks(q, L, H)
        h_out.append(h)
        c_out.append(cc)
    return logs, torch.stack(h_out), torch.stack(c_out)


@functools.wraps(_lyapunov.lyapunov_spectrum)
def lyapunov_spectrum(*args, **kwargs):
    return _lyapunov.lyapunov_spectrum(*args, backend="reference", **kwargs)


@functools.wraps(_lyapunov.max_lyapunov)
def max_lyapunov(*args, **kwargs):
    return _lyapunov.max_lyapunov(*args, backend="reference", **kwargs)


@functools.wraps(_lyapunov.lyapunov_checkpoints)
def lyapunov_checkpoints(*args, **kwargs):
    return _lyapunov.lyapunov_checkpoints(*args, backend="reference", **kwargs)


@functools.wraps(_stability.asymptotic_distance)
def asymptotic_distance(*args, **kwargs):
    return _stability.asymptotic_distance(*args, backend="reference", **kwargs)
