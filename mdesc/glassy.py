"""Glassy dynamics near the learnability transition (study 2 of mdesc).

Deep recurrent nets of depth d and width w are trained by SGD on next-step prediction; this
module holds the model, a resumable training run that records what the analyses need, and the
analyses themselves. The analyses are plain functions of recorded arrays, not tied to any data
set or model:

* :func:`fit_power_law` -- ``L(t) ~ L_inf + A t^(-alpha)`` with uncertainties, and whether
  ``L_inf > 0`` significantly (a net too small to fit its training set);
* :func:`learning_time` and :func:`fit_critical_width` -- the time ``t*`` to reach a loss
  threshold, and the divergence ``t*(w) ~ C / (w - w_c)`` as the width approaches ``w_c``;
* :func:`aging_correlation` and :func:`aging_collapse` -- the mean-square weight change
  ``Delta(tau_w, tau) = mean_i (w_i(tau_w + tau) - w_i(tau_w))^2`` and how well the curves for
  different waiting times collapse against ``tau / tau_w`` (aging) compared with against ``tau``.

Time ``t`` is always counted in SGD updates; losses are cross-entropies in nats (per voice and
step for the chorale model).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from mdesc.store import atomic_write

__all__ = [
    "PowerLawFit", "fit_power_law",
    "learning_time", "CriticalWidthFit", "fit_critical_width",
    "log_spaced_times", "aging_schedule", "AgingCurves", "aging_correlation",
    "AgingCollapse", "aging_collapse", "analyze_sweep",
    "VoiceRNN", "GlassyConfig", "GlassyRun", "train_glassy_run", "load_glassy_run",
]


# ----------------------------------------------------------------------------------------------
# Power-law decay of the training loss
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PowerLawFit:
    """Result of :func:`fit_power_law` for ``L(t) = l_inf + amplitude * t^(-alpha)``.

    The ``*_err`` fields are one standard error (from the fit covariance, or the bootstrap
    standard deviation when ``method == "bootstrap"``). ``l_inf_p_value`` is the p-value of the
    nested-model F test of ``L_inf = 0`` (a pure power law, a straight line in log-log) against
    the free fit; ``l_inf_positive`` says ``l_inf > 0`` with ``l_inf_p_value < significance``.
    (The F test stays valid when the best ``L_inf`` sits at its bound 0, where a z-score from
    the covariance does not.) ``rms_log_residual`` is the root-mean-square of ``ln L - ln fit``.
    Records of SGD loss are autocorrelated, so treat the p-value as a rough guide.
    """

    l_inf: float
    amplitude: float
    alpha: float
    l_inf_err: float
    amplitude_err: float
    alpha_err: float
    l_inf_positive: bool
    l_inf_p_value: float
    significance: float
    covariance: np.ndarray  # (3, 3) for (l_inf, amplitude, alpha)
    rms_log_residual: float
    n_points: int
    t_min: float
    t_max: float
    method: str

    def predict(self, t) -> np.ndarray:
        """The fitted curve at times ``t``."""
        t = np.asarray(t, dtype=np.float64)
        return self.l_inf + self.amplitude * t ** (-self.alpha)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["covariance"] = np.asarray(self.covariance).tolist()
        return _jsonable(d)


def _power_law_log(t, l_inf, amplitude, alpha):
    return np.log(l_inf + amplitude * t ** (-alpha))


def _fit_power_law_once(t: np.ndarray, loss: np.ndarray):
    """Least squares in ln L over (l_inf >= 0, A > 0, alpha > 0), from several starts."""
    from scipy.optimize import curve_fit

    y = np.log(loss)
    best = None
    lmin = float(loss.min())
    for frac in (0.0, 0.5, 0.9, 0.99):
        l0 = frac * lmin
        excess = np.clip(loss - l0, 1e-300, None)
        # start for (A, alpha) from a straight line through ln(L - l0) vs ln t
        slope, intercept = np.polyfit(np.log(t), np.log(excess), 1)
        p0 = (l0, float(np.exp(intercept)), float(np.clip(-slope, 1e-3, 9.0)))
        try:
            popt, pcov = curve_fit(_power_law_log, t, y, p0=p0,
                                   bounds=([0.0, 0.0, 0.0], [np.inf, np.inf, 10.0]),
                                   max_nfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((y - _power_law_log(t, *popt)) ** 2))
        if best is None or sse < best[2]:
            best = (popt, pcov, sse)
    if best is None:
        raise RuntimeError("power-law fit did not converge from any starting point")
    return best


def fit_power_law(t, loss, t_min: float | None = None, t_max: float | None = None,
                  bootstrap: int = 0, seed: int = 0, significance: float = 0.05) -> PowerLawFit:
    """Fit ``L(t) ~ L_inf + A t^(-alpha)`` to a loss curve.

    t, loss: 1-D arrays of times (> 0) and losses (> 0), e.g. log-spaced records of a run.
    t_min, t_max: use only points with ``t_min <= t <= t_max`` (drop an early plateau).
    The fit is least squares in ``ln L`` (every decade of a log-spaced record weighs alike),
    with ``L_inf >= 0``, ``A >= 0``, ``0 <= alpha <= 10``.
    bootstrap: if > 0, the uncertainties come from that many residual-bootstrap refits
    (resampled residuals in ``ln L``, seeded by ``seed``) instead of the fit covariance.
    significance: level of the test ``L_inf > 0`` (see :class:`PowerLawFit`).
    """
    from scipy.stats import f as f_dist

    t = np.asarray(t, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if t.shape != loss.shape:
        raise ValueError(f"t has {t.size} points but loss has {loss.size}")
    keep = np.isfinite(t) & np.isfinite(loss) & (t > 0) & (loss > 0)
    if t_min is not None:
        keep &= t >= t_min
    if t_max is not None:
        keep &= t <= t_max
    t, loss = t[keep], loss[keep]
    if t.size < 4:
        raise ValueError(f"need at least 4 points with t > 0 and loss > 0 in the fit range, "
                         f"got {t.size}; record more times or widen t_min/t_max")
    popt, pcov, sse = _fit_power_law_once(t, loss)
    rms = math.sqrt(sse / t.size)
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        fitted = _power_law_log(t, *popt)
        resid = np.log(loss) - fitted
        samples = []
        for _ in range(bootstrap):
            y_star = fitted + rng.choice(resid, size=resid.size, replace=True)
            try:
                p_star, _, _ = _fit_power_law_once(t, np.exp(y_star))
            except RuntimeError:
                continue
            samples.append(p_star)
        samples = np.array(samples)
        cov = np.cov(samples.T) if len(samples) > 1 else np.full((3, 3), np.nan)
        err = np.sqrt(np.diag(cov))
        method = "bootstrap"
    else:
        cov = np.asarray(pcov, dtype=np.float64)
        if not np.all(np.isfinite(cov)):
            cov = np.full((3, 3), np.nan)
        err = np.sqrt(np.clip(np.diag(cov), 0, None))
        method = "curve_fit"
    # nested F test: pure power law (L_inf = 0: linear in log-log) against the free fit
    y = np.log(loss)
    line = np.polyfit(np.log(t), y, 1)
    sse0 = float(np.sum((y - np.polyval(line, np.log(t))) ** 2))
    sse1 = min(sse, sse0)
    n_free = t.size - 3
    if n_free < 1:
        p_value = math.nan
    elif sse1 <= 0:
        p_value = 0.0 if sse0 > 0 else 1.0
    else:
        p_value = float(f_dist.sf((sse0 - sse1) / (sse1 / n_free), 1, n_free))
    positive = bool(popt[0] > 0 and p_value < significance)
    return PowerLawFit(l_inf=float(popt[0]), amplitude=float(popt[1]), alpha=float(popt[2]),
                       l_inf_err=float(err[0]), amplitude_err=float(err[1]),
                       alpha_err=float(err[2]), l_inf_positive=positive,
                       l_inf_p_value=p_value,
                       significance=significance, covariance=cov, rms_log_residual=rms,
                       n_points=int(t.size), t_min=float(t.min()), t_max=float(t.max()),
                       method=method)


# ----------------------------------------------------------------------------------------------
# Learning time and its divergence at a critical width
# ----------------------------------------------------------------------------------------------

def learning_time(t, loss, threshold: float) -> float:
    """First time the loss reaches ``threshold``: ``t*`` with ``L(t*) = threshold``.

    t, loss: 1-D records in increasing ``t``. Between the last record above the threshold and
    the first at or below it, ``t*`` is interpolated linearly in ``(ln t, ln L)`` (exact for a
    local power law). Returns ``inf`` if the loss never reaches the threshold, and ``t[0]`` if it
    starts below it.
    """
    t = np.asarray(t, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    if t.shape != loss.shape:
        raise ValueError(f"t has {t.size} points but loss has {loss.size}")
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    below = np.flatnonzero(loss <= threshold)
    if below.size == 0:
        return math.inf
    k = int(below[0])
    if k == 0:
        return float(t[0])
    t0, t1, l0, l1 = t[k - 1], t[k], loss[k - 1], loss[k]
    if t0 <= 0 or l1 <= 0:  # cannot interpolate in logs: linear instead
        return float(t0 + (t1 - t0) * (l0 - threshold) / (l0 - l1))
    frac = (math.log(l0) - math.log(threshold)) / (math.log(l0) - math.log(l1))
    return float(math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0))))


@dataclasses.dataclass
class CriticalWidthFit:
    """Result of :func:`fit_critical_width` for ``t*(w) = amplitude / (w - w_c)``.

    w_c_err, amplitude_err: one standard error from the fit covariance (NaN with fewer than 3
    finite points). widths/t_star: the points used (finite ``t*``); unreached_widths: widths
    whose loss never reached the threshold (``t* = inf``; not fitted, but consistent with the
    fit only if they lie at or below ``w_c``). w_c_at_bound: the best ``w_c`` sits at the lower
    search bound, i.e. the data show no divergence at finite width.
    """

    w_c: float
    w_c_err: float
    amplitude: float
    amplitude_err: float
    covariance: np.ndarray  # (2, 2) for (w_c, amplitude)
    widths: np.ndarray
    t_star: np.ndarray
    unreached_widths: np.ndarray
    rms_log_residual: float
    w_c_at_bound: bool

    def predict(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        return np.where(w > self.w_c, self.amplitude / np.clip(w - self.w_c, 1e-300, None),
                        np.inf)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("covariance", "widths", "t_star", "unreached_widths"):
            d[k] = np.asarray(d[k]).tolist()
        return _jsonable(d)


def fit_critical_width(widths, t_star, w_c_min: float | None = None) -> CriticalWidthFit:
    """Fit ``t*(w) ~ C / (w - w_c)`` to learning times across a width sweep.

    widths, t_star: 1-D arrays; infinite (or NaN) ``t*`` mark widths that never learned and are
    left out of the fit. The fit is least squares in ``ln t*`` with ``w_c`` below the smallest
    fitted width; ``w_c_min`` (default ``min(w) - 100 * (max(w) - min(w))``) bounds it below.
    Needs at least 2 finite points (3 for uncertainties).
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    widths = np.asarray(widths, dtype=np.float64).ravel()
    t_star = np.asarray(t_star, dtype=np.float64).ravel()
    if widths.shape != t_star.shape:
        raise ValueError(f"{widths.size} widths but {t_star.size} learning times")
    finite = np.isfinite(t_star) & (t_star > 0)
    w, ts = widths[finite], t_star[finite]
    unreached = widths[~finite]
    if w.size < 2:
        raise ValueError(f"need learning times at >= 2 widths to fit w_c, got {w.size} "
                         "(train longer or raise the loss threshold)")
    order = np.argsort(w)
    w, ts = w[order], ts[order]
    w_lo = float(w.min())
    span = max(float(w.max() - w_lo), 1.0)
    hi = w_lo - 1e-6 * span
    lo = w_c_min if w_c_min is not None else w_lo - 100.0 * span
    y = np.log(ts)

    def model(wv, w_c, log_c):
        return log_c - np.log(np.clip(wv - w_c, 1e-300, None))

    # coarse scan of w_c (log C is then a closed-form mean), then refine with curve_fit
    gaps = np.geomspace(1e-4 * span, w_lo - lo, 400)
    best = None
    for g in gaps:
        w_c = w_lo - g
        log_c = float(np.mean(y + np.log(w - w_c)))
        sse = float(np.sum((y - model(w, w_c, log_c)) ** 2))
        if best is None or sse < best[0]:
            best = (sse, w_c, log_c)
    p0 = (min(max(best[1], lo), hi), best[2])
    cov = np.full((2, 2), np.nan)
    popt = np.array(p0)
    try:
        with warnings.catch_warnings():  # 2 points: no covariance, reported as NaN below
            warnings.simplefilter("ignore", OptimizeWarning)
            popt, pcov = curve_fit(model, w, y, p0=p0, bounds=([lo, -np.inf], [hi, np.inf]),
                                   max_nfev=20000)
        if w.size > 2 and np.all(np.isfinite(pcov)):
            cov = pcov
    except (RuntimeError, ValueError):
        pass
    w_c, log_c = float(popt[0]), float(popt[1])
    amp = math.exp(log_c)
    # covariance of (w_c, C) from that of (w_c, ln C): dC = C d(ln C)
    jac = np.diag([1.0, amp])
    cov_wc_c = jac @ cov @ jac.T
    rms = float(np.sqrt(np.mean((y - model(w, w_c, log_c)) ** 2)))
    return CriticalWidthFit(w_c=w_c, w_c_err=float(np.sqrt(cov_wc_c[0, 0])), amplitude=amp,
                            amplitude_err=float(np.sqrt(cov_wc_c[1, 1])),
                            covariance=cov_wc_c, widths=w, t_star=ts,
                            unreached_widths=np.sort(unreached), rms_log_residual=rms,
                            w_c_at_bound=bool(abs(w_c - lo) <= 1e-6 * span))


# ----------------------------------------------------------------------------------------------
# Aging of the weights
# ----------------------------------------------------------------------------------------------

def log_spaced_times(t_max: int, n: int, t_min: int = 1) -> np.ndarray:
    """About ``n`` distinct integer times spaced evenly in ``ln t`` from ``t_min`` to ``t_max``
    (both included); fewer when rounding merges neighbours at small t."""
    if t_max < t_min or t_min < 1:
        raise ValueError(f"need 1 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    return np.unique(np.round(np.geomspace(t_min, t_max, max(n, 2))).astype(np.int64))


def aging_schedule(waiting_times: Sequence[int], t_max: int, n_lags: int = 24) -> np.ndarray:
    """Times at which to snapshot the weights for :func:`aging_correlation`.

    For every waiting time ``tau_w``: ``tau_w`` itself and ``tau_w + tau`` for about ``n_lags``
    log-spaced lags ``tau`` from 1 to ``t_max - tau_w``. Returns the sorted union (int64).
    """
    times = set()
    for tw in waiting_times:
        tw = int(tw)
        if not 0 <= tw < t_max:
            raise ValueError(f"waiting time {tw} must be in [0, t_max={t_max})")
        times.add(tw)
        times.update((tw + log_spaced_times(t_max - tw, n_lags)).tolist())
    return np.array(sorted(times), dtype=np.int64)


@dataclasses.dataclass
class AgingCurves:
    """``Delta(tau_w, tau)`` per waiting time: ``lags[k]`` (int64) and ``delta[k]`` (float64)
    are the lags ``tau > 0`` recorded after ``waiting_times[k]`` and the mean-square weight
    change over each."""

    waiting_times: np.ndarray
    lags: list[np.ndarray]
    delta: list[np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {"waiting_times": np.asarray(self.waiting_times).tolist(),
                "lags": [np.asarray(x).tolist() for x in self.lags],
                "delta": [np.asarray(x).tolist() for x in self.delta]}


def aging_correlation(times, weights, waiting_times) -> AgingCurves:
    """Mean-square weight change ``Delta(tau_w, tau) = mean_i (w_i(tau_w + tau) - w_i(tau_w))^2``.

    times: (K,) snapshot times; weights: (K, P) flattened weights at those times (any
    float dtype; computed in float64); waiting_times: the ``tau_w`` to use, each one of ``times``.
    For each ``tau_w`` every later snapshot gives one lag ``tau = t - tau_w``.
    """
    times = np.asarray(times, dtype=np.int64).ravel()
    weights = np.asarray(weights)
    if weights.ndim != 2 or weights.shape[0] != times.size:
        raise ValueError(f"weights must be (K={times.size}, P), got {weights.shape}")
    order = np.argsort(times, kind="stable")
    times, weights = times[order], weights[order]
    lags, deltas = [], []
    for tw in waiting_times:
        hits = np.flatnonzero(times == int(tw))
        if hits.size == 0:
            raise ValueError(f"waiting time {tw} is not among the snapshot times; snapshot "
                             "on aging_schedule(...) times")
        k = int(hits[0])
        ref = weights[k].astype(np.float64)
        later = weights[k + 1:].astype(np.float64)
        lags.append(times[k + 1:] - int(tw))
        deltas.append(np.mean((later - ref) ** 2, axis=1))
    return AgingCurves(np.asarray([int(x) for x in waiting_times], dtype=np.int64), lags, deltas)


@dataclasses.dataclass
class AgingCollapse:
    """How well ``Delta(tau_w, tau)`` curves for different ``tau_w`` fall on one curve.

    spread_rescaled / spread_raw: mean over a common log-spaced grid (``n_grid`` points over the
    range all curves cover) of the variance across curves of ``ln Delta``, with the curves
    plotted against ``tau / tau_w`` and against ``tau`` respectively. ratio =
    spread_rescaled / spread_raw: well below 1 means the curves collapse under ``tau / tau_w``
    (aging: the system's relaxation time grows with its age) better than they coincide in raw
    time (time-translation invariance, equilibrium); above 1 the reverse. The ranges are the
    ``(low, high)`` overlap on each axis; NaN spreads mean the curves do not overlap there.
    """

    spread_rescaled: float
    spread_raw: float
    ratio: float
    range_rescaled: tuple[float, float]
    range_raw: tuple[float, float]
    n_curves: int
    n_grid: int

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _curve_spread(xs: list[np.ndarray], ys: list[np.ndarray], n_grid: int):
    """Mean across-curve variance of ln y on a common grid of ln x (curves need x > 0, y > 0)."""
    logs = []
    for x, y in zip(xs, ys):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 2:
            continue
        o = np.argsort(x[ok])
        logs.append((np.log(x[ok][o]), np.log(y[ok][o])))
    if len(logs) < 2:
        return math.nan, (math.nan, math.nan)
    lo = max(lx[0] for lx, _ in logs)
    hi = min(lx[-1] for lx, _ in logs)
    if not hi > lo:
        return math.nan, (math.exp(lo), math.exp(hi))
    grid = np.linspace(lo, hi, n_grid)
    values = np.stack([np.interp(grid, lx, ly) for lx, ly in logs])
    return float(np.mean(np.var(values, axis=0))), (math.exp(lo), math.exp(hi))


def aging_collapse(curves: AgingCurves, n_grid: int = 50) -> AgingCollapse:
    """Collapse quality of aging curves: compare their spread against ``tau / tau_w`` and
    against ``tau`` (see :class:`AgingCollapse`). Waiting times must be > 0."""
    tws = np.asarray(curves.waiting_times, dtype=np.float64)
    if np.any(tws <= 0):
        raise ValueError("waiting times must be > 0 to rescale lags by them")
    rescaled = [np.asarray(l, dtype=np.float64) / tw for l, tw in zip(curves.lags, tws)]
    raw = [np.asarray(l, dtype=np.float64) for l in curves.lags]
    s_resc, r_resc = _curve_spread(rescaled, curves.delta, n_grid)
    s_raw, r_raw = _curve_spread(raw, curves.delta, n_grid)
    if s_raw > 0:
        ratio = s_resc / s_raw
    elif s_raw == 0:
        ratio = math.inf if s_resc > 0 else math.nan
    else:
        ratio = math.nan
    return AgingCollapse(spread_rescaled=s_resc, spread_raw=s_raw, ratio=ratio,
                         range_rescaled=r_resc, range_raw=r_raw, n_curves=len(curves.lags),
                         n_grid=n_grid)


# ----------------------------------------------------------------------------------------------
# A width sweep, analysed
# ----------------------------------------------------------------------------------------------

def analyze_sweep(runs: dict, thresholds, fit_from: float) -> dict[str, Any]:
    """All fits of a width sweep, as plain JSON-ready rows.

    runs: {(depth, width): GlassyRun}; thresholds: training-loss thresholds for t*; fit_from:
    the power law is fitted from ``t >= fit_from * steps``. Returns ``{"runs": [...],
    "critical_width": [...]}``: per run its power-law fit, ``t_star@<threshold>`` and aging
    collapse; per (depth, threshold) the fit of ``t* = C / (w - w_c)`` (or the reason it failed).
    """
    rows, critical = [], []
    for (d, w), run in sorted(runs.items()):
        row: dict[str, Any] = {"depth": d, "width": w, "cell": run.config.cell,
                               "n_parameters": run.info["n_parameters"],
                               "steps": run.config.steps,
                               "final_train_loss": float(run.train_loss[-1]),
                               "final_test_loss": float(run.test_loss[-1])}
        try:
            fit = run.power_law(t_min=max(1.0, fit_from * run.config.steps))
            row.update({"l_inf": fit.l_inf, "l_inf_err": fit.l_inf_err,
                        "l_inf_positive": fit.l_inf_positive,
                        "l_inf_p_value": fit.l_inf_p_value, "amplitude": fit.amplitude,
                        "amplitude_err": fit.amplitude_err, "alpha": fit.alpha,
                        "alpha_err": fit.alpha_err, "fit_rms_log_residual": fit.rms_log_residual,
                        "fit_t_min": fit.t_min})
        except (ValueError, RuntimeError) as e:
            row["power_law_error"] = str(e)
        for thr in thresholds:
            row[f"t_star@{thr:g}"] = run.learning_time(thr)
        col = aging_collapse(run.aging())
        row.update({"aging_ratio": col.ratio, "aging_spread_rescaled": col.spread_rescaled,
                    "aging_spread_raw": col.spread_raw})
        rows.append(row)
    depths = sorted({d for d, _ in runs})
    for d in depths:
        for thr in thresholds:
            ws = [r["width"] for r in rows if r["depth"] == d]
            ts = [r[f"t_star@{thr:g}"] for r in rows if r["depth"] == d]
            entry: dict[str, Any] = {"depth": d, "threshold": thr}
            try:
                fit = fit_critical_width(ws, ts)
                entry.update({"w_c": fit.w_c, "w_c_err": fit.w_c_err, "C": fit.amplitude,
                              "C_err": fit.amplitude_err, "n_points": int(fit.widths.size),
                              "unreached_widths": fit.unreached_widths.tolist(),
                              "rms_log_residual": fit.rms_log_residual,
                              "w_c_at_bound": fit.w_c_at_bound})
            except ValueError as e:
                entry["error"] = str(e)
            critical.append(entry)
    return {"runs": rows, "critical_width": critical}


# ----------------------------------------------------------------------------------------------
# The model: a deep recurrent net predicting the next step of several voices
# ----------------------------------------------------------------------------------------------

class VoiceRNN(nn.Module):
    """Deep recurrent net over several categorical voices (e.g. S, A, T, B).

    Input at step t: the concatenated one-hot codes of every voice's token, shape
    ``(sum(vocab_sizes),)``; a stacked recurrent core (``cell`` = ``"rnn"`` (tanh),
    ``"lstm"`` or ``"gru"``; ``depth`` layers of ``width`` units, PyTorch's modules); a linear
    readout to one logit vector per voice. Holds exactly one recurrent module (``.core``), so
    an LSTM variant can be passed to mdesc's Lyapunov functions with one-hot float input.
    """

    def __init__(self, vocab_sizes: Sequence[int], width: int, depth: int,
                 cell: str = "rnn"):
        super().__init__()
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        n_in = sum(self.vocab_sizes)
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if cls is None:
            raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.cell = cell
        self.core = cls(n_in, width, num_layers=depth, **kwargs)
        self.readout = nn.Linear(width, n_in)

    def one_hot(self, tokens):
        """(T, B, V) int64 tokens -> (T, B, sum(vocab_sizes)) float one-hot input."""
        parts = [torch.nn.functional.one_hot(tokens[..., v], n)
                 for v, n in enumerate(self.vocab_sizes)]
        return torch.cat(parts, dim=-1).to(self.readout.weight.dtype)

    def forward(self, tokens):
        """(T, B, V) tokens -> list of V logit tensors (T, B, vocab_sizes[v])."""
        out, _ = self.core(self.one_hot(tokens))
        logits = self.readout(out)
        return list(torch.split(logits, self.vocab_sizes, dim=-1))

    def loss(self, tokens, lengths, reduction: str = "mean"):
        """Next-step cross-entropy in nats per voice and step.

        tokens: (T, B, V) int64; lengths: (B,) valid steps per sequence (padding after).
        Predicts tokens[1:] from tokens[:-1]. ``reduction="sum"`` returns the summed
        per-voice cross-entropy and the number of (step, sequence) pairs, for averaging
        over chunks.
        """
        inp, target = tokens[:-1], tokens[1:]
        logits = self.forward(inp)
        steps = torch.arange(target.shape[0], device=tokens.device)[:, None]
        valid = steps < (lengths.to(tokens.device)[None, :] - 1)  # (T-1, B)
        total = tokens.new_zeros((), dtype=logits[0].dtype)
        for v, lg in enumerate(logits):
            ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]),
                                                   target[..., v].reshape(-1),
                                                   reduction="none")
            total = total + (ce * valid.reshape(-1)).sum()
        count = valid.sum()
        if reduction == "sum":
            return total / len(logits), count
        return total / (len(logits) * count.clamp(min=1))

    def flat_weights(self):
        """All parameters concatenated into one 1-D tensor (core, then readout)."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])


# ----------------------------------------------------------------------------------------------
# A resumable training run
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class GlassyConfig:
    """Settings of one training run (all recorded with its results).

    width, depth, cell: the recurrent core (see :class:`VoiceRNN`).
    steps: SGD updates; lr, momentum: plain SGD (momentum 0 by default); grad_clip: if set,
    the gradient's global norm is clipped to it before each update (tames the rare exploding
    gradients of tanh RNNs at large learning rates); batch_size: sequences
    per update, drawn without replacement by a generator seeded with ``(seed, step)`` (so a
    resumed run repeats exactly the batches an uninterrupted one would); ``None`` = full batch.
    n_records: about this many log-spaced times (plus t = 0) at which the full training (and
    test) loss is evaluated. waiting_times: the aging ``tau_w`` (default 4 values, a factor 4
    apart, the largest ``steps // 8``); n_lags: lags per waiting time (see
    :func:`aging_schedule`). seed: weight init and batches. device: "cpu", "cuda", ...
    """

    width: int
    depth: int = 1
    cell: str = "rnn"
    steps: int = 2000
    lr: float = 0.1
    momentum: float = 0.0
    grad_clip: float | None = None
    batch_size: int | None = None
    n_records: int = 40
    waiting_times: tuple[int, ...] | None = None
    n_lags: int = 20
    seed: int = 0
    device: str = "cpu"

    def resolved_waiting_times(self) -> tuple[int, ...]:
        if self.waiting_times is not None:
            return tuple(int(x) for x in self.waiting_times)
        top = max(self.steps // 8, 1)
        tws = sorted({max(top // 4 ** k, 1) for k in range(4)})
        return tuple(tws)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["waiting_times"] = list(self.resolved_waiting_times())
        return d


@dataclasses.dataclass
class GlassyRun:
    """A finished run: its settings and records.

    times: (R,) int64 record times (SGD updates, starting at 0); train_loss, test_loss: (R,)
    float64 nats per voice and step (test_loss NaN without test data); snapshot_times: (K,)
    int64; snapshots: (K, P) float32 flattened weights (see ``VoiceRNN.flat_weights``), or None
    when the run folder has no ``snapshots.npz`` (e.g. a committed result without its large
    files); aging_curves: Delta at the configured waiting times, computed when the run finished.
    info: settings, data description, parameter count, wall time, versions.
    """

    config: GlassyConfig
    times: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    snapshot_times: np.ndarray
    snapshots: np.ndarray | None
    aging_curves: AgingCurves
    info: dict[str, Any]

    def power_law(self, **kwargs) -> PowerLawFit:
        """:func:`fit_power_law` of the training loss (kwargs passed on)."""
        return fit_power_law(self.times, self.train_loss, **kwargs)

    def learning_time(self, threshold: float) -> float:
        """:func:`learning_time` of the training loss."""
        return learning_time(self.times, self.train_loss, threshold)

    def aging(self, waiting_times: Sequence[int] | None = None) -> AgingCurves:
        """Aging curves at ``waiting_times`` (default: the configured ones, stored with the run).
        Other waiting times need the snapshots and must be snapshot times."""
        default = self.config.resolved_waiting_times()
        if waiting_times is None or tuple(int(x) for x in waiting_times) == default:
            return self.aging_curves
        if self.snapshots is None:
            raise FileNotFoundError("this run's snapshots.npz is missing; only the stored aging "
                                    f"curves at waiting times {default} are available")
        return aging_correlation(self.snapshot_times, self.snapshots, waiting_times)


RUN_FILE = "run.json"
SNAPSHOT_FILE = "snapshots.npz"
STATE_FILE = "state.pt"


def data_fingerprint(*arrays) -> str:
    """Short sha1 of arrays' bytes, recorded to tell whether a resumed run sees the same data."""
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def train_glassy_run(out_dir: str | os.PathLike, train_tokens, train_lengths,
                     config: GlassyConfig, vocab_sizes: Sequence[int],
                     test_tokens=None, test_lengths=None, data_info: dict | None = None,
                     progress: bool = True, save_every_s: float = 10.0,
                     stop_after: int | None = None,
                     callback: Callable[[int], None] | None = None) -> GlassyRun | None:
    """Train one :class:`VoiceRNN` by SGD, recording what the glassy analyses need; resumable.

    out_dir: the run's folder. A finished run there (``run.json``) with the same settings and
    data is loaded and returned without training; an unfinished one (``state.pt``) is resumed
    from its last saved state. Different settings or data there raise ValueError.
    train_tokens: (T, B, V) int64 tokens; train_lengths: (B,) valid lengths (padding after);
    test_tokens/test_lengths: the same for held-out data (optional).
    vocab_sizes: classes per voice. data_info: free-form description stored with the results.
    State is saved (atomically) to ``state.pt`` at record and snapshot times and every 1000th
    update, at most once every ``save_every_s`` seconds, and when ``stop_after`` stops it.
    stop_after: save and return None after this many updates (a planned interruption, as if
    killed); callback(step) is called after each update (tests use it).

    Returns the finished :class:`GlassyRun` (also written as ``run.json`` + ``snapshots.npz``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokens = torch.as_tensor(np.asarray(train_tokens), dtype=torch.int64)
    train_lengths = torch.as_tensor(np.asarray(train_lengths), dtype=torch.int64)
    if train_tokens.ndim != 3 or train_tokens.shape[1] != train_lengths.shape[0]:
        raise ValueError(f"train_tokens must be (T, B, V) and train_lengths (B,), got "
                         f"{tuple(train_tokens.shape)} and {tuple(train_lengths.shape)}")
    has_test = test_tokens is not None
    if has_test:
        test_tokens = torch.as_tensor(np.asarray(test_tokens), dtype=torch.int64)
        test_lengths = torch.as_tensor(np.asarray(test_lengths), dtype=torch.int64)
    fingerprint = data_fingerprint(train_tokens.numpy(), train_lengths.numpy(),
                                   None if not has_test else test_tokens.numpy(),
                                   None if not has_test else test_lengths.numpy())
    settings = {"config": config.to_dict(), "vocab_sizes": [int(v) for v in vocab_sizes],
                "data_fingerprint": fingerprint}

    if (out / RUN_FILE).exists():
        run = load_glassy_run(out)
        _check_same(out, run.info.get("settings"), settings)
        return run

    device = torch.device(config.device)
    n_train = int(train_tokens.shape[1])
    batch = n_train if config.batch_size is None else min(int(config.batch_size), n_train)
    record_times = np.concatenate([[0], log_spaced_times(config.steps, config.n_records)])
    snap_times = aging_schedule(config.resolved_waiting_times(), config.steps, config.n_lags)
    record_set = set(record_times.tolist())
    snap_set = set(snap_times.tolist())

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VoiceRNN(vocab_sizes, config.width, config.depth, config.cell)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)

    state_path = out / STATE_FILE
    step = 0
    times: list[int] = []
    train_loss: list[float] = []
    test_loss: list[float] = []
    s_times: list[int] = []
    snaps: list[np.ndarray] = []
    wall_before = 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        _check_same(out, state["settings"], settings)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        times, train_loss, test_loss = state["times"], state["train_loss"], state["test_loss"]
        s_times, snaps = state["snapshot_times"], state["snapshots"]
        wall_before = float(state["wall_s"])

    train_dev = train_tokens.to(device)
    train_len_dev = train_lengths.to(device)
    if has_test:
        test_dev, test_len_dev = test_tokens.to(device), test_lengths.to(device)

    def full_loss(tok, lens) -> float:
        model.eval()
        with torch.no_grad():
            total, count = 0.0, 0
            for a in range(0, tok.shape[1], 256):
                s, c = model.loss(tok[:, a:a + 256], lens[a:a + 256], reduction="sum")
                total += float(s)
                count += int(c)
        model.train()
        return total / max(count, 1)

    def observe(t: int) -> None:
        if t in record_set and (not times or times[-1] < t):
            times.append(t)
            train_loss.append(full_loss(train_dev, train_len_dev))
            test_loss.append(full_loss(test_dev, test_len_dev) if has_test else math.nan)
        if t in snap_set and (not s_times or s_times[-1] < t):
            s_times.append(t)
            snaps.append(model.flat_weights().float().cpu().numpy())

    def save_state() -> None:
        _atomic_torch_save(state_path, {
            "settings": settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "step": step, "times": times, "train_loss": train_loss, "test_loss": test_loss,
            "snapshot_times": s_times, "snapshots": snaps,
            "wall_s": wall_before + (time.perf_counter() - t_start)})

    t_start = time.perf_counter()
    observe(step)
    last_save = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=step, unit="step", leave=False,
                   desc=f"{config.cell} d={config.depth} w={config.width}")
    try:
        while step < config.steps:
            if batch < n_train:
                rng = np.random.default_rng([config.seed, 1, step])
                idx = torch.as_tensor(np.sort(rng.choice(n_train, batch, replace=False)),
                                      device=device)
                tok, lens = train_dev[:, idx], train_len_dev[idx]
            else:
                tok, lens = train_dev, train_len_dev
            opt.zero_grad(set_to_none=True)
            loss = model.loss(tok, lens)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            step += 1
            observe(step)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(step)
            if ((step in record_set or step in snap_set or step % 1000 == 0)
                    and time.perf_counter() - last_save >= save_every_s):
                save_state()
                last_save = time.perf_counter()
            if stop_after is not None and step >= stop_after and step < config.steps:
                save_state()
                return None
    finally:
        if bar is not None:
            bar.close()

    wall = wall_before + (time.perf_counter() - t_start)
    info = {
        "settings": settings, "data": data_info or {}, "n_parameters": int(
            sum(p.numel() for p in model.parameters())),
        "n_train_sequences": n_train, "wall_s": wall, "torch_version": torch.__version__,
        "final_train_loss": train_loss[-1],
        "nonfinite": bool(not np.isfinite(train_loss[-1])),
    }
    snap_arr = np.stack(snaps).astype(np.float32)
    snap_t = np.asarray(s_times, dtype=np.int64)
    run = GlassyRun(config=config, times=np.asarray(times, dtype=np.int64),
                    train_loss=np.asarray(train_loss, dtype=np.float64),
                    test_loss=np.asarray(test_loss, dtype=np.float64),
                    snapshot_times=snap_t, snapshots=snap_arr,
                    aging_curves=aging_correlation(snap_t, snap_arr,
                                                   config.resolved_waiting_times()),
                    info=info)
    _write_run(out, run)
    if state_path.exists():
        state_path.unlink()
    return run


def load_glassy_run(out_dir: str | os.PathLike) -> GlassyRun:
    """Read a finished run written by :func:`train_glassy_run` (snapshots only if
    ``snapshots.npz`` is there)."""
    out = Path(out_dir)
    if not (out / RUN_FILE).exists():
        raise FileNotFoundError(f"{out / RUN_FILE} not found: the run there has not finished "
                                "(re-run the same training command to resume it)")
    rec = json.loads((out / RUN_FILE).read_text())
    cfg = dict(rec["config"])
    cfg["waiting_times"] = tuple(cfg["waiting_times"]) if cfg.get("waiting_times") else None
    snaps = None
    if (out / SNAPSHOT_FILE).exists():
        with np.load(out / SNAPSHOT_FILE) as z:
            snaps = z["weights"]
    ag = rec["aging"]
    curves = AgingCurves(np.asarray(ag["waiting_times"], dtype=np.int64),
                         [np.asarray(x, dtype=np.int64) for x in ag["lags"]],
                         [np.asarray(x, dtype=np.float64) for x in ag["delta"]])
    return GlassyRun(config=GlassyConfig(**cfg), times=np.asarray(rec["times"], dtype=np.int64),
                     train_loss=np.asarray(rec["train_loss"], dtype=np.float64),
                     test_loss=np.asarray(rec["test_loss"], dtype=np.float64),
                     snapshot_times=np.asarray(rec["snapshot_times"], dtype=np.int64),
                     snapshots=snaps, aging_curves=curves, info=rec["info"])


def _write_run(out: Path, run: GlassyRun) -> None:
    buf_path = out / SNAPSHOT_FILE
    atomic_write(buf_path, lambda f: np.savez_compressed(
        f, times=run.snapshot_times, weights=run.snapshots))
    rec = {"config": run.config.to_dict(), "times": run.times.tolist(),
           "train_loss": run.train_loss.tolist(), "test_loss": run.test_loss.tolist(),
           "snapshot_times": run.snapshot_times.tolist(),
           "aging": run.aging_curves.to_dict(), "info": run.info}
    text = json.dumps(_jsonable(rec), indent=1)
    atomic_write(out / RUN_FILE, lambda f: f.write(text.encode()))


def _check_same(out: Path, found: dict | None, wanted: dict) -> None:
    if found is None:
        return
    if _jsonable(found) != _jsonable(wanted):
        diff = [k for k in set(found["config"]) | set(wanted["config"])
                if found["config"].get(k) != wanted["config"].get(k)]
        what = f"settings {sorted(diff)}" if diff else "data or vocabulary"
        raise ValueError(f"{out} holds a run with different {what}; use another output "
                         "folder or delete that one to start afresh")


def _atomic_torch_save(path: Path, obj) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def _jsonable(obj):
    """Plain JSON types (NaN/inf kept as floats; json writes them as NaN/Infinity)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
