"""The papers' finite-perturbation ("asymptotic stability") analysis and the reduced sum.

For each input sequence: drive the LSTM with it, then feed zero input, once from the given
initial state and once from h perturbed by Gaussian noise of standard deviation
``perturbation`` (every layer's h; c unperturbed).  With h_T the last layer's final hidden state,

    D_i  = |h'_T - h_T| + e^floor            (Euclidean norm; floor = -15 as in the paper)
    D~   = mean_i ln D_i                     (log of the geometric mean over sequences)
    reduced sum_i = sum_j h_T,j              (of the unperturbed run: the bifurcation diagram)

D~ at the floor means the perturbation died out (order); above it, it survived (chaos).  Both
trajectories of every sequence, of every checkpoint, run in one call of the fused kernel.
"""
from __future__ import annotations

import dataclasses
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
    settings      every setting (steps, perturbation, seed, floor, dtype, device, ...)
    """

    distance: torch.Tensor
    log_distance: torch.Tensor
    reduced_sum: torch.Tensor
    h_T: torch.Tensor
    settings: dict[str, Any]

    @property
    def ordered(self) -> torch.Tensor:
        """True where D~ sits at its floor (to 1e-6), i.e. every perturbation died out."""
        return self.log_distance <= self.settings["floor"] + 1e-6

    def __repr__(self) -> str:
        return (f"DistanceResult(log_distance={self.log_distance.tolist() if self.log_distance.dim() else float(self.log_distance):}, "
                f"B={self.distance.shape[-1]}, steps={self.settings['steps']}, "
                f"perturbation={self.settings['perturbation']:g})")


def asymptotic_distance(model: nn.Module | Sequence[nn.Module | dict], seq: torch.Tensor, *,
                        lengths=None, zero_input_steps: int = 1100, perturbation: float = 1e-6,
                        seed: int = 0, floor: float = -15.0, h0=None, c0=None,
                        dtype: torch.dtype = torch.float64, template: nn.Module | None = None,
                        backend: str = "fused") -> DistanceResult:
    """Distance between a run and its perturbed twin after drive + zero input (see module doc).

    Args:
        model: an LSTM model (as in :func:`mdesc.lyapunov_spectrum`), or a list of checkpoints
            (modules, or state dicts with ``template``) analysed together in one kernel call.
        seq: inputs or token ids, as in :func:`mdesc.lyapunov_spectrum`.
        lengths: drive lengths of a padded batch.
        zero_input_steps: zero-input steps after the drive (paper: 500 + 1100 = 1600 steps).
        perturbation: standard deviation of the Gaussian noise added to h0 of the twin.
        seed: seed of that noise (the same noise for every checkpoint).
        floor: log of the offset added to every distance (paper: -15).
        dtype: float64 by default: in float32, two runs that settle on the same fixed point
            still differ by rounding, ~1e-7, which is about e^-15 and would lift D~ off its floor.
    """
    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation > 0):
        raise ValueError(f"perturbation must be a positive finite number, got {perturbation!r}")
    checkpoint_axis = not isinstance(model, nn.Module)
    prep = _lyapunov.prepare(model, seq, k=0, lengths=lengths, zero_input_steps=zero_input_steps,
                             h0=h0, c0=c0, dtype=dtype, template=template,
                             checkpoint_axis=checkpoint_axis)
    B = prep.x.shape[2]
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(prep.h0.shape[1:], generator=g, dtype=torch.float64)
    noise = (perturbation * noise).to(device=prep.h0.device, dtype=prep.h0.dtype)
    twin = dataclasses.replace(
        prep,
        x=torch.cat([prep.x, prep.x], dim=2),
        lengths=torch.cat([prep.lengths, prep.lengths]),
        h0=torch.cat([prep.h0, prep.h0 + noise], dim=2),
        c0=torch.cat([prep.c0, prep.c0], dim=2),
    )
    _, h_T, _ = _lyapunov.run_prepared(twin, backend)
    last = h_T[:, -1].to(torch.float64)  # [C, 2B, H]
    distance = (last[:, B:] - last[:, :B]).norm(dim=-1) + math.exp(floor)
    log_distance = distance.log().mean(dim=-1)
    reduced_sum = last[:, :B].sum(dim=-1)
    h_final = h_T[:, -1, :B]
    if not checkpoint_axis:
        distance, log_distance, reduced_sum, h_final = distance[0], log_distance[0], reduced_sum[0], h_final[0]
    settings = dict(prep.settings, perturbation=float(perturbation), seed=seed, floor=floor,
                    backend=backend)
    for key in ("k", "warmup", "counted_steps", "qr_every", "q0_given"):
        settings.pop(key, None)
    return DistanceResult(distance.cpu(), log_distance.cpu(), reduced_sum.cpu(), h_final, settings)
