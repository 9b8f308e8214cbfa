"""The one measurement of a batch of checkpoints, and the one record each becomes.

For a batch of models (checkpoints of one architecture, as modules or as state dicts with a
template) and fixed probe inputs, each probe sequence drives the model, then zero input follows
(docs/conventions.md §4-§5).  Per model :func:`measure` returns one record:

- ``lyapunov_max`` / ``lyapunov_stderr`` / ``lyapunov`` / ``lyapunov_spectrum``: lambda_1 (and
  the top k), mean over sequences and its standard error, counted over the settings' ``window``
  (by default the zero-input phase), with ``lyapunov_max_driven`` / ``lyapunov_stderr_driven``
  / ``lyapunov_driven`` (the drive's exponent) beside when the window is the zero-input one;
- ``log_distance_<twin>`` / ``distance_<twin>`` for every twin (``drive_end``, ``start``):
  D~ = mean_i ln D_i; the t = 0 twin adds ``collapsed_start`` / ``n_collapsed_start``;
  ``log_distance`` / ``distance`` repeat the primary (first) twin's;
- ``reduced_sum``: sum_j h_T,j of the unperturbed run (the bifurcation diagram);
- ``nonfinite_fraction``, ``window``, ``sample_index``, ``seconds``; a model whose weights
  hold NaN or inf is not measured: its record is :func:`nonfinite_record`;
- from the engine, against the checkpoint before it on the training axis
  (:func:`param_change`): ``param_change`` (L2 norm of the change of every floating tensor),
  ``param_change_relative`` (divided by the L2 norm of the previous weights),
  ``param_change_tensors`` (tensor -> [|dW|, |dW| / |W_prev|]) and ``previous_epoch``.

The caller adds the training-axis fields (``epoch``, the checkpoint, the metrics) with
:func:`full_record`.  Everything runs batched over models and sequences in the core's fused
kernels (:func:`mdesc.lyapunov_checkpoints`, :func:`mdesc.asymptotic_distance`, and in
float32 on an LSTM :func:`mdesc.stability_record`, which gives lambda_1 and the drive-end
twin from one run, equal to the two calls to rounding).
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import mdesc
from mdesc.sweep.settings import SweepSettings

METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _floats(a) -> list:
    return [finite_or_none(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def finite_mean_stderr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over sequences (axis 1) of the finite entries of x (C, S, k), and its standard
    error (std with ddof=1 / sqrt(n finite)); NaN where fewer than 1 (mean) / 2 (stderr)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    xs = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=1) / n
        var = (np.where(ok, x - mean[:, None, :], 0.0) ** 2).sum(axis=1) / (n - 1)
        stderr = np.sqrt(var / n)
    return np.where(n >= 1, mean, np.nan), np.where(n >= 2, stderr, np.nan)


def _is_lstm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.LSTM) for m in model.modules())


def _core_results(models, x, lengths, settings: SweepSettings, zero_steps: int, template):
    """``(lyapunov result, {twin: distance result})`` from the core for one batch."""
    s = settings
    common = dict(lengths=lengths, zero_input_steps=zero_steps, seed=s.seed)
    if template is not None:
        common["template"] = template
    twins = list(s.twins)
    dist, lyap = {}, None
    # float32 throughout on an LSTM: lambda_1 (zero-input window) and the drive-end twin's D~
    # from one fused run (~1.4x the cost of lambda_1 alone instead of ~2x)
    one_run = (s.window == "zero_input" and "drive_end" in twins
               and s.distance_dtype == s.lyapunov_dtype == "float32"
               and _is_lstm(template if template is not None else models[0]))
    if one_run:
        lyap, dist["drive_end"] = mdesc.stability_record(
            models, x, k=s.k, warmup=s.warmup, qr_every=s.qr_every,
            perturbation=s.perturbation, dtype=torch.float32, **common)
    for twin in twins:
        if twin not in dist:
            dist[twin] = mdesc.asymptotic_distance(models, x, perturbation=s.perturbation,
                                             perturb_at=twin,
                                             dtype=getattr(torch, s.distance_dtype), **common)
    if lyap is None:
        lyap = mdesc.lyapunov_checkpoints(models, x, k=s.k, warmup=s.warmup, qr_every=s.qr_every,
                                    window=s.window, dtype=getattr(torch, s.lyapunov_dtype),
                                    **common)
    return lyap, {t: dist[t] for t in twins}


def measure(models: Sequence[Any], x: torch.Tensor, lengths: torch.Tensor | None,
            settings: SweepSettings, zero_steps: int, index: Sequence[int], *,
            template: nn.Module | None = None) -> list[dict]:
    """One record per model (see the module doc).

    ``models``: modules, or state dicts of ``template``; ``x``: the probe in the layout the
    models' recurrent module expects, on their device; ``lengths``: each sequence's drive
    length (None: the full length); ``index``: the analysed sequences' indices (recorded).
    """
    t0 = time.perf_counter()
    models = list(models)
    C, S = len(models), len(index)
    lyap, dist = _core_results(models, x, lengths, settings, zero_steps, template)
    expo = lyap.exponents.detach().double().cpu().numpy().reshape(C, S, -1)
    mean, stderr = finite_mean_stderr(expo)
    driven = getattr(lyap, "driven_exponents", None)
    if driven is not None:
        dexpo = driven.detach().double().cpu().numpy().reshape(C, S, -1)
        dmean, dstderr = finite_mean_stderr(dexpo[..., :1])
    nonfinite = lyap.nonfinite.detach().cpu().numpy().reshape(C, -1)
    seconds = (time.perf_counter() - t0) / C
    primary = list(dist)[0]
    red = dist[primary].reduced_sum.detach().double().cpu().numpy().reshape(C, S)
    out = []
    for c in range(C):
        rec = {
            "lyapunov_max": finite_or_none(mean[c, 0]),
            "lyapunov_stderr": finite_or_none(stderr[c, 0]),
            "nonfinite_fraction": float(nonfinite[c].mean()),
            "lyapunov_spectrum": _floats(mean[c]),
            "sample_index": [int(i) for i in index],
            "reduced_sum": _floats(red[c]),
            "lyapunov": _floats(expo[c, :, 0]),
            "window": settings.window,
            "seconds": seconds,
        }
        if driven is not None:
            rec.update(lyapunov_max_driven=finite_or_none(dmean[c, 0]),
                       lyapunov_stderr_driven=finite_or_none(dstderr[c, 0]),
                       lyapunov_driven=_floats(dexpo[c, :, 0]))
        for twin, d in dist.items():
            rec[f"log_distance_{twin}"] = finite_or_none(d.log_distance.reshape(C)[c])
            rec[f"distance_{twin}"] = _floats(d.distance.detach().reshape(C, S)[c].cpu())
            if twin == "start" and getattr(d, "collapsed", None) is not None:
                col = d.collapsed.reshape(C, S)[c].cpu().numpy()
                rec["collapsed_start"] = [int(v) for v in col]
                rec["n_collapsed_start"] = int(col.sum())
        rec["log_distance"] = rec[f"log_distance_{primary}"]
        rec["distance"] = rec[f"distance_{primary}"]
        out.append(rec)
    return out


def finite_weights(model: Any) -> bool:
    """Whether every floating tensor of a module or a state dict is finite (no NaN or inf)."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    return all(bool(torch.isfinite(v).all()) for v in sd.values()
               if isinstance(v, torch.Tensor) and v.is_floating_point())


def nonfinite_record(index: Sequence[int], settings: SweepSettings) -> dict:
    """The record of a model whose weights hold NaN or inf (a diverged checkpoint): nothing is
    measurable, so no exponent, distance or reduced sum, ``nonfinite_fraction`` 1 and
    ``nonfinite_weights`` true; the analysis labels it "unknown" and counts it nowhere.  The
    engine records such a checkpoint with it and carries on, as the monitor does."""
    nothing = [None] * len(index)
    rec = {"lyapunov_max": None, "lyapunov_stderr": None, "nonfinite_fraction": 1.0,
           "lyapunov_spectrum": [None] * settings.k, "sample_index": [int(i) for i in index],
           "reduced_sum": list(nothing), "lyapunov": list(nothing),
           "window": settings.window, "seconds": 0.0, "nonfinite_weights": True}
    if settings.window == "zero_input":
        rec.update(lyapunov_max_driven=None, lyapunov_stderr_driven=None,
                   lyapunov_driven=list(nothing))
    for twin in settings.twins:
        rec.update({f"log_distance_{twin}": None, f"distance_{twin}": list(nothing)})
    primary = settings.twins[0]
    rec.update(log_distance=None, distance=list(rec[f"distance_{primary}"]))
    return rec


def weights_of(model: Any) -> dict[str, torch.Tensor]:
    """The floating tensors of a module or a state dict, detached on the CPU (float64)."""
    sd = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: v.detach().to("cpu", torch.float64).clone() for k, v in sd.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point()}


def param_change(previous: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor]
                 ) -> dict[str, Any]:
    """The change of the weights from ``previous`` to ``current`` (tensors present in both with
    the same shape): total and per-tensor L2 norms, absolute and relative to |W_prev|."""
    per, sq_d, sq_w = {}, 0.0, 0.0
    for name, w in current.items():
        p = previous.get(name)
        if p is None or p.shape != w.shape:
            continue
        d, n = float(torch.linalg.vector_norm(w - p)), float(torch.linalg.vector_norm(p))
        per[name] = [finite_or_none(d), finite_or_none(d / n) if n > 0 else None]
        sq_d, sq_w = sq_d + d * d, sq_w + n * n
    total = math.sqrt(sq_d) if per else math.nan
    return {"param_change": finite_or_none(total),
            "param_change_relative": (finite_or_none(total / math.sqrt(sq_w))
                                      if sq_w > 0 else None),
            "param_change_tensors": per}


def metrics_of(values: Mapping[str, Any] | None) -> dict:
    """The four metrics of a checkpoint (None where unknown or not finite)."""
    values = values or {}
    return {k: (finite_or_none(values[k]) if values.get(k) is not None else None)
            for k in METRICS}


def full_record(epoch: int, checkpoint: str | None, metrics: Mapping[str, Any] | None,
                measured: Mapping[str, Any], **extra: Any) -> dict:
    """The stored record of one checkpoint: its training-axis value (``epoch``; ``extra``
    fields such as ``step`` follow it), where its weights came from, its metrics and the
    measurement."""
    return {"epoch": int(epoch), **extra, "checkpoint": checkpoint, **metrics_of(metrics),
            **measured}
