"""The drive and the zero-input phase of every sequence as two chained runs, exactly per sequence.

The asymptotic window (docs/conventions.md §4) counts, for sequence b of a padded batch with
drive length l_b, the steps ``[l_b + warmup, T + Z)``; the finite-perturbation test may perturb
its twin at ``l_b`` (§5).  The kernels share one re-orthonormalisation schedule and one set of
counted steps across a batch, so a per-sequence boundary cannot be a block boundary of one call.
Instead the batch is split into groups of equal drive length; for each group one call runs the
drive (``[0, l)``, every step counted: the driven-phase exponents) and a second call continues
from the state the drive left with zero input to ``T + Z`` (the frame restarted, ``warmup``
uncounted steps, then counted).  Every call still batches all checkpoints and every sequence of
its group; a batch of equal lengths (the papers' setting) costs two calls and no extra steps.
"""
from __future__ import annotations

import dataclasses

import torch

from mdesc.core import lyapunov as _lyapunov
from mdesc.core.lyapunov import PreparedRun


def length_groups(lengths: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """``[(indices, l), ...]``: the sequences of each distinct drive length, shortest first."""
    return [(torch.nonzero(lengths == l).flatten(), int(l)) for l in torch.unique(lengths).tolist()]


def _take(t: torch.Tensor | None, idx: torch.Tensor, dim: int) -> torch.Tensor | None:
    """The sequences ``idx`` of a tensor with a batch axis at ``dim`` (kept if it broadcasts)."""
    if t is None or t.shape[dim] == 1:
        return t
    return t.index_select(dim, idx.to(t.device)).contiguous()


def drive(prep: PreparedRun, idx: torch.Tensor, length: int, *, h0=None, c0=None,
          x: torch.Tensor | None = None) -> PreparedRun:
    """The drive ``[0, length)`` of the sequences ``idx`` (all of that length): every step counted."""
    x = prep.x[:, :length].index_select(2, idx.to(prep.x.device)) if x is None else x
    return dataclasses.replace(
        prep, x=x.contiguous(),
        lengths=torch.full((x.shape[2],), length, dtype=torch.int64, device=prep.lengths.device),
        h0=_take(prep.h0, idx, 2) if h0 is None else h0,
        c0=_take(prep.c0, idx, 2) if c0 is None else c0,
        q0=_take(prep.q0, idx, 1), zero_input_steps=0, warmup=0)


def zero_input(prep: PreparedRun, idx: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor,
               steps: int, warmup: int) -> PreparedRun:
    """``steps`` steps of zero input from the states (h0, c0) [C, L, G, H] of a group ``idx``.

    The frame restarts as ``prep.q0`` (the run's seeded frame); the first ``warmup`` steps are
    not counted.  (The kernels take at least one input step: it is a zero step.)
    """
    G = h0.shape[2]
    x = torch.zeros(1, 1, G, prep.x.shape[-1], dtype=prep.x.dtype, device=prep.x.device)
    return dataclasses.replace(
        prep, x=x, lengths=torch.ones(G, dtype=torch.int64, device=prep.lengths.device),
        h0=h0.contiguous(), c0=c0.contiguous(), q0=_take(prep.q0, idx, 1),
        zero_input_steps=steps - 1, warmup=warmup)


def spectrum(prep: PreparedRun, backend: str, warmup: int, zero_input_run=None):
    """Lyapunov result of the asymptotic window (see the module doc) for a prepared run.

    ``prep`` is the whole run (as for ``window="all"``, its own warmup unused); ``warmup`` counts
    from each sequence's drive end.  ``zero_input_run(z_prep, idx) -> (block_logs, h_T, c_T)``
    replaces the kernel call of each group's zero-input phase (mdesc.core.twin runs its twin
    there).  Returns a :class:`~mdesc.core.lyapunov.LyapunovResult`.
    """
    C, B, k = prep.weights.checkpoints, prep.x.shape[2], prep.k
    S = prep.steps
    exponents = torch.full((C, B, k), float("nan"), dtype=torch.float64)
    driven = torch.full((C, B, k), float("nan"), dtype=torch.float64)
    nonfinite = torch.zeros(C, B, dtype=torch.bool)
    h_T = c_T = None
    groups = []
    for idx, length in length_groups(prep.lengths.cpu()):
        d_prep = drive(dataclasses.replace(prep, checkpoint_axis=True), idx, length)
        d_res = _lyapunov._result(d_prep, *_lyapunov.run_prepared(d_prep, backend), backend)
        z_prep = zero_input(d_prep, torch.arange(idx.numel()), d_res.h_T, d_res.c_T,
                            S - length, warmup)
        z_out = _lyapunov.run_prepared(z_prep, backend) if zero_input_run is None else zero_input_run(z_prep, idx)
        z_res = _lyapunov._result(z_prep, *z_out, backend)
        if h_T is None:
            L, H = z_res.h_T.shape[1], z_res.h_T.shape[3]
            h_T = z_res.h_T.new_empty(C, L, B, H)
            # c_T is [C, L, B, 0] for cells without a cell state (GRU, RNN)
            c_T = z_res.c_T.new_empty(C, L, B, z_res.c_T.shape[3])
        exponents[:, idx] = z_res.exponents
        driven[:, idx] = d_res.exponents
        nonfinite[:, idx] = z_res.nonfinite
        h_T[:, :, idx.to(h_T.device)] = z_res.h_T
        c_T[:, :, idx.to(c_T.device)] = z_res.c_T
        groups.append((idx, z_res.block_exponents, z_res.block_steps))
    nblocks = max(g[2].numel() for g in groups)
    block_exponents = torch.full((C, B, nblocks, k), float("nan"), dtype=torch.float64)
    per_sequence = torch.zeros(B, nblocks, dtype=torch.int64)
    for idx, be, bs in groups:
        block_exponents[:, idx, :bs.numel()] = be
        per_sequence[idx, :bs.numel()] = bs
    uniform = len(groups) == 1
    block_steps = per_sequence[0] if uniform else per_sequence
    lengths = prep.lengths.cpu().tolist()
    counted = [S - length - warmup for length in lengths]
    settings = dict(prep.settings, backend=backend, window="zero_input", warmup=warmup,
                    counted_steps=counted[0] if uniform else counted,
                    driven_counted_steps=lengths[0] if uniform else lengths)
    if not prep.checkpoint_axis:
        exponents, driven, block_exponents, nonfinite = exponents[0], driven[0], block_exponents[0], nonfinite[0]
        h_T, c_T = h_T[0], c_T[0]
    return _lyapunov.LyapunovResult(exponents, block_exponents, block_steps, nonfinite, h_T, c_T,
                                    settings, driven_exponents=driven)
