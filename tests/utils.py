"""The one device x dtype test matrix of the core tests (as pytorch_scatter's tests/utils.py).

Core tests parametrize over :data:`DEVICE_DTYPES` (or :data:`DEVICES` where a test is about
float64 agreement only), so on a machine with a GPU the same tests run on CUDA too, instead of a
second, rewritten set.  CUDA joins the matrix when torch sees a GPU and this build of mdesc has
CUDA kernels (checked without loading the extension unless a GPU is present).
"""
from __future__ import annotations

from itertools import product

import pytest
import torch


def _cuda_available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        from mdesc.core import _ops
    except ImportError:
        return False
    return _ops.has_kernel("cuda")


DEVICES = [torch.device("cpu")] + ([torch.device("cuda")] if _cuda_available() else [])
DTYPES = [torch.float32, torch.float64]
DEVICE_DTYPES = list(product(DEVICES, DTYPES))


def ids(values) -> list[str]:
    return [f"{d.type}-{str(t).replace('torch.', '')}" for d, t in values]


#: ``@device_dtype`` parametrizes a test over (device, dtype).
device_dtype = pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, ids=ids(DEVICE_DTYPES))
#: ``@devices`` parametrizes a test over devices (for float64-only comparisons).
devices = pytest.mark.parametrize("device", DEVICES, ids=[d.type for d in DEVICES])


def tol(dtype: torch.dtype, f64: float = 1e-12, f32: float = 1e-5) -> dict:
    """rtol/atol for comparing two computations of the same quantity in ``dtype``."""
    t = f64 if dtype == torch.float64 else f32
    return dict(rtol=t, atol=t)
