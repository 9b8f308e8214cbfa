"""Thin typed wrappers over ``torch.ops.mdesc.*`` and their fake (meta) kernels.

Loading this module loads the compiled extension and checks that it was built against the
torch that is running; a mismatch is an error that says how to rebuild.
"""
from __future__ import annotations

import torch

try:
    from mdesc import _C  # noqa: F401  (registers torch.ops.mdesc.*)
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "mdesc's compiled extension (mdesc._C) could not be loaded: "
        f"{e}.\nBuild it with `pip install --no-build-isolation -e .` (or `python setup.py "
        "build_ext --inplace`) against the torch you run."
    ) from e

from mdesc import _build_info

if _build_info.TORCH_VERSION != torch.__version__:  # pragma: no cover
    raise ImportError(
        f"mdesc was compiled against torch {_build_info.TORCH_VERSION} but torch "
        f"{torch.__version__} is running; rebuild mdesc with `pip install --no-build-isolation "
        "--force-reinstall .` in this environment."
    )

WITH_CUDA: bool = bool(_build_info.WITH_CUDA)


def lstm_tangent_run(
    x: torch.Tensor,
    lengths: torch.Tensor,
    w_ih: list[torch.Tensor],
    w_hh: list[torch.Tensor],
    bias: list[torch.Tensor],
    h0: torch.Tensor,
    c0: torch.Tensor,
    q0: torch.Tensor,
    zero_input_steps: int,
    warmup: int,
    qr_every: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run stacked LSTMs with k tangent vectors; shapes and semantics in csrc/mdesc.cpp.

    Returns ``(block_logs [C, B, nblocks, k] float64, h_T [C, L, B, H], c_T [C, L, B, H])``.
    """
    return torch.ops.mdesc.lstm_tangent_run.default(
        x, lengths, w_ih, w_hh, bias, h0, c0, q0, zero_input_steps, warmup, qr_every
    )


def has_kernel(device_type: str) -> bool:
    """Whether lstm_tangent_run has an implementation for this device type ("cpu", "cuda")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("mdesc::lstm_tangent_run", device_type.upper())


def counted_blocks(steps: int, warmup: int, qr_every: int) -> int:
    """Number of counted re-orthonormalisation blocks of a run of ``steps`` steps."""
    return -(-(steps - warmup) // qr_every)


@torch.library.register_fake("mdesc::lstm_tangent_run")
def _lstm_tangent_run_fake(x, lengths, w_ih, w_hh, bias, h0, c0, q0, zero_input_steps, warmup, qr_every):
    C, H, L = w_hh[0].shape[0], w_hh[0].shape[2], len(w_hh)
    B, k = x.shape[2], q0.shape[3]
    nblocks = counted_blocks(x.shape[1] + zero_input_steps, warmup, qr_every) if k > 0 else 0
    logs = x.new_empty((C, B, nblocks, k), dtype=torch.float64)
    return logs, x.new_empty((C, L, B, H)), x.new_empty((C, L, B, H))
