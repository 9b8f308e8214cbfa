"""The reference backend: the same run in plain PyTorch, nothing shared with the kernels' math.

A step of each layer is PyTorch's own cell function (``torch.lstm_cell``, ``torch.gru_cell``,
``torch.rnn_tanh_cell``, ``torch.rnn_relu_cell``: the cell table's ``step``, :mod:`mdesc.core.cells`)
on the flat state in the tangent-space order (docs/conventions.md), tangent vectors are pushed
through it by forward-mode autodiff (``torch.func.jvp``, vmapped over the k vectors), and the
frame is re-orthonormalised with LAPACK's Householder QR (``torch.linalg.qr``) with signs fixed so
that diag R > 0.  One Python iteration per step, checkpoints one after another: this is the
straightforward script a researcher would write, which is why it is also the benchmark baseline.
The QR schedule is :mod:`mdesc.core.schedule`'s.

:func:`mdesc.core.engine.run_prepared` dispatches here for ``backend="reference"``; the public
functions with that backend are :mod:`mdesc.core.reference`'s.
"""
from __future__ import annotations

import functools
import math

import torch
from torch.func import jvp, vmap

from mdesc.core import cells, schedule


def _cell_params(weights, c: int, layer: int, like: torch.Tensor):
    """(cell table row, w_ih, w_hh, b_ih, b_hh) of one layer of checkpoint c for PyTorch's cell
    functions, read from the recurrent module itself (not from the kernels' layout), in ``like``'s
    dtype and device."""
    params = cells.layer_parameters(weights.modules[c], layer)
    return (cells.by_name(weights.cell),) + tuple(None if p is None else p.to(like) for p in params)


def _step(params, halves: int, H: int, s, x_t):
    """One step of every layer on the flat state s [B, n] (rows [h_1, c_1, ...] or [h_1, ...]);
    x_t [B, I].  Each layer is PyTorch's own cell function (the cell table's ``step``)."""
    out, inp = [], x_t
    for layer, (row, w_ih, w_hh, b_ih, b_hh) in enumerate(params):
        state = tuple(s[:, (halves * layer + j) * H:(halves * layer + j + 1) * H] for j in range(halves))
        state = row.step(inp, state, w_ih, w_hh, b_ih, b_hh)
        out += state
        inp = state[0]
    return torch.cat(out, dim=1)


# A frame column is lost at a re-orthonormalisation when R_jj <= LOST_COLUMN_EPS * eps(dtype) * its
# norm (docs/conventions.md §3, "Singular tangent maps"; the kernels' constant: kLostColumnEps in
# csrc/common/cell_math.h).
LOST_COLUMN_EPS = 64.0
# Householder's R_jj of an exactly dependent column carries rounding noise of up to ~eps * the
# conditioning of the earlier columns (~100 eps seen); columns whose Householder ratio is below this
# many times the threshold are decided by Gram-Schmidt, which keeps exact zeros exact.
_SCREEN = 2.0 ** 16


def lost_columns(q: torch.Tensor) -> torch.Tensor:
    """bool [B, k]: the lost columns of frames q [B, n, k]: R_jj <= LOST_COLUMN_EPS * eps * |q_j|,
    R_jj measured by classical Gram-Schmidt run twice in float64 against the earlier columns'
    orthonormal basis (in which a row that is zero in every column stays exactly zero), and every
    column after the first lost one."""
    ratio = LOST_COLUMN_EPS * torch.finfo(q.dtype).eps
    v = q.to(torch.float64)
    B, n, k = v.shape
    basis = v.new_zeros(B, n, k)
    lost = torch.zeros(B, k, dtype=torch.bool, device=q.device)
    for j in range(k):
        w = v[:, :, j:j + 1]
        nu = torch.linalg.vector_norm(w, dim=(1, 2))
        for _ in range(2):
            w = w - basis[:, :, :j] @ (basis[:, :, :j].transpose(1, 2) @ w)
        r = torch.linalg.vector_norm(w, dim=(1, 2))
        lost[:, j] = ~(r > ratio * nu) | (lost[:, j - 1] if j else False)
        basis[:, :, j:j + 1] = torch.where(lost[:, j, None, None], 0.0, w / r.clamp_min(1e-300)[:, None, None])
    return lost


def _qr(q: torch.Tensor):
    """Householder QR with diag R > 0: (Q [B, n, k], log R_ii [B, k] float64).  Lost columns
    (:func:`lost_columns`) are zero in Q with log R_ii = -inf; a frame with a non-finite entry gives
    NaN everywhere."""
    finite = torch.isfinite(q).flatten(-2).all(dim=-1)
    qq, r = torch.linalg.qr(q)
    diag = torch.diagonal(r, dim1=-2, dim2=-1)
    norms = torch.linalg.vector_norm(q.to(torch.float64), dim=-2)
    suspect = diag.abs().to(torch.float64) <= _SCREEN * LOST_COLUMN_EPS * torch.finfo(q.dtype).eps * norms
    lost = torch.zeros_like(suspect)
    if bool((suspect & finite[:, None]).any()):
        lost = lost_columns(q.masked_fill(~finite[:, None, None], 0.0)) & finite[:, None]
    qq = (qq * torch.sign(diag).unsqueeze(-2)).masked_fill(lost.unsqueeze(-2), 0.0)
    logs = torch.log(diag.abs()).to(torch.float64).masked_fill(lost, -math.inf)
    nan = float("nan")
    return (qq.masked_fill(~finite[:, None, None], nan), logs.masked_fill(~finite[:, None], nan))


def run_prepared(prep, *, every_qr: bool = False):
    """Same contract as ``torch.ops.mdesc.tangent_run`` on a prepared problem
    (a :class:`mdesc.core.engine.PreparedRun`).

    With ``every_qr``, the logs are those of every re-orthonormalisation, warm-up included,
    [C, B, events, k] (the growth of each column between two QRs: tests measure the conditioning
    of a run with it), instead of the counted blocks' sums.
    """
    w = prep.weights
    C = w.checkpoints
    L, H = w.shape.num_layers, w.shape.hidden_size
    halves = prep.q0.shape[-2] // (L * H)
    T, B = prep.x.shape[1], prep.x.shape[2]
    k, S = prep.k, prep.steps
    events = [t for t in range(1, S + 1) if schedule.qr_block_after_step(t, prep.warmup, prep.qr_every, S) != -2]
    nblocks = schedule.counted_blocks(S, prep.warmup, prep.qr_every) if k > 0 else 0
    logs = torch.zeros(C, B, len(events) if every_qr else nblocks, k, dtype=torch.float64)
    h_out, c_out = [], []
    t_idx = torch.arange(T, device=prep.x.device)
    for c in range(C):
        params = [_cell_params(w, c, layer, prep.x) for layer in range(L)]
        x = prep.x[c if prep.x.shape[0] > 1 else 0]
        # zero input after each sequence's own drive length
        x = x * (t_idx[:, None] < prep.lengths[None, :]).to(x.dtype)[..., None]
        zero = torch.zeros_like(x[0])
        h0 = prep.h0[c if prep.h0.shape[0] > 1 else 0]            # [L, B, H]
        c0 = prep.c0[c if prep.c0.shape[0] > 1 else 0]            # [L, B, H or 0]
        s = torch.cat([torch.cat([h0[layer], c0[layer]], dim=1) for layer in range(L)], dim=1)
        q = prep.q0[c if prep.q0.shape[0] > 1 else 0].expand(B, -1, -1)   # [B, n, k]
        event = 0
        for t in range(S):
            step = functools.partial(_step, params, halves, H, x_t=x[t] if t < T else zero)
            if k > 0:
                q = vmap(lambda v: jvp(step, (s,), (v,))[1], in_dims=2, out_dims=2)(q)
            s = step(s)
            block = schedule.qr_block_after_step(t + 1, prep.warmup, prep.qr_every, S)
            if k > 0 and block != -2:
                q, log_r = _qr(q)
                if every_qr:
                    logs[c, :, event] = log_r.cpu()
                elif block >= 0:
                    logs[c, :, block] += log_r.cpu()
                event += 1
        layers = s.reshape(B, L, halves, H)
        h_out.append(layers[:, :, 0].transpose(0, 1))
        c_out.append(layers[:, :, 1].transpose(0, 1) if halves == 2 else layers.new_zeros(L, B, 0))
    return logs, torch.stack(h_out), torch.stack(c_out)
