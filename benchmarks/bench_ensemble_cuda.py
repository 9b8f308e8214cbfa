"""One recurrent layer of E models on a GPU, forward + backward, through the CUDA ensemble op (issue 24).

    python benchmarks/bench_ensemble_cuda.py            # paper shape, writes benchmarks/results/ensemble_cuda-<gpu>.{md,json}
    python benchmarks/bench_ensemble_cuda.py --T 100 --E 1,8 --repeat 2

The GPU counterpart of benchmarks/bench_ensemble_op.py (the CPU op); run by benchmarks/gpu_check.sh.
Shape: T = 500 steps, B = 32 sequences per model, I = 32 inputs, H = 60 units (the paper's model),
float32, E = 1, 8 and 32 models; cells LSTM, GRU and RNN (tanh).  Rows (--repeat rounds, runs
interleaved round-robin in each, after one untimed warm-up each; the best kept; every run ends with
torch.cuda.synchronize()):

  extension        ensemble_recurrent(..., backend="extension"): the CUDA op, per step one
                   strided-batched cuBLAS GEMM over the E models + one pointwise kernel
  recurrence only  the extension's autograd Function on precomputed xproj
  torch reference  ensemble_recurrent(..., backend="torch"): the autograd loop over steps
  E x cuDNN        E separate nn.LSTM / nn.GRU / nn.RNN forward + backward (cuDNN's fused RNN)

FLOPs (GEMM work only, as in bench_ensemble_op.py): 6 T B GH (I + H) per model for a layer,
6 T B GH H for the recurrence alone; the % of the matmul rate is of a large float32 product
(TF32 off, torch's default) measured in the same run.  At this shape one step's GEMM is tiny
(8 models: 7.4 MFLOP), so the op's time is ~4 launches per step (two forward, two backward):
expect latency-bound numbers, and compare against E x cuDNN, not against the matmul rate.
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


def matmul_rate(dtype=torch.float32, size=8192, reps=5) -> float:
    """FLOP/s of a large square product on the GPU (best of reps)."""
    a, b = (torch.randn(size, size, device="cuda", dtype=dtype) for _ in range(2))
    return 2 * size ** 3 / best_time(lambda: a @ b, reps)


def best_time(fn, reps) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def cell_runs(cell, E, T, B, I, H, dtype):
    """name -> (callable doing forward + backward on the GPU, GEMM FLOPs it does)."""
    g = torch.Generator().manual_seed(0)
    GH = CELL_GATES[cell] * H
    k = 1 / H ** 0.5
    w = [((torch.rand(*s, generator=g) * 2 - 1) * k).to("cuda", dtype).requires_grad_()
         for s in ((E, GH, I), (E, GH, H), (E, GH), (E, GH))]
    x = torch.randn(E, T, B, I, generator=g).to("cuda", dtype)
    dy = torch.randn(E, T, B, H, generator=g).to("cuda", dtype)
    xproj = input_projection(x, w[0].detach(), w[2].detach()).requires_grad_()
    mods = [MODULES[cell](I, H).to("cuda", dtype) for _ in range(E)]
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
            "torch reference": (layer_run("torch"), layer), f"{E} x cuDNN": (modules_run, layer)}


def timed_rounds(runs: dict, repeat: int) -> dict:
    for fn in runs.values():
        fn()
    torch.cuda.synchronize()
    out = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out[name].append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--E", default="1,8,32", help="ensemble sizes, comma-separated")
    p.add_argument("--T", type=int, default=500)
    p.add_argument("--B", type=int, default=32)
    p.add_argument("--I", type=int, default=32)
    p.add_argument("--H", type=int, default=60)
    p.add_argument("--cells", default="lstm,gru,rnn_tanh")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--out", default=None, help="path stem of the results (default results/ensemble_cuda-<gpu>)")
    a = p.parse_args(argv)
    if not (torch.cuda.is_available() and _op.has_kernel("cuda")):
        print("bench_ensemble_cuda: needs a CUDA device and mdesc built with its CUDA kernels", file=sys.stderr)
        return 2
    dtype = getattr(torch, a.dtype)
    gpu = torch.cuda.get_device_name(0)
    stem = a.out or os.path.join(HERE, "results", "ensemble_cuda-" + re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-"))
    rate = matmul_rate()
    result = dict(gpu=gpu, torch=torch.__version__, cuda=torch.version.cuda, dtype=a.dtype, matmul_gflops=rate / 1e9,
                  shape=dict(T=a.T, B=a.B, I=a.I, H=a.H), repeat=a.repeat, ensembles={})
    for E in [int(s) for s in a.E.split(",")]:
        cells = {}
        for cell in a.cells.split(","):
            runs = cell_runs(cell, E, a.T, a.B, a.I, a.H, dtype)
            rounds = timed_rounds({name: fn for name, (fn, _) in runs.items()}, a.repeat)
            rows = {}
            for name, (_, flops) in runs.items():
                best = min(rounds[name])
                rows[name] = dict(seconds=best, seconds_all=rounds[name], gflops=flops / best / 1e9,
                                  fraction_of_matmul=flops / best / rate)
            base = rows["extension"]["seconds"]
            for r in rows.values():
                r["extension_speedup"] = r["seconds"] / base
            cells[cell] = rows
            print(f"E = {E}, {cell}: " + ", ".join(f"{k} {v['seconds'] * 1e3:.1f} ms" for k, v in rows.items()),
                  flush=True)
        result["ensembles"][str(E)] = cells
    atomic_write_text(stem + ".json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(stem + ".md", report(result, argv))
    print(f"wrote {stem}.md and .json")
    return 0


def report(r: dict, argv) -> str:
    s = r["shape"]
    args = argv if argv is not None else sys.argv[1:]
    cmd = "python benchmarks/bench_ensemble_cuda.py" + ("" if not args else " " + " ".join(args))
    lines = [
        "# CUDA ensemble recurrence op: one layer of E models, forward + backward",
        "",
        f"GPU: {r['gpu']}, torch {r['torch']} (CUDA {r['cuda']}); float32 matmul {r['matmul_gflops']:.0f} GFLOP/s",
        f"(TF32 off).  Shape: T = {s['T']}, B = {s['B']}, I = {s['I']}, H = {s['H']}, {r['dtype']}; best of "
        f"{r['repeat']} interleaved rounds after a warm-up.  Command: `{cmd}`",
        "GFLOP/s count GEMM work only (the script's docstring); time / extension > 1: slower than the op.",
        "",
        "| E | cell | run | ms | GFLOP/s | % of matmul | time / extension |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for E, cells in r["ensembles"].items():
        for cell, rows in cells.items():
            for name, row in rows.items():
                lines.append(f"| {E} | {cell} | {name} | {row['seconds'] * 1e3:.1f} | {row['gflops']:.1f} | "
                             f"{100 * row['fraction_of_matmul']:.2f}% | {row['extension_speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
