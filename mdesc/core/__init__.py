"""The core: Lyapunov exponents and asymptotic stability of recurrent models.

This package is the only code that loads the compiled extension (``mdesc._C``, through
:mod:`mdesc.core._ops`), and it does so on the first fused-kernel call, not at import, so the
reference backend and the studies work without it.  Importing the package imports torch; the
top-level ``import mdesc`` stays lazy and torch-free.

Layers, bottom up (each module imports only the ones below it; docs/architecture.md):

- :mod:`mdesc.core.cells`      the cell table; models -> flat weights; what is supported
- :mod:`mdesc.core.schedule`   the re-orthonormalisation schedule and block count
- :mod:`mdesc.core.derived`    positive-exponent count, KS entropy, Kaplan-Yorke dimension
- :mod:`mdesc.core.results`    LyapunovResult, DistanceResult
- :mod:`mdesc.core.reference_backend`  the run in plain PyTorch autograd (the reference backend)
- :mod:`mdesc.core.engine`     the defaults; prepare (inputs validated once), run_prepared
- :mod:`mdesc.core.windows`    the one chaining of drive and zero-input phases, per sequence
- :mod:`mdesc.core.lyapunov`   max_lyapunov, lyapunov_spectrum, lyapunov_checkpoints
- :mod:`mdesc.core.twin`       the twin run without cancellation; stability_record
- :mod:`mdesc.core.stability`  the papers' finite-perturbation asymptotic distance, reduced sums
- :mod:`mdesc.core.reference`  the fronts on the reference backend (test oracle, benchmark baseline)
- :mod:`mdesc.core.floss`      differentiable exponents: lyapunov_loss, FlossingPenalty (gradient flossing)
- :mod:`mdesc.core._ops`, :mod:`mdesc.core._twin_ops`  typed wrappers over ``torch.ops.mdesc.*``
- :mod:`mdesc.core.cli`        ``mdesc gain-sweep``

Conventions: docs/conventions.md.
"""
from __future__ import annotations

from mdesc.core.derived import Derived
from mdesc.core.engine import random_frame
from mdesc.core.floss import FlossingPenalty, lyapunov_loss
from mdesc.core.lyapunov import lyapunov_checkpoints, lyapunov_spectrum, max_lyapunov
from mdesc.core.results import DistanceResult, LyapunovResult
from mdesc.core.stability import asymptotic_distance
from mdesc.core.twin import stability_record

__all__ = ["Derived", "DistanceResult", "FlossingPenalty", "LyapunovResult", "asymptotic_distance",
           "lyapunov_checkpoints", "lyapunov_loss", "lyapunov_spectrum", "max_lyapunov", "random_frame",
           "stability_record"]
