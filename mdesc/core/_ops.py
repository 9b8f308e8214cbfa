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
from mdesc.core import schedule
from mdesc.core.cells import CELLS

if _build_info.TORCH_VERSION != torch.__version__:  # pragma: no cover
    raise ImportError(
        f"mdesc was compiled against torch {_build_info.TORCH_VERSION} but torch "
        f"{torch.__version__} is running; rebuild mdesc with `pip install --no-build-isolation "
        "--force-reinstall .` in this environment."
    )

WITH_CUDA: bool = bool(_build_info.WITH_CUDA)


def tangent_run(
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
    *,
    cell: str = "lstm",
    cpu_tile_columns: int = 48,
    portable_gemm: bool = False,
    cuda_path: str = "auto",
    cuda_max_checkpoints: int = 0,
    poison_outputs: bool = False,
    cpu_path: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run stacked recurrent layers with k tangent vectors; shapes and semantics in csrc/mdesc.cpp.

    ``cell`` is one of :data:`mdesc.core.cells.CELLS` (the order of csrc/common/cell_math.h's table).  The keywords after it are tuning knobs (results do not
    depend on them beyond rounding): ``cpu_tile_columns`` and ``portable_gemm`` for the CPU
    kernel, ``cuda_path`` ("auto", "fused", "stepwise"), ``cuda_max_checkpoints`` and
    ``poison_outputs`` for the CUDA kernels, ``cpu_path`` ("auto": the CPU kernel's fused step
    with AVX-512, else BLAS + pointwise; "fused": the fused step with AVX-512 or AVX2;
    "fused_avx2": its AVX2 code on any AVX2 CPU; "gemm": BLAS + pointwise); each backend ignores
    the other's.

    Returns ``(block_logs [C, B, nblocks, k] float64, h_T [C, L, B, H], c_T [C, L, B, H or 0])``.
    """
    return torch.ops.mdesc.tangent_run.default(
        x, lengths, w_ih, w_hh, bias, h0, c0, q0, zero_input_steps, warmup, qr_every, cell=cell,
        cpu_tile_columns=cpu_tile_columns, portable_gemm=portable_gemm, cuda_path=cuda_path,
        cuda_max_checkpoints=cuda_max_checkpoints, poison_outputs=poison_outputs, cpu_path=cpu_path,
    )


#: The keywords of :func:`tangent_run` that tune a kernel (``kernel_options`` of the public API).
KERNEL_OPTIONS = ("cpu_tile_columns", "portable_gemm", "cuda_path", "cuda_max_checkpoints", "poison_outputs",
                  "cpu_path")


def cpu_fused_lanes(elem_bytes: int = 4) -> int:
    """Vector lanes of the CPU kernel's fused step on this CPU (0: it has none; layers need H >= lanes)."""
    return int(torch.ops.mdesc.cpu_fused_lanes(int(elem_bytes)))


def has_kernel(device_type: str) -> bool:
    """Whether tangent_run has an implementation for this device type ("cpu", "cuda")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("mdesc::tangent_run", device_type.upper())


@torch.library.register_fake("mdesc::tangent_run")
def _tangent_run_fake(x, lengths, w_ih, w_hh, bias, h0, c0, q0, zero_input_steps, warmup, qr_every, *,
                      cell="lstm", cpu_tile_columns=48, portable_gemm=False, cuda_path="auto",
                      cuda_max_checkpoints=0, poison_outputs=False, cpu_path="auto"):
    C, H, L = w_hh[0].shape[0], w_hh[0].shape[2], len(w_hh)
    B, k = x.shape[2], q0.shape[3]
    nblocks = schedule.counted_blocks(x.shape[1] + zero_input_steps, warmup, qr_every) if k > 0 else 0
    logs = x.new_empty((C, B, nblocks, k), dtype=torch.float64)
    return logs, x.new_empty((C, L, B, H)), x.new_empty((C, L, B, H if cell == "lstm" else 0))
