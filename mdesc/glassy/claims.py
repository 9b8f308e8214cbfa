"""The paper's curve shapes tested on a whole sweep (pure arrays and dicts; no files).

:func:`scaling_analysis` takes the nets (:class:`~mdesc.glassy.sweep.NetRecord`, censored as
analysed) and the result of :func:`~mdesc.glassy.summary.analyze_sweep`, and returns:

* ``divergence``: per depth and threshold, :func:`~mdesc.glassy.scaling.fit_divergence` of the
  seeds' median ``t*`` (``nu`` free, profile intervals, the test of ``nu = 1``, or the reason it
  cannot be made on this grid);
* ``decays``: per net, :func:`~mdesc.glassy.scaling.compare_decays` over the power-law fit's
  span; and a count per depth of which shape wins by AICc;
* ``l_inf``: per net the profile interval of ``L_inf``; per depth and phase (below / above
  ``w_c``) the nets whose interval excludes 0;
* ``aging``: per net and lag window :func:`~mdesc.glassy.collapse.fit_aging_exponent`, and per
  depth, phase and window :func:`~mdesc.glassy.collapse.scaling_over_seeds`, over the late
  waiting times (``aging_min_tw`` of the analysis) and over all of them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from mdesc.glassy.collapse import (WINDOWS, AgingScaling, fit_aging_exponent,
                                   scaling_over_seeds)
from mdesc.glassy.scaling import CALIBRATIONS, compare_decays, fit_divergence, l_inf_interval
from mdesc.glassy.summary import late_waiting_times
from mdesc.options import option

__all__ = ["ScalingSettings", "scaling_analysis", "divergence_by_depth", "phase_of"]


@dataclasses.dataclass(frozen=True)
class ScalingSettings:
    """Settings of the tests of the curve shapes (recorded in ``scaling.json``)."""

    confidence: float = option(0.95, "confidence of the profile and bootstrap intervals")
    calibration: str = option("chi2", "profile-interval threshold: chi2 (1 dof, large-sample) "
                              "or f (small-sample F version, wider)", choices=CALIBRATIONS)
    n_boot: int = option(2000, "bootstrap resamples over seeds (aging collapse)")
    max_residual: float = option(0.05, "a collapse holds when the residual fraction's upper "
                                 "end is at most this")
    min_gain: float = option(0.5, "rescaling beats no scaling when it removes more than this "
                             "fraction of the raw spread (upper end)")
    mu_max: float = option(2.0, "largest aging exponent mu searched")


def divergence_by_depth(result: dict, steps: dict[int, int], s: ScalingSettings) -> list[dict]:
    """Per depth and threshold: the free-exponent fit of the median t* (or its error)."""
    out = []
    for c in result["critical_width"]:
        entry: dict[str, Any] = {"depth": c["depth"], "threshold": c["threshold"]}
        try:
            fit = fit_divergence(c["widths"], c["median_t_star"], grid=c["widths"],
                                 t_max=steps.get(c["depth"]), confidence=s.confidence,
                                 calibration=s.calibration)
            entry |= fit.to_dict()
        except ValueError as e:
            entry["refused"] = str(e)
            entry["error"] = True
        out.append(entry)
    return out


def phase_of(width: float, w_c: float) -> str | None:
    """``"under"`` below ``w_c``, ``"over"`` above, None when ``w_c`` is unknown."""
    if not math.isfinite(w_c):
        return None
    return "under" if width < w_c else "over"


def _phase_w_c(divergence: list[dict], result: dict) -> dict[int, dict[str, Any]]:
    """Per depth, the w_c that splits the phases: the free fit at the analysis' phase threshold
    when it is not refused, else the fixed-exponent pooled fit (marked by ``source``)."""
    thr = result["phase_threshold"]
    out = {}
    for a in result["aging"]:
        out[a["depth"]] = {"w_c": a["w_c"], "source": f"C/(w - w_c), nu = 1, L* = {thr:g}"}
    for d in divergence:
        if d["threshold"] == thr and not d.get("refused"):
            out[d["depth"]] = {"w_c": d["w_c"], "source": f"C/(w - w_c)^nu, L* = {thr:g}"}
    return out


def _decays_and_l_inf(nets, rows: dict, s: ScalingSettings) -> list[dict]:
    out = []
    for n in nets:
        r = rows[(n.depth, n.width, n.seed)]
        entry: dict[str, Any] = {"depth": n.depth, "width": n.width, "seed": n.seed}
        ok = np.isfinite(n.train_loss) & (n.times > 0)
        t, loss = n.times[ok], n.train_loss[ok]
        t_min = r.get("fit_t_min")
        try:
            entry["decay"] = compare_decays(t, loss, t_min=t_min).to_dict()
        except (ValueError, RuntimeError) as e:
            entry["decay"] = {"error": str(e)}
        try:
            entry["l_inf"] = l_inf_interval(t, loss, t_min=t_min, confidence=s.confidence,
                                            calibration=s.calibration)
        except (ValueError, RuntimeError) as e:
            entry["l_inf"] = {"error": str(e)}
        out.append(entry)
    return out


def _decay_summary(per_net: list[dict]) -> list[dict]:
    out = []
    for d in sorted({e["depth"] for e in per_net}):
        ok = [e["decay"] for e in per_net if e["depth"] == d and "best" in e["decay"]]
        spans = [x["decades"] for x in ok]
        out.append({"depth": d, "n_nets": len(ok),
                    "best": {m: sum(x["best"] == m for x in ok)
                             for m in ("power", "power_offset", "stretched_exp")},
                    "decades_min": min(spans) if spans else math.nan,
                    "decades_max": max(spans) if spans else math.nan,
                    "clear": sum(sorted(v["delta_aicc"] for v in x["models"].values())[1] > 10
                                 for x in ok)})
    return out


def _l_inf_summary(per_net: list[dict], phase_w_c: dict) -> list[dict]:
    out = []
    for d in sorted({e["depth"] for e in per_net}):
        wc = phase_w_c.get(d, {}).get("w_c", math.nan)
        for phase in ("under", "over"):
            sel = [e for e in per_net if e["depth"] == d and phase_of(e["width"], wc) == phase
                   and "lo" in e["l_inf"]]
            out.append({"depth": d, "phase": phase, "w_c": wc, "n_nets": len(sel),
                        "widths": sorted({e["width"] for e in sel}),
                        "n_positive": sum(e["l_inf"]["positive"] for e in sel),
                        "lo_min": min((e["l_inf"]["lo"] for e in sel), default=math.nan),
                        "hi_max": max((e["l_inf"]["hi"] for e in sel), default=math.nan)})
    return out


def _aging(nets, phase_w_c: dict, min_tw, s: ScalingSettings) -> tuple[list, list]:
    per_net, groups = [], []
    for n in nets:
        for tws, curves in (("late", late_waiting_times(n.aging, min_tw)), ("all", n.aging)):
            for window, (lo, hi) in WINDOWS.items():
                f = fit_aging_exponent(curves, lo, hi, mu_max=s.mu_max)
                per_net.append({"depth": n.depth, "width": n.width, "seed": n.seed,
                                "waiting_times": tws, "lag_window": window, **f.to_dict()})
    for d in sorted({n.depth for n in nets}):
        wc = phase_w_c.get(d, {}).get("w_c", math.nan)
        for phase in ("under", "over"):
            for tws in ("late", "all"):
                for window in WINDOWS:
                    sel = [e for e in per_net if e["depth"] == d
                           and e["waiting_times"] == tws and e["lag_window"] == window
                           and phase_of(e["width"], wc) == phase]
                    groups.append({"depth": d, "phase": phase, "w_c": wc, "waiting_times": tws,
                                   "lag_window": window,
                                   "widths": sorted({e["width"] for e in sel})}
                                  | scaling_over_seeds([_as_fit(e) for e in sel],
                                                       [e["seed"] for e in sel],
                                                       n_boot=s.n_boot, level=s.confidence,
                                                       max_residual=s.max_residual,
                                                       min_gain=s.min_gain))
    return per_net, groups


def _as_fit(entry: dict) -> AgingScaling:
    """An :class:`AgingScaling` back from its JSON row (null -> NaN)."""
    vals = {f.name: (math.nan if entry.get(f.name) is None else entry[f.name])
            for f in dataclasses.fields(AgingScaling)}
    return AgingScaling(**vals)


def scaling_analysis(nets, result: dict, settings: ScalingSettings = ScalingSettings()
                     ) -> dict[str, Any]:
    """Every test of the module docstring on one analysed sweep (JSON-ready)."""
    steps = {d: min(n.step for n in nets if n.depth == d) for d in {n.depth for n in nets}}
    divergence = divergence_by_depth(result, steps, settings)
    phase_w_c = _phase_w_c(divergence, result)
    rows = {(r["depth"], r["width"], r["seed"]): r for r in result["nets"]}
    per_net = _decays_and_l_inf(nets, rows, settings)
    aging_nets, aging_groups = _aging(nets, phase_w_c, result.get("aging_min_tw"), settings)
    return {"settings": dataclasses.asdict(settings),
            "phase_threshold": result["phase_threshold"],
            "phase_w_c": {str(d): v for d, v in sorted(phase_w_c.items())},
            "divergence": divergence, "decays": _decay_summary(per_net),
            "l_inf": _l_inf_summary(per_net, phase_w_c), "nets": per_net,
            "aging": aging_groups, "aging_nets": aging_nets,
            "steps_reached": {str(d): v for d, v in sorted(steps.items())}}
