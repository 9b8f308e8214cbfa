"""The core: Lyapunov exponents and asymptotic stability of recurrent models.

This package is the only code that loads the compiled extension (``mdesc._C``, through
:mod:`mdesc.core._ops`), and it does so on the first fused-kernel call, not at import.  Its
public names are imported on first use too, so ``import mdesc.core`` (and ``mdesc --help``,
which imports :mod:`mdesc.core.cli`) import neither torch nor the extension.

- :mod:`mdesc.core.cells`      models -> flat weights; what is supported
- :mod:`mdesc.core.lyapunov`   max_lyapunov, lyapunov_spectrum, lyapunov_checkpoints, result object
- :mod:`mdesc.core.windows`    the asymptotic (zero-input) window, exactly per sequence
- :mod:`mdesc.core.stability`  the papers' finite-perturbation asymptotic distance, reduced sums
- :mod:`mdesc.core.derived`    positive-exponent count, KS entropy, Kaplan-Yorke dimension
- :mod:`mdesc.core.reference`  pure-PyTorch autograd oracle (tests) and baseline (benchmarks)
- :mod:`mdesc.core._ops`       typed wrappers over ``torch.ops.mdesc.*`` and their fake kernels
- :mod:`mdesc.core.cli`        ``mdesc gain-sweep``

Conventions: docs/conventions.md.
"""
from __future__ import annotations

import importlib

_PUBLIC = {
    "DistanceResult": "mdesc.core.stability",
    "LyapunovResult": "mdesc.core.lyapunov",
    "Derived": "mdesc.core.derived",
    "asymptotic_distance": "mdesc.core.stability",
    "lyapunov_checkpoints": "mdesc.core.lyapunov",
    "lyapunov_spectrum": "mdesc.core.lyapunov",
    "max_lyapunov": "mdesc.core.lyapunov",
    "random_frame": "mdesc.core.lyapunov",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'mdesc.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
