"""The result types of the core: :class:`LyapunovResult` and :class:`DistanceResult`.

Each carries what was computed and every setting of the run that computed it
(``settings``), so a printed number traces back to its settings.  Conventions:
docs/conventions.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from mdesc.core import derived


@dataclass
class LyapunovResult:
    """Lyapunov exponents and what is needed to trust them.

    Shapes use B sequences, k exponents and, for checkpoint batches, a leading C axis.

    exponents        float64 [(C,) B, k], natural log per step over the counted window
                     (``settings["window"]``: "all" or "zero_input", docs/conventions.md §4), in
                     the frame's Gram-Schmidt order, which is descending once converged
                     (finite-time estimates of close exponents may still be inverted); NaN where
                     the run went non-finite; -inf from the first column the frame lost on (see
                     ``lost_columns``)
    block_exponents  float64 [(C,) B, nblocks, k], local exponents of each re-orthonormalisation
                     block of the counted window (log growth in the block / its steps), to judge
                     convergence; NaN for padding blocks (see block_steps)
    block_steps      int64 [nblocks], counted steps in each block; int64 [B, nblocks] (zeros for
                     padding) when the windows of a zero-input-window run differ per sequence
                     (padded batches): either way it broadcasts as ``block_steps[..., None]``
                     against ``block_exponents``
    driven_exponents float64 [(C,) B, k] for ``window="zero_input"``: the exponents of each
                     sequence's drive (steps [0, l_b), all counted, from the initial frame);
                     None for ``window="all"``
    nonfinite        bool [(C,) B], runs whose state or tangent vectors became NaN/inf (their
                     exponents are NaN)
    (lost_columns)   property, int64 [(C,) B]: how many frame columns each run lost (docs/
                     conventions.md §3, "Singular tangent maps"): a column the steps of one
                     re-orthonormalisation block mapped to within LOST_COLUMN_EPS * eps of the
                     span of the earlier ones -- exactly (a dead ReLU unit, a zero weight row, a
                     gate saturated to exactly 0 or 1) or beyond the dtype's resolution (a growth
                     gap of more than ~ln(1/(64 eps)) per block: 11.8 nats in float32, 31 in
                     float64; use a smaller qr_every, or float64).  Its exponent and every later
                     one are -inf, the earlier ones exact.
    h_T, c_T         final states [(C,) L, B, H]
    settings         every setting of the run (k, steps, warmup, qr_every, seed, dtype, device,
                     backend, model shape, ...)
    """

    exponents: torch.Tensor
    block_exponents: torch.Tensor
    block_steps: torch.Tensor
    nonfinite: torch.Tensor
    h_T: torch.Tensor
    c_T: torch.Tensor
    settings: dict[str, Any]
    driven_exponents: torch.Tensor | None = None

    @property
    def lost_columns(self) -> torch.Tensor:
        """int64 [(C,) B]: the number of -inf exponents of each run, the frame columns lost to a
        singular tangent map or to the dtype's resolution (docs/conventions.md §3); 0 where
        ``nonfinite``."""
        return (torch.isneginf(self.exponents) & ~self.nonfinite[..., None]).sum(dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        """Mean over the batch, per exponent: [(C,) k]; NaN if any run went non-finite, -inf for
        an exponent that is -inf in some run (a singular tangent map)."""
        return self.exponents.mean(dim=-2)

    @property
    def stderr(self) -> torch.Tensor:
        """Standard error of ``mean`` over sequences (std with ddof=1 / sqrt(B)); NaN if B = 1."""
        B = self.exponents.shape[-2]
        if B < 2:
            return torch.full_like(self.mean, float("nan"))
        return self.exponents.std(dim=-2) / math.sqrt(B)

    def running_exponents(self) -> torch.Tensor:
        """Estimate after each block (cumulative log growth / cumulative steps): [(C,) B, nblocks, k].

        A converged estimate is flat over its last blocks (and stays at the final value over
        the padding blocks of a sequence whose window is shorter).
        """
        steps = self.block_steps.to(self.block_exponents)[..., None]
        growth = torch.where(steps > 0, self.block_exponents * steps, 0.0).cumsum(dim=-2)
        return growth / steps.cumsum(dim=-2)

    def derived(self, name: str, batches: int = 10):
        """A quantity derived from the spectrum, per sequence, with its batch-means error.

        ``name``: "positive_count" (number of positive exponents), "ks_entropy" (sum of the
        positive exponents, Pesin 1977) or "kaplan_yorke" (j + (λ_1+…+λ_j)/|λ_{j+1}|, Kaplan &
        Yorke 1979).  Refused, with the reason, when the k computed exponents do not determine
        it (e.g. all of them positive).  Formulas, errors and references: :mod:`mdesc.core.derived`.
        Returns a :class:`~mdesc.core.derived.Derived` (``value``, ``error``: [(C,) B]).
        """
        return derived.derive(name, self.exponents, self.block_exponents, self.block_steps,
                              n=self.settings.get("state_dim"), batches=batches)

    def positive_count(self, batches: int = 10):
        """Number of positive exponents per sequence (see :meth:`derived`)."""
        return self.derived("positive_count", batches)

    def ks_entropy(self, batches: int = 10):
        """Kolmogorov-Sinai entropy estimate per sequence, nats per step (see :meth:`derived`)."""
        return self.derived("ks_entropy", batches)

    def kaplan_yorke(self, batches: int = 10):
        """Kaplan-Yorke (Lyapunov) dimension per sequence (see :meth:`derived`)."""
        return self.derived("kaplan_yorke", batches)

    def __float__(self) -> float:
        """Mean of the largest exponent over every sequence (and checkpoint)."""
        return float(self.exponents[..., 0].mean())

    def __repr__(self) -> str:
        lead = self.exponents[..., 0]
        shape = "x".join(str(s) for s in self.exponents.shape)
        nonfinite = int(self.nonfinite.sum())
        return (f"LyapunovResult(exponents[{shape}], lambda_1 mean={float(lead.mean()):.6g}, "
                f"k={self.settings['k']}, steps={self.settings['steps']}, "
                f"window={self.settings.get('window', 'all')}, warmup={self.settings['warmup']}, "
                f"qr_every={self.settings['qr_every']}, "
                f"backend={self.settings['backend']}, nonfinite={nonfinite}, "
                f"lost_columns={int(self.lost_columns.sum())})")


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
