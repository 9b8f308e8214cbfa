"""The public analyses on the reference backend: test oracle and benchmark baseline.

Each function is its :mod:`mdesc.core` namesake (same arguments and results) with
``backend="reference"``: the run in plain PyTorch autograd, :mod:`mdesc.core.reference_backend`.
"""
from __future__ import annotations

import functools

from mdesc.core import lyapunov as _lyapunov
from mdesc.core import stability as _stability


@functools.wraps(_lyapunov.lyapunov_spectrum)
def lyapunov_spectrum(*args, **kwargs):
    return _lyapunov.lyapunov_spectrum(*args, backend="reference", **kwargs)


@functools.wraps(_lyapunov.max_lyapunov)
def max_lyapunov(*args, **kwargs):
    return _lyapunov.max_lyapunov(*args, backend="reference", **kwargs)


@functools.wraps(_lyapunov.lyapunov_checkpoints)
def lyapunov_checkpoints(*args, **kwargs):
    return _lyapunov.lyapunov_checkpoints(*args, backend="reference", **kwargs)


@functools.wraps(_stability.asymptotic_distance)
def asymptotic_distance(*args, **kwargs):
    return _stability.asymptotic_distance(*args, backend="reference", **kwargs)
