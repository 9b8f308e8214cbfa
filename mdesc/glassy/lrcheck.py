"""The learning-rate stability check of a glassy sweep: the largest rate at which no net spikes.

:func:`run_lr_check` trains the sweep's grid (usually a short version: fewer steps, a few widths
and one seed) once per learning rate, each in its own resumable sweep folder ``lr{lr}/`` under
the check's folder, and :func:`lr_stability` judges every net: *unstable* when its training loss
goes non-finite or it has a loss spike (:func:`~mdesc.glassy.summary.first_spike_time`: a
minibatch loss above ``max_ratio`` times its bin's mean, or a rise of the full training loss by
more than ``max_rise`` between records). The largest stable rate is the largest rate at which
every net is stable *and* every smaller rate checked is too. The check is shown, not only its
answer: ``lr_check.json`` lists every net's first spike and final loss per rate, and
:func:`~mdesc.glassy.figures.plot_lr_check` draws the curves. (results/glassy/pilot_lr.py is
the hand-written pilot the recorded sweep ran before this existed.)
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from mdesc.glassy.summary import first_spike_time
from mdesc.glassy.sweep import NetRecord, SweepSettings, collect, run_sweep

__all__ = ["lr_folder", "run_lr_check", "lr_stability"]


def lr_folder(root, lr: float) -> str:
    return os.path.join(os.fspath(root), f"lr{lr:g}")


def run_lr_check(root, settings: SweepSettings, lrs: Sequence[float],
                 log: Callable[[str], None] = print) -> dict[float, list[NetRecord]]:
    """Train ``settings`` at every rate in ``lrs`` (``settings.lr`` is replaced), resumably,
    and return the nets per rate."""
    out = {}
    for lr in sorted(set(float(x) for x in lrs)):
        s = dataclasses.replace(settings, lr=lr)
        log(f"lr {lr:g}: {lr_folder(root, lr)}")
        run_sweep(lr_folder(root, lr), s, log=log)
        out[lr] = collect(lr_folder(root, lr))[1]
    return out


def _judge(net: NetRecord, max_ratio: float, max_rise: float, t_from: float) -> dict[str, Any]:
    reached = np.arange(net.times.size) < np.searchsorted(net.times, net.step, side="right")
    loss = net.train_loss[reached]
    nonfinite = bool(not np.all(np.isfinite(loss)))
    spike = first_spike_time(net, max_ratio=max_ratio, max_rise=max_rise, t_from=t_from)
    return {"depth": net.depth, "width": net.width, "seed": net.seed,
            "first_spike": spike, "nonfinite": nonfinite,
            "final_train_loss": float(loss[-1]) if loss.size else math.nan,
            "stable": bool(not nonfinite and not math.isfinite(spike))}


def lr_stability(groups: dict[float, list[NetRecord]], max_ratio: float = 2.0,
                 max_rise: float = 0.1, t_from: float = 10.0) -> dict[str, Any]:
    """Every net judged at every rate (spikes counted from record time ``t_from`` on, past the
    first updates); ``largest_stable_lr`` (None when the smallest rate already fails) and, per
    depth, its own largest stable rate."""
    rates = sorted(groups)
    per_lr = []
    for lr in rates:
        nets = [_judge(n, max_ratio, max_rise, t_from) for n in groups[lr]]
        per_lr.append({"lr": lr, "stable": all(n["stable"] for n in nets),
                       "n_unstable": sum(not n["stable"] for n in nets), "nets": nets})

    def largest(ok: Callable[[dict], bool]) -> float | None:
        best = None
        for entry in per_lr:
            if not ok(entry):
                break
            best = entry["lr"]
        return best

    depths = sorted({n["depth"] for e in per_lr for n in e["nets"]})
    by_depth = {str(d): largest(lambda e, d=d: all(n["stable"] for n in e["nets"]
                                                   if n["depth"] == d)) for d in depths}
    return {"rates": rates, "max_ratio": max_ratio, "max_rise": max_rise, "t_from": t_from,
            "largest_stable_lr": largest(lambda e: e["stable"]),
            "largest_stable_lr_by_depth": by_depth, "per_lr": per_lr}
