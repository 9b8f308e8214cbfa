"""The papers' finite-perturbation ("asymptotic stability") analysis and the reduced sum.

For each input sequence: drive the LSTM with it, then feed zero input, once as it is and once
as a twin whose h (every layer's; c unperturbed) is perturbed by Gaussian noise of standard
deviation ``perturbation`` -- where the zero input begins, at the end of the sequence's own drive
(``perturb_at="drive_end"``, the default, as the published reproduction's code does), or at t = 0
(``perturb_at="start"``, the paper's wording).  With h_T the last layer's final hidden state,

    D_i  = |h'_T - h_T| + e^floor            (Euclidean norm; floor = -15 as in the paper)
    D~   = mean_i ln D_i                     (log of the geometric mean over sequences)
    reduced sum_i = sum_j h_T,j              (of the unperturbed run: the bifurcation diagram)

D~ at the floor means the perturbation died out (order); above it, it survived (chaos).  A drive
that contracts strongly can make a t = 0 twin bit-identical to its run before the zero input
begins; such a twin says nothing about the zero-input dynamics, is flagged ``collapsed`` and is
never counted as ordered.  Conventions: docs/conventions.md §5.  Both trajectories of every
sequence, of every checkpoint, run batched in the fused kernel: one call for the drives and one
for the zero-input phases per distinct drive length (:func:`mdesc.core.windows.chain`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from mdesc.core import engine, twin, windows
from mdesc.core.results import DistanceResult

def asymptotic_distance(model: nn.Module | Sequence[nn.Module | dict], seq: torch.Tensor, *,
                        lengths=None, zero_input_steps: int = engine.DISTANCE_ZERO_INPUT_STEPS,
                        perturbation: float = engine.PERTURBATION, perturb_at: str = engine.PERTURB_AT,
                        seed: int = engine.SEED, floor: float = engine.FLOOR,
                        h0=None, c0=None, dtype: torch.dtype | None = None,
                        template: nn.Module | None = None, backend: str = engine.BACKEND,
                        kernel_options: dict | None = None,
                        method: str | None = None) -> DistanceResult:
    """Distance between a run and its perturbed twin after drive + zero input (see module doc).

    Args:
        model: an LSTM model (as in :func:`mdesc.lyapunov_spectrum`), or a list of checkpoints
            (modules, or state dicts with ``template``) analysed together.
        seq: inputs or token ids, as in :func:`mdesc.lyapunov_spectrum`.
        lengths: drive lengths of a padded batch; each sequence gets zero input after its own.
        zero_input_steps: zero-input steps after the drive (paper: 500 + 1100 = 1600 steps);
            every run, twin included, ends at step T + zero_input_steps.  The default, 1100
            (engine.DISTANCE_ZERO_INPUT_STEPS), differs from the exponents' 0 because the
            distance is defined by a long zero-input phase, in which a perturbation dies out
            (order) or survives (chaos).
        perturbation: standard deviation of the Gaussian noise added to the twin's h.
        perturb_at: ``"drive_end"`` (default): perturb h where each sequence's zero input begins,
            after its own drive (the published reproduction's code; the zero-input dynamics
            alone decides).  ``"start"``: perturb h0 at t = 0 (the paper's wording); twins the
            drive makes bit-identical to their run are flagged in ``collapsed``.
        seed: seed of that noise (the same noise for every checkpoint).
        floor: log of the offset added to every distance (paper: -15).
        dtype: float64 by default, whatever the model's dtype (the one exception to "the
            analysis dtype follows the model"): in float32, two runs that settle on the same fixed
            point still differ by rounding, ~1e-7, which is about e^-15 and would lift D~ off its
            floor.  ``settings["dtype_source"]`` says "default" or "explicit".
        kernel_options: tuning keywords of the fused kernels, as in :func:`mdesc.lyapunov_spectrum`.
        method: ``"plain"`` (a second trajectory, subtracted at the end) or ``"delta"`` (the
            twin's difference carried beside the state without cancellation, mdesc.core.twin:
            relative precision on the distance, so float32 resolves D~ far below the floor; LSTM
            only).  None (default): "delta" for float32 LSTMs with the fused backend, "plain"
            otherwise.  Recorded in ``settings["method"]``.
    """
    perturbation = twin.check_perturbation(perturbation)
    if perturb_at not in engine.PERTURB_POINTS:
        raise ValueError(f"perturb_at must be 'drive_end' (perturb h where the zero input begins) or "
                         f"'start' (perturb h0 at t = 0), got {perturb_at!r}")
    if method is not None and method not in twin.METHODS:
        raise ValueError(f"method must be 'plain' (subtract two runs) or 'delta' (carry their difference "
                         f"without cancellation), got {method!r}")
    if method == "delta" and backend != "fused":
        raise ValueError(f"method='delta' runs in the fused kernels only (backend='fused'), got backend={backend!r}; "
                         "the reference backend has the plain twin (method='plain')")
    prep = engine.prepare(model, seq, k=0, lengths=lengths, zero_input_steps=zero_input_steps, h0=h0, c0=c0,
                          dtype=engine.DISTANCE_DTYPE if dtype is None else dtype, template=template,
                          checkpoint_axis=not isinstance(model, nn.Module), kernel_options=kernel_options)
    if method is None:  # the delta where it exists and float32 needs it
        lstm = prep.weights.cell == "lstm"
        method = "delta" if dtype == torch.float32 and backend == "fused" and lstm else "plain"
    nz = twin.noise(prep, perturbation, seed)
    if method == "delta":
        twin.check_lstm(prep)
        last, difference, collapsed = twin.delta_twins(prep, nz, perturb_at)
    else:
        last, twins, collapsed = _plain_twins(prep, nz, perturb_at, backend)
        difference = twins - last
    return twin.distance_result(prep, difference, last, collapsed, perturbation=perturbation,
                                perturb_at=perturb_at, dtype_source="default" if dtype is None else "explicit",
                                method=method, seed=seed, floor=floor, backend=backend)


def _plain_twins(prep: engine.PreparedRun, nz: torch.Tensor, perturb_at: str, backend: str):
    """The runs and their twins perturbed by ``nz`` [L, B, H] as a second batch of trajectories:
    (the runs' last layers [C, B, H], the twins' [C, B, H], both float64; collapsed bool [C, B])."""
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    last = None
    collapsed = torch.zeros(C, B, dtype=torch.bool)

    def run_drive(d_prep, idx):
        G, nz_g = idx.numel(), nz.index_select(1, idx.to(nz.device))
        h_g, c_g = d_prep.h0.expand(-1, -1, G, -1), d_prep.c0.expand(-1, -1, G, -1)
        if perturb_at == "start":  # run and twin through the drive together
            d_prep = dataclasses.replace(
                d_prep, x=torch.cat([d_prep.x, d_prep.x], dim=2).contiguous(), lengths=d_prep.lengths.repeat(2),
                h0=torch.cat([h_g, h_g + nz_g], dim=2).contiguous(), c0=torch.cat([c_g, c_g], dim=2).contiguous())
            logs, h_l, c_l = engine.run_prepared(d_prep, backend)
            collapsed[:, idx] = ((h_l[:, :, :G] == h_l[:, :, G:]).all(dim=3).all(dim=1)
                                 & (c_l[:, :, :G] == c_l[:, :, G:]).all(dim=3).all(dim=1)).cpu()
        else:  # the run's drive, then the twin branches off where the zero input begins
            d_prep = dataclasses.replace(d_prep, h0=h_g.contiguous(), c0=c_g.contiguous())
            logs, h_l, c_l = engine.run_prepared(d_prep, backend)
            h_l, c_l = torch.cat([h_l, h_l + nz_g], dim=2), torch.cat([c_l, c_l], dim=2)
        return d_prep, (logs, h_l, c_l)

    for g in windows.chain(prep, backend, run_drive=run_drive):
        h_l = (g.drive_out if g.zero_input_out is None else g.zero_input_out)[1]
        G = g.idx.numel()
        if last is None:
            last = torch.empty(C, 2, B, h_l.shape[-1], dtype=torch.float64)
        pair = h_l[:, -1].to(torch.float64).cpu()  # [C, 2G, H]
        last[:, 0, g.idx], last[:, 1, g.idx] = pair[:, :G], pair[:, G:]
    return last[:, 0], last[:, 1], collapsed
