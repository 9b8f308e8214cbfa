"""mdesc: neural-network training as a dynamical system.

Front door::

    import mdesc
    r = mdesc.max_lyapunov(lstm, seq, zero_input_steps=1100, warmup=100)
    s = mdesc.lyapunov_spectrum(lstm, seq, k=20)
    c = mdesc.lyapunov_checkpoints([ckpt1, ckpt2, ...], seq, k=1)
    d = mdesc.asymptotic_distance(lstm, seq)

The per-step loops run in the compiled extension (csrc/); :mod:`mdesc.reference` is the
pure-PyTorch autograd oracle with the same API.
"""
from mdesc import _ops  # noqa: F401  (loads the extension; clear error if it is missing)
from mdesc.lyapunov import (
    LyapunovResult,
    lyapunov_checkpoints,
    lyapunov_spectrum,
    max_lyapunov,
    random_frame,
)
from mdesc.stability import DistanceResult, asymptotic_distance

__version__ = "0.1.0"

# The studies and tools live in submodules, imported on first use so `import mdesc` stays light:
# mdesc.reference (autograd oracle), mdesc.train / mdesc.sweep / mdesc.phases / mdesc.report
# (multiple descents), mdesc.glassy (study 2), mdesc.trajectories (study 3), mdesc.data.
_SUBMODULES = {"cells", "data", "glassy", "phases", "reference", "report", "stability", "sweep",
               "train", "trajectories"}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"mdesc.{name}")
    raise AttributeError(f"module 'mdesc' has no attribute {name!r}")

__all__ = [
    "DistanceResult",
    "LyapunovResult",
    "asymptotic_distance",
    "lyapunov_checkpoints",
    "lyapunov_spectrum",
    "max_lyapunov",
    "random_frame",
]
