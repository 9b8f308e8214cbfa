"""mdesc: neural-network training as a dynamical system.

Front door::

    import mdesc
    r = mdesc.max_lyapunov(lstm, seq, zero_input_steps=1100, warmup=100)
    s = mdesc.lyapunov_spectrum(lstm, seq, k=20)
    c = mdesc.lyapunov_checkpoints([ckpt1, ckpt2, ...], seq, k=1)
    d = mdesc.asymptotic_distance(lstm, seq)
    lam = mdesc.lyapunov_loss(lstm, seq, zero_input_steps=100)   # differentiable lambda_1

Everything is imported on first use, so ``import mdesc`` (and ``mdesc --help``) stay fast and
the studies that do not need the compiled extension work without it.  The per-step loops run in
the extension (csrc/), loaded by :mod:`mdesc.core` on the first fused call;
:mod:`mdesc.core.reference` is the pure-PyTorch autograd oracle with the same API.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public core API -> the module that defines it.
_CORE = {name: "mdesc.core" for name in (
    "DistanceResult", "LyapunovResult", "Derived", "FlossingPenalty", "asymptotic_distance",
    "lyapunov_checkpoints", "lyapunov_loss", "lyapunov_spectrum", "max_lyapunov", "random_frame",
    "stability_record")}
_CORE.update(StabilityMonitor="mdesc.anyrun", sweep_checkpoints="mdesc.anyrun")
# Sub-packages and modules reachable as attributes (mdesc.glassy, mdesc.reference, ...).
_SUBMODULES = {
    "core": "mdesc.core",
    "reference": "mdesc.core.reference",
    "cells": "mdesc.core.cells",
    "store": "mdesc.store",
    "data": "mdesc.data",
    "descent": "mdesc.descent",
    "glassy": "mdesc.glassy",
    "trajectories": "mdesc.trajectories",
    "anyrun": "mdesc.anyrun",
    "sweep": "mdesc.sweep",
    "stats": "mdesc.stats",
}


def __getattr__(name: str):
    if name in _CORE:
        value = getattr(importlib.import_module(_CORE[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'mdesc' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_CORE) | set(_SUBMODULES))


__all__ = sorted(_CORE)
