"""The test-loss curve of a run: local minima and descent cycles (pure numpy/scipy).

Definitions: see :mod:`mdesc.sweep.analysis` (module docstring, "Local minima of the test
loss" and "Descent cycle").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.signal import find_peaks

from mdesc.sweep.phases import PhaseSettings


@dataclass
class LocalMinimum:
    index: int
    epoch: float
    test_loss: float
    prominence: float       # in loss units, measured on the smoothed series
    nearest_transition_epoch: float | None
    distance_to_transition: float | None   # |epoch - nearest transition epoch|, epochs


@dataclass
class DescentCycle:
    """Rise from one local minimum to the highest point, then the drop to the next minimum."""

    start_index: int
    peak_index: int
    end_index: int
    start_epoch: float
    peak_epoch: float
    end_epoch: float
    rise: float             # peak - start test loss
    drop: float             # peak - end test loss
    rise_epochs: float
    drop_epochs: float
    asymmetry: float        # rise_epochs / drop_epochs (> 1: sharp drop)
    chaotic_fraction_rise: float | None   # fraction of labelled checkpoints in (start, peak] that are chaotic
    transition_in_drop: bool               # a transition epoch lies in [peak, end]
    overtrained: bool                      # starts at or after the global minimum


# ----------------------------------------------------------------------------- test loss

def _moving_average(y: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return y.copy()
    h = width // 2
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(y.size)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, y.size)
    return (c[hi] - c[lo]) / (hi - lo)


def local_minima(epoch: np.ndarray, loss: np.ndarray, s: PhaseSettings
                  ) -> list[tuple[int, float]]:
    """(checkpoint index, prominence) of the test-loss local minima."""
    idx = np.flatnonzero(np.isfinite(loss))
    if idx.size < 3:
        return []
    y = loss[idx]
    span = float(y.max() - y.min())
    if span == 0.0:
        return []
    ys = _moving_average(y, int(s.smooth))
    peaks, props = find_peaks(-ys, prominence=max(s.minima_prominence * span, 1e-300))
    h = int(s.smooth) // 2
    found: dict[int, float] = {}
    for p, prom in zip(peaks, props["prominences"]):
        lo, hi = max(p - h, 1), min(p + h + 1, y.size - 1)   # never an end point
        q = lo + int(np.argmin(y[lo:hi]))
        found[int(idx[q])] = max(found.get(int(idx[q]), 0.0), float(prom))
    return sorted(found.items())


def cycles(epoch: np.ndarray, loss: np.ndarray, minima: list[LocalMinimum],
            label: np.ndarray, transitions: list, global_epoch: float | None,
            min_change: float = 0.0) -> list[DescentCycle]:
    """Descent cycles between consecutive local minima whose rise and drop both exceed
    ``min_change`` (the loss curve's noise: :mod:`mdesc.sweep.controls`)."""
    out = []
    for m0, m1 in zip(minima[:-1], minima[1:]):
        i0, i1 = m0.index, m1.index
        seg = loss[i0 + 1:i1]
        if seg.size == 0 or not np.any(np.isfinite(seg)):
            continue
        p = i0 + 1 + int(np.nanargmax(seg))
        rise_e, drop_e = float(epoch[p] - epoch[i0]), float(epoch[i1] - epoch[p])
        if not (loss[p] - loss[i0] > min_change and loss[p] - loss[i1] > min_change):
            continue
        lab = label[i0 + 1:p + 1]
        lab = lab[lab >= 0]
        out.append(DescentCycle(
            start_index=i0, peak_index=p, end_index=i1,
            start_epoch=float(epoch[i0]), peak_epoch=float(epoch[p]), end_epoch=float(epoch[i1]),
            rise=float(loss[p] - loss[i0]), drop=float(loss[p] - loss[i1]),
            rise_epochs=rise_e, drop_epochs=drop_e,
            asymmetry=rise_e / drop_e if drop_e > 0 else math.inf,
            chaotic_fraction_rise=float(np.mean(lab == 1)) if lab.size else None,
            transition_in_drop=any(epoch[p] <= t.epoch <= epoch[i1] for t in transitions),
            overtrained=bool(global_epoch is not None and epoch[i0] >= global_epoch)))
    return out
