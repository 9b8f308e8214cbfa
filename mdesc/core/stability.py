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
for the zero-input phases per distinct drive length (mdesc.core.windows).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from mdesc.core import lyapunov as _lyapunov


@dataclass
class DistanceResult:
    """Result of :func:`asymptotic_distance`; a leading C axis for checkpoint lists.

    distance      float64 [(C,) B]  D_i = |h'_T - h_T| + e^floor
    log_distance  float64 [(C,)]    D~ = mean_i ln D_i (NaN if any run went non-finite)
    reduced_sum   float64 [(C,) B]  sum_j h_T,j of the unperturbed run
    h_T           [(C,) B, H]       last layer's final hidden state of the unperturbed run
    collapsed     bool [(C,) B]     the twin (perturbed at t = 0) was bit-identical to the run at
                                    the end of the drive: the drive erased the perturbation, and
                                    this D_i says nothing about the zero-input dynamics (always
                                    False for ``perturb_at="drive_end"``)
    settings      every setting (steps, perturbation, perturb_at, seed, floor, dtype, ...)
    """

    distance: torch.Tensor
    log_distance: torch.Tensor
    reduced_sum: torch.Tensor
    h_T: torch.Tensor
    settings: dict[str, Any]
    collapsed: torch.Tensor | None = None

    @property
    def chaotic(self) -> torch.Tensor:
        """[(C,)] True where D~ is above its floor (by more than 1e-6): some perturbation survived."""
        return self.log_distance > self.settings["floor"] + 1e-6

    @property
    def ordered(self) -> torch.Tensor:
        """[(C,)] True where D~ sits at its floor (to 1e-6) and no twin was collapsed by the drive:
        every perturbation died out in the zero-input phase.  Where neither ``ordered`` nor
        ``chaotic`` holds, D~ is at its floor only because the drive collapsed twins: undetermined."""
        at_floor = self.log_distance <= self.settings["floor"] + 1e-6
        if self.collapsed is None:
            return at_floor
        return at_floor & ~self.collapsed.any(dim=-1)

    def __repr__(self) -> str:
        return (f"DistanceResult(log_distance={self.log_distance.tolist() if self.log_distance.dim() else float(self.log_distance):}, "
                f"B={self.distance.shape[-1]}, steps={self.settings['steps']}, "
                f"perturbation={self.settings['perturbation']:g}, "
                f"perturb_at={self.settings.get('perturb_at')}, "
                f"collapsed={int(self.collapsed.sum()) if self.collapsed is not None else 0})")


PERTURB_AT = ("drive_end", "start")


def asymptotic_distance(model: nn.Module | Sequence[nn.Module | dict], seq: torch.Tensor, *,
                        lengths=None, zero_input_steps: int = 1100, perturbation: float = 1e-6,
                        perturb_at: str = "drive_end", seed: int = 0, floor: float = -15.0,
                        h0=None, c0=None, dtype: torch.dtype | None = None,
                        template: nn.Module | None = None, backend: str = "fused",
                        kernel_options: dict | None = None,
                        method: str | None = None) -> DistanceResult:
    """Distance between a run and its perturbed twin after drive + zero input (see module doc).

    Args:
        model: an LSTM model (as in :func:`mdesc.lyapunov_spectrum`), or a list of checkpoints
            (modules, or state dicts with ``template``) analysed together.
        seq: inputs or token ids, as in :func:`mdesc.lyapunov_spectrum`.
        lengths: drive lengths of a padded batch; each sequence gets zero input after its own.
        zero_input_steps: zero-input steps after the drive (paper: 500 + 1100 = 1600 steps);
            every run, twin included, ends at step T + zero_input_steps.
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
    from mdesc.core import windows

    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation > 0):
        raise ValueError(f"perturbation must be a positive finite number, got {perturbation!r}")
    if perturb_at not in PERTURB_AT:
        raise ValueError(f"perturb_at must be 'drive_end' (perturb h where the zero input begins) or "
                         f"'start' (perturb h0 at t = 0), got {perturb_at!r}")
    from mdesc.core import twin

    if method is not None and method not in twin.METHODS:
        raise ValueError(f"method must be 'plain' (subtract two runs) or 'delta' (carry their difference "
                         f"without cancellation), got {method!r}")
    if method == "delta" or (method is None and dtype == torch.float32 and backend == "fused"):
        result = twin.asymptotic_distance_delta(
            model, seq, lengths=lengths, zero_input_steps=zero_input_steps, perturbation=perturbation,
            perturb_at=perturb_at, seed=seed, floor=floor, h0=h0, c0=c0,
            dtype=torch.float64 if dtype is None else dtype, template=template, backend=backend,
            dtype_source="default" if dtype is None else "explicit", kernel_options=kernel_options,
            lstm_only=method is None)
        if result is not None:
            return result  # (None: method=None on a cell without the delta kernel -> plain twin)
    checkpoint_axis = not isinstance(model, nn.Module)
    prep = _lyapunov.prepare(model, seq, k=0, lengths=lengths, zero_input_steps=zero_input_steps,
                             h0=h0, c0=c0, dtype=torch.float64 if dtype is None else dtype,
                             template=template,
                             checkpoint_axis=checkpoint_axis, kernel_options=kernel_options)
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(prep.h0.shape[1:], generator=g, dtype=torch.float64)  # [L, B, H]
    noise = (perturbation * noise).to(device=prep.h0.device, dtype=prep.h0.dtype)
    last = None
    collapsed = torch.zeros(C, B, dtype=torch.bool)
    for idx, length in windows.length_groups(prep.lengths.cpu()):
        G, dev_idx = idx.numel(), idx.to(prep.x.device)
        nz = noise.index_select(1, dev_idx)
        h_g = prep.h0.index_select(2, dev_idx) if prep.h0.shape[2] > 1 else prep.h0.expand(-1, -1, G, -1)
        c_g = prep.c0.index_select(2, dev_idx) if prep.c0.shape[2] > 1 else prep.c0.expand(-1, -1, G, -1)
        x_g = prep.x[:, :length].index_select(2, dev_idx)
        if perturb_at == "start":  # run and twin through the drive together
            d_prep = windows.drive(prep, idx, length, x=torch.cat([x_g, x_g], dim=2),
                                   h0=torch.cat([h_g, h_g + nz], dim=2), c0=torch.cat([c_g, c_g], dim=2))
            _, h_l, c_l = _lyapunov.run_prepared(d_prep, backend)
            collapsed[:, idx] = ((h_l[:, :, :G] == h_l[:, :, G:]).all(dim=3).all(dim=1)
                                 & (c_l[:, :, :G] == c_l[:, :, G:]).all(dim=3).all(dim=1)).cpu()
        else:  # the run's drive, then the twin branches off where the zero input begins
            d_prep = windows.drive(prep, idx, length, x=x_g, h0=h_g, c0=c_g)
            _, h_l, c_l = _lyapunov.run_prepared(d_prep, backend)
            h_l, c_l = torch.cat([h_l, h_l + nz], dim=2), torch.cat([c_l, c_l], dim=2)
        rest = prep.steps - length
        if rest > 0:
            z_prep = windows.zero_input(d_prep, torch.arange(2 * G), h_l, c_l, rest, 0)
            _, h_l, _ = _lyapunov.run_prepared(z_prep, backend)
        if last is None:
            last = torch.empty(C, 2, B, h_l.shape[-1], dtype=torch.float64)
        pair = h_l[:, -1].to(torch.float64).cpu()  # [C, 2G, H]
        last[:, 0, idx], last[:, 1, idx] = pair[:, :G], pair[:, G:]
    distance = (last[:, 1] - last[:, 0]).norm(dim=-1) + math.exp(floor)
    log_distance = distance.log().mean(dim=-1)
    reduced_sum = last[:, 0].sum(dim=-1)
    h_final = last[:, 0].to(device=prep.x.device, dtype=prep.x.dtype)
    if not checkpoint_axis:
        distance, log_distance, reduced_sum, h_final = distance[0], log_distance[0], reduced_sum[0], h_final[0]
        collapsed = collapsed[0]
    settings = dict(prep.settings, perturbation=float(perturbation), perturb_at=perturb_at,
                    dtype_source="default" if dtype is None else "explicit", method="plain",
                    seed=seed, floor=floor, backend=backend)
    for key in ("k", "warmup", "counted_steps", "qr_every", "q0_given"):
        settings.pop(key, None)
    return DistanceResult(distance, log_distance, reduced_sum, h_final, settings, collapsed)
