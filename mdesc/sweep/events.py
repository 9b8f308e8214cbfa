"""Stability events along the training axis, and the permutation test of the paper's claim.

Pure numpy on run-table arrays (no torch, no files, no matplotlib).

*Events* are abrupt changes of the asymptotic dynamics between neighbouring checkpoints c and
c + 1 (sorted by epoch; the event sits in the *gap* c):

- a **lyapunov** event: ``|lambda_1[c+1] - lambda_1[c]| > sigmas * sqrt(se[c]^2 + se[c+1]^2)``
  (beyond the two standard errors) **and** ``> jump`` times the *local* typical change, the
  median of ``|delta lambda_1|`` over the ``window`` gaps on either side (abrupt: much larger
  than the changes around it; a global median would flag every gap of the fast early epochs);
- a **structure** event (the attractors of the zero-input dynamics rearrange): the mean over
  reviews of ``|r[c+1, i] - r[c, i]|`` (r = reduced sum sum_j h_T,j of review i) exceeds
  ``jump`` times its local typical value and the numerical resolution ``resolution``.

*Targets* are what the paper says sits at transitions: the local minima of the test loss
(checkpoint indices) and its sharp **drops** (:func:`mdesc.sweep.controls.jumps`: gaps after the
initial learning phase where the test loss falls by more than ``jump`` times its local typical
absolute change and beyond the curve's own noise).  A target sits *at* an event when it is within
``tolerance`` checkpoints of it (a minimum at checkpoint m and an event in gap g: |m - (g + 1/2)|
<= tolerance + 1/2; a drop in gap g: |g - g_event| <= tolerance).

The **permutation test** asks whether targets sit at events more often than if the same number
of events were placed at random among the usable gaps (:func:`mdesc.stats.event_hits_test`, the
uniform null; the circular-shift and stratified nulls and the logistic model are in
:mod:`mdesc.sweep.controls`).  It is refused, with the reason, when there are no events or no
targets, or when events fill every gap (then every placement is the same).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mdesc import stats


@dataclass
class Event:
    kind: str               # "lyapunov" or "structure"
    gap: int                # between checkpoints gap and gap + 1 (epoch-sorted indices)
    epoch_before: float
    epoch_after: float
    size: float             # |delta lambda_1| or mean |delta reduced sum|
    significance: float     # size / combined standard error (lyapunov) or / median (structure)


WINDOW = 10   # gaps on either side that define the local typical change


def local_typical(x: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Per gap: the median of the finite |changes| of the ``window`` gaps on either side
    (itself excluded); NaN where there are none."""
    x = np.asarray(x, float)
    out = np.full(x.size, np.nan)
    for g in range(x.size):
        nb = np.r_[x[max(0, g - window):g], x[g + 1:g + 1 + window]]
        nb = nb[np.isfinite(nb)]
        if nb.size:
            out[g] = float(np.median(nb))
    return out


def lyapunov_events(epoch, lam, stderr, sigmas: float = 3.0, jump: float = 5.0,
                    window: int = WINDOW) -> list[Event]:
    """Abrupt changes of lambda_1 between neighbours, beyond their errors (module doc)."""
    epoch, lam = np.asarray(epoch, float), np.asarray(lam, float)
    se = np.nan_to_num(np.asarray(stderr, float), nan=0.0)
    if lam.size < 2:
        return []
    d = np.abs(np.diff(lam))
    err = np.sqrt(se[:-1] ** 2 + se[1:] ** 2)
    typical = local_typical(d, window)
    out = []
    for g in np.flatnonzero(np.isfinite(d) & np.isfinite(typical)):
        if d[g] > sigmas * err[g] and d[g] > jump * typical[g] and d[g] > 0:
            out.append(Event("lyapunov", int(g), float(epoch[g]), float(epoch[g + 1]),
                             float(d[g]), float(d[g] / err[g]) if err[g] > 0 else math.inf))
    return out


def structure_change(reduced_sum) -> np.ndarray:
    """(C-1,) mean over reviews of |r[c+1] - r[c]| (NaN where a neighbour has no finite r)."""
    r = np.asarray(reduced_sum, float)
    if r.ndim != 2 or r.shape[0] < 2:
        return np.zeros(0)
    with np.errstate(invalid="ignore"):
        d = np.abs(np.diff(r, axis=0))
        ok = np.isfinite(d)
        n = ok.sum(axis=1)
        return np.where(n > 0, np.where(ok, d, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)


def structure_events(epoch, reduced_sum, jump: float = 5.0, resolution: float = 1e-6,
                     window: int = WINDOW) -> list[Event]:
    """Rearrangements of the zero-input attractors (reduced sums) between neighbours."""
    epoch = np.asarray(epoch, float)
    s = structure_change(reduced_sum)
    typical = local_typical(s, window)
    out = []
    for g in np.flatnonzero(np.isfinite(s) & np.isfinite(typical)):
        if s[g] > resolution and s[g] > jump * typical[g]:
            out.append(Event("structure", int(g), float(epoch[g]), float(epoch[g + 1]),
                             float(s[g]),
                             float(s[g] / typical[g]) if typical[g] > 0 else math.inf))
    return out


def attractor_count(reduced_sum_row, tol: float = 1e-3) -> int:
    """Distinct end states of one checkpoint: reduced sums grouped when closer than ``tol``."""
    r = np.sort(np.asarray(reduced_sum_row, float))
    r = r[np.isfinite(r)]
    if r.size == 0:
        return 0
    return int(1 + np.sum(np.diff(r) > tol))


def permutation_test(n_gaps: int, event_gaps, target_positions, tolerance: int = 1,
                     permutations: int = 10000, seed: int = 0,
                     usable_gaps=None) -> dict[str, Any]:
    """Do targets sit at events more often than randomly placed events would? The uniform null
    of :func:`mdesc.stats.event_hits_test` (the one implementation), under this module's names:
    ``permutations`` draws; ``refused`` names stability events and test-loss targets."""
    out = stats.event_hits_test(n_gaps, event_gaps, target_positions, tolerance=tolerance,
                                null="uniform", usable_gaps=usable_gaps, draws=permutations,
                                seed=seed)
    out["permutations"] = permutations
    if out["refused"] == "no events: nothing to test":
        out["refused"] = "no stability events: nothing to test"
    elif out["refused"] == "no targets: nothing to test":
        out["refused"] = "no targets (test-loss minima or drops): nothing to test"
    return out
