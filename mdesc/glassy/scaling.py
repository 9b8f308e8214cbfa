"""Fits of study 2 that test the paper's curve shapes rather than assume them (pure arrays).

* :func:`fit_divergence` -- ``t*(w) = C / (w - w_c)^nu`` with ``nu`` free: the best fit,
  profile-likelihood intervals on ``w_c`` and ``nu``, and the likelihood-ratio test of
  ``nu = 1`` (the paper's exponent). It *refuses* (``refused`` names why) when the width grid
  does not resolve ``w_c``: fewer than 4 widths with a learning time (3 parameters and one
  degree of freedom to test them), a profile interval that runs off the grid (below its
  narrowest width or to the search bound), a ``w_c`` that rests on the narrowest fitted width
  alone (refitting without it is refused, or moves ``w_c`` by more than twice the intervals'
  half-widths: fewer than 2 widths resolve the divergence), or a width the fit says should have learned within the run that never did.
* :func:`compare_decays` -- the training-loss decay over a fitted span: a pure power law
  ``A t^-alpha``, a power law with offset ``L_inf + A t^-alpha`` and a stretched exponential
  ``L_inf + A exp(-(t/tau)^beta)``, ranked by AICc, with the span in decades.
* :func:`l_inf_interval` -- the profile-likelihood interval of ``L_inf`` in the power law with
  offset (its lower end 0 when a zero asymptote fits as well).

Likelihood: every fit is least squares in the log of the fitted quantity (``ln t*``, ``ln L``)
with Gaussian errors of unknown variance, so a parameter's profile deviance is
``n ln(SSE_profile / SSE_min)`` and its interval the set where that stays below the chi-square
(1 dof) quantile (``calibration="chi2"``, the large-sample rule) or the small-sample F version
(``calibration="f"``: ``n ln(1 + F(1, n-p) / (n-p))``, wider for a handful of points).
Records of one SGD run are autocorrelated, so the loss-curve intervals and AIC differences are
rough guides, not exact tests.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable

import numpy as np
from scipy.optimize import OptimizeWarning, brentq, curve_fit, minimize_scalar
from scipy.stats import chi2 as chi2_dist
from scipy.stats import f as f_dist

from mdesc.store import to_json as _jsonable

__all__ = ["DivergenceFit", "fit_divergence", "deviance_threshold", "profile_interval",
           "DecayComparison", "compare_decays", "l_inf_interval"]

CALIBRATIONS = ("chi2", "f")


def deviance_threshold(n: int, n_params: int, confidence: float = 0.95,
                       calibration: str = "chi2") -> float:
    """The profile deviance ``n ln(SSE/SSE_min)`` below which a parameter value is inside the
    ``confidence`` interval (see the module docstring); NaN when the F version has no degree
    of freedom left."""
    if calibration == "chi2":
        return float(chi2_dist.ppf(confidence, 1))
    if calibration == "f":
        dof = n - n_params
        return math.nan if dof < 1 else float(n * math.log1p(f_dist.ppf(confidence, 1, dof) / dof))
    raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")


def profile_interval(deviance: Callable[[float], float], best: float, threshold: float,
                     lower: float, upper: float, step: float) -> tuple[float | None, float | None]:
    """Where ``deviance`` (0 at ``best``) crosses ``threshold`` on each side of ``best``,
    searched outward in steps growing from ``step`` up to the bounds ``lower``/``upper``;
    ``None`` for a side that stays below the threshold up to its bound (an open interval)."""
    ends: list[float | None] = []

    def crossing(a: float, b: float) -> float:
        if deviance(a) >= threshold:  # rounding of an inner optimisation: no bracket left
            return a
        return brentq(lambda v: deviance(v) - threshold, *sorted((a, b)),
                      xtol=1e-10 * max(1.0, abs(b)))

    for sign, bound in ((-1.0, lower), (1.0, upper)):
        inside, dx, end = best, step, None
        while True:
            x = best + sign * dx
            if (x - bound) * sign >= 0:
                if deviance(bound) > threshold:
                    end = crossing(inside, bound)
                break
            if deviance(x) > threshold:
                end = crossing(inside, x)
                break
            inside, dx = x, dx * 1.6
        ends.append(None if end is None else float(end))
    return ends[0], ends[1]


# ----------------------------------------------------------------------------------------------
# t*(w) = C / (w - w_c)^nu
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DivergenceFit:
    """Result of :func:`fit_divergence`.

    w_c, nu, amplitude (C): the least-squares fit in ``ln t*``; w_c_interval, nu_interval:
    profile-likelihood intervals (``None`` ends: open, the data do not bound them);
    nu1_deviance, nu1_p_value: the likelihood-ratio test of ``nu = 1`` against free ``nu``
    (chi-square, 1 dof; ``nu1_p_value_f``: the small-sample F test of the same nested pair),
    with ``w_c_nu1`` its best ``w_c``; rms_log_residual of the free fit (and of ``nu = 1``);
    widths, t_star: the points fitted; unreached_widths: widths that never reached the loss;
    grid: every width of the sweep; refused: why the divergence cannot be tested on this grid
    (None when it can). A refused fit keeps its numbers for inspection; claims must not use them.
    """

    w_c: float
    nu: float
    amplitude: float
    w_c_interval: tuple[float | None, float | None]
    nu_interval: tuple[float | None, float | None]
    w_c_nu1: float
    nu1_deviance: float
    nu1_p_value: float
    nu1_p_value_f: float
    rms_log_residual: float
    rms_log_residual_nu1: float
    n_points: int
    widths: np.ndarray
    t_star: np.ndarray
    unreached_widths: np.ndarray
    grid: np.ndarray
    confidence: float
    calibration: str
    refused: str | None

    def predict(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        gap = np.clip(w - self.w_c, 1e-300, None)
        return np.where(w > self.w_c, self.amplitude * gap ** (-self.nu), np.inf)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("widths", "t_star", "unreached_widths", "grid"):
            d[k] = np.asarray(d[k]).tolist()
        return _jsonable(d)


class _Divergence:
    """The fit's algebra: for fixed ``w_c`` (and optionally ``nu``) the rest is linear."""

    def __init__(self, w: np.ndarray, y: np.ndarray, lowest: float):
        self.w, self.y = w, y
        self.top = float(w.min())            # w_c must stay below the narrowest fitted width
        self.span = max(float(w.max() - w.min()), 1.0)
        self.lowest = lowest                 # search bound below

    def sse(self, w_c: float, nu: float | None = None) -> float:
        """Least squares over ``ln C`` (and ``nu`` when None) at this ``w_c``."""
        if not w_c < self.top:
            return math.inf
        x = -np.log(self.w - w_c)
        if nu is None:
            xc = x - x.mean()
            sxx = float(xc @ xc)
            slope = float(xc @ (self.y - self.y.mean())) / sxx if sxx > 0 else 0.0
            r = self.y - self.y.mean() - slope * xc
        else:
            r = self.y - nu * x
            r = r - r.mean()
        return float(r @ r)

    def params(self, w_c: float, nu: float | None = None) -> tuple[float, float]:
        x = -np.log(self.w - w_c)
        if nu is None:
            xc = x - x.mean()
            nu = float(xc @ (self.y - self.y.mean())) / float(xc @ xc)
        return nu, float(np.mean(self.y - nu * x))

    def best_w_c(self, nu: float | None = None) -> tuple[float, float]:
        """(w_c, SSE) minimising over w_c in [lowest, top): log-spaced scan, then refined."""
        gaps = np.geomspace(1e-7 * self.span, self.top - self.lowest, 600)
        cands = self.top - gaps
        sses = np.array([self.sse(c, nu) for c in cands])
        k = int(np.argmin(sses))
        lo, hi = cands[min(k + 1, cands.size - 1)], cands[max(k - 1, 0)]
        if hi > lo:
            res = minimize_scalar(lambda c: self.sse(c, nu), bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-12 * self.span})
            if res.fun <= sses[k]:
                return float(res.x), float(res.fun)
        return float(cands[k]), float(sses[k])


def fit_divergence(widths, t_star, grid=None, t_max: float | None = None,
                   confidence: float = 0.95, calibration: str = "chi2",
                   check_narrowest: bool = True) -> DivergenceFit:
    """Fit ``t*(w) = C / (w - w_c)^nu`` (``nu`` free) and test whether the grid resolves it.

    widths, t_star: (W,) learning times (e.g. the median over seeds at each width); ``inf``:
    never reached (not fitted; checked against the fit), NaN: unknown (left out).
    grid: every width of the sweep (default: ``widths``); ``w_c``'s interval must lie inside
    it. t_max: the run length; an unreached width where the fit predicts ``t* < t_max`` is a
    contradiction and refuses the fit. confidence, calibration: of the profile intervals (see
    :func:`deviance_threshold`). check_narrowest: refuse when ``w_c`` rests on the narrowest
    fitted width alone (see :func:`_rests_on_narrowest`; this needs >= 5 widths). Needs >= 3 finite points to fit at all (ValueError below).
    """
    widths = np.asarray(widths, dtype=np.float64).ravel()
    t_star = np.asarray(t_star, dtype=np.float64).ravel()
    if widths.shape != t_star.shape:
        raise ValueError(f"{widths.size} widths but {t_star.size} learning times")
    grid = widths if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    ok = np.isfinite(t_star) & (t_star > 0)
    order = np.argsort(widths[ok])
    w, ts = widths[ok][order], t_star[ok][order]
    unreached = np.sort(widths[np.isinf(t_star)])
    if np.unique(w).size < 3:
        raise ValueError(f"need learning times at >= 3 widths to fit C/(w - w_c)^nu, got "
                         f"{np.unique(w).size} (train longer or raise the loss threshold)")
    span_grid = max(float(grid.max() - grid.min()), 1.0)
    model = _Divergence(w, np.log(ts), lowest=float(min(grid.min(), w.min())) - 20 * span_grid)
    w_c, sse_min = model.best_w_c()
    nu, log_c = model.params(w_c)
    n = int(w.size)
    floor = max(sse_min, 1e-300)
    thr = deviance_threshold(n, 3, confidence, calibration)

    def dev_w_c(c: float) -> float:
        return n * math.log(max(model.sse(c), floor) / floor)

    def dev_nu(v: float) -> float:
        return n * math.log(max(model.best_w_c(v)[1], floor) / floor)

    w_iv = nu_iv = (None, None)
    if math.isfinite(thr):
        w_iv = profile_interval(dev_w_c, w_c, thr, model.lowest, model.top - 1e-9 * model.span,
                                1e-3 * model.span)
        nu_iv = profile_interval(dev_nu, nu, thr, nu - 50.0 * max(abs(nu), 1.0),
                                 nu + 50.0 * max(abs(nu), 1.0), 1e-3 * max(abs(nu), 0.1))
    w_c1, sse1 = model.best_w_c(1.0)
    dev1 = n * math.log(max(sse1, floor) / floor)
    dof = n - 3
    f_stat = (max(sse1 - sse_min, 0.0) / (sse_min / dof)) if dof > 0 and sse_min > 0 else math.nan
    fit = DivergenceFit(
        w_c=w_c, nu=nu, amplitude=math.exp(log_c), w_c_interval=w_iv, nu_interval=nu_iv,
        w_c_nu1=w_c1, nu1_deviance=dev1, nu1_p_value=float(chi2_dist.sf(dev1, 1)),
        nu1_p_value_f=float(f_dist.sf(f_stat, 1, dof)) if math.isfinite(f_stat) else math.nan,
        rms_log_residual=math.sqrt(sse_min / n), rms_log_residual_nu1=math.sqrt(sse1 / n),
        n_points=n, widths=w, t_star=ts, unreached_widths=unreached, grid=np.sort(grid),
        confidence=confidence, calibration=calibration, refused=None)
    fit.refused = _refusal(fit, t_max)
    if fit.refused is None and check_narrowest:
        fit.refused = _rests_on_narrowest(fit, t_max)
    return fit


def _rests_on_narrowest(fit: DivergenceFit, t_max: float | None) -> str | None:
    """Refit without the narrowest fitted width: when that fit is refused, or its w_c differs
    from the full fit's by more than twice the two intervals' half-widths together, w_c rests
    on that one width (fewer than 2 widths resolve the divergence)."""
    w0 = float(fit.widths.min())
    if np.unique(fit.widths).size < 5:
        return (f"only {np.unique(fit.widths).size} widths reached the loss: 4 to fit and test "
                "C/(w - w_c)^nu and one more to check that w_c does not rest on the narrowest "
                "width are needed")
    keep = fit.widths > w0
    loo = fit_divergence(fit.widths[keep], fit.t_star[keep], grid=fit.grid, t_max=t_max,
                         confidence=fit.confidence, calibration=fit.calibration,
                         check_narrowest=False)
    lo, hi = fit.w_c_interval
    if loo.refused is not None:
        return f"w_c rests on the narrowest width {w0:g}: without it, {loo.refused}"
    half = (hi - lo) / 2 + (loo.w_c_interval[1] - loo.w_c_interval[0]) / 2
    if abs(loo.w_c - fit.w_c) > 2 * half:
        return (f"w_c rests on the narrowest width {w0:g}: without it w_c = {loo.w_c:.3g} "
                f"[{loo.w_c_interval[0]:.3g}, {loo.w_c_interval[1]:.3g}], against "
                f"{fit.w_c:.3g} [{lo:.3g}, {hi:.3g}] with it")
    return None


def _refusal(fit: DivergenceFit, t_max: float | None) -> str | None:
    """Why the grid does not resolve the divergence (None when it does)."""
    if np.unique(fit.widths).size < 4:
        return (f"only {np.unique(fit.widths).size} widths reached the loss: C/(w - w_c)^nu has "
                "3 parameters, so at least 4 widths are needed to test it")
    lo, hi = fit.w_c_interval
    if lo is None or hi is None:
        return "the profile interval of w_c is open: the data do not bound w_c"
    if lo < fit.grid.min():
        return (f"the interval of w_c runs off the width grid ({lo:.3g} < the narrowest width "
                f"{fit.grid.min():g}): add narrower widths")
    if fit.nu_interval[0] is None or fit.nu_interval[1] is None:
        return "the profile interval of nu is open: the data do not bound the exponent"
    if not fit.nu_interval[0] > 0:
        return (f"nu's interval reaches {fit.nu_interval[0]:.3g} <= 0: t* does not diverge as "
                "w falls to w_c on this grid")
    if t_max is not None:
        bad = [w for w in fit.unreached_widths if w > fit.w_c and fit.predict(w) < t_max]
        if bad:
            return (f"widths {[float(b) for b in bad]} never reached the loss, but the fit says "
                    f"they should have within the run (t < {t_max:g})")
    return None


# ----------------------------------------------------------------------------------------------
# Loss-curve shapes: power law, power law with offset, stretched exponential
# ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DecayComparison:
    """Result of :func:`compare_decays`: per model (``"power"``, ``"power_offset"``,
    ``"stretched_exp"``) its parameters, ``sse`` (in ln L), ``k`` (fitted parameters, the
    noise variance included), ``aicc``, ``delta_aicc`` (to the best) and Akaike ``weight``;
    ``best``; the fitted span ``t_min``, ``t_max`` and ``decades``; ``n_points``."""

    models: dict[str, dict[str, Any]]
    best: str
    t_min: float
    t_max: float
    decades: float
    n_points: int

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def _stretched_log(t, sqrt_l_inf, log_a, log_tau, log_beta):
    """ln of ``L_inf + A exp(-(t/tau)^beta)`` in unconstrained parameters (``L_inf`` as a
    square, ``A``, ``tau``, ``beta`` as logs), so the fast unbounded Levenberg-Marquardt fits."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        x = sqrt_l_inf ** 2 + np.exp(log_a - (t / np.exp(log_tau)) ** np.exp(log_beta))
        return np.log(np.clip(x, 1e-300, None))


def _lm(f, t, y, p0, maxfev: int = 3000):
    """Levenberg-Marquardt least squares of ``f(t, *p)`` to ``y``: (params, SSE) or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            popt, _ = curve_fit(f, t, y, p0=p0, method="lm", maxfev=maxfev)
    except (RuntimeError, ValueError, OverflowError):
        return None
    sse = float(np.sum((y - f(t, *popt)) ** 2))
    return (popt, sse) if math.isfinite(sse) else None


def _offset_log(t, sqrt_l_inf, log_a, alpha):
    with np.errstate(over="ignore", under="ignore"):
        return np.log(np.clip(sqrt_l_inf ** 2 + np.exp(log_a - alpha * np.log(t)), 1e-300, None))


def _fit_offset(t: np.ndarray, loss: np.ndarray) -> tuple[dict[str, float], float]:
    """``L_inf + A t^-alpha`` (L_inf >= 0) by Levenberg-Marquardt from several starts (the
    starts of :func:`~mdesc.glassy.analysis.fit_power_law`)."""
    y, lt = np.log(loss), np.log(t)
    best = None
    for frac in (0.0, 0.5, 0.9, 0.99):
        l0 = frac * float(loss.min())
        slope, intercept = np.polyfit(lt, np.log(np.clip(loss - l0, 1e-300, None)), 1)
        fit = _lm(_offset_log, t, y, (math.sqrt(l0), intercept, -slope))
        if fit is not None and (best is None or fit[1] < best[1]):
            best = fit
    if best is None:
        raise RuntimeError("power-law fit did not converge from any start")
    p = best[0]
    return {"l_inf": float(p[0] ** 2), "amplitude": float(math.exp(p[1])),
            "alpha": float(p[2])}, best[1]


def _stretched_grid(t: np.ndarray, loss: np.ndarray):
    """The best (L_inf, A, tau, beta) on a grid of (tau, beta), with (L_inf >= 0, A > 0) solved
    by least squares weighted by 1/L (relative errors, as in ln L) at each grid point."""
    y, w = np.log(loss), 1.0 / loss
    best = None
    for tau in np.geomspace(t.min() / 10, t.max() * 10, 30):
        for beta in np.geomspace(0.03, 3.0, 24):
            u = np.exp(-(t / tau) ** beta)
            coef = np.linalg.lstsq(np.stack([w, w * u], axis=1), w * loss, rcond=None)[0]
            l_inf, amp = float(coef[0]), float(coef[1])
            if l_inf < 0:
                l_inf, amp = 0.0, float((w * w * loss * u).sum() / max((w * w * u * u).sum(),
                                                                       1e-300))
            fit = l_inf + amp * u
            if amp <= 0 or not np.all(fit > 0):
                continue
            sse = float(np.sum((y - np.log(fit)) ** 2))
            if best is None or sse < best[1]:
                best = ((l_inf, amp, tau, beta), sse)
    return best


def _fit_stretched(t: np.ndarray, loss: np.ndarray) -> tuple[dict[str, float], float]:
    """``L_inf + A exp(-(t/tau)^beta)`` (L_inf >= 0, A, tau, beta > 0): the best point of a
    (tau, beta) grid (:func:`_stretched_grid`), polished by Levenberg-Marquardt."""
    y = np.log(loss)
    grid = _stretched_grid(t, loss)
    if grid is None:
        raise RuntimeError("stretched-exponential fit: no admissible point on the grid")
    (l_inf, amp, tau, beta), sse = grid
    best = ((math.sqrt(l_inf), math.log(amp), math.log(tau), math.log(beta)), sse)
    fit = _lm(_stretched_log, t, y, best[0])
    if fit is not None and fit[1] < best[1]:
        best = fit
    p = best[0]
    return {"l_inf": float(p[0] ** 2), "amplitude": float(math.exp(p[1])),
            "tau": float(math.exp(p[2])), "beta": float(math.exp(p[3]))}, float(best[1])


def _aicc(n: int, sse: float, k: int) -> float:
    aic = n * math.log(max(sse, 1e-300) / n) + 2 * k
    return aic + (2 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)


def compare_decays(t, loss, t_min: float | None = None,
                   t_max: float | None = None) -> DecayComparison:
    """Rank three shapes of the loss decay over ``t_min <= t <= t_max`` by AICc (least squares
    in ln L; ``k`` counts the noise variance). Needs >= 7 points with t, L > 0 in the span."""
    t = np.asarray(t, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    keep = np.isfinite(t) & np.isfinite(loss) & (t > 0) & (loss > 0)
    if t_min is not None:
        keep &= t >= t_min
    if t_max is not None:
        keep &= t <= t_max
    t, loss = t[keep], loss[keep]
    n = int(t.size)
    if n < 7:
        raise ValueError(f"need >= 7 loss records in the span to compare 3 decay shapes, got {n}")
    y = np.log(loss)
    slope, intercept = np.polyfit(np.log(t), y, 1)
    sse_pow = float(np.sum((y - intercept - slope * np.log(t)) ** 2))
    off, sse_off = _fit_offset(t, loss)
    stretched, sse_str = _fit_stretched(t, loss)
    models = {
        "power": {"amplitude": float(math.exp(intercept)), "alpha": float(-slope),
                  "sse": sse_pow, "k": 3},
        "power_offset": off | {"sse": sse_off, "k": 4},
        "stretched_exp": stretched | {"sse": sse_str, "k": 5},
    }
    for m in models.values():
        m["aicc"] = _aicc(n, m["sse"], m["k"])
    best_aic = min(m["aicc"] for m in models.values())
    total = sum(math.exp(-(m["aicc"] - best_aic) / 2) for m in models.values())
    for m in models.values():
        m["delta_aicc"] = m["aicc"] - best_aic
        m["weight"] = math.exp(-m["delta_aicc"] / 2) / total
    best = min(models, key=lambda k: models[k]["aicc"])
    return DecayComparison(models=models, best=best, t_min=float(t.min()), t_max=float(t.max()),
                           decades=float(math.log10(t.max() / t.min())), n_points=n)


# ----------------------------------------------------------------------------------------------
# L_inf: profile-likelihood interval
# ----------------------------------------------------------------------------------------------

def _sse_at_l_inf(t: np.ndarray, loss: np.ndarray, l_inf: float) -> float:
    """Least squares in ln L of ``l_inf + A t^-alpha`` over (A, alpha) at fixed ``l_inf``."""
    y, lt = np.log(loss), np.log(t)
    excess = np.clip(loss - l_inf, 1e-300, None)
    slope, intercept = np.polyfit(lt, np.log(excess), 1)

    def f(tt, log_a, alpha):
        with np.errstate(over="ignore", under="ignore"):
            return np.log(np.clip(l_inf + np.exp(log_a - alpha * np.log(tt)), 1e-300, None))

    fit = _lm(f, t, y, (intercept, -slope))
    return math.inf if fit is None else fit[1]


def l_inf_interval(t, loss, t_min: float | None = None, confidence: float = 0.95,
                   calibration: str = "chi2") -> dict[str, Any]:
    """Profile-likelihood interval of ``L_inf`` in ``L(t) = L_inf + A t^-alpha`` over
    ``t >= t_min``: ``{"l_inf", "lo", "hi", "positive"}``; ``lo = 0`` when a zero asymptote is
    inside the interval, ``positive`` when it is not (``lo > 0``)."""
    t = np.asarray(t, dtype=np.float64).ravel()
    loss = np.asarray(loss, dtype=np.float64).ravel()
    keep = np.isfinite(t) & np.isfinite(loss) & (t > 0) & (loss > 0)
    if t_min is not None:
        keep &= t >= t_min
    t, loss = t[keep], loss[keep]
    if t.size < 4:
        raise ValueError(f"need >= 4 loss records with t >= t_min, got {t.size}")
    fit, sse = _fit_offset(t, loss)
    n = int(t.size)
    floor = max(sse, 1e-300)
    thr = deviance_threshold(n, 3, confidence, calibration)
    top = float(loss.min()) * (1 - 1e-9)

    def dev(l: float) -> float:
        return n * math.log(max(_sse_at_l_inf(t, loss, l), floor) / floor)

    best = min(max(fit["l_inf"], 0.0), top * (1 - 1e-6))
    lo, hi = profile_interval(dev, best, thr, 0.0, top, 1e-3 * max(top, 1e-12))
    lo = 0.0 if lo is None else lo
    return {"l_inf": fit["l_inf"], "lo": lo, "hi": top if hi is None else hi,
            "positive": bool(lo > 0), "n_points": n, "confidence": confidence,
            "calibration": calibration}
