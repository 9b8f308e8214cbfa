"""One recurrent layer of E models, forward + backward, through the extension's ensemble op (issue 24).

    python benchmarks/bench_ensemble_op.py                  # paper shape, writes benchmarks/results/ensemble_op-<cpu>.{md,json}
    python benchmarks/bench_ensemble_op.py --T 100 --repeat 2

The paper shape: E = 8 models, T = 500 steps, B = 32 sequences per model, I = 32 inputs, H = 60
units, float32; cells LSTM, GRU and RNN (tanh).  For 1 and 2 torch threads, rows per cell
(--repeat rounds, runs interleaved round-robin in each, after one untimed warm-up each; best kept):

  extension        ensemble_recurrent(..., backend="extension") forward, then backward of a fixed dL/dh
  recurrence only  the extension's autograd Function on precomputed xproj (no input projection)
  torch reference  ensemble_recurrent(..., backend="torch"): the autograd loop over steps
  E x nn module    E separate nn.LSTM / nn.GRU / nn.RNN forward + backward (PyTorch's own kernels)

FLOPs counted (GEMM work only; the pointwise cell is not counted), per model:
  input projection  forward 2 T B I GH, backward dx 2 T B GH I and dW_ih 2 T B GH I
  recurrence        forward 2 T B H GH, backward dh 2 T B GH H and dW_hh 2 T B GH H
so a layer is 6 T B GH (I + H) per model (GH = gates * H).  The % of the matmul rate divides the
row's GFLOP/s by the float32 rate of a large square product measured with the same thread count
in the same run.  Bytes moved per step and model (element size w): forward xproj B GH, h B H,
saved B S H (written); backward dh_all, h, h_prev, saved B (3 + S) H read and dxproj, dhproj
2 B GH written (W_hh stays in cache).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mdesc.ensemble import _op  # noqa: E402
from mdesc.ensemble.recurrent import CELL_GATES, ensemble_recurrent, input_projection  # noqa: E402
from mdesc.store import atomic_write_text  # noqa: E402

MODULES = {"lstm": lambda I, H: torch.nn.LSTM(I, H), "gru": lambda I, H: torch.nn.GRU(I, H),
           "rnn_tanh": lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"),
           "rnn_relu": lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu")}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return "unknown CPU"


def matmul_rate(dtype=torch.float32, size=2048, reps=5, clock=time.perf_counter) -> float:
    """FLOP/s of a large square matrix product with torch's current thread count (best of reps)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = clock()
        a @ b
        best = min(best, clock() - t0)
    return 2 * size ** 3 / best


#: the clocks a run can be timed with: wall time, or the CPU time of the whole process (all its
#: threads), which a machine shared with other jobs inflates far less than wall time
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed_rounds(runs: dict, repeat: int, clock=time.perf_counter) -> dict:
    for fn in runs.values():
        fn()
    out = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = clock()
            fn()
            out[name].append(clock() - t0)
    return out


def cell_runs(cell, E, T, B, I, H, dtype):
    """name -> (callable doing forward + backward, GEMM FLOPs it does)."""
    g = torch.Generator().manual_seed(0)
    GH = CELL_GATES[cell] * H
    k = 1 / H ** 0.5
    w = [((torch.rand(*s, generator=g) * 2 - 1) * k).to(dtype).requires_grad_()
         for s in ((E, GH, I), (E, GH, H), (E, GH), (E, GH))]
    x = torch.randn(E, T, B, I, generator=g).to(dtype)
    dy = torch.randn(E, T, B, H, generator=g).to(dtype)
    xproj = input_projection(x, w[0].detach(), w[2].detach()).requires_grad_()
    mods = [MODULES[cell](I, H).to(dtype) for _ in range(E)]
    layer = 6 * T * B * GH * (I + H) * E
    rec = 6 * T * B * GH * H * E

    def layer_run(backend):
        def run():
            h = ensemble_recurrent(x, w[0], w[1], w[2], w[3], cell, backend=backend)
            torch.autograd.backward(h, dy)
        return run

    def rec_run():
        torch.autograd.backward(_op.recurrence(xproj, w[1], w[3], cell), dy)

    def modules_run():
        for e, m in enumerate(mods):
            out, _ = m(x[e])
            out.backward(dy[e])

    return {"extension": (layer_run("extension"), layer), "recurrence only (extension)": (rec_run, rec),
            "torch reference": (layer_run("torch"), layer), f"{E} x nn module": (modules_run, layer)}


def bytes_per_step(cell, B, H, elem):
    G, S = CELL_GATES[cell], _op.SAVED_SLOTS[cell]
    fwd = B * (G * H + H + S * H) * elem
    bwd = B * ((3 + S) * H + 2 * G * H) * elem
    return fwd, bwd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--E", type=int, default=8)
    p.add_argument("--T", type=int, default=500)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--H", type=int, default=60)
    p.add_argument("--cells", default="lstm,gru,rnn_tanh")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="wall",
                   help="wall time, or the process's CPU time (all threads; for a machine shared with other jobs)")
    p.add_argument("--out", default=None, help="path stem of the results (default results/ensemble_op-<cpu>)")
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    cpu = cpu_name()
    stem = a.out or os.path.join(HERE, "results", "ensemble_op-" + re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-"))
    load = os.getloadavg()
    result = dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, dtype=a.dtype, load_average=load,
                  clock=a.clock, thp_mem_alloc=os.environ.get("THP_MEM_ALLOC_ENABLE", "0"),
                  shape=dict(E=a.E, T=a.T, B=a.B, I=a.I, H=a.H), repeat=a.repeat, threads={})
    for n in [int(s) for s in a.threads.split(",")]:
        torch.set_num_threads(n)
        rate = matmul_rate(clock=CLOCKS[a.clock])
        entry = dict(matmul_gflops=rate / 1e9, cells={})
        for cell in a.cells.split(","):
            runs = cell_runs(cell, a.E, a.T, a.B, a.I, a.H, dtype)
            rounds = timed_rounds({name: fn for name, (fn, _) in runs.items()}, a.repeat, CLOCKS[a.clock])
            rows = {}
            for name, (_, flops) in runs.items():
                best = min(rounds[name])
                rows[name] = dict(seconds=best, seconds_all=rounds[name], gflops=flops / best / 1e9,
                                  fraction_of_matmul=flops / best / rate)
            base = rows["extension"]["seconds"]
            for r in rows.values():
                r["extension_speedup"] = r["seconds"] / base
            fwd, bwd = bytes_per_step(cell, a.B, a.H, torch.finfo(dtype).bits // 8)
            entry["cells"][cell] = dict(rows=rows, bytes_per_step_forward=fwd, bytes_per_step_backward=bwd)
            print(f"{n} thread(s), {cell}: " + ", ".join(f"{k} {v['seconds']:.3f}s" for k, v in rows.items()),
                  flush=True)
        result["threads"][str(n)] = entry
    atomic_write_text(stem + ".json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(stem + ".md", report(result, argv))
    print(f"wrote {stem}.md and .json")
    return 0


def report(r: dict, argv) -> str:
    s = r["shape"]
    cmd = "python benchmarks/bench_ensemble_op.py" + ("" if not (argv or sys.argv[1:]) else " " + " ".join(argv or sys.argv[1:]))
    lines = [
        "# Ensemble recurrence op: one layer of E models, forward + backward",
        "",
        f"Machine: {r['cpu']}, {r['cores']} cores (`lscpu | grep 'Model name'`), torch {r['torch']}; shared with",
        f"other jobs while it ran (load average at start {', '.join(f'{x:.1f}' for x in r['load_average'])}), so",
        f"times carry that noise: best of {r['repeat']} interleaved rounds after a warm-up, timed by the "
        + ("wall clock." if r.get("clock", "wall") == "wall" else
           "process's CPU time (all threads: with 2 threads, GFLOP/s per CPU-second, not per second)."),
        f"THP_MEM_ALLOC_ENABLE={r.get('thp_mem_alloc', '0')} (1: torch backs large allocations with 2 MB pages).",
        f"Shape: E = {s['E']}, T = {s['T']}, B = {s['B']}, I = {s['I']}, H = {s['H']}, {r['dtype']}.  Command: `{cmd}`",
        "GFLOP/s count GEMM work only (6 T B GH (I + H) per model for a layer, 6 T B GH H for the",
        "recurrence alone; see the script's docstring); % of matmul = of the large-product rate with the",
        "same thread count, same run.",
        "",
    ]
    for n, entry in r["threads"].items():
        lines += [f"## {n} thread(s): matmul {entry['matmul_gflops']:.1f} GFLOP/s", "",
                  "| cell | run | s | GFLOP/s | % of matmul | time / extension |", "|---|---|---:|---:|---:|---:|"]
        for cell, c in entry["cells"].items():
            for name, row in c["rows"].items():
                lines.append(f"| {cell} | {name} | {row['seconds']:.3f} | {row['gflops']:.1f} | "
                             f"{100 * row['fraction_of_matmul']:.0f}% | {row['extension_speedup']:.2f}x |")
        lines.append("")
        lines += ["Bytes per step and model: " + ", ".join(
            f"{cell} forward {c['bytes_per_step_forward'] / 1e3:.1f} kB, backward {c['bytes_per_step_backward'] / 1e3:.1f} kB"
            for cell, c in entry["cells"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
