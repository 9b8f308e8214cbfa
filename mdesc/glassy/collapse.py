"""Aging as a scaling collapse with a fitted exponent, tested against no scaling (pure arrays).

The curves ``Delta(tau_w, tau)`` of one net (one per waiting time) *age* when they fall on one
master curve against ``x = tau / tau_w^mu`` with ``mu > 0`` (``mu = 1``: simple aging), and are
time-translation invariant (no aging) when they already coincide against ``tau`` (``mu = 0``).

Collapse cost (as in the scaling-collapse literature, e.g. Bhattacharjee & Seno, J. Phys. A 34,
6375 (2001)): for every pair of curves, the mean squared difference of ``ln Delta`` on a grid
over the overlap of their ``ln x`` ranges (pairs overlapping by less than ``min_overlap`` in
``ln x`` are skipped), averaged over the pairs. :func:`fit_aging_exponent` minimises it over
``mu`` in ``[0, mu_max]`` and reports the cost at the best ``mu``, at ``mu = 1`` and at
``mu = 0`` (no scaling), and the *residual fraction*: the best cost over ``2 var(ln Delta)``
(what the pairs would give if the curves were unrelated), near 0 for a collapse, near 1 for
none. :func:`scaling_over_seeds` puts intervals on a group of nets (e.g. a depth and phase) by a
bootstrap over seeds (all nets of a seed resampled together).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from mdesc.glassy.analysis import AgingCurves
from mdesc.store import to_json as _jsonable

__all__ = ["AgingScaling", "collapse_cost", "fit_aging_exponent", "scaling_over_seeds",
           "WINDOWS"]

#: Lag windows in units of tau / tau_w: all lags, short (tau <= tau_w), long (tau >= tau_w).
WINDOWS = {"all": (None, None), "short": (None, 1.0), "long": (1.0, None)}


def _logs(curves: AgingCurves, min_ratio, max_ratio):
    """Per curve: (ln tau_w, ln tau, ln Delta) of its usable points inside the window."""
    out = []
    for tw, lag, delta in zip(curves.waiting_times, curves.lags, curves.delta):
        lag = np.asarray(lag, dtype=np.float64)
        delta = np.asarray(delta, dtype=np.float64)
        ok = (lag > 0) & (delta > 0) & np.isfinite(delta)
        if tw <= 0:
            continue
        if min_ratio is not None:
            ok &= lag / tw >= min_ratio
        if max_ratio is not None:
            ok &= lag / tw <= max_ratio
        if ok.sum() >= 2:
            o = np.argsort(lag[ok])
            out.append((math.log(tw), np.log(lag[ok][o]), np.log(delta[ok][o])))
    return out


def collapse_cost(curves: AgingCurves, mu: float, min_ratio: float | None = None,
                  max_ratio: float | None = None, min_overlap: float = 0.5,
                  n_grid: int = 16) -> tuple[float, int]:
    """(cost, pairs used) of the collapse against ``tau / tau_w^mu`` (see the module
    docstring), on the points with ``min_ratio <= tau/tau_w <= max_ratio``; NaN without an
    overlapping pair."""
    logs = _logs(curves, min_ratio, max_ratio)
    return _cost(logs, mu, min_overlap, n_grid)


def _cost(logs, mu: float, min_overlap: float, n_grid: int) -> tuple[float, int]:
    xs = [(lt - mu * ltw, ld) for ltw, lt, ld in logs]
    total, pairs = 0.0, 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            (xi, yi), (xj, yj) = xs[i], xs[j]
            lo, hi = max(xi[0], xj[0]), min(xi[-1], xj[-1])
            if hi - lo < min_overlap:
                continue
            g = np.linspace(lo, hi, n_grid)
            total += float(np.mean((np.interp(g, xi, yi) - np.interp(g, xj, yj)) ** 2))
            pairs += 1
    return (total / pairs if pairs else math.nan), pairs


@dataclasses.dataclass
class AgingScaling:
    """Result of :func:`fit_aging_exponent` for one net's curves in one lag window.

    mu: the exponent minimising the collapse cost on ``[0, mu_max]``; cost_mu, cost_1,
    cost_0: the cost there, at ``mu = 1`` and at ``mu = 0`` (no scaling); ratio_mu =
    cost_mu / cost_0, ratio_1 = cost_1 / cost_0 (< 1: rescaling beats no scaling);
    residual_fraction = cost_mu / (2 var ln Delta); n_curves, n_pairs (at mu).
    """

    mu: float
    cost_mu: float
    cost_1: float
    cost_0: float
    ratio_mu: float
    ratio_1: float
    residual_fraction: float
    n_curves: int
    n_pairs: int
    window: tuple[float | None, float | None]
    mu_max: float

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


def fit_aging_exponent(curves: AgingCurves, min_ratio: float | None = None,
                       max_ratio: float | None = None, mu_max: float = 2.0,
                       min_overlap: float = 0.5, n_grid: int = 16) -> AgingScaling:
    """Fit the aging exponent ``mu`` of one net's curves (see :class:`AgingScaling`): a scan
    of 81 values on ``[0, mu_max]``, refined around the best. Fields are NaN when fewer than
    two curves overlap."""
    logs = _logs(curves, min_ratio, max_ratio)
    nan = AgingScaling(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                       len(logs), 0, (min_ratio, max_ratio), mu_max)
    if len(logs) < 2:
        return nan
    mus = np.linspace(0.0, mu_max, 81)
    costs = np.array([_cost(logs, m, min_overlap, n_grid)[0] for m in mus])
    if not np.isfinite(costs).any():
        return nan
    k = int(np.nanargmin(costs))
    mu, best = float(mus[k]), float(costs[k])
    lo, hi = mus[max(k - 1, 0)], mus[min(k + 1, mus.size - 1)]
    res = minimize_scalar(lambda m: _cost(logs, m, min_overlap, n_grid)[0], bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-4})
    if math.isfinite(res.fun) and res.fun < best:
        mu, best = float(res.x), float(res.fun)
    c1 = _cost(logs, 1.0, min_overlap, n_grid)[0]
    c0 = _cost(logs, 0.0, min_overlap, n_grid)[0]
    values = np.concatenate([ld for _, _, ld in logs])
    var = float(np.var(values))
    return AgingScaling(mu=mu, cost_mu=best, cost_1=c1, cost_0=c0,
                        ratio_mu=best / c0 if c0 > 0 else math.nan,
                        ratio_1=c1 / c0 if c0 > 0 else math.nan,
                        residual_fraction=best / (2 * var) if var > 0 else math.nan,
                        n_curves=len(logs), n_pairs=_cost(logs, mu, min_overlap, n_grid)[1],
                        window=(min_ratio, max_ratio), mu_max=mu_max)


def scaling_over_seeds(fits: Sequence[AgingScaling], seeds: Sequence[int], n_boot: int = 2000,
                       seed: int = 0, level: float = 0.95, max_residual: float = 0.05,
                       min_gain: float = 0.5) -> dict[str, Any]:
    """Means over a group of nets, with percentile intervals from a bootstrap over seeds.

    fits: one :class:`AgingScaling` per net; seeds: each net's seed (nets sharing a seed are
    resampled together). Statistics: ``mu``, ``log10_ratio_mu``, ``log10_ratio_1`` and
    ``residual_fraction`` (each ``{"mean", "lo", "hi"}``). Verdicts: ``collapses`` (the
    residual fraction's upper end <= ``max_residual``), ``beats_no_scaling`` (the best
    rescaling removes more than ``min_gain`` of the raw spread: ``ratio_mu``'s upper end <
    ``1 - min_gain``), ``simple_aging_inside`` (mu's interval holds 1), ``aging`` (beats no
    scaling and mu's interval excludes 0). With one seed there is no interval (NaN ends) and
    every verdict is None.
    """
    stats = {"mu": [f.mu for f in fits],
             "log10_ratio_mu": [math.log10(f.ratio_mu) if f.ratio_mu > 0 else math.nan
                                for f in fits],
             "log10_ratio_1": [math.log10(f.ratio_1) if f.ratio_1 > 0 else math.nan
                               for f in fits],
             "residual_fraction": [f.residual_fraction for f in fits]}
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}
    seeds = np.asarray(seeds)
    ok = np.all([np.isfinite(a) for a in arrays.values()], axis=0)
    uniq = np.unique(seeds[ok])
    out: dict[str, Any] = {"n_nets": int(ok.sum()), "n_seeds": int(uniq.size),
                           "n_boot": n_boot, "level": level}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(uniq.size, 1), (n_boot, uniq.size)) if uniq.size else None
    a = (1 - level) / 2
    for name, arr in arrays.items():
        mean = float(arr[ok].mean()) if ok.any() else math.nan
        lo = hi = math.nan
        if uniq.size >= 2:
            per_seed = [arr[ok & (seeds == s)] for s in uniq]
            boot = [np.concatenate([per_seed[i] for i in row]).mean() for row in draws]
            lo, hi = (float(q) for q in np.quantile(boot, [a, 1 - a]))
        out[name] = {"mean": mean, "lo": lo, "hi": hi}
    if uniq.size < 2:
        out.update(collapses=None, beats_no_scaling=None, simple_aging_inside=None, aging=None)
        return out
    mu, gain = out["mu"], out["log10_ratio_mu"]
    out["collapses"] = bool(out["residual_fraction"]["hi"] <= max_residual)
    out["beats_no_scaling"] = bool(gain["hi"] < math.log10(1 - min_gain))
    out["simple_aging_inside"] = bool(mu["lo"] <= 1.0 <= mu["hi"])
    out["aging"] = bool(out["beats_no_scaling"] and mu["lo"] > 0)
    out["max_residual"], out["min_gain"] = max_residual, min_gain
    return out
