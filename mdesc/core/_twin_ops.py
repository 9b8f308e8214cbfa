"""Typed wrapper over ``torch.ops.mdesc.lstm_twin_run`` and its fake (meta) kernel.

Schema and shapes: csrc/mdesc.cpp (one schema file for every op).  Importing this module loads the compiled extension
(through :mod:`mdesc.core._ops`, which checks it matches the running torch).
"""
from __future__ import annotations

import torch

from mdesc.core import _ops  # noqa: F401  (loads mdesc._C, registers torch.ops.mdesc.*)
from mdesc.core import schedule


def lstm_twin_run(x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0, zero_input_steps: int, warmup: int,
                  qr_every: int, *, cpu_tile_columns: int = 48, portable_gemm: bool = False,
                  cpu_path: str = "auto"):
    """Run stacked LSTMs with the difference to a twin (and k tangent vectors) carried beside the state.

    Returns ``(block_logs [C, B, nblocks, k] float64, h_T, c_T, dh_T, dc_T)``, each state
    ``[C, L, B, H]``; ``dh_T, dc_T`` are the twin's final state minus the run's, computed as a
    difference without cancellation (csrc/common/twin_math.h).
    """
    return torch.ops.mdesc.lstm_twin_run.default(
        x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0, zero_input_steps, warmup, qr_every,
        cpu_tile_columns=cpu_tile_columns, portable_gemm=portable_gemm, cpu_path=cpu_path)


#: The keywords of :func:`lstm_twin_run` that tune the kernel (a subset of ``_ops.KERNEL_OPTIONS``).
KERNEL_OPTIONS = ("cpu_tile_columns", "portable_gemm", "cpu_path")


def has_kernel(device_type: str) -> bool:
    """Whether lstm_twin_run has an implementation for this device type ("cpu", "cuda")."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("mdesc::lstm_twin_run", device_type.upper())


@torch.library.register_fake("mdesc::lstm_twin_run")
def _lstm_twin_run_fake(x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0, zero_input_steps, warmup, qr_every, *,
                        cpu_tile_columns=48, portable_gemm=False, cpu_path="auto"):
    C, H, L = w_hh[0].shape[0], w_hh[0].shape[2], len(w_hh)
    B, k = x.shape[2], q0.shape[3]
    nblocks = schedule.counted_blocks(x.shape[1] + zero_input_steps, warmup, qr_every) if k > 0 else 0
    logs = x.new_empty((C, B, nblocks, k), dtype=torch.float64)
    return (logs,) + tuple(x.new_empty((C, L, B, H)) for _ in range(4))
