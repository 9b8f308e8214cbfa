"""The core: Lyapunov exponents and asymptotic stability of recurrent models.

This package is the only code that loads the compiled extension (``mdesc._C``, through
:mod:`mdesc.core._ops`), and it does so on the first fused-kernel call, not at import.

- :mod:`mdesc.core.cells`      models -> flat weights; what is supported
- :mod:`mdesc.core.lyapunov`   max_lyapunov, lyapunov_spectrum, lyapunov_checkpoints, result object
- :mod:`mdesc.core.stability`  the papers' finite-perturbation asymptotic distance, reduced sums
- :mod:`mdesc.core.reference`  pure-PyTorch autograd oracle (tests) and baseline (benchmarks)
- :mod:`mdesc.core._ops`       typed wrappers over ``torch.ops.mdesc.*`` and their fake kernels
"""
from mdesc.core.lyapunov import (
    LyapunovResult,
    lyapunov_checkpoints,
    lyapunov_spectrum,
    max_lyapunov,
    random_frame,
)
from mdesc.core.stability import DistanceResult, asymptotic_distance

__all__ = [
    "DistanceResult",
    "LyapunovResult",
    "asymptotic_distance",
    "lyapunov_checkpoints",
    "lyapunov_spectrum",
    "max_lyapunov",
    "random_frame",
]
