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
(checkpoint indices) and its sharp **drops** (gaps where the test loss falls by more than
``jump`` times its local typical absolute change).  A target sits *at* an event when it is within
``tolerance`` checkpoints of it (a minimum at checkpoint m and an event in gap g: |m - (g + 1/2)|
<= tolerance + 1/2; a drop in gap g: |g - g_event| <= tolerance).

The **permutation test** asks whether targets sit at events more often than if the same number
of events were placed at random among the usable gaps: the statistic is the number of targets
at an event; the null draws event gaps uniformly without replacement ``permutations`` times
(seeded, so the p-value is reproducible); ``p = (1 + #{null >= observed}) / (1 + permutations)``.
It is refused, with the reason, when there are no events or no targets, or when events fill
every gap (then every placement is the same).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


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


def loss_drops(test_loss, jump: float = 5.0, window: int = WINDOW) -> list[int]:
    """Gaps where the test loss falls by more than ``jump`` x its local typical |change|."""
    y = np.asarray(test_loss, float)
    if y.size < 2:
        return []
    d = np.diff(y)
    typical = local_typical(np.abs(d), window)
    ok = np.isfinite(d) & np.isfinite(typical) & (typical > 0)
    return [int(g) for g in np.flatnonzero(ok) if d[g] < -jump * typical[g]]


def _hits(event_gaps: np.ndarray, target_pos: np.ndarray, reach: float) -> int:
    """Targets (positions in checkpoint units) within ``reach`` of an event (at gap + 1/2)."""
    if event_gaps.size == 0 or target_pos.size == 0:
        return 0
    e = event_gaps.astype(float) + 0.5
    return int(np.sum(np.min(np.abs(target_pos[:, None] - e[None, :]), axis=1) <= reach + 1e-9))


def permutation_test(n_gaps: int, event_gaps, target_positions, tolerance: int = 1,
                     permutations: int = 10000, seed: int = 0,
                     usable_gaps=None) -> dict[str, Any]:
    """Do targets sit at events more often than randomly placed events would? (module doc)

    ``target_positions``: checkpoint indices for minima (integers) or gap + 0.5 for drops.
    Returns ``{"n_events", "n_targets", "observed", "expected", "p_value", "refused"}``;
    ``refused`` is None or the reason the test cannot be made.
    """
    ev = np.unique(np.asarray(event_gaps, dtype=int))
    tp = np.asarray(target_positions, dtype=float)
    usable = np.arange(n_gaps) if usable_gaps is None else np.unique(np.asarray(usable_gaps, int))
    reach = tolerance + 0.5
    out = {"n_events": int(ev.size), "n_targets": int(tp.size), "n_gaps": int(usable.size),
           "tolerance": tolerance, "permutations": permutations, "observed": None,
           "expected": None, "p_value": None, "refused": None}
    if ev.size == 0:
        out["refused"] = "no stability events: nothing to test"
        return out
    if tp.size == 0:
        out["refused"] = "no targets (test-loss minima or drops): nothing to test"
        return out
    if ev.size >= usable.size:
        out["refused"] = "events fill every gap: every placement gives the same count"
        return out
    obs = _hits(ev, tp, reach)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations, dtype=int)
    for k in range(permutations):
        null[k] = _hits(rng.choice(usable, size=ev.size, replace=False), tp, reach)
    out.update(observed=obs, expected=float(null.mean()),
               p_value=float((1 + np.sum(null >= obs)) / (1 + permutations)))
    return out
