"""The re-orthonormalisation schedule and the block count, in Python.

The one Python copy of the rule in csrc/common/cell_math.h (``qr_block_after_step``,
``counted_blocks``); everything in Python that needs it (the fake kernel in :mod:`mdesc.core._ops`,
:meth:`mdesc.core.engine.PreparedRun.block_steps`, the reference in :mod:`mdesc.core.reference_backend`)
calls these.  tests/test_schedule.py checks ``counted_blocks`` against the C++ rule over many
inputs (``torch.ops.mdesc.counted_blocks``) and tests/test_cuda.py the whole schedule against the
compiled kernels.  Importing this module loads nothing compiled.
"""
from __future__ import annotations


def counted_blocks(steps: int, warmup: int, qr_every: int) -> int:
    """Counted blocks of a run of ``steps`` steps: ceil((steps - warmup) / qr_every), 0 when no
    step is counted (steps <= warmup); ``qr_every >= 1``."""
    return -(-(steps - warmup) // qr_every) if steps > warmup else 0


def block_sizes(steps: int, warmup: int, qr_every: int) -> list[int]:
    """Counted steps in each block: qr_every each, the last one possibly shorter."""
    counted = steps - warmup
    n = counted_blocks(steps, warmup, qr_every)
    return [qr_every] * (n - 1) + [counted - qr_every * (n - 1)] if n > 0 else []


def qr_block_after_step(s: int, warmup: int, qr_every: int, steps: int) -> int:
    """What happens after step ``s`` (1-based): -2 no QR, -1 QR with logs discarded (warm-up:
    every qr_every steps from step 0, and at its end), b >= 0 QR whose logs belong to counted
    block b (every qr_every steps from ``warmup``, and after the last step)."""
    if s <= warmup:
        return -1 if (s % qr_every == 0 or s == warmup) else -2
    counted = s - warmup
    if counted % qr_every == 0 or s == steps:
        return (counted - 1) // qr_every
    return -2
