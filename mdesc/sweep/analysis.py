"""Order/chaos phases along the training axis, and the multiple-descent claims they support.

Input is a *run table*: one row per saved checkpoint, as produced by
``mdesc.sweep.load_table(folder)`` -- a mapping of numpy arrays:

============== ======= =====================================================================
key            shape   meaning
============== ======= =====================================================================
epoch          (C,)    training epoch of the checkpoint (any increasing numbers)
train_loss     (C,)    training loss (binary cross-entropy, nats)
test_loss      (C,)    test loss (nats)
log_distance   (C,)    D~ = mean_i ln D_i, the asymptotic distance (floor -15 means order)
lyapunov_max   (C,)    mean over samples of the maximal Lyapunov exponent lambda_1
                       (natural-log growth per step)
lyapunov_stderr (C,)   its standard error
reduced_sum    (C, S)  per-sample sum_j h_T,j (only used by the report's bifurcation diagram)
============== ======= =====================================================================

Missing columns are treated as all-NaN; NaN entries (for instance a checkpoint whose runs went
non-finite) are labelled ``"unknown"``, skipped by every detector, and listed in
``PhaseAnalysis.nonfinite``.

Definitions (all thresholds are settings, see :class:`PhaseSettings`):

*Chaos measures.*  Two per-checkpoint measures are used and both are always reported:

- distance: the excess ``x = D~ - floor`` (``floor = -15``).  Because each D_i is floored at
  e^-15, ``x`` is roughly 15 x (fraction of samples whose perturbation did not die out).
  The defaults (clearly ordered up to ``x = 1``, chaotic above ``x = 2``, i.e. more than
  roughly 1 review in 8 diverging) leave room for rounding: in float32, two runs that converge
  to the same fixed point still differ by ~1e-7 to 5e-7 (measured on a trained 60-unit
  LSTM), comparable to e^-15 = 3.1e-7, which lifts ``x`` by up to ~1 in a perfectly ordered
  network.
- lyapunov: ``lambda_1`` (mean over samples) with standard error ``s``.

*Label* (used for transitions and everything derived): by default the **combined** label
(:func:`mdesc.sweep.phases.combined_label`): chaotic when ``lambda_1 - k s > threshold`` and
``x > distance_margin``, ordered when ``lambda_1 + k s < threshold`` and
``x <= distance_ordered_tol``, otherwise marginal or disagree.  Single-measure labels (named
options ``measure="distance"`` / ``"lyapunov"``): chaotic if ``x > distance_margin``, or if
``lambda_1 > lyapunov_threshold``; otherwise ordered.

*Regime* (three states, used for the width of the edge of chaos):

- distance: clearly ordered if ``x <= distance_ordered_tol``; clearly chaotic if
  ``x >= distance_chaotic_level``; otherwise critical.  ``distance_chaotic_level=None`` resolves
  to ``max(distance_margin, 0.5 * max_x)`` over the run, i.e. "at least half as chaotic as the
  most chaotic checkpoint".
- lyapunov: clearly chaotic if ``lambda_1 - k s > threshold``; clearly ordered if
  ``lambda_1 + k s < threshold`` (``k = lyapunov_sigmas``, default 2); otherwise critical.

*Transition*: an ordered and a chaotic checkpoint ``a < b`` with only unknown (or, for the
combined label, marginal/disagreeing) checkpoints between them; ``order_to_chaos`` or
``chaos_to_order``.  Its epoch is where the measure crosses the label threshold, by linear
interpolation between the two checkpoints (D~ for the combined label); a combined transition
across marginal checkpoints is dated in its last gap, where lambda_1 crosses its threshold
(:func:`mdesc.sweep.phases.date_entries`).

*Critical stretch and its width* (the "width of the edge of chaos" along the training axis).
For an order->chaos transition between ``a`` and ``b``: the stretch starts at the last clearly
ordered checkpoint at or before ``a`` and ends at the first clearly chaotic checkpoint at or
after ``b`` (mirror image for chaos->order).  The search never passes the neighbouring
transitions; if no clear checkpoint is found before reaching one (or the start/end of the run),
the stretch stops at that boundary and is flagged ``open_start``/``open_end`` (its width is then
a lower bound).  ``width = epoch[end] - epoch[start]`` in epochs; it is never smaller than the
checkpoint spacing ``epoch[b] - epoch[a]`` -- a stretch with ``n_critical == 0`` is a transition
sharper than the checkpoint spacing.

*Local minima of the test loss*: the test loss (NaNs dropped) is optionally smoothed by a
centred moving average of ``smooth`` checkpoints; minima are the peaks of minus that series with
topographic prominence at least ``minima_prominence * (max - min of the raw test loss)``
(``scipy.signal.find_peaks``); each is then moved to the raw minimum within the smoothing
window.  The first and last checkpoints are never local minima.  The *global minimum* is the
raw argmin (it may be an end point).

*Descent cycle*: between two consecutive local minima, the highest test loss between them is
the peak; the cycle is the rise (start -> peak) followed by the drop (peak -> end).  Its
``asymmetry = rise_epochs / drop_epochs`` (> 1: the drop is sharper than the rise).

*Recommended checkpoint* (from stability alone, no test labels), rule ``recommend``:

- ``"first_transition"`` (default): the checkpoint nearest to the epoch of the first
  order->chaos transition (ties: the earlier one) -- the paper's finding that the global optimum
  sits at the first order->chaos transition.
- ``"widest_stretch"``: the checkpoint nearest to the centre of the widest critical stretch of an
  order->chaos transition (ties: the earliest stretch, then the earlier checkpoint).

If the run has no order->chaos transition there is no recommendation (``None``, with a reason).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mdesc.store import to_json
from mdesc.sweep import claims as _cl
from mdesc.sweep import controls as _co
from mdesc.sweep import events as _ev
from mdesc.sweep.losscurve import DescentCycle, LocalMinimum, cycles, local_minima
from mdesc.sweep.phases import (LABEL_NAMES, LABELLINGS, MEASURES, MEASURE_COLUMN,
                                REGIME_NAMES, UNKNOWN_REGIME, CriticalStretch, PhaseSettings,
                                Transition, combined_label, date_entries, labels_and_regimes,
                                measure_value, nearest_index,
                                prepare, sorted_table, stretches_of, transitions_of,
                                uniform_grid)

__all__ = [
    "PhaseSettings",
    "Transition",
    "CriticalStretch",
    "LocalMinimum",
    "DescentCycle",
    "PhaseAnalysis",
    "analyse",
    "phase_table",
    "LABEL_NAMES",
    "sorted_table",
    "uniform_grid",
]


@dataclass
class PhaseAnalysis:
    """Everything :func:`analyse` finds for one run.  ``to_dict()`` is JSON-serialisable."""

    epochs: np.ndarray                  # (C,) sorted
    measure: str                        # primary measure used for transitions
    labels: dict[str, np.ndarray]       # measure -> (C,) int8 (-1 unknown, 0 ordered, 1 chaotic)
    regimes: dict[str, np.ndarray]      # measure -> (C,) int8 (-1 ordered, 0 critical, 1 chaotic, 2 unknown)
    transitions: list[Transition]       # primary measure
    secondary_transitions: list[Transition]  # the other measure (when it has data)
    stretches: list[CriticalStretch]    # one per primary transition
    minima: list[LocalMinimum]
    global_minimum: dict[str, Any] | None
    cycles: list[DescentCycle]
    claims: dict[str, Any]
    recommended_index: int | None
    recommended_epoch: float | None
    recommendation_rule: str
    recommendation_reason: str
    nonfinite: dict[str, list[float]]   # column -> epochs where it is NaN/inf
    warnings: list[str]
    settings: dict[str, Any]            # settings used, with automatic values resolved
    verdicts: list[str] = dataclasses.field(default_factory=list)   # (C,) one per checkpoint
    verdict_reasons: list[str] = dataclasses.field(default_factory=list)
    events: list = dataclasses.field(default_factory=list)          # mdesc.sweep.events.Event
    drops: list[int] = dataclasses.field(default_factory=list)      # gaps of sharp loss drops
    twins: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> np.ndarray:
        """(C,) labels of the primary measure."""
        return self.labels[self.measure]

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            out[f.name] = to_json(getattr(self, f.name))
        out["labels"] = {m: [LABEL_NAMES[int(v)] for v in a] for m, a in self.labels.items()}
        out["regimes"] = {m: [REGIME_NAMES[int(v)] for v in a] for m, a in self.regimes.items()}
        return out


# ----------------------------------------------------------------------------- public API

def analyse(table: Mapping[str, Any], settings: PhaseSettings | None = None,
            **overrides: Any) -> PhaseAnalysis:
    """Label every checkpoint ordered/chaotic and measure the paper's claims for one run.

    Args:
        table: the run table (see module docstring); rows need not be sorted by epoch.
        settings: a :class:`PhaseSettings`; keyword ``overrides`` replace single fields
            (``analyse(table, distance_margin=2.0, window=3)``).

    Returns:
        A :class:`PhaseAnalysis`; array fields follow the epoch-sorted order (``.epochs``).
        Indices (``index_before``, ``recommended_index``, ...) refer to that order.

    ``claims`` holds the measured numbers (all floats in epochs or loss units; None/NaN where
    undefined): ``first_order_to_chaos_epoch``, ``global_min_epoch``,
    ``first_transition_minus_global_min`` (epochs), ``minima_near_transition_fraction`` (the
    fraction of local minima within +-``window`` epochs of any transition) with
    ``minima_near_transition_chance`` (the same fraction for interior checkpoints picked at
    random: the baseline to compare with), ``overtrained_*`` correlations of test loss with each
    chaos measure over checkpoints after the global minimum, the widest stretch, the cycle
    statistics, and the recommendation's test loss (``recommended_regret`` = its test loss minus
    the global minimum; test labels are used only to evaluate it, never to choose it).
    """
    s = _settings(settings, overrides)
    cols, _ = prepare(table)
    epoch = cols["epoch"]
    notes = _table_notes(table, cols)
    measure, other, has, chaotic_level, window, used = _resolve(cols, s, notes)
    labels, regimes = labels_and_regimes(cols, s, chaotic_level)
    _collapsed_unknown(table, cols, labels, regimes, notes)
    labels["combined"], regimes["combined"] = combined_label(cols, s, labels["distance"] < 0)
    value, thr = measure_value(cols, measure, s)
    transitions = transitions_of(epoch, labels[measure], value, thr, measure)
    if measure == "combined":
        date_entries(transitions, epoch, cols["lyapunov_max"], s.lyapunov_threshold)
    ovalue, othr = measure_value(cols, other, s)
    secondary = transitions_of(epoch, labels[other], ovalue, othr, other) if has[other] else []
    stretches = stretches_of(epoch, regimes[measure], transitions)
    global_min, minima, cyc = _loss_curve(epoch, cols["test_loss"], s, transitions,
                                          labels[measure])
    rec_idx, reason = _recommend(epoch, s, measure, has[measure], labels[measure],
                                 transitions, stretches)
    claims = _cl.run_claims(epoch, cols, labels, measure, transitions, stretches, minima,
                            global_min, cyc, window, rec_idx, epoch.size, floor=s.floor,
                            distance_resolution=s.distance_resolution)
    verdicts, reasons = _cl.combined_verdicts(labels["combined"], labels["distance"],
                                              labels["lyapunov"], cols, s)
    claims["verdict_counts"] = {v: verdicts.count(v) for v in _cl.VERDICTS}
    events, drops = _events(table, cols, s, minima, global_min, claims)
    return PhaseAnalysis(
        epochs=epoch, measure=measure, labels=labels, regimes=regimes, transitions=transitions,
        secondary_transitions=secondary, stretches=stretches, minima=minima,
        global_minimum=global_min, cycles=cyc, claims=claims, recommended_index=rec_idx,
        recommended_epoch=float(epoch[rec_idx]) if rec_idx is not None else None,
        recommendation_rule=s.recommend, recommendation_reason=reason,
        nonfinite=_nonfinite(table, cols), warnings=notes, settings=used, verdicts=verdicts,
        verdict_reasons=reasons, events=events, drops=drops, twins=claims["twins"])


# ----------------------------------------------------------------------------- its steps

def _settings(settings: PhaseSettings | None, overrides: Mapping[str, Any]) -> PhaseSettings:
    """``settings`` with single fields replaced by keyword ``overrides``, validated."""
    s = settings or PhaseSettings()
    valid = {f.name for f in dataclasses.fields(PhaseSettings)}
    unknown = set(overrides) - valid
    if unknown:
        raise TypeError(f"analyse() got unknown settings {sorted(unknown)}; "
                        f"valid: {sorted(valid)}")
    s = dataclasses.replace(s, **overrides)
    s.validate()
    return s


def _nonfinite(table: Mapping[str, Any], cols: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Column -> epochs where a column the table has is missing or non-finite."""
    epoch = cols["epoch"]
    return {k: epoch[np.isnan(cols[k])].tolist()
            for k in ("test_loss", "train_loss", "log_distance", "lyapunov_max")
            if k in table and np.any(np.isnan(cols[k]))}


def _table_notes(table: Mapping[str, Any], cols: dict[str, np.ndarray]) -> list[str]:
    """The warnings about the table itself: non-finite values, failed runs, missing columns."""
    epoch = cols["epoch"]
    n = epoch.size
    notes = []
    for k, eps in _nonfinite(table, cols).items():
        notes.append(f"{k} is missing or non-finite at {len(eps)} of {n} checkpoints "
                     f"(epochs {_short(eps)}); they are labelled unknown / skipped")
    diverged = cols["nonfinite_weights"] > 0
    if np.any(diverged):
        notes.append(f"the weights of {int(diverged.sum())} checkpoints hold NaN or inf (epochs "
                     f"{_short(epoch[diverged].tolist())}): not measured, labelled unknown and "
                     "counted in no claim")
    bad_runs = np.where(diverged, 0.0, cols["nonfinite_fraction"])
    if np.any(bad_runs > 0):
        hit = epoch[bad_runs > 0].tolist()
        notes.append(f"some tangent runs went non-finite at {len(hit)} checkpoints (epochs "
                     f"{_short(hit)}; worst fraction {np.nanmax(bad_runs):.3g}); lambda_1 there "
                     "averages the finite runs only")
    missing = [k for k in ("test_loss", "log_distance", "lyapunov_max") if k not in table]
    if missing:
        notes.append(f"run table has no column(s) {missing}")
    return notes


def _resolve(cols: dict[str, np.ndarray], s: PhaseSettings, notes: list[str]):
    """The automatic settings resolved: ``(measure, other measure, {measure: has data},
    chaotic level, window, settings used)``."""
    epoch = cols["epoch"]
    excess = cols["log_distance"] - s.floor
    if s.distance_chaotic_level is None:
        top = float(np.nanmax(excess)) if np.any(np.isfinite(excess)) else 0.0
        chaotic_level = max(s.distance_margin, 0.5 * top)
    else:
        chaotic_level = float(s.distance_chaotic_level)
    has = {m: bool(np.any(np.isfinite(cols[MEASURE_COLUMN[m]]))) for m in MEASURES}
    has["combined"] = has["distance"] and has["lyapunov"]
    if s.measure == "auto":
        measure = ("combined" if has["combined"] else
                   "distance" if has["distance"] or not has["lyapunov"] else "lyapunov")
    else:
        measure = s.measure
    if not has[measure]:
        what = ("both D~ and lambda_1" if measure == "combined"
                else MEASURE_COLUMN[measure])
        notes.append(f"no finite {what} values: no transitions can be found")
    other = "lyapunov" if measure == "distance" else "distance"
    n = epoch.size
    window = (float(s.window) if s.window is not None
              else (float(np.median(np.diff(epoch))) if n > 1 else 0.0))
    used = dataclasses.asdict(s)
    used.update(distance_chaotic_level=chaotic_level, window=window, measure=measure)
    return measure, other, has, chaotic_level, window, used


def _collapsed_unknown(table, cols, labels, regimes, notes) -> None:
    """D~ on its floor only because the drive made t = 0 twins bit-identical is not evidence
    of order: such checkpoints are unknown by D~ when the t = 0 twin is the primary one."""
    primary = ((table.get("settings") or {}).get("twins") or ["drive_end"])[0]
    collapsed = (cols["n_collapsed_start"] > 0) & (labels["distance"] == 0)
    if primary == "start" and collapsed.any():
        labels["distance"][collapsed] = -1
        regimes["distance"][collapsed] = UNKNOWN_REGIME
        notes.append(f"{int(collapsed.sum())} checkpoints have t = 0 twins that the drive "
                     "collapsed to bit-identical states and D~ on its floor: labelled unknown "
                     "by D~ (collapsed, not ordered)")


def _loss_curve(epoch, loss, s: PhaseSettings, transitions, label):
    """The test loss: ``(global minimum, local minima, descent cycles)``."""
    t_epochs = np.array([t.epoch for t in transitions])
    global_min = None
    if np.any(np.isfinite(loss)):
        g = int(np.nanargmin(loss))
        global_min = {"index": g, "epoch": float(epoch[g]), "test_loss": float(loss[g])}
    minima = []
    for i, prom in local_minima(epoch, loss, s):
        if t_epochs.size:
            j = int(np.argmin(np.abs(t_epochs - epoch[i])))
            near, dist = float(t_epochs[j]), float(abs(t_epochs[j] - epoch[i]))
        else:
            near = dist = None
        minima.append(LocalMinimum(index=i, epoch=float(epoch[i]), test_loss=float(loss[i]),
                                   prominence=prom, nearest_transition_epoch=near,
                                   distance_to_transition=dist))
    g_epoch = global_min["epoch"] if global_min else None
    start = _co.learning_end(loss)
    noise = _co.noise_scale(loss[start:])
    min_change = s.noise_sigmas * noise if np.isfinite(noise) else 0.0
    return global_min, minima, cycles(epoch, loss, minima, label, transitions, g_epoch,
                                      min_change)


def _recommend(epoch, s: PhaseSettings, measure: str, has_measure: bool, label,
               transitions, stretches) -> tuple[int | None, str]:
    """The recommended checkpoint from stability alone, and why (``(None, reason)``: none)."""
    o2c = [k for k, t in enumerate(transitions) if t.kind == "order_to_chaos"]
    if not o2c:
        if not has_measure:
            return None, f"no finite {MEASURE_COLUMN.get(measure, 'D~ and lambda_1')}: stability gives no recommendation"
        if not np.any(label == 1):
            return None, "the run stays ordered throughout: no order->chaos transition to recommend"
        if not np.any(label == 0):
            return None, "the run is chaotic throughout: no order->chaos transition to recommend"
        return None, "no order->chaos transition (only chaos->order): no recommendation"
    if s.recommend == "first_transition":
        t = transitions[o2c[0]]
        return nearest_index(epoch, t.epoch), (
            f"checkpoint nearest to the first order->chaos transition "
            f"(epoch {t.epoch:.4g}, between checkpoints at {t.epoch_before:.4g} and "
            f"{t.epoch_after:.4g})")
    best = max([stretches[k] for k in o2c], key=lambda st: (st.width, -st.start_epoch))
    return nearest_index(epoch, best.centre_epoch), (
        f"checkpoint nearest to the centre (epoch {best.centre_epoch:.4g}) of the "
        f"widest order->chaos critical stretch ({best.start_epoch:.4g} to "
        f"{best.end_epoch:.4g}, width {best.width:.4g} epochs)")


def _events(table, cols, s: PhaseSettings, minima, global_min, claims
            ) -> tuple[list, list[int]]:
    """Stability events, placebo events, sharp test-loss drops, and every test of "targets sit
    at events" (mdesc.sweep.controls) with the family's Holm-adjusted values (into ``claims``,
    with the twin comparison); returns ``(events, drops)``."""
    epoch = cols["epoch"]
    n = epoch.size
    st = sorted_table(table)  # sorted once: the same order as `epoch`
    events = _ev.lyapunov_events(epoch, cols["lyapunov_max"], cols["lyapunov_stderr"],
                                 s.event_sigmas, s.event_jump)
    lam_flat = claims["lyapunov_refused"]
    if lam_flat:
        events = []
    red = np.asarray(st.get("reduced_sum", np.zeros((n, 0))), dtype=float)
    if red.ndim == 2 and red.shape[0] == n and red.shape[1] > 0:
        events += _ev.structure_events(epoch, red, s.event_jump, s.distance_resolution)
    events.sort(key=lambda e: (e.gap, e.kind))
    start, drops, spikes = _co.loss_jumps(cols["test_loss"], cols["train_loss"], s.event_jump,
                                          s.noise_sigmas)
    pjumps = _co.param_jumps(cols["param_change"], s.event_jump)
    gaps = sorted({e.gap for e in events})
    ctl = _co.controls_of(max(n - 1, 0), cols["param_change"], spikes, pjumps,
                          s.event_tolerance + s.control_window)
    draws, seed, tol = int(s.permutations), s.permutation_seed, s.event_tolerance
    for what, targets in (("minima", [m.index for m in minima]),
                          ("drops", [g + 0.5 for g in drops])):
        tests = _co.association(n, gaps, targets, ctl, tol, draws, seed)
        uniform = tests.pop("uniform")
        claims[f"{what}_at_events"] = {**uniform, **tests}   # the uniform test stays on top
        if lam_flat and not gaps:
            claims[f"{what}_at_events"]["refused"] = f"no events can be found: {lam_flat}"
        claims[f"{what}_at_events"]["uniform"] = uniform
        claims[f"{what}_at_spikes"] = _co.placebo(n, spikes, targets, tol, draws, seed)
        claims[f"{what}_at_param_jumps"] = _co.placebo(n, pjumps, targets, tol, draws, seed)
    claims["controls_note"] = ctl["note"]
    claims["learning_phase_end_epoch"] = float(epoch[start]) if n else math.nan
    claims["test_loss_noise"] = _co.noise_scale(cols["test_loss"][start:])
    claims["n_events"] = len(gaps)
    claims["n_lyapunov_events"] = sum(e.kind == "lyapunov" for e in events)
    claims["n_structure_events"] = sum(e.kind == "structure" for e in events)
    claims["event_epochs"] = [float(epoch[g + 1]) for g in gaps]
    claims["drop_epochs"] = [float(epoch[g + 1]) for g in drops]
    claims["spike_epochs"] = [float(epoch[g + 1]) for g in spikes]
    claims["param_jump_epochs"] = [float(epoch[g + 1]) for g in pjumps]
    claims["tests"] = _co.family(claims)
    n_reviews = int(red.shape[1]) if red.ndim == 2 else 0
    claims["twins"] = _cl.twin_comparison(epoch, cols["log_distance_drive_end"],
                                          cols["log_distance_start"], cols["n_collapsed_start"],
                                          n_reviews, s.floor, s.distance_margin)
    return events, drops


def phase_table(table: Mapping[str, Any], analysis: PhaseAnalysis | None = None,
                **settings: Any) -> dict[str, np.ndarray]:
    """Per-checkpoint table (dict of (C,) arrays, sorted by epoch) for Python users.

    Columns: the scalar run-table columns, ``label`` / ``regime`` (primary measure, strings),
    ``label_distance``, ``label_lyapunov``, ``regime_distance``, ``regime_lyapunov``,
    ``in_critical_stretch`` (bool), ``local_min``, ``global_min``, ``recommended`` (bool) and
    ``transition`` (the kind of the transition whose ``index_after`` is this checkpoint, else
    ``""``).  ``analysis`` defaults to ``analyse(table, **settings)``.
    """
    if analysis is None:
        analysis = analyse(table, **settings)
    elif settings:
        raise TypeError("pass either an analysis or settings, not both")
    cols, _ = prepare(table)
    n = cols["epoch"].size
    out: dict[str, np.ndarray] = {k: v for k, v in cols.items()}
    m = analysis.measure
    names = np.vectorize(LABEL_NAMES.get, otypes=[object])
    rnames = np.vectorize(REGIME_NAMES.get, otypes=[object])
    out["label"] = names(analysis.labels[m]).astype(str)
    out["regime"] = rnames(analysis.regimes[m]).astype(str)
    for mm in LABELLINGS:
        out[f"label_{mm}"] = names(analysis.labels[mm]).astype(str)
        out[f"regime_{mm}"] = rnames(analysis.regimes[mm]).astype(str)
    crit = np.zeros(n, bool)
    for st in analysis.stretches:
        crit[st.start_index:st.end_index + 1] = True
    out["in_critical_stretch"] = crit
    out["local_min"] = np.isin(np.arange(n), [mi.index for mi in analysis.minima])
    g = np.zeros(n, bool)
    if analysis.global_minimum is not None:
        g[analysis.global_minimum["index"]] = True
    out["global_min"] = g
    r = np.zeros(n, bool)
    if analysis.recommended_index is not None:
        r[analysis.recommended_index] = True
    out["recommended"] = r
    tr = np.array([""] * n, dtype=object)
    for t in analysis.transitions:
        tr[t.index_after] = t.kind
    out["transition"] = tr.astype(str)
    if analysis.verdicts:
        out["verdict"] = np.array(analysis.verdicts, dtype=str)
    ev = np.array([""] * n, dtype=object)
    for e in analysis.events:
        ev[e.gap + 1] = (ev[e.gap + 1] + "+" if ev[e.gap + 1] else "") + e.kind
    out["event"] = ev.astype(str)
    return out


def _short(values: list[float], k: int = 6) -> str:
    s = ", ".join(f"{v:g}" for v in values[:k])
    return s + (", ..." if len(values) > k else "")


