"""A sweep, analysed: every fit with its error, intervals over seeds (pure arrays, no files).

Input: nets as objects with ``depth, width, seed, n_parameters, times, train_loss, test_loss,
batch_mean, batch_max, aging, step, steps`` (:class:`~mdesc.glassy.sweep.NetRecord`). Output:
plain JSON-ready dicts (see :func:`analyze_sweep`).

Statistics: intervals over seeds are Student-t intervals of the mean (``confidence``, default
95%) from the seeds' values; with fewer than 2 finite values the interval is NaN (it cannot be
made). Every claim also carries the fraction of nets (or seeds) for which it holds.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from mdesc.glassy.analysis import (AgingCurves, aging_collapse, fit_critical_width, fit_power_law,
                                   learning_time)
from mdesc.options import option
from mdesc.stats import mean_interval

__all__ = ["AnalysisSettings", "seed_interval", "critical_width_over_seeds", "summarize_net",
           "analyze_sweep", "phase_aging", "depth_trend", "first_spike_time", "censor_at"]


@dataclasses.dataclass(frozen=True)
class AnalysisSettings:
    """The settings of a sweep's analysis (recorded in ``fits.json`` under ``"analysis"``); the
    options of ``mdesc glassy analyze`` (the first three also of ``mdesc glassy sweep``)."""

    thresholds: tuple[float, ...] = option((1.4, 1.2, 1.0), "training-loss thresholds (nats "
                                           "per voice and step) for t*")
    fit_from: float = option(0.05, "fit the power law from t >= FIT_FROM * steps")
    aging_min_tw: float | None = option(None, "measure the aging collapse on waiting times >= "
                                        "this only, e.g. past the initial transient (none: all)")
    censor_spikes: bool = option(False, "analyse each net only up to its first loss spike")
    partial: bool = option(False, "analyse unfinished groups with their records so far")


#: Mean and Student-t interval over seeds: :func:`mdesc.stats.mean_interval` (its glassy name).
seed_interval = mean_interval


def critical_width_over_seeds(widths, t_star, confidence: float = 0.95) -> dict[str, Any]:
    """``t*(w) = C / (w - w_c)`` fitted seed by seed and to the seeds' median t*.

    widths: (W,); t_star: (S, W) learning times per seed (inf: never reached; NaN: unknown,
    e.g. a run censored before it reached the threshold, left out).
    Returns ``per_seed`` (w_c, w_c_err, at_bound or the error per seed), ``w_c_seeds``
    (:func:`seed_interval` over the seeds whose fit did not sit at its bound),
    ``fraction_fitted`` (seeds with a fit not at the bound), and ``pooled`` (the fit to the
    median over seeds of t*, a width counting as unreached when most seeds never reached it;
    ``w_c_err`` from the fit covariance).
    """
    widths = np.asarray(widths, dtype=np.float64)
    ts = np.atleast_2d(np.asarray(t_star, dtype=np.float64))
    if ts.shape[1] != widths.size:
        raise ValueError(f"t_star must be (seeds, {widths.size} widths), got {ts.shape}")
    per_seed, good = [], []
    for row in ts:
        try:
            fit = fit_critical_width(widths, row)
            per_seed.append({"w_c": fit.w_c, "w_c_err": fit.w_c_err, "C": fit.amplitude,
                             "at_bound": fit.w_c_at_bound, "n_points": int(fit.widths.size)})
            if not fit.w_c_at_bound:
                good.append(fit.w_c)
        except ValueError as e:
            per_seed.append({"error": str(e)})
    med = np.full(widths.size, np.nan)  # NaN entries are unknown: the median of the known ones
    for j in range(widths.size):
        known = ts[~np.isnan(ts[:, j]), j]
        if known.size:
            med[j] = np.median(known)
    out: dict[str, Any] = {"per_seed": per_seed, "w_c_seeds": seed_interval(good, confidence),
                           "fraction_fitted": len(good) / ts.shape[0],
                           "median_t_star": med.tolist()}
    try:
        fit = fit_critical_width(widths, med)
        out["pooled"] = {"w_c": fit.w_c, "w_c_err": fit.w_c_err, "C": fit.amplitude,
                         "C_err": fit.amplitude_err, "n_points": int(fit.widths.size),
                         "unreached_widths": fit.unreached_widths.tolist(),
                         "rms_log_residual": fit.rms_log_residual,
                         "at_bound": fit.w_c_at_bound}
    except ValueError as e:
        out["pooled"] = {"error": str(e)}
    return out


def _max_spike(net, t_from: float = 10.0) -> float:
    """Largest ratio of a bin's maximum minibatch loss to its mean (bins ending after t_from)."""
    ok = (net.times >= t_from) & np.isfinite(net.batch_max) & np.isfinite(net.batch_mean)
    if not ok.any():
        return math.nan
    return float(np.max(net.batch_max[ok] / net.batch_mean[ok]))


def _max_rise(t, loss, t_from: float = 100.0) -> float:
    """Largest relative rise of the full training loss between consecutive records after
    ``t_from`` (0 for a monotone decay): a loss spike that the record caught."""
    keep = t >= t_from
    t, loss = t[keep], loss[keep]
    if loss.size < 2:
        return math.nan
    return float(max(0.0, np.max(loss[1:] / loss[:-1] - 1.0)))


def first_spike_time(net, max_ratio: float = 2.0, max_rise: float = 0.1,
                     t_from: float = 100.0) -> float:
    """First record time (>= t_from) whose bin holds a minibatch loss above ``max_ratio`` times
    the bin's mean, or where the full training loss rose by more than ``max_rise`` since the
    previous record; ``inf`` if none. (Without spikes, batches of 4 windows stay below about
    1.65 times the mean, and the full loss rises by at most a few percent, at the SGD floor.)"""
    t = np.asarray(net.times, dtype=np.float64)
    ok = (t >= t_from) & np.isfinite(net.batch_max) & np.isfinite(net.batch_mean)
    hits = list(t[ok & (net.batch_max > max_ratio * net.batch_mean)])
    loss = np.asarray(net.train_loss, dtype=np.float64)
    rise = np.full(t.shape, np.nan)
    rise[1:] = loss[1:] / loss[:-1] - 1.0
    hits += list(t[(t >= t_from) & (rise > max_rise)])
    return float(min(hits)) if hits else math.inf


def censor_at(net, t_cut: float):
    """A copy of ``net`` without anything recorded at or after ``t_cut``: losses become NaN,
    aging points with ``tau_w + tau >= t_cut`` are dropped (the net is then "not reached" for
    thresholds it had not reached before ``t_cut``)."""
    if not math.isfinite(t_cut):
        return net
    keep = np.asarray(net.times) < t_cut
    lags, deltas = [], []
    for tw, lag, delta in zip(net.aging.waiting_times, net.aging.lags, net.aging.delta):
        k = tw + np.asarray(lag) < t_cut
        lags.append(np.asarray(lag)[k])
        deltas.append(np.asarray(delta)[k])
    nan = lambda a: np.where(keep, a, np.nan)  # noqa: E731
    return dataclasses.replace(net, train_loss=nan(net.train_loss), test_loss=nan(net.test_loss),
                               batch_mean=nan(net.batch_mean), batch_max=nan(net.batch_max),
                               aging=AgingCurves(np.asarray(net.aging.waiting_times), lags, deltas))


def late_waiting_times(curves: AgingCurves, min_waiting_time: float | None) -> AgingCurves:
    """The aging curves whose ``tau_w >= min_waiting_time`` (all of them for None)."""
    if min_waiting_time is None:
        return curves
    keep = [k for k, tw in enumerate(curves.waiting_times) if tw >= min_waiting_time]
    return AgingCurves(np.asarray(curves.waiting_times)[keep], [curves.lags[k] for k in keep],
                       [curves.delta[k] for k in keep])


def summarize_net(net, thresholds: Sequence[float], fit_from: float,
                  aging_min_tw: float | None = None) -> dict[str, Any]:
    """One net's row: final losses, power-law fit (from ``t >= fit_from * steps reached``),
    ``t_star@L`` per threshold, aging collapse (all lags, ``tau <= tau_w``, ``tau >= tau_w``),
    the largest minibatch-loss spike ratio (a bin's maximum over its mean) and the largest
    relative rise of the full training loss between records (``max_loss_rise``).
    aging_min_tw: compare only the curves with ``tau_w >= aging_min_tw`` (e.g. waiting times
    past the initial transient); ``aging_ratio_all_tw`` keeps the ratio over all of them."""
    reached = np.isfinite(net.train_loss)
    t, loss = net.times[reached], net.train_loss[reached]
    row: dict[str, Any] = {"depth": net.depth, "width": net.width, "seed": net.seed,
                           "n_parameters": net.n_parameters, "step": net.step,
                           "steps": net.steps, "final_train_loss": float(loss[-1]),
                           "final_test_loss": float(net.test_loss[reached][-1]),
                           "max_spike_ratio": _max_spike(net),
                           "max_loss_rise": _max_rise(t, loss)}
    try:
        fit = fit_power_law(t, loss, t_min=max(1.0, fit_from * net.step))
        row.update({"l_inf": fit.l_inf, "l_inf_err": fit.l_inf_err,
                    "l_inf_positive": fit.l_inf_positive, "l_inf_p_value": fit.l_inf_p_value,
                    "amplitude": fit.amplitude, "amplitude_err": fit.amplitude_err,
                    "alpha": fit.alpha, "alpha_err": fit.alpha_err,
                    "fit_rms_log_residual": fit.rms_log_residual, "fit_t_min": fit.t_min})
    except (ValueError, RuntimeError) as e:
        row["power_law_error"] = str(e)
    for thr in thresholds:
        row[f"t_star@{thr:g}"] = learning_time(t, loss, thr)
    late = late_waiting_times(net.aging, aging_min_tw)
    row["aging_waiting_times"] = [int(x) for x in late.waiting_times]
    row["aging_ratio_all_tw"] = aging_collapse(net.aging).ratio
    for tag, kw in (("", {}), ("_short", {"max_ratio": 1.0}), ("_long", {"min_ratio": 1.0})):
        col = aging_collapse(late, **kw) if len(late.lags) >= 2 else None
        if col is None:
            row[f"aging_ratio{tag}"] = math.nan
            row[f"aging_spread_rescaled{tag}"] = row[f"aging_spread_raw{tag}"] = math.nan
            continue
        row[f"aging_ratio{tag}"] = col.ratio
        row[f"aging_spread_rescaled{tag}"] = col.spread_rescaled
        row[f"aging_spread_raw{tag}"] = col.spread_raw
    return row


def _group(rows, *keys):
    out: dict[tuple, list] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return dict(sorted(out.items()))


def phase_aging(rows: list[dict], w_c: dict[int, float]) -> list[dict[str, Any]]:
    """Aging collapse ratios per depth and phase (``under``: ``w < w_c[depth]``, ``over``:
    ``w > w_c[depth]``): interval over nets of ``log10`` ratio, and the fraction of nets whose
    curves collapse better against ``tau/tau_w`` than against ``tau`` (ratio < 1)."""
    out = []
    for depth in sorted({r["depth"] for r in rows}):
        wc = w_c.get(depth, math.nan)
        for phase in ("under", "over"):
            sel = [r for r in rows if r["depth"] == depth and math.isfinite(wc)
                   and ((r["width"] < wc) if phase == "under" else (r["width"] > wc))]
            entry: dict[str, Any] = {"depth": depth, "phase": phase, "w_c": wc,
                                     "n_nets": len(sel), "widths": sorted({r["width"] for r in sel})}
            for tag in ("", "_short", "_long"):
                ratios = np.array([r[f"aging_ratio{tag}"] for r in sel], dtype=np.float64)
                ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
                entry[f"log10_ratio{tag}"] = seed_interval(np.log10(ratios)) if ratios.size \
                    else seed_interval([])
                entry[f"fraction_collapsing{tag}"] = (float(np.mean(ratios < 1.0))
                                                      if ratios.size else math.nan)
            out.append(entry)
    return out


def depth_trend(critical: list[dict]) -> list[dict[str, Any]]:
    """Per threshold: w_c by depth (seed intervals) and whether it falls from each depth to the
    next (difference of seed means with its combined standard error; fraction of seeds, paired
    by index, with a smaller w_c at the greater depth)."""
    out = []
    for thr in sorted({c["threshold"] for c in critical}):
        byd = {c["depth"]: c for c in critical if c["threshold"] == thr}
        depths = sorted(byd)
        steps = []
        for a, b in zip(depths[:-1], depths[1:]):
            ia, ib = byd[a]["w_c_seeds"], byd[b]["w_c_seeds"]
            diff = ib["mean"] - ia["mean"]
            err = math.sqrt(ia["sem"] ** 2 + ib["sem"] ** 2) if ia["n"] > 1 and ib["n"] > 1 \
                else math.nan
            pa = [s.get("w_c") if not s.get("at_bound", True) else None for s in byd[a]["per_seed"]]
            pb = [s.get("w_c") if not s.get("at_bound", True) else None for s in byd[b]["per_seed"]]
            pairs = [(x, y) for x, y in zip(pa, pb) if x is not None and y is not None]
            steps.append({"from_depth": a, "to_depth": b, "difference": diff,
                          "difference_err": err, "n_seed_pairs": len(pairs),
                          "fraction_decreasing": (float(np.mean([y < x for x, y in pairs]))
                                                  if pairs else math.nan)})
        out.append({"threshold": thr,
                    "w_c_by_depth": {str(d): byd[d]["w_c_seeds"] for d in depths},
                    "steps": steps})
    return out


def analyze_sweep(nets, thresholds: Sequence[float],
                  fit_from: float = AnalysisSettings.fit_from,
                  phase_threshold: float | None = None,
                  aging_min_tw: float | None = None,
                  censor_spikes: bool = False) -> dict[str, Any]:
    """All the analyses of a sweep.

    Returns ``nets`` (one :func:`summarize_net` row each), ``widths`` (per depth and width:
    seed intervals of final loss, L_inf, alpha, t* per threshold, and the fraction of seeds
    with L_inf > 0), ``critical_width`` (per depth and threshold:
    :func:`critical_width_over_seeds`), ``depth_trend`` (:func:`depth_trend`) and ``aging``
    (:func:`phase_aging` with the phases split at the pooled w_c of ``phase_threshold``,
    default the lowest threshold with a pooled fit at every depth); the aging collapse uses the
    waiting times ``>= aging_min_tw`` (all for None). censor_spikes: analyse every net only
    up to its :func:`first_spike_time` (:func:`censor_at`); ``spike_time`` is in every row.
    """
    rows = []
    for n in nets:
        t_spike = first_spike_time(n)
        row = summarize_net(censor_at(n, t_spike) if censor_spikes else n, thresholds,
                            fit_from, aging_min_tw)
        row["spike_time"] = t_spike
        row["censored"] = bool(censor_spikes and math.isfinite(t_spike))
        if row["censored"]:  # not reached before the spike: unknown, not "never"
            for thr in thresholds:
                if math.isinf(row[f"t_star@{thr:g}"]):
                    row[f"t_star@{thr:g}"] = math.nan
        rows.append(row)
    widths = []
    for (d, w), grp in _group(rows, "depth", "width").items():
        e: dict[str, Any] = {"depth": d, "width": w, "n_seeds": len(grp),
                             "n_parameters": grp[0]["n_parameters"]}
        for key in ("final_train_loss", "final_test_loss", "l_inf", "alpha", "aging_ratio",
                    "aging_ratio_all_tw",
                    "aging_ratio_short", "aging_ratio_long", "max_spike_ratio", "max_loss_rise"):
            e[key] = seed_interval([r.get(key, math.nan) for r in grp])
        e["fraction_l_inf_positive"] = float(np.mean([bool(r.get("l_inf_positive")) for r in grp]))
        e["fraction_spiked"] = float(np.mean([math.isfinite(r["spike_time"]) for r in grp]))
        e["spike_time"] = seed_interval([r["spike_time"] for r in grp])
        for thr in thresholds:
            ts = np.array([r[f"t_star@{thr:g}"] for r in grp], dtype=np.float64)
            e[f"t_star@{thr:g}"] = seed_interval(ts)
            e[f"fraction_reached@{thr:g}"] = float(np.mean(np.isfinite(ts)))
            e[f"fraction_unknown@{thr:g}"] = float(np.mean(np.isnan(ts)))
        widths.append(e)
    critical = []
    for d in sorted({r["depth"] for r in rows}):
        drows = [r for r in rows if r["depth"] == d]
        ws = sorted({r["width"] for r in drows})
        seeds = sorted({r["seed"] for r in drows})
        for thr in thresholds:
            table = np.full((len(seeds), len(ws)), np.nan)
            for r in drows:
                table[seeds.index(r["seed"]), ws.index(r["width"])] = r[f"t_star@{thr:g}"]
            # NaN stays: a net that is missing or was censored before reaching the threshold
            critical.append({"depth": d, "threshold": thr, "widths": ws, "seeds": seeds}
                            | critical_width_over_seeds(ws, table))
    if phase_threshold is None:
        ok = [thr for thr in thresholds
              if all("w_c" in c["pooled"] and not c["pooled"]["at_bound"]
                     for c in critical if c["threshold"] == thr)]
        phase_threshold = min(ok) if ok else (min(thresholds) if thresholds else math.nan)
    w_c = {c["depth"]: c["pooled"].get("w_c", math.nan) for c in critical
           if c["threshold"] == phase_threshold and not c["pooled"].get("at_bound", True)}
    return {"nets": rows, "widths": widths, "critical_width": critical,
            "depth_trend": depth_trend(critical), "phase_threshold": phase_threshold,
            "aging": phase_aging(rows, w_c), "thresholds": list(thresholds),
            "fit_from": fit_from, "aging_min_tw": aging_min_tw, "censor_spikes": censor_spikes,
            "n_spiked": int(sum(math.isfinite(r["spike_time"]) for r in rows)), "n_nets": len(rows)}
