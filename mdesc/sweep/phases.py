"""Order/chaos phases of a run table: settings, labels, transitions, critical stretches.

The definitions are in :mod:`mdesc.sweep.analysis` (module docstring); this module holds the
pieces that the analysis, the test-loss curve (:mod:`mdesc.sweep.losscurve`) and the figures
share: :class:`PhaseSettings`, the table handling (:func:`sorted_table`, :func:`uniform_grid`)
and the labelling rules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mdesc.options import option

#: integer label -> name, as used in ``PhaseAnalysis.labels`` arrays ("marginal" and
#: "disagree" occur only in the combined label: see :func:`combined_label`)
LABEL_NAMES = {-1: "unknown", 0: "ordered", 1: "chaotic", 2: "marginal", 3: "disagree"}
MARGINAL_LABEL, DISAGREE_LABEL = 2, 3
#: integer regime -> name (regime: -1 clearly ordered, 0 critical, 1 clearly chaotic, 2 unknown)
REGIME_NAMES = {-1: "ordered", 0: "critical", 1: "chaotic", 2: "unknown"}
UNKNOWN_REGIME = 2

MEASURES = ("distance", "lyapunov")        # the single measures
#: every labelling: the combined one (both measures with their margins) and each single measure
LABELLINGS = ("combined",) + MEASURES
MEASURE_COLUMN = {"distance": "log_distance", "lyapunov": "lyapunov_max"}
_SCALAR_COLUMNS = ("epoch", "train_loss", "test_loss", "train_acc", "test_acc",
                   "log_distance", "lyapunov_max", "lyapunov_stderr", "nonfinite_fraction")
_EXTRA_COLUMNS = ("log_distance_drive_end", "log_distance_start", "n_collapsed_start",
                  "lyapunov_max_driven", "lyapunov_stderr_driven", "param_change",
                  "param_change_relative", "nonfinite_weights")



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
        measure: which label defines transitions, stretches, the recommendation, the pooled
            claims, the shading and the titles: "combined" (:func:`combined_label`: chaos needs
            lambda_1 - k s.e. > threshold AND D~ above its floor by more than distance_margin;
            order needs lambda_1 + k s.e. < threshold AND D~ within distance_ordered_tol of its
            floor; anything else is marginal or disagree), or a single measure ("distance",
            "lyapunov"), or "auto" (combined when both measures have data, else the one that
            has).
        minima_prominence: minimum prominence of a test-loss local minimum, as a fraction of the
            range (max - min) of the test loss.
        smooth: width in checkpoints of the centred moving average applied before looking for
            minima (1: none; an even width w averages w + 1 checkpoints, centred).
        window: w in epochs for "minimum within +-w of a transition"; None: the median spacing
            between checkpoints.
        recommend: "first_transition" or "widest_stretch" (see module docstring).
        distance_resolution: D~ values within this of each other (or of the floor) do not vary
            beyond numerical resolution: claims on them are refused (mdesc.sweep.claims).
        event_sigmas, event_jump: a stability event needs a change beyond event_sigmas combined
            standard errors and event_jump times the local typical change (the median over the
            10 gaps on either side; mdesc.sweep.events).
        event_tolerance: a test-loss minimum or drop sits at an event within this many
            checkpoints.
        noise_sigmas: k; drops, training-loss spikes and descent cycles must exceed k robust
            noise scales of their curve (mdesc.sweep.controls), drops only after the initial
            learning phase.
        control_window: a placebo event (training-loss spike, parameter jump) controls the gaps
            within ``event_tolerance + control_window`` of it in the conditional tests.
        permutations, permutation_seed: the permutation tests' draws and seed.
    """

    floor: float = option(-15.0, "the order floor of D~", cli=False)
    distance_margin: float = option(2.0, "label a checkpoint chaotic when D~ exceeds the floor "
                                    "by more than this", metavar="X")
    distance_ordered_tol: float = option(1.0, "D~ - floor at or below which a checkpoint is "
                                         "clearly ordered", metavar="X")
    distance_chaotic_level: float | None = option(
        None, "D~ - floor at or above which a checkpoint is clearly chaotic", metavar="X",
        default_help="half the largest excess of the run")
    lyapunov_threshold: float = option(0.0, "label chaotic when lambda_1 exceeds this (natural "
                                       "log per step)", metavar="X")
    lyapunov_sigmas: float = option(2.0, "clearly chaotic/ordered when lambda_1 -/+ this many "
                                    "standard errors is beyond the threshold", metavar="X")
    measure: str = option("auto", "the label that defines transitions and every derived "
                          "quantity: combined (lambda_1 and D~ with their margins), distance "
                          "(D~ alone), lyapunov (lambda_1 alone), or auto (combined when both "
                          "are measured)", choices=("auto",) + LABELLINGS)
    minima_prominence: float = option(0.05, "minimum prominence of a test-loss local minimum, "
                                      "as a fraction of the test-loss range", metavar="X")
    smooth: int = option(1, "moving-average width (checkpoints) before looking for test-loss "
                         "minima", metavar="N")
    window: float | None = option(None, "+-window (epochs) for 'minimum near a transition'",
                                  metavar="X", default_help="the checkpoint spacing")
    recommend: str = option("first_transition", "rule for the recommended checkpoint",
                            choices=("first_transition", "widest_stretch"))
    distance_resolution: float = option(1e-6, "D~ values closer than this (to each other or the "
                                        "floor) do not vary: claims on them are refused",
                                        metavar="X")
    event_sigmas: float = option(3.0, "a lambda_1 event needs a change beyond this many "
                                 "combined standard errors", metavar="X")
    event_jump: float = option(5.0, "an event (lambda_1 or attractor structure) or a test-loss "
                               "drop needs a change this many times the local typical change "
                               "(median over 10 gaps either side)", metavar="X")
    event_tolerance: int = option(0, "a test-loss minimum or drop sits at an event within this "
                                  "many checkpoints", metavar="N")
    noise_sigmas: float = option(3.0, "a test-loss drop, a training-loss spike and each half "
                                 "of a descent cycle must exceed this many robust noise scales "
                                 "(1.4826 MAD of the curve's differences)", metavar="X")
    control_window: int = option(1, "a training-loss spike or parameter jump controls the gaps "
                                 "within event_tolerance + this many checkpoints of it "
                                 "(conditional tests)", metavar="N")
    permutations: int = option(10000, "draws of the permutation test", metavar="N")
    permutation_seed: int = option(0, "seed of the permutation test", cli=False)

    def validate(self) -> None:
        if self.measure not in ("auto",) + LABELLINGS:
            raise ValueError(f"measure={self.measure!r}: use 'auto', 'combined', 'distance' or "
                             "'lyapunov'")
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
        if (self.event_sigmas < 0 or self.event_jump < 0 or self.event_tolerance < 0
                or self.noise_sigmas < 0 or self.control_window < 0):
            raise ValueError("event_sigmas, event_jump, event_tolerance, noise_sigmas and "
                             "control_window must be >= 0")
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
                         "mdesc.sweep.load_table(folder)")
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


def prepare(table: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scalar columns as float arrays sorted by epoch; returns (columns, sort order)."""
    if "epoch" not in table:
        raise ValueError("run table has no 'epoch' column; expected the mapping returned by "
                         "mdesc.sweep.load_table(folder)")
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

def labels_and_regimes(cols: dict[str, np.ndarray], s: PhaseSettings, chaotic_level: float
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    labels, regimes = {}, {}
    x = cols["log_distance"] - s.floor
    lab = np.where(x > s.distance_margin, 1, 0).astype(np.int8)
    reg = np.where(x <= s.distance_ordered_tol, -1, np.where(x >= chaotic_level, 1, 0))
    bad = np.isnan(x)
    lab[bad] = -1
    reg = reg.astype(np.int8)
    reg[bad] = UNKNOWN_REGIME
    labels["distance"], regimes["distance"] = lab, reg

    lam = cols["lyapunov_max"]
    se = np.nan_to_num(cols["lyapunov_stderr"], nan=0.0)
    thr, k = s.lyapunov_threshold, s.lyapunov_sigmas
    lab = np.where(lam > thr, 1, 0).astype(np.int8)
    reg = np.where(lam - k * se > thr, 1, np.where(lam + k * se < thr, -1, 0)).astype(np.int8)
    bad = np.isnan(lam)
    lab[bad] = -1
    reg[bad] = UNKNOWN_REGIME
    labels["lyapunov"], regimes["lyapunov"] = lab, reg
    return labels, regimes


def combined_label(cols: dict[str, np.ndarray], s: PhaseSettings, distance_unknown: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The one label per checkpoint, from both measures with their error margins.

    ``chaotic`` (1): lambda_1 - k s.e. > threshold AND D~ - floor > ``distance_margin`` (above
    its floor beyond the float32 resolution); ``ordered`` (0): lambda_1 + k s.e. < threshold AND
    D~ - floor <= ``distance_ordered_tol`` (on the floor); ``disagree`` (3): one measure clearly
    chaotic, the other clearly ordered; ``marginal`` (2): anything else (lambda_1 within k s.e.
    of the threshold, or D~ between its two levels); ``unknown`` (-1): a measure is missing
    (``distance_unknown`` marks D~ that says nothing, e.g. collapsed t = 0 twins).  Returns
    ``(label, regime)``; the regime is -1/1 for ordered/chaotic, 0 (critical) for marginal and
    disagree, 2 for unknown."""
    x = cols["log_distance"] - s.floor
    lam = cols["lyapunov_max"]
    se = np.nan_to_num(cols["lyapunov_stderr"], nan=0.0)
    k, thr = s.lyapunov_sigmas, s.lyapunov_threshold
    lam_chaos, lam_order = lam - k * se > thr, lam + k * se < thr
    d_chaos, d_order = x > s.distance_margin, x <= s.distance_ordered_tol
    lab = np.full(x.size, MARGINAL_LABEL, dtype=np.int8)
    lab[lam_chaos & d_chaos] = 1
    lab[lam_order & d_order] = 0
    lab[(lam_chaos & d_order) | (lam_order & d_chaos)] = DISAGREE_LABEL
    lab[np.isnan(x) | np.isnan(lam) | np.asarray(distance_unknown, bool)] = -1
    reg = np.select([lab == 0, lab == 1, lab == -1], [-1, 1, UNKNOWN_REGIME], 0).astype(np.int8)
    return lab, reg


def measure_value(cols: dict[str, np.ndarray], measure: str, s: PhaseSettings
                   ) -> tuple[np.ndarray, float]:
    """The measure and the value at which its label flips (a transition of the combined label,
    where both measures flip between its two checkpoints, is dated where D~ crosses its
    margin, as for the distance label)."""
    if measure in ("distance", "combined"):
        return cols["log_distance"], s.floor + s.distance_margin
    return cols["lyapunov_max"], s.lyapunov_threshold


def transitions_of(epoch: np.ndarray, label: np.ndarray, value: np.ndarray, threshold: float,
                 measure: str) -> list[Transition]:
    """Changes between an ordered and a chaotic checkpoint, with only unknown, marginal or
    disagreeing checkpoints between them."""
    idx = np.flatnonzero((label == 0) | (label == 1))
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


def date_entries(transitions: list[Transition], epoch: np.ndarray, lam: np.ndarray,
                 threshold: float) -> None:
    """Re-date the combined label's transitions that pass marginal/disagreeing checkpoints: the
    run enters the new phase in the last gap, between ``index_after - 1`` and ``index_after``
    (where lambda_1 crosses its threshold, interpolated; the middle of the gap when it does
    not), not somewhere across the checkpoints that were neither.  In place."""
    for t in transitions:
        a, b = t.index_after - 1, t.index_after
        if a == t.index_before:
            continue
        va, vb = lam[a], lam[b]
        frac = (float(np.clip((threshold - va) / (vb - va), 0.0, 1.0))
                if np.isfinite(va) and np.isfinite(vb) and vb != va else 0.5)
        t.epoch = float(epoch[a] + frac * (epoch[b] - epoch[a]))


def stretches_of(epoch: np.ndarray, regime: np.ndarray, transitions: list[Transition]
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
            n_critical=int(np.sum(inside != UNKNOWN_REGIME)),
            open_start=open_start, open_end=open_end))
    return out


def nearest_index(epoch: np.ndarray, target: float) -> int:
    return int(np.argmin(np.abs(epoch - target)))   # argmin returns the first (earlier) on ties



def record_label(record: Mapping[str, Any], measure: str = "lyapunov",
                 phase: PhaseSettings | None = None) -> str:
    """"ordered", "chaotic" or "unknown" for one record by the analysis's rule and thresholds
    (:class:`PhaseSettings`, defaults unless ``phase`` is given): chaotic when lambda_1 >
    ``lyapunov_threshold``, or D~ - floor > ``distance_margin``; ``measure="combined"``: the
    analysis's one label (:func:`combined_label`, also "marginal" or "disagree")."""
    phase = phase or PhaseSettings()
    if measure == "combined":
        cols = {k: np.array([np.nan if record.get(k) is None else float(record[k])])
                for k in ("log_distance", "lyapunov_max", "lyapunov_stderr")}
        lab, _ = combined_label(cols, phase, np.zeros(1, bool))
        return LABEL_NAMES[int(lab[0])]
    if measure == "lyapunov":
        v = record.get("lyapunov_max")
        return "unknown" if v is None else ("chaotic" if v > phase.lyapunov_threshold else "ordered")
    if measure == "distance":
        v = record.get("log_distance")
        return "unknown" if v is None else (
            "chaotic" if v - phase.floor > phase.distance_margin else "ordered")
    raise ValueError(f"measure must be 'combined', 'lyapunov' or 'distance', got {measure!r}")
