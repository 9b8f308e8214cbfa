"""What else could explain a claim: the loss curve's own noise, placebo events, conditional
tests, and the family of tests a report prints with Holm-adjusted values.  Pure numpy.

*Noise of a curve.*  The robust noise scale of a series is ``1.4826 * MAD`` of its differences
from one checkpoint to the next (a trend moves the median, not the MAD).

*Initial learning phase.*  The checkpoints up to the first local minimum of the test loss
smoothed by a centred moving average over 5 checkpoints (where the smoothed loss first stops
falling).  The ordinary early fall of the loss happens there, so no drop is looked for in it.

*Drop* (of the test loss, in gap g between checkpoints g and g + 1, after the learning phase):
the test loss falls by more than ``event_jump`` x its local typical |change| (median over the
10 gaps either side) AND by more than ``noise_sigmas`` x the robust noise scale of the test
loss's differences after the learning phase.  A *descent cycle* needs a rise and a drop that
both exceed ``noise_sigmas`` x the same noise scale.

*Placebo events* (reported beside the stability events, tested against the same targets):

- a **training-loss spike**: the training loss rises by more than ``event_jump`` x its local
  typical |change| and ``noise_sigmas`` x its robust noise scale (the optimiser's blow-ups);
- a **parameter jump**: the parameter change |W_c - W_prev| (L2 over every tensor, the sweep's
  ``param_change``) exceeds ``event_jump`` x its local typical value.

*Conditional tests* (does a stability event predict a target *beyond* the controls?):

- ``stratified``: events re-drawn within strata of the gaps (parameter-change tercile, and the
  offset of the nearest training-loss spike and of the nearest parameter jump, each from
  -r to +r gaps with r = ``event_tolerance + control_window``, or none within r): an event
  at a weight jump is compared with events at other weight jumps, one a gap after a spike with
  other gaps a gap after a spike;
- ``logistic``: per gap, ``logit P(target) = a + b event + c1 log(param change) + c2 spike``
  (spike: within the same reach),
  Firth-penalised, with a likelihood-ratio test of b (:func:`mdesc.stats.logistic_lrt`) and
  its odds ratio with a 95 % interval.

Without recorded parameter change (runs swept without their checkpoints' predecessors) the
controls are the training-loss spikes only, and the result says so.  ``uniform`` (the old
permutation test) and ``circular`` (all events shifted by one offset: their clustering kept)
are reported beside.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from mdesc import stats
from mdesc.sweep.events import local_typical

MAD_SCALE = 1.4826
LEARNING_SMOOTH = 5   # checkpoints averaged before looking for the end of the learning phase


def noise_scale(values) -> float:
    """Robust noise of a series: 1.4826 x the MAD of its finite differences (NaN: < 3)."""
    d = np.diff(np.asarray(values, float))
    d = d[np.isfinite(d)]
    if d.size < 3:
        return math.nan
    return float(MAD_SCALE * np.median(np.abs(d - np.median(d))))


def learning_end(loss, width: int = LEARNING_SMOOTH) -> int:
    """Index of the end of the initial learning phase: the first local minimum of the test loss
    smoothed by a centred moving average over ``width`` checkpoints (module doc)."""
    y = np.asarray(loss, float)
    idx = np.flatnonzero(np.isfinite(y))
    if idx.size < 2:
        return 0
    h = width // 2
    c = np.concatenate([[0.0], np.cumsum(y[idx])])
    i = np.arange(idx.size)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, idx.size)
    ys = (c[hi] - c[lo]) / (hi - lo)
    up = np.flatnonzero(np.diff(ys) >= 0)
    return int(idx[up[0]]) if up.size else int(idx[-1])


def jumps(values, sign: int, jump: float, noise_sigmas: float, start: int = 0) -> list[int]:
    """Gaps g >= ``start`` where ``sign * (values[g+1] - values[g])`` exceeds ``jump`` x the
    local typical |change| and ``noise_sigmas`` x the robust noise scale after ``start``."""
    y = np.asarray(values, float)
    if y.size < 2:
        return []
    d = np.diff(y)
    typical = local_typical(np.abs(d))
    noise = noise_scale(y[start:])
    noise = 0.0 if not np.isfinite(noise) else noise
    ok = np.isfinite(d) & np.isfinite(typical) & (typical > 0) & (np.arange(d.size) >= start)
    return [int(g) for g in np.flatnonzero(ok)
            if sign * d[g] > jump * typical[g] and sign * d[g] > noise_sigmas * noise]


def loss_jumps(test_loss, train_loss, jump: float, noise_sigmas: float
               ) -> tuple[int, list[int], list[int]]:
    """``(start, drops, spikes)``: the end of the learning phase (:func:`learning_end`), the sharp
    test-loss drops after it and the training-loss spikes (:func:`jumps`), as the analysis
    detects them."""
    start = learning_end(test_loss)
    return (start, jumps(test_loss, -1, jump, noise_sigmas, start),
            jumps(train_loss, +1, jump, noise_sigmas))


def param_jumps(param_change, jump: float) -> list[int]:
    """Gaps g whose parameter change (into checkpoint g + 1) exceeds ``jump`` x its local
    typical value (module doc)."""
    p = np.asarray(param_change, float)
    if p.size < 2 or not np.any(np.isfinite(p[1:])):
        return []
    g_change = p[1:]
    typical = local_typical(g_change)
    ok = np.isfinite(g_change) & np.isfinite(typical) & (typical > 0)
    return [int(g) for g in np.flatnonzero(ok) if g_change[g] > jump * typical[g]]


def _dilate(gaps, n_gaps: int, tolerance: int) -> np.ndarray:
    flag = np.zeros(n_gaps, bool)
    for g in gaps:
        flag[max(0, g - tolerance):g + tolerance + 1] = True
    return flag


def _lag(gaps, n_gaps: int, reach: int) -> np.ndarray:
    """Per gap: its offset from the nearest of ``gaps`` (0 .. 2 reach for -reach .. +reach),
    or 2 reach + 1 when none is within ``reach``: strata by lag keep a drop that follows a spike
    by one epoch in the same stratum as every gap that follows a spike by one epoch."""
    out = np.full(n_gaps, 2 * reach + 1)
    pos = np.arange(n_gaps)
    g = np.asarray(sorted(gaps), int)
    if g.size:
        off = pos[:, None] - g[None, :]
        near = np.argmin(np.abs(off), axis=1)
        o = off[pos, near]
        out = np.where(np.abs(o) <= reach, o + reach, out)
    return out


def _target_gaps(targets, n_gaps: int, tolerance: int) -> np.ndarray:
    """Per gap: a target (position in checkpoint units) within reach of it."""
    pos = np.arange(n_gaps) + 0.5
    t = np.asarray(targets, float)
    if t.size == 0:
        return np.zeros(n_gaps, bool)
    return np.min(np.abs(pos[:, None] - t[None, :]), axis=1) <= tolerance + 0.5 + 1e-9


def controls_of(n_gaps: int, param_change, spikes, pjumps, reach: int) -> dict[str, Any]:
    """The per-gap controls: strata, the logistic model's regressors, and what was used; a
    spike or parameter jump marks the gaps within ``reach`` of it (the tolerance plus the
    control window: a test loss that drops the epoch after the weights jumped is explained)."""
    spike = _dilate(spikes, n_gaps, reach)
    p = np.asarray(param_change, float)[1:n_gaps + 1] if len(param_change) > 1 else np.zeros(0)
    have_p = p.size == n_gaps and np.sum(np.isfinite(p) & (p > 0)) >= 3
    width = 2 * reach + 2
    strata = _lag(spikes, n_gaps, reach) * width + _lag(pjumps, n_gaps, reach)
    regress: dict[str, np.ndarray] = {"training-loss spike": spike.astype(float)}
    used = ["training-loss spike"]
    if have_p:
        logp = np.log(np.where(p > 0, p, np.nan))
        fin = np.isfinite(logp)
        cuts = np.quantile(logp[fin], [1 / 3, 2 / 3])
        tercile = np.where(fin, np.searchsorted(cuts, logp), 3)
        strata = strata * 4 + tercile
        regress["log parameter change"] = np.where(fin, logp, np.nanmedian(logp))
        used += ["parameter-change tercile", "parameter jump"]
    return {"strata": strata, "regressors": regress, "used": used,
            "param_change_available": bool(have_p),
            "note": None if have_p else (
                "no parameter change recorded (the checkpoints' predecessors were not read): "
                "conditioned on training-loss spikes only")}


def association(n: int, event_gaps, targets, controls: dict[str, Any], tolerance: int,
                draws: int, seed: int) -> dict[str, Any]:
    """Every test of "targets sit at stability events": uniform, circular, stratified (beyond
    the controls) and logistic (beyond the controls); each with its effect size."""
    n_gaps = max(n - 1, 0)
    out = {}
    for null in stats.NULLS:
        out[null] = stats.event_hits_test(
            n_gaps, event_gaps, targets, tolerance=tolerance, null=null, draws=draws, seed=seed,
            strata=controls["strata"] if null == "stratified" else None)
    if n_gaps >= 4:
        out["logistic"] = stats.logistic_lrt(
            _target_gaps(targets, n_gaps, tolerance).astype(float),
            _dilate(event_gaps, n_gaps, tolerance).astype(float),
            controls["regressors"], tested_name="stability event")
    else:
        out["logistic"] = {"refused": "fewer than 5 checkpoints", "p_value": None}
    out["controls"] = controls["used"]
    return out


def placebo(n: int, placebo_gaps, targets, tolerance: int, draws: int, seed: int
            ) -> dict[str, Any]:
    """The uniform test with a placebo detector's gaps as the events."""
    return stats.event_hits_test(max(n - 1, 0), placebo_gaps, targets, tolerance=tolerance,
                                 draws=draws, seed=seed)


#: (claims key, test within it, what it asks) of every test a run's report prints
FAMILY = (
    ("minima_at_events", "uniform", "minima at stability events (uniform null)"),
    ("minima_at_events", "circular", "minima at stability events (circular-shift null)"),
    ("minima_at_events", "stratified", "minima at stability events beyond parameter change "
                                       "and spikes (stratified null)"),
    ("minima_at_events", "logistic", "minima at stability events beyond parameter change "
                                     "and spikes (logistic LRT)"),
    ("drops_at_events", "uniform", "drops at stability events (uniform null)"),
    ("drops_at_events", "circular", "drops at stability events (circular-shift null)"),
    ("drops_at_events", "stratified", "drops at stability events beyond parameter change and "
                                      "spikes (stratified null)"),
    ("drops_at_events", "logistic", "drops at stability events beyond parameter change and "
                                    "spikes (logistic LRT)"),
    ("minima_at_spikes", None, "placebo: minima at training-loss spikes (uniform null)"),
    ("drops_at_spikes", None, "placebo: drops at training-loss spikes (uniform null)"),
    ("minima_at_param_jumps", None, "placebo: minima at parameter jumps (uniform null)"),
    ("drops_at_param_jumps", None, "placebo: drops at parameter jumps (uniform null)"),
    ("overtrained_series_lyapunov", "levels_p_shift", "after the optimum, test loss vs "
                                                      "lambda_1 (levels, circular-shift null)"),
    ("overtrained_series_lyapunov", "differences_p", "after the optimum, changes of test loss "
                                                     "vs changes of lambda_1"),
    ("overtrained_series_distance", "levels_p_shift", "after the optimum, test loss vs D~ "
                                                      "(levels, circular-shift null)"),
    ("overtrained_series_distance", "differences_p", "after the optimum, changes of test "
                                                     "loss vs changes of D~"),
)


def _raw_p(claims: dict[str, Any], key: str, sub: str | None) -> float | None:
    block = claims.get(key) or {}
    if sub is None:
        test = block
    elif sub in ("levels_p_shift", "differences_p"):
        return None if block.get("refused") else block.get(sub)
    elif sub == "uniform":
        test = block.get("uniform") or block    # the uniform test is also the block's top
    else:
        test = block.get(sub) or {}
    return None if test.get("refused") else test.get("p_value")


def family(claims: dict[str, Any]) -> list[dict[str, Any]]:
    """Every test the report prints, with its raw and Holm-adjusted p (family: the tests that
    were made; refused tests are listed with ``p = None``)."""
    raw = [_raw_p(claims, key, sub) for key, sub, _ in FAMILY]
    adj = stats.holm(raw)
    return [{"key": key, "test": sub, "what": what, "p": p, "p_holm": a}
            for (key, sub, what), p, a in zip(FAMILY, raw, adj)]


def holm_of(claims: dict[str, Any], key: str, sub: str | None) -> float | None:
    """The Holm-adjusted p of one test of the family (None: refused or not made)."""
    for row in claims.get("tests", []):
        if row["key"] == key and row["test"] == sub:
            return row["p_holm"]
    return None


def describe(test: dict[str, Any] | None) -> str:
    """One test in words: hits with the null's expectation and the effect with its interval
    (event tests), odds ratio with its interval (logistic), or the refusal."""
    if not test:
        return "—"
    if test.get("refused"):
        return f"refused: {test['refused']}"
    if "odds_ratio" in test:
        lo, hi = test["odds_ratio_interval"]
        return (f"odds ratio {test['odds_ratio']:.3g} [{lo:.3g}, {hi:.3g}] per {test['per']} "
                f"(n = {test['n']} gaps; controls: {', '.join(test['controls']) or 'none'}); "
                f"LRT p = {test['p_value']:.3g}")
    lo, hi = test["excess_interval"]
    return (f"{test['observed']} of {test['n_targets']} within ±{test['tolerance']} of one of "
            f"{test['n_events']} events ({test['null']} null: {test['expected']:.2f}; excess "
            f"{test['excess']:+.2f} [{lo:+.2f}, {hi:+.2f}]); p = {test['p_value']:.3g} "
            f"({test['draws']} draws)")


def family_rows(claims: dict[str, Any]) -> list[list[str]]:
    """The report's table of the family: what, effect, raw p, Holm-adjusted p."""
    rows = []
    for row in claims.get("tests") or family(claims):
        block = claims.get(row["key"]) or {}
        if row["test"] in ("levels_p_shift", "differences_p"):
            r = "levels" if row["test"] == "levels_p_shift" else "differences"
            effect = ("refused: " + block["refused"] if block.get("refused") else
                      f"Spearman {_num(block.get(r))} (n = {block.get('n')})")
        elif row["test"] in (None, "uniform"):
            effect = describe(block.get("uniform") or block)
        else:
            effect = describe(block.get(row["test"]))
        rows.append([row["what"], effect, _num(row["p"]), _num(row["p_holm"])])
    return rows


def _num(v) -> str:
    return "—" if v is None or not math.isfinite(float(v)) else f"{float(v):.3g}"
