"""Analyses of study 2 (glassy dynamics): pure functions of recorded arrays.

No training, no files, no plotting here; nothing is tied to a data set or model:

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
import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from scipy.stats import f as f_dist

from mdesc.store import to_json as _jsonable

__all__ = [
    "PowerLawFit", "fit_power_law",
    "learning_time", "CriticalWidthFit", "fit_critical_width",
    "log_spaced_times", "aging_schedule", "AgingCurves", "aging_correlation",
    "AgingCollapse", "aging_collapse",
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

    widths, t_star: 1-D arrays; infinite ``t*`` mark widths that never learned (listed as
    unreached, not fitted); NaN ``t*`` mark unknown learning times (left out altogether). The fit is least squares in ``ln t*`` with ``w_c`` below the smallest
    fitted width; ``w_c_min`` (default ``min(w) - 100 * (max(w) - min(w))``) bounds it below.
    Needs at least 2 finite points (3 for uncertainties).
    """
    widths = np.asarray(widths, dtype=np.float64).ravel()
    t_star = np.asarray(t_star, dtype=np.float64).ravel()
    if widths.shape != t_star.shape:
        raise ValueError(f"{widths.size} widths but {t_star.size} learning times")
    finite = np.isfinite(t_star) & (t_star > 0)
    w, ts = widths[finite], t_star[finite]
    unreached = widths[np.isinf(t_star)]  # NaN: unknown (e.g. a censored run), left out
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


def aging_collapse(curves: AgingCurves, n_grid: int = 50, min_ratio: float | None = None,
                   max_ratio: float | None = None) -> AgingCollapse:
    """Collapse quality of aging curves: compare their spread against ``tau / tau_w`` and
    against ``tau`` (see :class:`AgingCollapse`). Waiting times must be > 0.

    min_ratio, max_ratio: use only the points with ``min_ratio <= tau / tau_w <= max_ratio``
    for both spreads (e.g. ``max_ratio=1``: short times; ``min_ratio=1``: long times), so the
    two axes are compared on the same data.
    """
    tws = np.asarray(curves.waiting_times, dtype=np.float64)
    if np.any(tws <= 0):
        raise ValueError("waiting times must be > 0 to rescale lags by them")
    lags, deltas = [], []
    for lag, delta, tw in zip(curves.lags, curves.delta, tws):
        lag = np.asarray(lag, dtype=np.float64)
        keep = np.ones(lag.shape, dtype=bool)
        if min_ratio is not None:
            keep &= lag / tw >= min_ratio
        if max_ratio is not None:
            keep &= lag / tw <= max_ratio
        lags.append(lag[keep])
        deltas.append(np.asarray(delta, dtype=np.float64)[keep])
    rescaled = [lag / tw for lag, tw in zip(lags, tws)]
    raw = lags
    s_resc, r_resc = _curve_spread(rescaled, deltas, n_grid)
    s_raw, r_raw = _curve_spread(raw, deltas, n_grid)
    if s_raw > 0:
        ratio = s_resc / s_raw
    elif s_raw == 0:
        ratio = math.inf if s_resc > 0 else math.nan
    else:
        ratio = math.nan
    return AgingCollapse(spread_rescaled=s_resc, spread_raw=s_raw, ratio=ratio,
                         range_rescaled=r_resc, range_raw=r_raw, n_curves=len(curves.lags),
                         n_grid=n_grid)
