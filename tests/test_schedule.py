"""The block count has one rule, in C++ (csrc/common/cell_math.h: counted_blocks, exposed as
torch.ops.mdesc.counted_blocks); mdesc/core/schedule.py is Python's copy for the fake kernels.  These
tests check the copy against the rule over many inputs, the edge cases included (warmup >= steps,
qr_every > steps, steps = 0), and that both fake kernels size their outputs by it.  The cell table
has one order too: C++'s (torch.ops.mdesc.cells) is mdesc.core.cells.CELLS."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mdesc.core import _ops, _twin_ops, cells, schedule  # noqa: F401  (_ops registers torch.ops.mdesc.*)


def _cpp(steps, warmup, qr_every):
    return torch.ops.mdesc.counted_blocks(steps, warmup, qr_every)


@given(steps=st.integers(0, 5000), warmup=st.integers(0, 5000), qr_every=st.integers(1, 6000))
def test_python_block_count_is_the_cpp_rule(steps, warmup, qr_every):
    assert schedule.counted_blocks(steps, warmup, qr_every) == _cpp(steps, warmup, qr_every)


@given(steps=st.integers(1, 300), warmup=st.integers(0, 299), qr_every=st.integers(1, 320))
def test_block_sizes_fill_the_counted_steps(steps, warmup, qr_every):
    """block_sizes (built on counted_blocks) cover exactly the counted steps, qr_every each but the
    last, and agree with qr_block_after_step's QRs."""
    sizes = schedule.block_sizes(steps, warmup, qr_every)
    assert len(sizes) == _cpp(steps, warmup, qr_every)
    assert sum(sizes) == max(steps - warmup, 0)
    assert all(s == qr_every for s in sizes[:-1]) and all(1 <= s <= qr_every for s in sizes)
    ends = [s for s in range(1, steps + 1) if schedule.qr_block_after_step(s, warmup, qr_every, steps) >= 0]
    assert len(ends) == len(sizes)


def test_edge_cases():
    for steps, warmup, qr_every, want in [
        (0, 0, 1, 0),        # no steps
        (0, 5, 3, 0),
        (5, 5, 1, 0),        # warmup = steps: nothing counted
        (5, 9, 3, 0),        # warmup > steps
        (1, 5, 3, 0),        # steps - warmup = -4: ceil would give -1
        (5, 0, 7, 1),        # qr_every > steps: one short block
        (5, 4, 100, 1),
        (1600, 100, 10, 150),
        (1601, 100, 10, 151),
    ]:
        assert schedule.counted_blocks(steps, warmup, qr_every) == _cpp(steps, warmup, qr_every) == want, \
            (steps, warmup, qr_every)


def test_the_cpp_rule_refuses_what_no_run_has():
    with pytest.raises(RuntimeError, match="qr_every >= 1"):
        _cpp(10, 0, 0)
    with pytest.raises(RuntimeError, match="steps >= 0"):
        _cpp(-1, 0, 1)


@pytest.mark.parametrize("twin", [False, True])
@pytest.mark.parametrize("T, zero, warmup, qr_every", [(3, 0, 0, 1), (3, 4, 2, 10), (5, 6, 4, 3), (2, 9, 10, 4)])
def test_fake_kernels_size_block_logs_by_the_rule(twin, T, zero, warmup, qr_every):
    """The op's output, its fake kernel's and the rule give the same number of blocks."""
    C, L, B, H, I, k = 1, 1, 2, 3, 2, 2
    f64 = torch.float64
    x = torch.randn(C, T, B, I, dtype=f64)
    w_ih, w_hh, bias = [torch.randn(C, 4 * H, I, dtype=f64)], [torch.randn(C, 4 * H, H, dtype=f64)], \
        [torch.randn(C, 4 * H, dtype=f64)]
    h0 = torch.zeros(C, L, B, H, dtype=f64)
    q0 = torch.linalg.qr(torch.randn(1, 1, 2 * H * L, k, dtype=f64))[0]
    lengths = torch.full((B,), T, dtype=torch.long)
    args = (x, lengths, w_ih, w_hh, bias, h0, h0) + ((h0, h0) if twin else ()) + (q0, zero, warmup, qr_every)
    op = _twin_ops.lstm_twin_run if twin else _ops.tangent_run
    real = op(*args)
    with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
        fake = op(*args)
    assert real[0].shape[2] == fake[0].shape[2] == _cpp(T + zero, warmup, qr_every)


def test_python_cell_names_are_the_cpp_table():
    assert tuple(torch.ops.mdesc.cells()) == cells.CELLS
