"""Order/chaos phases along the training axis, and the multiple-descent claims they support.

Input is a *run table*: one row per saved checkpoint, as produced by
``mdesc.descent.load_table(run_dir)`` -- a mapping of numpy arrays:

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

*Label* (binary, used for transitions): chaotic if ``x > distance_margin`` (distance), or if
``lambda_1 > lyapunov_threshold`` (lyapunov); otherwise ordered.

*Regime* (three states, used for the width of the edge of chaos):

- distance: clearly ordered if ``x <= distance_ordered_tol``; clearly chaotic if
  ``x >= distance_chaotic_level``; otherwise critical.  ``distance_chaotic_level=None`` resolves
  to ``max(distance_margin, 0.5 * max_x)`` over the run, i.e. "at least half as chaotic as the
  most chaotic checkpoint".
- lyapunov: clearly chaotic if ``lambda_1 - k s > threshold``; clearly ordered if
  ``lambda_1 + k s < threshold`` (``k = lyapunov_sigmas``, default 2); otherwise critical.

*Transition*: consecutive finite checkpoints ``a < b`` (by epoch, unknowns skipped) whose labels
differ; ``order_to_chaos`` or ``chaos_to_order``.  Its epoch is where the measure crosses the
label threshold, by linear interpolation between the two checkpoints.

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
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mdesc.store import to_json

from mdesc.descent.losscurve import (DescentCycle, LocalMinimum, _cycles, _local_minima,
                                     phase_table)

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

#: integer label -> name, as used in ``PhaseAnalysis.labels`` arrays
LABEL_NAMES = {-1: "unknown", 0: "ordered", 1: "chaotic"}
#: integer regime -> name (regime: -1 clearly ordered, 0 critical, 1 clearly chaotic, 2 unknown)
REGIME_NAMES = {-1: "ordered", 0: "critical", 1: "chaotic", 2: "unknown"}
_UNKNOWN_REGIME = 2

MEASURES = ("distance", "lyapunov")
_MEASURE_COLUMN = {"distance": "log_distance", "lyapunov": "lyapunov_max"}
_SCALAR_COLUMNS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc",
                   "log_distance", "lyapunov_max", "lyapunov_stderr", "nonfinite_fraction")
_EXTRA_COLUMNS = ("log_distance_drive_end", "log_distance_start", "n_collapsed_start",
                  "lyapunov_max_driven", "lyapunov_stderr_driven")


@dataclass(frozen=True)
class PhaseSettings:
    """Every threshold used by :func:`analyse`; recorded in the result.

    Attributes:
        floor: the order floor of D~ (ln of the e^-15 added to every D_i).
        distance_margin: D~ - floor above which a checkpoint is labelled chaotic.
        distance_ordered_tol: D~ - floor at or below which a checkpoint is *clearly* ordered.
        distance_chaotic_level: D~ - floor at or above which a checkpoint is *clearly* chaotic;
            None: ``max(distance_margin, 0.5 * largest excess in the run)``.
        lyapunov_threshold: lambda_1 above which a checkpoint is labelled chaotic (per step).
        lyapunov_sigmas: k; clearly chaotic if lambda_1 - k*stderr > threshold, clearly ordered
            if lambda_1 + k*stderr < threshold.
        measure: which measure defines transitions, stretches and the recommendation:
            "distance", "lyapunov", or "auto" (distance if any D~ is finite, else lyapunov).
        minima_prominence: minimum prominence of a test-loss local minimum, as a fraction of the
            range (max - min) of the test loss.
        smooth: width in checkpoints of the centred moving average applied before looking for
            minima (1: none; an even width w averages w + 1 checkpoints, centred).
        window: w in epochs for "minimum within +-w of a transition"; None: the median spacing
            between checkpoints.
        recommend: "first_transition" or "widest_stretch" (see module docstring).
        distance_resolution: D~ values within this of each other (or of the floor) do not vary
            beyond numerical resolution: claims on them are refused (mdesc.descent.claims).
        event_sigmas, event_jump: a stability event needs a change beyond event_sigmas combined
            standard errors and event_jump times the local typical change (the median over the
            10 gaps on either side; mdesc.descent.events).
        event_tolerance: a test-loss minimum or drop sits at an event within this many
            checkpoints.
        permutations, permutation_seed: the permutation test's draws and seed.
    """

    floor: float = -15.0
    distance_margin: float = 2.0
    distance_ordered_tol: float = 1.0
    distance_chaotic_level: float | None = None
    lyapunov_threshold: float = 0.0
    lyapunov_sigmas: float = 2.0
    measure: str = "auto"
    minima_prominence: float = 0.05
    smooth: int = 1
    window: float | None = None
    recommend: str = "first_transition"
    distance_resolution: float = 1e-6
    event_sigmas: float = 3.0
    event_jump: float = 5.0
    event_tolerance: int = 0
    permutations: int = 10000
    permutation_seed: int = 0

    def validate(self) -> None:
        if self.measure not in ("auto",) + MEASURES:
            raise ValueError(f"measure={self.measure!r}: use 'auto', 'distance' or 'lyapunov'")
        if self.recommend not in ("first_transition", "widest_stretch"):
            raise ValueError(f"recommend={self.recommend!r}: use 'first_transition' or "
                             "'widest_stretch'")
        if not 0 <= self.distance_ordered_tol <= self.distance_margin:
            raise ValueError(
                f"need 0 <= distance_ordered_tol ({self.distance_ordered_tol}) <= "
                f"distance_margin ({self.distance_margin})")
        if (self.distance_chaotic_level is not None
                and self.distance_chaotic_level < self.distance_margin):
            raise ValueError(
                f"distance_chaotic_level ({self.distance_chaotic_level}) must be >= "
                f"distance_margin ({self.distance_margin}), or None for automatic")
        if self.lyapunov_sigmas < 0:
            raise ValueError(f"lyapunov_sigmas must be >= 0, got {self.lyapunov_sigmas}")
        if not self.minima_prominence >= 0:
            raise ValueError(f"minima_prominence must be >= 0, got {self.minima_prominence}")
        if int(self.smooth) != self.smooth or self.smooth < 1:
            raise ValueError(f"smooth must be a positive integer (checkpoints), got {self.smooth}")
        if self.window is not None and not self.window >= 0:
            raise ValueError(f"window must be >= 0 epochs or None, got {self.window}")
        if not self.distance_resolution > 0:
            raise ValueError(f"distance_resolution must be > 0, got {self.distance_resolution}")
        if self.event_sigmas < 0 or self.event_jump < 0 or self.event_tolerance < 0:
            raise ValueError("event_sigmas, event_jump and event_tolerance must be >= 0")
        if int(self.permutations) != self.permutations or self.permutations < 1:
            raise ValueError(f"permutations must be a positive integer, got {self.permutations}")


@dataclass
class Transition:
    """A change of label between consecutive finite checkpoints ``index_before < index_after``."""

    kind: str               # "order_to_chaos" or "chaos_to_order"
    measure: str            # "distance" or "lyapunov"
    index_before: int
    index_after: int
    epoch_before: float
    epoch_after: float
    epoch: float            # interpolated epoch where the measure crosses the label threshold


@dataclass
class CriticalStretch:
    """The edge-of-chaos stretch around one transition (see module docstring)."""

    transition: int         # index into PhaseAnalysis.transitions
    kind: str
    start_index: int
    end_index: int
    start_epoch: float
    end_epoch: float
    width: float            # end_epoch - start_epoch, epochs
    centre_epoch: float
    n_critical: int         # finite checkpoints strictly inside the stretch
    open_start: bool        # no clear checkpoint found before the boundary: width is a lower bound
    open_end: bool


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
    events: list = dataclasses.field(default_factory=list)          # mdesc.descent.events.Event
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


# ----------------------------------------------------------------------------- table handling

def _column(table: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    if key not in table or table[key] is None:
        return np.full(n, np.nan)
    a = np.asarray(table[key], dtype=np.float64)
    if a.shape != (n,):
        raise ValueError(f"run table column {key!r} has shape {a.shape}, expected ({n},) "
                         "like 'epoch' (one value per checkpoint)")
    a = a.copy()
    a[~np.isfinite(a)] = np.nan
    return a


def sorted_table(table: Mapping[str, Any]) -> dict[str, Any]:
    """The run table with every per-checkpoint array (1-D or 2-D with C rows) sorted by epoch:
    the one place the table is sorted (analysis, phase table and figures all use its result).
    Non-array entries (``settings``, ``skipped``) are passed through; a sorted table is
    returned as is."""
    if table.get("_sorted"):
        return dict(table)
    if "epoch" not in table:
        raise ValueError("run table has no 'epoch' column; expected the mapping returned by "
                         "mdesc.descent.load_table(run_dir)")
    epoch = np.asarray(table["epoch"]).reshape(-1)
    order = np.argsort(epoch, kind="stable")
    out: dict[str, Any] = {"_sorted": True}
    for k, v in table.items():
        if isinstance(v, (np.ndarray, list, tuple)) and k not in ("skipped", "sample_index"):
            a = np.asarray(v)
            if a.ndim >= 1 and a.shape[0] == epoch.size and a.dtype != object:
                out[k] = a[order]
                continue
        out[k] = v
    return out


def uniform_grid(table: Mapping[str, Any], steps=(1, 2, 5, 10, 20, 25, 50)
                 ) -> tuple[dict[str, Any], int]:
    """The rows of a table on the finest complete uniform grid of epochs: the smallest k in
    ``steps`` such that every multiple of k up to the last analysed epoch has a row.  A
    permutation test over gaps assumes evenly spaced checkpoints; sweeps refined around
    particular epochs (``--epoch-range``) are not, so tests are also made on this grid.
    Returns ``(table on the grid, k)``; k = 0 (the table as is) when no grid is complete."""
    t = sorted_table(table)
    epoch = np.asarray(t["epoch"]).astype(int)
    have = set(epoch.tolist())
    for k in steps:
        grid = np.arange(0, epoch.max() + 1, k)
        if set(grid.tolist()) <= have:
            keep = np.isin(epoch, grid)
            out = {key: (v[keep] if isinstance(v, np.ndarray) and v.ndim >= 1
                         and v.shape[0] == epoch.size and key != "sample_index" else v)
                   for key, v in t.items()}
            return out, k
    return t, 0


def _prepare(table: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scalar columns as float arrays sorted by epoch; returns (columns, sort order)."""
    if "epoch" not in table:
        raise ValueError("run table has no 'epoch' column; expected the mapping returned by "
                         "mdesc.descent.load_table(run_dir)")
    epoch = np.asarray(table["epoch"], dtype=np.float64).reshape(-1)
    n = epoch.size
    if n == 0:
        raise ValueError("run table is empty (no checkpoints); run the sweep first")
    if not np.all(np.isfinite(epoch)):
        raise ValueError("run table has non-finite epochs")
    order = np.argsort(epoch, kind="stable")
    cols = {k: _column(table, k, n)[order] for k in _SCALAR_COLUMNS + _EXTRA_COLUMNS}
    if np.any(np.diff(cols["epoch"]) == 0):
        dup = np.unique(cols["epoch"][1:][np.diff(cols["epoch"]) == 0])
        raise ValueError(f"run table has duplicate checkpoints at epochs {dup.tolist()}; "
                         "each epoch must appear once")
    return cols, order


# ----------------------------------------------------------------------------- labels

def _labels_and_regimes(cols: dict[str, np.ndarray], s: PhaseSettings, chaotic_level: float
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    labels, regimes = {}, {}
    x = cols["log_distance"] - s.floor
    lab = np.where(x > s.distance_margin, 1, 0).astype(np.int8)
    reg = np.where(x <= s.distance_ordered_tol, -1, np.where(x >= chaotic_level, 1, 0))
    bad = np.isnan(x)
    lab[bad] = -1
    reg = reg.astype(np.int8)
    reg[bad] = _UNKNOWN_REGIME
    labels["distance"], regimes["distance"] = lab, reg

    lam = cols["lyapunov_max"]
    se = np.nan_to_num(cols["lyapunov_stderr"], nan=0.0)
    thr, k = s.lyapunov_threshold, s.lyapunov_sigmas
    lab = np.where(lam > thr, 1, 0).astype(np.int8)
    reg = np.where(lam - k * se > thr, 1, np.where(lam + k * se < thr, -1, 0)).astype(np.int8)
    bad = np.isnan(lam)
    lab[bad] = -1
    reg[bad] = _UNKNOWN_REGIME
    labels["lyapunov"], regimes["lyapunov"] = lab, reg
    return labels, regimes


def _measure_value(cols: dict[str, np.ndarray], measure: str, s: PhaseSettings
                   ) -> tuple[np.ndarray, float]:
    """The measure and the value at which its label flips."""
    if measure == "distance":
        return cols["log_distance"], s.floor + s.distance_margin
    return cols["lyapunov_max"], s.lyapunov_threshold


def _transitions(epoch: np.ndarray, label: np.ndarray, value: np.ndarray, threshold: float,
                 measure: str) -> list[Transition]:
    idx = np.flatnonzero(label >= 0)
    out = []
    for a, b in zip(idx[:-1], idx[1:]):
        if label[a] == label[b]:
            continue
        va, vb = value[a], value[b]
        frac = 0.5 if vb == va else float(np.clip((threshold - va) / (vb - va), 0.0, 1.0))
        out.append(Transition(
            kind="order_to_chaos" if label[b] == 1 else "chaos_to_order", measure=measure,
            index_before=int(a), index_after=int(b), epoch_before=float(epoch[a]),
            epoch_after=float(epoch[b]), epoch=float(epoch[a] + frac * (epoch[b] - epoch[a]))))
    return out


def _stretches(epoch: np.ndarray, regime: np.ndarray, transitions: list[Transition]
               ) -> list[CriticalStretch]:
    out = []
    n = epoch.size
    for t, tr in enumerate(transitions):
        a, b = tr.index_before, tr.index_after
        lo = transitions[t - 1].index_after if t > 0 else 0
        hi = transitions[t + 1].index_before if t + 1 < len(transitions) else n - 1
        before_clear = -1 if tr.kind == "order_to_chaos" else 1   # the regime left behind
        after_clear = -before_clear
        start, open_start = lo, True
        for j in range(a, lo - 1, -1):
            if regime[j] == before_clear:
                start, open_start = j, False
                break
        end, open_end = hi, True
        for j in range(b, hi + 1):
            if regime[j] == after_clear:
                end, open_end = j, False
                break
        inside = regime[start + 1:end]
        out.append(CriticalStretch(
            transition=t, kind=tr.kind, start_index=int(start), end_index=int(end),
            start_epoch=float(epoch[start]), end_epoch=float(epoch[end]),
            width=float(epoch[end] - epoch[start]),
            centre_epoch=float(0.5 * (epoch[start] + epoch[end])),
            n_critical=int(np.sum(inside != _UNKNOWN_REGIME)),
            open_start=open_start, open_end=open_end))
    return out


def _nearest_index(epoch: np.ndarray, target: float) -> int:
    return int(np.argmin(np.abs(epoch - target)))   # argmin returns the first (earlier) on ties


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
    s = settings or PhaseSettings()
    valid = {f.name for f in dataclasses.fields(PhaseSettings)}
    unknown = set(overrides) - valid
    if unknown:
        raise TypeError(f"analyse() got unknown settings {sorted(unknown)}; "
                        f"valid: {sorted(valid)}")
    s = dataclasses.replace(s, **overrides)
    s.validate()

    cols, _ = _prepare(table)
    epoch = cols["epoch"]
    n = epoch.size
    notes: list[str] = []

    nonfinite = {k: epoch[np.isnan(cols[k])].tolist()
                 for k in ("test_loss", "train_loss", "log_distance", "lyapunov_max")
                 if k in table and np.any(np.isnan(cols[k]))}
    for k, eps in nonfinite.items():
        notes.append(f"{k} is missing or non-finite at {len(eps)} of {n} checkpoints "
                     f"(epochs {_short(eps)}); they are labelled unknown / skipped")
    bad_runs = cols["nonfinite_fraction"]
    if np.any(bad_runs > 0):
        hit = epoch[bad_runs > 0].tolist()
        notes.append(f"some tangent runs went non-finite at {len(hit)} checkpoints (epochs "
                     f"{_short(hit)}; worst fraction {np.nanmax(bad_runs):.3g}); lambda_1 there "
                     "averages the finite runs only")
    missing = [k for k in ("test_loss", "log_distance", "lyapunov_max") if k not in table]
    if missing:
        notes.append(f"run table has no column(s) {missing}")

    excess = cols["log_distance"] - s.floor
    if s.distance_chaotic_level is None:
        top = float(np.nanmax(excess)) if np.any(np.isfinite(excess)) else 0.0
        chaotic_level = max(s.distance_margin, 0.5 * top)
    else:
        chaotic_level = float(s.distance_chaotic_level)
    has = {m: bool(np.any(np.isfinite(cols[_MEASURE_COLUMN[m]]))) for m in MEASURES}
    if s.measure == "auto":
        measure = "distance" if has["distance"] or not has["lyapunov"] else "lyapunov"
    else:
        measure = s.measure
    if not has[measure]:
        notes.append(f"no finite {_MEASURE_COLUMN[measure]} values: no transitions can be found")
    other = "lyapunov" if measure == "distance" else "distance"

    diffs = np.diff(epoch)
    window = float(s.window) if s.window is not None else (float(np.median(diffs)) if n > 1 else 0.0)
    used = dataclasses.asdict(s)
    used.update(distance_chaotic_level=chaotic_level, window=window, measure=measure)

    labels, regimes = _labels_and_regimes(cols, s, chaotic_level)
    primary = ((table.get("settings") or {}).get("twins") or ["drive_end"])[0]
    collapsed = (cols["n_collapsed_start"] > 0) & (labels["distance"] == 0)
    if primary == "start" and collapsed.any():
        # D~ on its floor only because the drive made twins bit-identical: not evidence of order
        labels["distance"][collapsed] = -1
        regimes["distance"][collapsed] = _UNKNOWN_REGIME
        notes.append(f"{int(collapsed.sum())} checkpoints have t = 0 twins that the drive "
                     "collapsed to bit-identical states and D~ on its floor: labelled unknown "
                     "by D~ (collapsed, not ordered)")
    value, thr = _measure_value(cols, measure, s)
    transitions = _transitions(epoch, labels[measure], value, thr, measure)
    ovalue, othr = _measure_value(cols, other, s)
    secondary = _transitions(epoch, labels[other], ovalue, othr, other) if has[other] else []
    stretches = _stretches(epoch, regimes[measure], transitions)
    t_epochs = np.array([t.epoch for t in transitions])

    # test loss: global minimum, local minima, cycles
    loss = cols["test_loss"]
    global_min = None
    if np.any(np.isfinite(loss)):
        g = int(np.nanargmin(loss))
        global_min = {"index": g, "epoch": float(epoch[g]), "test_loss": float(loss[g])}
    minima = []
    for i, prom in _local_minima(epoch, loss, s):
        if t_epochs.size:
            j = int(np.argmin(np.abs(t_epochs - epoch[i])))
            near, dist = float(t_epochs[j]), float(abs(t_epochs[j] - epoch[i]))
        else:
            near = dist = None
        minima.append(LocalMinimum(index=i, epoch=float(epoch[i]), test_loss=float(loss[i]),
                                   prominence=prom, nearest_transition_epoch=near,
                                   distance_to_transition=dist))
    g_epoch = global_min["epoch"] if global_min else None
    cycles = _cycles(epoch, loss, minima, labels[measure], transitions, g_epoch)

    # recommendation (stability only)
    o2c = [k for k, t in enumerate(transitions) if t.kind == "order_to_chaos"]
    rec_idx: int | None = None
    if not o2c:
        if not has[measure]:
            reason = f"no finite {_MEASURE_COLUMN[measure]}: stability gives no recommendation"
        elif np.all(labels[measure][labels[measure] >= 0] == 0):
            reason = "the run stays ordered throughout: no order->chaos transition to recommend"
        elif np.all(labels[measure][labels[measure] >= 0] == 1):
            reason = "the run is chaotic throughout: no order->chaos transition to recommend"
        else:
            reason = "no order->chaos transition (only chaos->order): no recommendation"
    elif s.recommend == "first_transition":
        t = transitions[o2c[0]]
        rec_idx = _nearest_index(epoch, t.epoch)
        reason = (f"checkpoint nearest to the first order->chaos transition "
                  f"(epoch {t.epoch:.4g}, between checkpoints at {t.epoch_before:.4g} and "
                  f"{t.epoch_after:.4g})")
    else:
        cand = [stretches[k] for k in o2c]
        best = max(cand, key=lambda st: (st.width, -st.start_epoch))
        rec_idx = _nearest_index(epoch, best.centre_epoch)
        reason = (f"checkpoint nearest to the centre (epoch {best.centre_epoch:.4g}) of the "
                  f"widest order->chaos critical stretch ({best.start_epoch:.4g} to "
                  f"{best.end_epoch:.4g}, width {best.width:.4g} epochs)")
    rec_epoch = float(epoch[rec_idx]) if rec_idx is not None else None

    from mdesc.descent import claims as _cl
    from mdesc.descent import events as _ev

    claims = _cl.run_claims(epoch, cols, labels, measure, transitions, stretches, minima,
                            global_min, cycles, window, rec_idx, n, floor=s.floor,
                            distance_resolution=s.distance_resolution)
    verdicts, reasons = _cl.verdicts(labels["distance"], labels["lyapunov"],
                                     cols["lyapunov_max"], cols["log_distance"], s.floor)
    claims["verdict_counts"] = {v: verdicts.count(v) for v in _cl.VERDICTS}

    # stability events and the permutation tests (sorted once: same order as `epoch`)
    st = sorted_table(table)
    events = _ev.lyapunov_events(epoch, cols["lyapunov_max"], cols["lyapunov_stderr"],
                                 s.event_sigmas, s.event_jump)
    lam_flat = claims["lyapunov_refused"]
    if lam_flat:
        events = []
    red = np.asarray(st.get("reduced_sum", np.zeros((n, 0))), dtype=float)
    if red.ndim == 2 and red.shape[0] == n and red.shape[1] > 0:
        events += _ev.structure_events(epoch, red, s.event_jump, s.distance_resolution)
    events.sort(key=lambda e: (e.gap, e.kind))
    drops = _ev.loss_drops(loss, s.event_jump)
    gaps = sorted({e.gap for e in events})
    tests = {}
    for name, targets in (("minima_at_events", [m.index for m in minima]),
                          ("drops_at_events", [g + 0.5 for g in drops])):
        tests[name] = _ev.permutation_test(max(n - 1, 0), gaps, targets, s.event_tolerance,
                                           int(s.permutations), s.permutation_seed)
        if lam_flat and not gaps:
            tests[name]["refused"] = f"no events can be found: {lam_flat}"
    claims.update(tests)
    claims["n_events"] = len(gaps)
    claims["n_lyapunov_events"] = sum(e.kind == "lyapunov" for e in events)
    claims["n_structure_events"] = sum(e.kind == "structure" for e in events)
    claims["event_epochs"] = [float(epoch[g + 1]) for g in gaps]
    claims["drop_epochs"] = [float(epoch[g + 1]) for g in drops]
    n_reviews = int(red.shape[1]) if red.ndim == 2 else 0
    twins = _cl.twin_comparison(epoch, cols["log_distance_drive_end"],
                                cols["log_distance_start"], cols["n_collapsed_start"],
                                n_reviews, s.floor, s.distance_margin)
    claims["twins"] = twins

    return PhaseAnalysis(
        epochs=epoch, measure=measure, labels=labels, regimes=regimes, transitions=transitions,
        secondary_transitions=secondary, stretches=stretches, minima=minima,
        global_minimum=global_min, cycles=cycles, claims=claims, recommended_index=rec_idx,
        recommended_epoch=rec_epoch, recommendation_rule=s.recommend,
        recommendation_reason=reason, nonfinite=nonfinite, warnings=notes, settings=used,
        verdicts=verdicts, verdict_reasons=reasons, events=events, drops=drops, twins=twins)


def _short(values: list[float], k: int = 6) -> str:
    s = ", ".join(f"{v:g}" for v in values[:k])
    return s + (", ..." if len(values) > k else "")


def __getattr__(name: str):
    # The phase-analysis command-line options live in mdesc.descent.cli (the only module that
    # builds argparse parsers); kept reachable here for callers that import them from analysis.
    if name in ("add_phase_arguments", "phase_settings_from_args"):
        from mdesc.descent import cli

        return getattr(cli, name)
    raise AttributeError(f"module 'mdesc.descent.analysis' has no attribute {name!r}")
