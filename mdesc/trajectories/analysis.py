"""Pure analysis on arrays for study 3: no training, no files, no plotting.

* loss-curve labels of one series: :func:`classify_loss_curve` (the original spectral/burst
  rules) and :func:`loss_regime` (regimes from measured laminar-phase statistics, checked on
  maps with known answers), with :func:`laminar_phases` and :func:`spectral_concentration`;
* ensemble statistics: :func:`exponent_per_run` (exponent and batch-means error per run),
  :func:`bootstrap_median`, :func:`fraction_beyond_error`, :func:`finite_time_exponents` (the
  paper's slope of unrenormalised replica distances), :func:`distance_quantiles`,
  :func:`near_zero_count`, and :func:`rate_regime` (one label per learning rate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from mdesc.stats import bootstrap_median, wilson_interval

__all__ = [
    "LossCurveClass", "LOSS_CURVE_LABELS", "classify_loss_curve", "REGIME_LABELS",
    "laminar_phases", "spectral_concentration", "loss_regime", "exponent_per_run",
    "bootstrap_median", "fraction_beyond_error", "finite_time_exponents", "WindowedFit",
    "windowed_exponents", "windowed_summary", "distance_quantiles",
    "near_zero_count", "rate_regime",
]

#: Labels returned by :func:`classify_loss_curve`, in the order they are tested.
LOSS_CURVE_LABELS: tuple[str, ...] = ("diverged", "monotone", "intermittent", "oscillating",
                                      "irregular")

# --------------------------------------------------------------------------------------------
# Loss-curve classification
# --------------------------------------------------------------------------------------------

@dataclass
class LossCurveClass:
    """The label of one loss curve and the statistics it was decided from (see
    :func:`classify_loss_curve`)."""

    label: str
    stats: dict

    def __str__(self) -> str:
        return self.label


def _runs(mask: np.ndarray, merge_gap: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of True in ``mask``, merging runs separated by fewer than
    ``merge_gap`` False entries."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    runs = []
    start = prev = int(idx[0])
    for i in idx[1:]:
        i = int(i)
        if i - prev > merge_gap:
            runs.append((start, prev + 1))
            start = i
        prev = i
    runs.append((start, prev + 1))
    return runs


def _bursts(dy: np.ndarray, factor: float, merge_gap: int) -> list[tuple[int, int]]:
    """Bursts of the activity |dy|: runs of steps above ``factor`` times its median (the calm
    level), runs fewer than ``merge_gap`` steps apart merged; none when the median is 0."""
    activity = np.abs(dy)
    calm = float(np.median(activity))
    return _runs(activity > factor * calm, merge_gap) if calm > 0 else []


def classify_loss_curve(loss: Sequence[float] | np.ndarray, *, tail: float = 0.5,
                        diverge_factor: float = 1e3, increase_rtol: float = 1e-9,
                        monotone_max_increasing: float = 0.02, burst_factor: float = 10.0,
                        burst_max_fraction: float = 0.25, min_bursts: int = 2,
                        burst_merge_gap: int = 3, spectral_peaks: int = 3,
                        spectral_min_concentration: float = 0.5) -> LossCurveClass:
    """Label a loss series L_0 .. L_T by the kind of dynamics it shows late in training.

    Only the last ``tail`` fraction of the series is judged (the asymptotic behaviour; an
    early transient such as a catapult does not decide the label), except for divergence.
    With y_t = ln L_t (or L_t itself if some L_t <= 0) on that window and its increments
    dy_t = y_{t+1} - y_t, the tests are applied in this order and the first that holds wins:

    1. ``diverged``: some L_t is not finite (NaN/inf, or the run stopped), or
       max_t L_t > ``diverge_factor`` * L_0 anywhere in the series.
    2. ``monotone``: the fraction of increasing steps, ``frac_increasing`` = fraction of t with
       L_{t+1} - L_t > ``increase_rtol`` * |L_t|, is at most ``monotone_max_increasing``.
       (The relative tolerance keeps float rounding at a converged loss from counting.)
    3. ``intermittent``: calm stretches interrupted by bursts.  The activity a_t = |dy_t| is a
       burst where it exceeds ``burst_factor`` times its median (the calm level); bursts are
       contiguous runs of such steps (runs fewer than ``burst_merge_gap`` steps apart are one
       burst).  Intermittent if there are at least ``min_bursts`` bursts and burst steps make up
       at most ``burst_max_fraction`` of the window (bursts are rare and large).
    4. ``oscillating`` (periodic or quasi-periodic): the power spectrum of the increments dy
       (mean removed, Hann window; differencing removes the slow trend and whitens a random
       walk) is concentrated in a few lines: ``spectral_concentration`` = share of the power
       (zero frequency excluded) in the ``spectral_peaks`` highest local maxima, each counted
       with its two neighbouring bins, is at least ``spectral_min_concentration``.  White noise
       gives about 3 * spectral_peaks / (window/2); a period-2 oscillation gives ~1.
    5. ``irregular``: none of the above (broadband, non-bursty, random-looking).

    Args:
        loss: the loss series, shape (T+1,).  At least 16 points must fall in the window.
    Returns:
        :class:`LossCurveClass` with ``label`` and ``stats`` = {``frac_increasing``,
        ``spectral_concentration``, ``dominant_period`` (steps), ``n_bursts``,
        ``burst_fraction``, ``max_over_initial``, ``tail_over_initial`` (median loss of the
        window / |L_0|: above 1 means training made the loss worse), ``window`` (start, stop),
        ``finite``}.  Statistics that were not reached are NaN.
    """
    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    n = loss.size
    start = int(math.floor(n * (1.0 - tail)))
    window = loss[start:]
    if window.size < 16:
        raise ValueError(f"classify_loss_curve: the analysed window has {window.size} points "
                         f"(series of {n}, tail={tail}); pass a longer series or a larger tail.")
    finite = bool(np.all(np.isfinite(loss)))
    stats: dict = {"window": [start, n], "finite": finite}
    l0 = abs(loss[0]) if np.isfinite(loss[0]) and loss[0] != 0 else 1.0
    any_finite = bool(np.any(np.isfinite(loss)))
    max_over_initial = float(np.nanmax(np.abs(loss)) / l0) if any_finite else math.inf
    stats["max_over_initial"] = max_over_initial
    nan_stats = {"frac_increasing": math.nan, "tail_over_initial": math.nan,
                 "spectral_concentration": math.nan,
                 "dominant_period": math.nan, "n_bursts": 0, "burst_fraction": math.nan}
    if not finite or max_over_initial > diverge_factor:
        stats.update(nan_stats)
        return LossCurveClass("diverged", stats)

    dl = np.diff(window)
    frac_up = float(np.mean(dl > increase_rtol * np.abs(window[:-1])))
    stats["frac_increasing"] = frac_up
    stats["tail_over_initial"] = float(np.median(window) / l0)

    y = np.log(window) if np.all(window > 0) else window
    bursts = _bursts(np.diff(y), burst_factor, burst_merge_gap)
    stats["n_bursts"] = len(bursts)
    stats["burst_fraction"] = sum(b - a for a, b in bursts) / (y.size - 1)
    stats["spectral_concentration"], stats["dominant_period"] = \
        spectral_concentration(y, spectral_peaks)

    if frac_up <= monotone_max_increasing:
        return LossCurveClass("monotone", stats)
    if len(bursts) >= min_bursts and stats["burst_fraction"] <= burst_max_fraction:
        return LossCurveClass("intermittent", stats)
    if stats["spectral_concentration"] >= spectral_min_concentration:
        return LossCurveClass("oscillating", stats)
    return LossCurveClass("irregular", stats)


# --------------------------------------------------------------------------------------------
# Ensemble statistics: exponents per initialisation, intervals, fractions
# --------------------------------------------------------------------------------------------

def exponent_per_run(log_growth: np.ndarray, warmup: int = 0, n_blocks: int = 10
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Exponent and its standard error for each column of per-step log growth (T, M).

    λ_m = mean of ``log_growth[t, m]`` over the counted steps t = warmup, ..., T-1 (all of them:
    a last block shorter than the others is counted too).  The error is the batch-means
    standard error: the counted steps are cut into ``n_blocks`` contiguous blocks (sizes
    differing by at most one), se = std(block means) / sqrt(n_blocks), which allows for the
    correlation between successive steps.  A run with a non-finite step gets NaN.
    """
    g = np.asarray(log_growth, dtype=np.float64)
    if g.ndim == 1:
        g = g[:, None]
    T = g.shape[0]
    if not 0 <= warmup < T:
        raise ValueError(f"warmup must be in [0, {T}) for {T} steps, got {warmup}.")
    counted = g[warmup:]
    lam = counted.mean(0)
    nb = max(2, min(int(n_blocks), counted.shape[0]))
    means = np.stack([b.mean(0) for b in np.array_split(counted, nb, axis=0)])
    se = means.std(0, ddof=1) / math.sqrt(nb) if nb > 1 else np.full_like(lam, np.nan)
    bad = ~np.all(np.isfinite(counted), axis=0)
    lam[bad] = np.nan
    se[bad] = np.nan
    return lam, se


def fraction_beyond_error(lam: np.ndarray, se: np.ndarray, k: float = 2.0) -> dict:
    """Fractions of runs with λ > k·se (positive beyond its error), λ < -k·se, and neither,
    over the runs with a finite λ and se; with ``n`` (the count) and a 95 % Wilson interval
    for the positive fraction."""
    lam, se = np.asarray(lam, float), np.asarray(se, float)
    ok = np.isfinite(lam) & np.isfinite(se)
    n = int(ok.sum())
    if n == 0:
        return {"n": 0, "positive": math.nan, "negative": math.nan, "undecided": math.nan,
                "positive_interval": [math.nan, math.nan]}
    n_pos = int(np.sum(lam[ok] > k * se[ok]))
    pos = n_pos / n
    neg = float(np.mean(lam[ok] < -k * se[ok]))
    return {"n": n, "positive": pos, "negative": neg, "undecided": 1 - pos - neg,
            "positive_interval": list(wilson_interval(n_pos, n))}


def finite_time_exponents(log_dist: np.ndarray, weight_l1: np.ndarray,
                          saturation: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """The endpoint slope of the unrenormalised replica distance, per run and size (mdesc's
    finite-time estimate; the authors' own estimator is :func:`windowed_exponents`).

    ``log_dist`` (T+1, M, E): ln of the mean L1 distance of the replicas to the reference;
    ``weight_l1`` (T+1, M): |w(t)|_1 of the reference.  For each (m, e), t_s is the last step
    before the distance first exceeds ``saturation`` x |w(t)|_1 (the end if it never does) and
    λ = (ln d(t_s) - ln d(0)) / t_s: the average growth rate before saturation.  Returns
    (λ (M, E), t_s (M, E)); λ is NaN where t_s = 0.
    """
    ld = np.asarray(log_dist, dtype=np.float64)
    T1, M, E = ld.shape
    sat = np.log(saturation * np.asarray(weight_l1, dtype=np.float64))[:, :, None]
    over = ~(ld <= sat)  # NaN counts as saturated
    first = np.where(over.any(0), over.argmax(0), T1)  # first saturated step (T1 = never)
    ts = np.maximum(first - 1, 0)
    end = np.take_along_axis(ld, ts[None], 0)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.where(ts > 0, (end - ld[0]) / np.maximum(ts, 1), np.nan)
    return lam, ts


@dataclass(frozen=True)
class WindowedFit:
    """The authors' estimator of a network's Lyapunov exponent ("windowed max-R²").

    Danovski, Soriano & Lacasa's figures notebook (GitHub GitKalo/ann_dynamics,
    ``report_figures.ipynb``, the η = 1 exponent-vs-ε cell) fits a straight line to
    ``ln d(t)``, d the mean L1 distance of the replicas to the reference, on every window
    ``[start, start + length)`` with ``start`` in 0, 5, ..., 100 and ``length`` in 30, 35, ...,
    100 epochs, and keeps, per initialisation, the slope of the window with the highest R²
    (the first such window, starts outer, lengths inner).  Its figure then reports the mean
    ± std of the slopes with R² > ``r2_min`` (0.9) and slope > ``slope_min`` (0.05 per epoch)
    and how many passed.  The window skips a slow first stretch and picks the steepest clean
    stretch of each trajectory, so it differs from the tangent exponent (all steps) and the
    endpoint slope (:func:`finite_time_exponents`, from t = 0 to saturation).
    """

    starts: tuple[int, ...] = tuple(range(0, 101, 5))
    lengths: tuple[int, ...] = tuple(range(30, 101, 5))
    r2_min: float = 0.9
    slope_min: float = 0.05


def windowed_exponents(log_dist: np.ndarray, fit: WindowedFit = WindowedFit()
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The authors' per-run exponent (:class:`WindowedFit`) of ``log_dist`` (T+1, ...): ln of
    the mean replica distance, time first.  Returns ``(slope, r2, window)``: the slope (per
    step) and R² of the best window, shapes ``log_dist.shape[1:]``, and its ``(start, stop)``
    (shape ``(..., 2)``); NaN (and ``(-1, -1)``) where no window fits (windows reaching past
    the series, holding a non-finite value or a constant, are skipped)."""
    ld = np.asarray(log_dist, dtype=np.float64)
    y_all = ld.reshape(ld.shape[0], -1)
    best_r2 = np.full(y_all.shape[1], -np.inf)
    slope = np.full(y_all.shape[1], np.nan)
    window = np.full((y_all.shape[1], 2), -1, dtype=np.int64)
    for a in fit.starts:
        for n in fit.lengths:
            if a + n > y_all.shape[0]:
                continue
            y = y_all[a:a + n]
            xc = np.arange(a, a + n, dtype=np.float64)
            xc -= xc.mean()
            yc = y - y.mean(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                b = xc @ yc / (xc @ xc)
                sst = (yc * yc).sum(0)
                r2 = 1.0 - ((yc - b * xc[:, None]) ** 2).sum(0) / sst
            better = np.isfinite(r2) & (sst > 0) & (r2 > best_r2)
            best_r2[better], slope[better] = r2[better], b[better]
            window[better] = (a, a + n)
    best_r2[~np.isfinite(slope)] = np.nan
    rest = ld.shape[1:]
    return slope.reshape(rest), best_r2.reshape(rest), window.reshape(*rest, 2)


def windowed_summary(slope: np.ndarray, r2: np.ndarray, fit: WindowedFit = WindowedFit(),
                     n_boot: int = 2000) -> dict:
    """The authors' summary of per-run windowed exponents: mean ± std (numpy's, ddof = 0) of
    the slopes passing R² > ``fit.r2_min`` and slope > ``fit.slope_min``, the number and
    fraction passing (of all runs), and the passing slopes' median with a bootstrap interval
    (:func:`bootstrap_median`)."""
    slope, r2 = np.asarray(slope, float).ravel(), np.asarray(r2, float).ravel()
    with np.errstate(invalid="ignore"):
        ok = (r2 > fit.r2_min) & (slope > fit.slope_min)
    kept = slope[ok]
    med, lo, hi = bootstrap_median(kept, n_boot)
    return {"mean": float(kept.mean()) if kept.size else math.nan,
            "std": float(kept.std()) if kept.size else math.nan,
            "n_pass": int(kept.size), "n": int(slope.size),
            "fraction_pass": float(kept.size / slope.size) if slope.size else math.nan,
            "median": med, "low": lo, "high": hi,
            "r2_min": fit.r2_min, "slope_min": fit.slope_min}


def distance_quantiles(log_dist: np.ndarray, q: Sequence[float] = (0.1, 0.25, 0.5, 0.75, 0.9)
                       ) -> np.ndarray:
    """Quantiles over runs of ln distance: (T+1, M, E) -> (T+1, E, len(q))."""
    ld = np.asarray(log_dist, dtype=np.float64)
    return np.moveaxis(np.nanquantile(ld, q, axis=1), 0, -1)


def near_zero_count(exponents: np.ndarray, tol: float) -> np.ndarray:
    """Number of exponents with |λ_i| <= tol in each row of (M, k)."""
    return np.sum(np.abs(np.asarray(exponents)) <= tol, axis=-1)


# --------------------------------------------------------------------------------------------
# Regimes from measured statistics: laminar phases and the spectrum of a series
# --------------------------------------------------------------------------------------------

#: Labels of :func:`loss_regime`.
REGIME_LABELS: tuple[str, ...] = ("diverged", "stalled", "converging", "periodic",
                                  "quasi-periodic", "intermittent", "chaotic")


def _true_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, stop) of every run of True in a boolean vector."""
    m = np.r_[False, np.asarray(mask, bool), False].astype(np.int8)
    d = np.diff(m)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def laminar_phases(x: np.ndarray, *, max_period: int = 32, rel_tol: float = 1e-2,
                   exact_tol: float = 1e-6, min_length: int = 8) -> dict:
    """Laminar (nearly periodic) stretches of a series and the bursts between them.

    With scale = the 1-99 % quantile range of ``x``, step t is a near-return of period p when
    |x_{t+p} - x_t| <= ``rel_tol`` x scale.  A p-laminar stretch is a run of at least
    max(``min_length``, 2p) consecutive near-returns of period p (so it lasts at least two
    periods), covering steps [start, stop + p).  The laminar mask is the union over
    p = 1 .. ``max_period``; laminar phases are its maximal runs, bursts the runs between.
    The same with ``exact_tol`` gives the fraction that repeats to rounding (``exact_fraction``:
    exactly periodic).  Returns {``fraction``, ``exact_fraction``, ``n_phases``, ``n_bursts``,
    ``lengths`` (laminar phases), ``burst_lengths``, ``period`` (the shortest period covering
    most laminar steps, 0 if none)}.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    n = x.size
    lo, hi = np.quantile(x, [0.01, 0.99])
    scale = hi - lo
    if not scale > 0:
        scale = max(abs(float(hi)), 1e-300)
    covered = np.zeros(n, bool)
    exact = np.zeros(n, bool)
    period = np.zeros(n, np.int64)
    for p in range(1, min(int(max_period), n // 3) + 1):
        need = max(int(min_length), 2 * p)
        diff = np.abs(x[p:] - x[:-p])
        for tol, target in ((rel_tol, covered), (exact_tol, exact)):
            s, e = _true_runs(diff <= tol * scale)
            for a, b in zip(s[(e - s) >= need], e[(e - s) >= need]):
                if target is covered:
                    seg = period[a:b + p]
                    seg[seg == 0] = p
                target[a:b + p] = True
    s, e = _true_runs(covered)
    bs, be = _true_runs(~covered)
    interior = (bs > 0) & (be < n)  # bursts between two laminar phases
    periods = period[covered]
    return {"fraction": float(covered.mean()), "exact_fraction": float(exact.mean()),
            "n_phases": int(s.size), "n_bursts": int(interior.sum()),
            "lengths": (e - s).astype(np.int64), "burst_lengths": (be - bs)[interior],
            "period": int(np.bincount(periods).argmax()) if periods.size else 0,
            "mask": covered}


def spectral_concentration(x: np.ndarray, peaks: int = 3) -> tuple[float, float]:
    """(share of the power of the increments of ``x`` in its ``peaks`` highest spectral lines
    (each with its two neighbouring bins; mean removed, Hann window, zero frequency
    excluded), dominant period in steps).  White noise gives about 3·peaks/(n/2); a period-2
    oscillation gives ~1."""
    dy = np.diff(np.asarray(x, dtype=np.float64))
    if dy.size < 4:
        return 0.0, math.inf
    z = (dy - dy.mean()) * np.hanning(dy.size)
    power = np.abs(np.fft.rfft(z)) ** 2
    power[0] = 0.0
    total = power.sum()
    if not total > 0:
        return 0.0, math.inf
    interior = np.r_[False, (power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:]), False]
    if power[-1] >= power[-2]:
        interior[-1] = True
    idx = np.flatnonzero(interior)
    top = idx[np.argsort(power[idx])[::-1][:peaks]]
    counted = np.zeros(power.size, bool)
    for k in top:
        counted[max(k - 1, 1):k + 2] = True
    k_max = int(np.argmax(power))
    return float(power[counted].sum() / total), (float(dy.size / k_max) if k_max else math.inf)


def loss_regime(loss: np.ndarray, *, skip: float = 0.05, increase_rtol: float = 1e-9,
                converging_max_increasing: float = 0.02, stall_max_change: float = 1e-2,
                periodic_min_fraction: float = 0.5,
                intermittent_min_phases: int = 3, intermittent_min_fraction: float = 0.2,
                quasi_min_concentration: float = 0.5, **laminar_kw) -> LossCurveClass:
    """The regime of one loss series from measured statistics (thresholds are the keywords).

    The first ``skip`` fraction of the series (the initial transient) is dropped; on the rest,
    with y = ln L, the first rule that holds wins:

    1. ``diverged``: a non-finite loss anywhere.
    2. ``converging``: at most ``converging_max_increasing`` (2 %) of steps raise the loss by
       more than ``increase_rtol`` x L (rounding at a converged loss does not count);
       ``stalled`` instead when, in addition, ln L changes by less than ``stall_max_change``
       (1e-2: the loss moves by less than 1 %) from the first to the last step of the window (a
       network frozen on a plateau, e.g. saturated units predicting chance, L = ln 3 for Iris).
    3. :func:`laminar_phases` of y (near-returns of period <= 32 within 1 % of the range):
       ``periodic`` if at most 2 laminar phases cover at least ``periodic_min_fraction`` (50 %)
       of the steps; ``quasi-periodic`` instead when those phases do not repeat to rounding
       (exact fraction < 50 %).
    4. ``intermittent``: at least ``intermittent_min_phases`` (3) laminar phases separated by
       bursts, together covering at least ``intermittent_min_fraction`` (20 %) of the steps —
       nearly periodic stretches interrupted, again and again, by irregular ones (type-I
       intermittency of the logistic map at r = 3.8284 gives ~64 phases, 74 % laminar).
    5. ``quasi-periodic``: laminar fraction below that but the spectrum of dy concentrated
       (>= ``quasi_min_concentration`` of its power in 3 lines).
    6. ``chaotic``: none of these (the logistic map at r = 4: < 1 % laminar, broadband).

    ``stats`` holds every number a rule used (laminar fraction, phases, bursts, mean and
    maximum laminar length, period, spectral concentration, fraction of increasing steps).
    """
    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    start = int(math.floor(loss.size * skip))
    w = loss[start:]
    if w.size < 32:
        raise ValueError(f"loss_regime: {w.size} points after skipping the transient (series of "
                         f"{loss.size}, skip={skip}); pass at least 32.")
    stats: dict = {"window": [start, int(loss.size)]}
    if not np.all(np.isfinite(w)) or not np.all(np.isfinite(loss)):
        return LossCurveClass("diverged", stats)
    frac_up = float(np.mean(np.diff(w) > increase_rtol * np.abs(w[:-1])))
    stats["frac_increasing"] = frac_up
    change = (abs(math.log(w[-1]) - math.log(w[0])) if w[0] > 0 and w[-1] > 0
              else abs(w[-1] - w[0]) / max(abs(w[0]), 1e-300))
    stats["log_change"] = float(change)
    if frac_up <= converging_max_increasing:
        return LossCurveClass("stalled" if change < stall_max_change else "converging", stats)
    y = np.log(w) if np.all(w > 0) else w
    lam = laminar_phases(y, **laminar_kw)
    conc, period = spectral_concentration(y)
    lengths = lam["lengths"]
    stats.update({"laminar_fraction": lam["fraction"], "exact_fraction": lam["exact_fraction"],
                  "n_phases": lam["n_phases"], "n_bursts": lam["n_bursts"],
                  "mean_laminar": float(lengths.mean()) if lengths.size else 0.0,
                  "max_laminar": int(lengths.max()) if lengths.size else 0,
                  "mean_burst": float(lam["burst_lengths"].mean())
                  if lam["burst_lengths"].size else 0.0,
                  "period": lam["period"], "spectral_concentration": conc,
                  "spectral_period": period})
    if lam["n_phases"] <= 2 and lam["fraction"] >= periodic_min_fraction:
        return LossCurveClass("periodic" if lam["exact_fraction"] >= 0.5 else "quasi-periodic",
                              stats)
    if (lam["n_phases"] >= intermittent_min_phases and lam["n_bursts"] >= 2
            and lam["fraction"] >= intermittent_min_fraction):
        return LossCurveClass("intermittent", stats)
    if conc >= quasi_min_concentration:
        return LossCurveClass("quasi-periodic", stats)
    return LossCurveClass("chaotic", stats)


def rate_regime(lam_median: float, lam_interval: Sequence[float], fraction_positive: float,
                label_fractions: dict, *, marginal: float = 1e-3) -> str:
    """The regime of one learning rate from its ensemble statistics (documented thresholds).

    * ``diverged``: most initialisations' losses diverged;
    * ``intermittent``: the largest share of initialisations has an ``intermittent`` loss and
      that share is at least 1/3;
    * ``chaotic``: the bootstrap interval of the median exponent lies above ``marginal``
      (1e-3 nats/step: more than one e-fold per 1000 steps) and most initialisations are
      positive beyond their error;
    * ``contracting``: the interval lies below -``marginal``;
    * ``marginal``: otherwise — the median exponent is within ±``marginal`` of 0 (nearby
      trajectories neither converge nor separate exponentially over the run).
    """
    if label_fractions.get("diverged", 0.0) > 0.5:
        return "diverged"
    inter = label_fractions.get("intermittent", 0.0)
    if inter >= 1 / 3 and inter >= max(label_fractions.values()):
        return "intermittent"
    lo, hi = float(lam_interval[0]), float(lam_interval[1])
    if lo > marginal and fraction_positive > 0.5:
        return "chaotic"
    if hi < -marginal:
        return "contracting"
    return "marginal"
