"""The one chaining of each sequence's drive and zero-input phase, exactly per sequence.

The asymptotic window (docs/conventions.md §4) counts, for sequence b of a padded batch with
drive length l_b, the steps ``[l_b + warmup, T + Z)``; the finite-perturbation test perturbs its
twin at ``l_b`` or at 0 (§5).  The kernels share one re-orthonormalisation schedule and one set
of counted steps across a batch, so a per-sequence boundary cannot be a block boundary of one
call.  Instead :func:`chain` splits the batch into groups of equal drive length; for each group
one call runs the drive (``[0, l)``, every step counted: the driven-phase exponents) and a second
call continues from the state the drive left with zero input to ``T + Z`` (the frame restarted,
``warmup`` uncounted steps, then counted).  Every call still batches all checkpoints and every
sequence of its group; a batch of equal lengths (the papers' setting) costs two calls and no
extra steps.  The zero-input window of :mod:`mdesc.core.lyapunov`, the twins of
:mod:`mdesc.core.stability` and the shared record of :mod:`mdesc.core.twin` all run through it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import torch

from mdesc.core.engine import PreparedRun, lyapunov_result, run_prepared
from mdesc.core.results import LyapunovResult


def length_groups(lengths: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """``[(indices, l), ...]``: the sequences of each distinct drive length, shortest first."""
    return [(torch.nonzero(lengths == l).flatten(), int(l)) for l in torch.unique(lengths).tolist()]


def take(t: torch.Tensor, idx: torch.Tensor, dim: int) -> torch.Tensor:
    """The sequences ``idx`` of a tensor with a batch axis at ``dim`` (kept if it broadcasts)."""
    if t.shape[dim] == 1:
        return t
    return t.index_select(dim, idx.to(t.device)).contiguous()


def drive(prep: PreparedRun, idx: torch.Tensor, length: int) -> PreparedRun:
    """The drive ``[0, length)`` of the sequences ``idx`` (all of that length): every step counted."""
    x = prep.x[:, :length].index_select(2, idx.to(prep.x.device))
    return dataclasses.replace(
        prep, x=x.contiguous(),
        lengths=torch.full((x.shape[2],), length, dtype=torch.int64, device=prep.lengths.device),
        h0=take(prep.h0, idx, 2), c0=take(prep.c0, idx, 2), q0=take(prep.q0, idx, 1),
        zero_input_steps=0, warmup=0, window="all")


def zero_input(d_prep: PreparedRun, h0: torch.Tensor, c0: torch.Tensor, steps: int, warmup: int) -> PreparedRun:
    """``steps`` steps of zero input after a drive ``d_prep``, from the states (h0, c0) [C, L, G, H]
    it left (G sequences).

    The frame restarts as the drive's ``q0`` (the run's seeded frame); the first ``warmup`` steps
    are not counted.  (The kernels take at least one input step: it is a zero step.)
    """
    G = h0.shape[2]
    x = torch.zeros(1, 1, G, d_prep.x.shape[-1], dtype=d_prep.x.dtype, device=d_prep.x.device)
    return dataclasses.replace(
        d_prep, x=x, lengths=torch.ones(G, dtype=torch.int64, device=d_prep.lengths.device),
        h0=h0.contiguous(), c0=c0.contiguous(), zero_input_steps=steps - 1, warmup=warmup)


@dataclasses.dataclass
class Phases:
    """One group of sequences of equal drive length, run through :func:`chain`.

    idx         int64 [G], the group's sequences in the batch
    length      their drive length l
    drive       the drive's prepared run and ``drive_out``, what running it returned
                ``(block_logs, h_T, c_T, ...)``
    zero_input  the zero-input phase's prepared run and ``zero_input_out`` (None when the drive
                reaches the end of the run)
    """

    idx: torch.Tensor
    length: int
    drive: PreparedRun
    drive_out: tuple
    zero_input: PreparedRun | None
    zero_input_out: tuple | None


def chain(prep: PreparedRun, backend: str, *, run_drive: Callable | None = None,
          run_zero_input: Callable | None = None) -> Iterator[Phases]:
    """Each group of equal drive length: its drive ``[0, l)``, then zero input to ``prep.steps``
    from the state the drive left, ``prep.warmup`` steps uncounted.

    ``run_drive(d_prep, idx) -> (d_prep, out)`` replaces the drive's run (it may return another
    prepared drive, e.g. with the twins beside the runs); ``out[1:3]`` are the states the zero
    input starts from.  ``run_zero_input(z_prep, idx, drive_out) -> out`` replaces the zero-input
    phase's run.  Default: :func:`mdesc.core.engine.run_prepared` on ``backend``.
    """
    for idx, length in length_groups(prep.lengths.cpu()):
        d_prep = drive(prep, idx, length)
        if run_drive is None:
            d_out = run_prepared(d_prep, backend)
        else:
            d_prep, d_out = run_drive(d_prep, idx)
        z_prep = z_out = None
        rest = prep.steps - length
        if rest > 0:
            z_prep = zero_input(d_prep, d_out[1], d_out[2], rest, prep.warmup)
            z_out = run_prepared(z_prep, backend) if run_zero_input is None else run_zero_input(z_prep, idx, d_out)
        yield Phases(idx, length, d_prep, d_out, z_prep, z_out)


def zero_input_window(prep: PreparedRun, backend: str, run_zero_input: Callable | None = None) -> LyapunovResult:
    """Lyapunov result of the asymptotic window (see the module doc) of a run prepared with
    ``window="zero_input"``: exponents of each sequence's zero-input phase after ``prep.warmup``
    steps, and ``driven_exponents`` of its drive.  ``run_zero_input`` as in :func:`chain`
    (mdesc.core.twin runs its twin there)."""
    C, B, k = prep.weights.checkpoints, prep.x.shape[2], prep.k
    exponents = torch.full((C, B, k), float("nan"), dtype=torch.float64)
    driven = torch.full((C, B, k), float("nan"), dtype=torch.float64)
    nonfinite = torch.zeros(C, B, dtype=torch.bool)
    h_T = c_T = None
    groups = []
    for g in chain(dataclasses.replace(prep, checkpoint_axis=True), backend, run_zero_input=run_zero_input):
        idx = g.idx
        d_res = lyapunov_result(g.drive, *g.drive_out[:3], backend)
        z_res = lyapunov_result(g.zero_input, *g.zero_input_out[:3], backend)
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
    block_exponents, block_steps = _pad_blocks(groups, C, B, k)
    lengths = prep.lengths.cpu().tolist()
    settings = dict(prep.settings, backend=backend, window="zero_input",
                    driven_counted_steps=lengths[0] if len(groups) == 1 else lengths)
    if not prep.checkpoint_axis:
        exponents, driven, block_exponents, nonfinite = exponents[0], driven[0], block_exponents[0], nonfinite[0]
        h_T, c_T = h_T[0], c_T[0]
    return LyapunovResult(exponents, block_exponents, block_steps, nonfinite, h_T, c_T, settings,
                          driven_exponents=driven)


def _pad_blocks(groups, C: int, B: int, k: int):
    """Block exponents [C, B, nblocks, k] (NaN padding) and block steps of groups of different
    windows: [nblocks] for one group, else [B, nblocks] (zeros for padding)."""
    nblocks = max(bs.numel() for _, _, bs in groups)
    block_exponents = torch.full((C, B, nblocks, k), float("nan"), dtype=torch.float64)
    per_sequence = torch.zeros(B, nblocks, dtype=torch.int64)
    for idx, be, bs in groups:
        block_exponents[:, idx, :bs.numel()] = be
        per_sequence[idx, :bs.numel()] = bs
    return block_exponents, per_sequence[0] if len(groups) == 1 else per_sequence


def run(prep: PreparedRun, backend: str) -> LyapunovResult:
    """The :class:`LyapunovResult` of a prepared run over its window (``prep.window``)."""
    if prep.window == "zero_input":
        return zero_input_window(prep, backend)
    return lyapunov_result(prep, *run_prepared(prep, backend), backend)
