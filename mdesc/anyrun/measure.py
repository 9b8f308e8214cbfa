"""One measurement, shared by the checkpoint sweep and the stability monitor.

For a batch of models (checkpoints of one architecture) and fixed probe inputs, each probe
sequence drives the model for its own length and zero input follows for ``zero_input_steps``
(docs/conventions.md §4-§5).  Per model this records, in the multiple-descent study's record
format (so its table, phase analysis and report read it unchanged):

- ``lyapunov_max`` / ``lyapunov_stderr`` / ``lyapunov`` / ``lyapunov_spectrum``: lambda_1 (and
  the top k) counted over the **zero-input phase only** (``window="zero_input"``, the
  asymptotic window), with ``lyapunov_max_driven`` / ``lyapunov_driven`` (the drive's) beside;
- ``log_distance`` / ``distance`` (= ``log_distance_drive_end`` / ``distance_drive_end``):
  D~ = mean_i ln D_i of twins perturbed where the zero input begins
  (``perturb_at="drive_end"``), and, when asked, ``log_distance_start`` / ``distance_start`` /
  ``collapsed_start`` / ``n_collapsed_start`` of twins perturbed at t = 0 (the paper's
  wording; a twin the drive made bit-identical to its run is *collapsed*: it says nothing);
- ``reduced_sum``: sum_j h_T,j of the unperturbed run (the bifurcation diagram).

Both measures run batched over models and sequences in the core's fused kernels
(:func:`mdesc.lyapunov_checkpoints`, :func:`mdesc.asymptotic_distance`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

TWINS = ("drive_end", "start")
DTYPES = ("float32", "float64")


@dataclass
class AnalysisSettings:
    """How every model is measured (recorded in the store; a resumed sweep must use the same).

    zero_input_steps: zero-input steps after each probe's drive (paper: 1100 after a 500-step
                      drive, 1600 in all).
    warmup:           uncounted steps at the start of the zero-input window for lambda_1.
    k:                Lyapunov exponents per sequence (1: lambda_1 only).
    qr_every:         re-orthonormalisation interval (None: the core's default).
    perturbation:     standard deviation of the twin's perturbation of h.
    twins:            where twins are perturbed: "drive_end" (always, the primary D~) and/or
                      "start" (t = 0).
    seed:             seeds the perturbation and the initial tangent frame.
    distance_dtype:   precision of the twin runs (float64: rounding stays below the e^-15 floor).
    lyapunov_dtype:   precision of the tangent runs (renormalised: float32 is accurate).
    """

    zero_input_steps: int = 1100
    warmup: int = 0
    k: int = 1
    qr_every: int | None = None
    perturbation: float = 1e-6
    twins: tuple[str, ...] = ("drive_end", "start")
    seed: int = 0
    distance_dtype: str = "float64"
    lyapunov_dtype: str = "float32"

    def check(self) -> "AnalysisSettings":
        def positive_int(name, v, minimum=1):
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")

        positive_int("zero_input_steps", self.zero_input_steps)
        positive_int("warmup", self.warmup, 0)
        positive_int("k", self.k)
        if self.qr_every is not None:
            positive_int("qr_every", self.qr_every)
        if self.warmup >= self.zero_input_steps:
            raise ValueError(f"warmup ({self.warmup}) must be below zero_input_steps "
                             f"({self.zero_input_steps}): lambda_1 counts the zero-input phase after it")
        if not (isinstance(self.perturbation, (int, float)) and math.isfinite(self.perturbation)
                and self.perturbation > 0):
            raise ValueError(f"perturbation must be a positive number, got {self.perturbation!r}")
        self.twins = tuple(self.twins)
        if "drive_end" not in self.twins or any(t not in TWINS for t in self.twins):
            raise ValueError(f"twins must include 'drive_end' and may add 'start', got {self.twins}")
        for name in ("distance_dtype", "lyapunov_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be float32 or float64, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _floats(a) -> list:
    return [_f(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def finite_mean_stderr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over sequences (axis 1) of the finite entries of x [C, B, k] and its standard error
    (std ddof=1 / sqrt(n)); NaN where fewer than 1 (mean) / 2 (stderr) values are finite."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    xs = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=1) / n
        var = (np.where(ok, x - mean[:, None, :], 0.0) ** 2).sum(axis=1) / (n - 1)
        stderr = np.sqrt(var / n)
    return np.where(n >= 1, mean, np.nan), np.where(n >= 2, stderr, np.nan)


def probe_for(model: nn.Module, seq: torch.Tensor) -> torch.Tensor:
    """The time-major probe in the layout the model's recurrent module expects."""
    rnn = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    return seq.transpose(0, 1) if rnn and rnn[0].batch_first else seq


def measure(models: Sequence[nn.Module], seq: torch.Tensor, lengths: torch.Tensor | None,
            settings: AnalysisSettings, index: Sequence[int] | None = None) -> list[dict]:
    """One record per model (see the module doc); ``seq`` is time major, on the models' device.

    Records hold no training-axis or metric fields; the caller adds them.
    """
    from mdesc.core import asymptotic_distance, lyapunov_checkpoints

    t0 = time.perf_counter()
    models = list(models)
    C = len(models)
    x = probe_for(models[0], seq)
    B = int(seq.shape[1])
    common = dict(lengths=lengths, zero_input_steps=settings.zero_input_steps, seed=settings.seed)
    lyap = lyapunov_checkpoints(models, x, k=settings.k, warmup=settings.warmup,
                                qr_every=settings.qr_every, window="zero_input",
                                dtype=getattr(torch, settings.lyapunov_dtype), **common)
    distances = {}
    for where in settings.twins:
        distances[where] = asymptotic_distance(models, x, perturbation=settings.perturbation,
                                               perturb_at=where,
                                               dtype=getattr(torch, settings.distance_dtype), **common)
    expo = lyap.exponents.detach().double().cpu().numpy().reshape(C, B, -1)
    driven = lyap.driven_exponents.detach().double().cpu().numpy().reshape(C, B, -1)
    nonfinite = lyap.nonfinite.detach().cpu().numpy().reshape(C, B)
    mean, stderr = finite_mean_stderr(expo)
    dmean, dstderr = finite_mean_stderr(driven)
    seconds = (time.perf_counter() - t0) / C
    index = list(range(B)) if index is None else [int(i) for i in index]
    out = []
    for c in range(C):
        prim = distances["drive_end"]
        rec = {
            "lyapunov_max": _f(mean[c, 0]),
            "lyapunov_stderr": _f(stderr[c, 0]),
            "nonfinite_fraction": float(nonfinite[c].mean()),
            "lyapunov_spectrum": _floats(mean[c]),
            "sample_index": index,
            "reduced_sum": _floats(prim.reduced_sum.reshape(C, B)[c]),
            "lyapunov": _floats(expo[c, :, 0]),
            "window": "zero_input",
            "lyapunov_max_driven": _f(dmean[c, 0]),
            "lyapunov_stderr_driven": _f(dstderr[c, 0]),
            "lyapunov_driven": _floats(driven[c, :, 0]),
        }
        for where, d in distances.items():
            rec[f"log_distance_{where}"] = _f(d.log_distance.reshape(C)[c])
            rec[f"distance_{where}"] = _floats(d.distance.reshape(C, B)[c])
            if where == "start":
                collapsed = d.collapsed.reshape(C, B)[c].cpu().numpy()
                rec["collapsed_start"] = [int(v) for v in collapsed]
                rec["n_collapsed_start"] = int(collapsed.sum())
        rec["log_distance"] = rec["log_distance_drive_end"]
        rec["distance"] = rec["distance_drive_end"]
        rec["seconds"] = seconds
        out.append(rec)
    return out


def label(record: dict, measure: str = "lyapunov", phase=None) -> str:
    """"ordered", "chaotic" or "unknown" for one record, by the multiple-descent study's rule and
    thresholds (:class:`mdesc.descent.PhaseSettings`, defaults unless ``phase`` is given):
    chaotic when lambda_1 > ``lyapunov_threshold``, or D~ - floor > ``distance_margin``."""
    if phase is None:
        from mdesc.descent import PhaseSettings

        phase = PhaseSettings()
    if measure == "lyapunov":
        v = record.get("lyapunov_max")
        return "unknown" if v is None else ("chaotic" if v > phase.lyapunov_threshold else "ordered")
    if measure == "distance":
        v = record.get("log_distance")
        return "unknown" if v is None else (
            "chaotic" if v - phase.floor > phase.distance_margin else "ordered")
    raise ValueError(f"measure must be 'lyapunov' or 'distance', got {measure!r}")
