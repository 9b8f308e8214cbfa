"""The ensemble op alone: torch.ops.mdesc.ensemble_rnn_forward and ensemble_rnn_backward (issue 24).

    python benchmarks/bench_ensemble_op_only.py                 # E 8, T 500, B 32, H 60, float32, 1 thread
    python benchmarks/bench_ensemble_op_only.py --cells lstm --clock wall

No autograd, no input projection, no dW_hh (bench_ensemble_op.py times the layer): the
recurrent products 2 T B GH H per model and direction, the cell math, and the op's own output
allocation.  Best of --repeat calls after one warm-up; --clock cpu (default) is the process's CPU
time, which a machine shared with other jobs inflates far less than the wall clock.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from bench_ensemble_op import CLOCKS

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from mdesc.ensemble import _op  # noqa: E402,F401  (loads the extension)
from mdesc.ensemble.recurrent import CELL_GATES  # noqa: E402


def best(fn, repeat, clock):
    fn()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, default in (("E", 8), ("T", 500), ("B", 32), ("H", 60), ("threads", 1), ("repeat", 5)):
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--cells", default="lstm,gru,rnn_tanh")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    clock = CLOCKS[a.clock]
    for cell in a.cells.split(","):
        GH = CELL_GATES[cell] * a.H
        g = torch.Generator().manual_seed(0)
        xp = torch.randn(a.E, a.T, a.B, GH, generator=g)
        w = torch.randn(a.E, GH, a.H, generator=g) / a.H ** 0.5
        b = torch.randn(a.E, GH, generator=g) * 0.1
        dh = torch.randn(a.E, a.T, a.B, a.H, generator=g)
        h, s = torch.ops.mdesc.ensemble_rnn_forward(xp, w, b, cell)
        tf = best(lambda: torch.ops.mdesc.ensemble_rnn_forward(xp, w, b, cell), a.repeat, clock)
        tb = best(lambda: torch.ops.mdesc.ensemble_rnn_backward(dh, h, s, w, cell), a.repeat, clock)
        flops = 2 * a.T * a.B * GH * a.H * a.E
        print(f"{cell}: forward {tf * 1e3:.1f} ms ({flops / tf / 1e9:.1f} GFLOP/s), "
              f"backward {tb * 1e3:.1f} ms ({flops / tb / 1e9:.1f} GFLOP/s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
