"""Fused kernels vs the autograd baseline (mdesc.reference), in one run, on one machine.

    python benchmarks/bench_lyapunov.py                 # CPU cases
    python benchmarks/bench_lyapunov.py --device cuda   # CPU cases on the GPU + GPU-only cases

Each row: time of the fused path (best of --repeat), time of the autograd baseline, their ratio,
and the achieved rate of the matrix work against the float32 matrix-product rate measured on the
same device in the same run.  FLOPs counted per step and sequence, with G = 4H gate rows for an
LSTM, 3H for a GRU, H for an RNN: 2*G*H*(1+k) for W_hh of every layer, the same for W_ih of layers
above the first, 2*G*I for the first layer's input projection of each driven step, and 2*n*k^2
per re-orthonormalisation (Householder's count; n = 2HL for an LSTM, HL otherwise).  Only the
useful products are counted: the kernels run a GRU's products with 4H rows (W_in x and W_hn h
kept apart, csrc/common/cell_math.h), a quarter more than counted.  Pointwise work is not counted
(it is not matrix work), so the rate is a floor-relative measure.

The baseline's cost per step is constant, so for long cases it is timed on --baseline-steps
steps and scaled to the full run; the table says so in its `baseline` column.
Results go to benchmarks/results/<device>-<name>.{md,json}.

On a shared machine (other jobs on the same cores) a rate measured once, apart from the kernel,
says little: each of --repeat rounds measures the matrix-product rate (a shorter product run),
then the fused path, then the unfused path, back to back, and the % of the matmul rate is the
median over rounds of each round's ratio; times are medians too.  The load average before and
after the run is recorded beside them.  Case k is case c in float64 (the frame's
re-orthonormalisation then never loses columns to float32's resolution, so every one of its 120
columns is orthonormalised at every block); its FLOPs are counted as for float32 and compared
with the float32 product rate, so its % is not comparable to the others' (float64 products run at
half the float32 rate).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass

import torch

import mdesc
from mdesc.core import reference
from mdesc.store import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Case:
    name: str
    H: int
    I: int
    L: int
    B: int
    T: int
    zero: int
    k: int
    C: int = 1          # checkpoints
    qr_every: int = 10
    devices: tuple = ("cpu", "cuda")
    cell: str = "lstm"  # lstm, gru, rnn_tanh, rnn_relu
    dtype: torch.dtype = torch.float32
    record: bool = False  # the sweep record: lambda_1 (zero-input window) and the drive-end twin's D~

    @property
    def steps(self) -> int:
        return self.T + self.zero

    def flops(self) -> float:
        n = (2 if self.cell == "lstm" else 1) * self.H * self.L
        G = {"lstm": 4, "gru": 3}.get(self.cell, 1) * self.H
        per_seq_step = 2 * G * self.H * (1 + self.k) * (2 * self.L - 1)
        per_seq = per_seq_step * self.steps + 2 * G * self.I * self.T
        if self.record:  # the zero-input phase carries the delta as one more column
            per_seq += 2 * G * self.H * (2 * self.L - 1) * self.zero
        per_seq += (2 * n * self.k ** 2) * (self.steps / self.qr_every) if self.k > 1 else 0
        return float(per_seq * self.B * self.C)


CASES = [
    Case("a: paper workload (H=60, 500 seq, 500+1100 steps, k=1)", 60, 32, 1, 500, 500, 1100, 1),
    Case("b: one sequence (H=60, 500+1100 steps, k=1)", 60, 32, 1, 1, 500, 1100, 1),
    Case("c: full spectrum (H=60, k=120, 16 seq, 500+1100 steps)", 60, 32, 1, 16, 500, 1100, 120, qr_every=5),
    Case("d: 32 checkpoints x 64 seq (H=60, 500+1100 steps, k=1)", 60, 32, 1, 64, 500, 1100, 1, C=32),
    Case("e: sweep-sized: 1000 checkpoints x 500 seq x 1600 steps (H=60, k=1)", 60, 32, 1, 500, 500, 1100, 1,
         C=1000, devices=("cuda",)),
    Case("f: large (H=256, 2 layers, k=32, 64 seq, 500+1100 steps)", 256, 32, 2, 64, 500, 1100, 32,
         qr_every=5, devices=("cuda",)),
    Case("g: GRU paper-size workload (H=60, 500 seq, 500+1100 steps, k=1)", 60, 32, 1, 500, 500, 1100, 1,
         cell="gru"),
    Case("h: tanh RNN paper-size workload (H=60, 500 seq, 500+1100 steps, k=1)", 60, 32, 1, 500, 500, 1100,
         1, cell="rnn_tanh"),
    Case("i: GRU full spectrum (H=60, k=60, 16 seq, 500+1100 steps)", 60, 32, 1, 16, 500, 1100, 60,
         qr_every=5, cell="gru"),
    Case("j: tanh RNN, 2 layers, full spectrum (H=60, k=120, 16 seq, 500+1100 steps)", 60, 32, 2, 16, 500,
         1100, 120, qr_every=5, cell="rnn_tanh"),
    Case("k: full spectrum in float64 (as c; % against the float32 product rate)", 60, 32, 1, 16, 500, 1100, 120,
         qr_every=5, dtype=torch.float64),
    Case("t: sweep record, lambda_1 + drive-end D~ (twin kernel; H=60, 500 seq, 500+1100 steps)", 60, 32, 1,
         500, 500, 1100, 1, record=True, devices=("cpu",)),
]


def _module(case: Case) -> torch.nn.RNNBase:
    if case.cell == "lstm":
        return torch.nn.LSTM(case.I, case.H, num_layers=case.L)
    if case.cell == "gru":
        return torch.nn.GRU(case.I, case.H, num_layers=case.L)
    return torch.nn.RNN(case.I, case.H, num_layers=case.L, nonlinearity=case.cell.split("_")[1])


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device, dtype=torch.float32, size=4096 if torch.cuda.is_available() else 2048, reps=10) -> float:
    """Achieved FLOP/s of a large square matrix product (TF32 off on CUDA)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - t0)


def _models(case: Case, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    models = []
    for _ in range(case.C):
        m = _module(case)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 1.5 / case.H ** 0.5)
        models.append(m.to(device=device, dtype=case.dtype).requires_grad_(False))
    seq = torch.randn(case.T, case.B, case.I, generator=g).to(device=device, dtype=case.dtype)
    return models, seq


def _run(api, case: Case, models, seq, steps_zero: int, kernel_options: dict | None = None):
    kw = dict(zero_input_steps=steps_zero, qr_every=case.qr_every)
    if api is mdesc and kernel_options:
        kw["kernel_options"] = kernel_options
    if case.record:
        if api is mdesc:
            return mdesc.stability_record(models[0], seq, k=case.k, **kw)
        # baseline: the autograd reference's lambda_1 and its plain float64 twin
        return (api.lyapunov_spectrum(models[0], seq, case.k, **kw),
                api.asymptotic_distance(models[0], seq, zero_input_steps=steps_zero))
    if case.C > 1:
        return api.lyapunov_checkpoints(models, seq, k=case.k, **kw)
    return api.lyapunov_spectrum(models[0], seq, case.k, **kw)


def time_once(case: Case, models, seq, device, kernel_options: dict | None = None) -> float:
    _sync(device)
    t0 = time.perf_counter()
    _run(mdesc, case, models, seq, case.zero, kernel_options)
    _sync(device)
    return time.perf_counter() - t0


def time_interleaved(case: Case, models, seq, device, repeat: int, unfused: bool) -> dict:
    """Per round: the product rate, the fused path, the unfused path (CPU), back to back.  Medians
    of the times and of each round's rate ratio (see the module docstring)."""
    for options in ([None, dict(cpu_path="gemm")] if unfused else [None]):  # warm-up (allocator, BLAS init)
        _run(mdesc, case, models, seq[: min(case.T, 20)], 1, options)
    flops = case.flops()
    rounds = []
    for _ in range(repeat):
        rate = matmul_rate(device, reps=3)
        fused = time_once(case, models, seq, device)
        plain = time_once(case, models, seq, device, dict(cpu_path="gemm")) if unfused else None
        rounds.append((rate, fused, plain))
    med = statistics.median
    out = dict(fused_s=med(r[1] for r in rounds), fused_best_s=min(r[1] for r in rounds),
               rate_gflops=med(r[0] for r in rounds) / 1e9,
               fraction_of_matmul=med(flops / r[1] / r[0] for r in rounds),
               rounds=[dict(matmul_gflops=r[0] / 1e9, fused_s=r[1], unfused_s=r[2]) for r in rounds])
    if unfused:
        out.update(unfused_s=med(r[2] for r in rounds),
                   unfused_fraction_of_matmul=med(flops / r[2] / r[0] for r in rounds))
    return out


def time_baseline(case: Case, models, seq, device, max_steps: int) -> tuple[float, str]:
    steps = min(case.steps, max_steps)
    T = min(case.T, steps)
    zero = steps - T
    # warm-up on two steps (first-call costs of torch.func, allocator, BLAS), not timed
    _run(reference, case, models[:2] if case.C > 1 else models, seq[:2], 1)
    _sync(device)
    t0 = time.perf_counter()
    _run(reference, case, models, seq[:T], zero)
    _sync(device)
    elapsed = time.perf_counter() - t0
    if steps == case.steps:
        return elapsed, "measured"
    return elapsed * case.steps / steps, f"{steps} steps, scaled"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor() (other benchmarks use it)."""
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            model = m.group(1).strip() if m else model
    except OSError:
        pass
    return model


def machine_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def measure(case: Case, device, args, rate1) -> dict:
    """One row of the table: interleaved rounds of the fused (and unfused) path, then the baseline."""
    models, seq = _models(case, device)
    timed = time_interleaved(case, models, seq, device, args.repeat, unfused=device.type == "cpu")
    fused, unfused = timed["fused_s"], timed.get("unfused_s")
    base, how = (time_baseline(case, models, seq, device, args.baseline_steps) if args.baseline_steps > 0
                 else (float("nan"), "not run"))
    flops = case.flops()
    row = dict(case=case.name, baseline_s=base, baseline=how, speedup=base / fused,
               gflops=flops / fused / 1e9, **timed)
    if unfused is not None:
        row.update(unfused_gflops=flops / unfused / 1e9)
    if rate1 and case.B * case.C == 1:
        row["fraction_of_single_thread_matmul"] = flops / fused / rate1
    print(f"{case.name}: fused {fused:.3f} s, baseline {base:.1f} s ({how}), {base / fused:.0f}x, "
          f"{row['gflops']:.1f} GFLOP/s = {100 * row['fraction_of_matmul']:.0f}% of matmul"
          + (f"; unfused {unfused:.3f} s = {100 * row['unfused_fraction_of_matmul']:.0f}%" if unfused else ""),
          flush=True)
    return row


def table_lines(rows: list[dict], device) -> list[str]:
    if device.type != "cpu":
        return ["| case | fused (s) | autograd baseline (s) | speed-up | GFLOP/s | % of matmul rate |",
                "|---|---:|---:|---:|---:|---:|"] + [
            f"| {r['case']} | {r['fused_s']:.3f} | {r['baseline_s']:.1f} ({r['baseline']}) | "
            f"{r['speedup']:.0f}x | {r['gflops']:.1f} | {100 * r['fraction_of_matmul']:.0f}% |" for r in rows]
    lines = ["`fused`: the default CPU path (csrc/cpu/fused_step.h); `unfused`: `cpu_path='gemm'`, torch's "
             "BLAS + the pointwise pass, in the same run.  % of the matmul rate: useful FLOPs (see "
             "the script) per second over the product rate of the same round (its median over rounds "
             "in the `matmul` column); case b runs one work unit, so its rate is also given against "
             "the one-thread product.", "",
             "| case | fused (s) | GFLOP/s | matmul (GFLOP/s) | % of matmul rate | unfused (s) | unfused % | "
             "autograd baseline (s) | speed-up vs baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        single = r.get("fraction_of_single_thread_matmul")
        pct = f"{100 * r['fraction_of_matmul']:.0f}%" + (f" ({100 * single:.0f}% of 1 thread)" if single else "")
        lines.append(f"| {r['case']} | {r['fused_s']:.3f} | {r['gflops']:.1f} | {r['rate_gflops']:.1f} | {pct} | "
                     f"{r['unfused_s']:.3f} | {100 * r['unfused_fraction_of_matmul']:.0f}% | "
                     f"{r['baseline_s']:.1f} ({r['baseline']}) | {r['speedup']:.0f}x |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--cases", default=None, help="comma-separated case letters (default: all for the device)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline-steps", type=int, default=100,
                   help="steps the baseline is timed on before scaling to the full run")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cases = [c for c in CASES if device.type in c.devices]
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name[0] in wanted]
    machine = machine_name(device)
    rate = matmul_rate(device)
    rate1 = None
    if device.type == "cpu":  # one thread: what a single work unit (case b) can reach
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        rate1 = matmul_rate(device)
        torch.set_num_threads(threads)
    print(f"# mdesc benchmark on {machine}; float32 matrix-product rate {rate / 1e9:.1f} GFLOP/s"
          + (f" ({rate1 / 1e9:.1f} on one thread)" if rate1 else ""))
    load_before = os.getloadavg()
    rows = [measure(case, device, args, rate1) for case in cases]
    load_after = os.getloadavg()
    load = (f"load average (1, 5, 15 min) {', '.join(f'{x:.1f}' for x in load_before)} before, "
            f"{', '.join(f'{x:.1f}' for x in load_after)} after, on {os.cpu_count()} cores")
    stamp = time.strftime("%Y-%m-%d")
    lines = [f"# mdesc benchmark, {device.type}: {machine}", "",
             f"Date {stamp}; torch {torch.__version__}; float32 throughout (but case k); matrix-product rate "
             f"{rate / 1e9:.1f} GFLOP/s (large square float32 product, same run"
             + (f"; {rate1 / 1e9:.1f} GFLOP/s on one thread" if rate1 else "") + ").",
             f"Command: `python benchmarks/bench_lyapunov.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"Machine load: {load}.  Times and % are medians over {args.repeat} interleaved rounds "
             "(each: product rate, fused, unfused).",
             ""] + table_lines(rows, device)
    os.makedirs(args.out, exist_ok=True)
    tag = re.sub(r"[^A-Za-z0-9]+", "-", f"{device.type}-{machine.split(',')[0]}").strip("-").lower()
    base_path = os.path.join(args.out, tag)
    atomic_write_text(base_path + ".md", "\n".join(lines) + "\n")
    atomic_write_text(base_path + ".json", json.dumps(dict(
        machine=machine, device=device.type, matmul_gflops=rate / 1e9, date=stamp, load=load,
        repeat=args.repeat,
        matmul_gflops_one_thread=rate1 / 1e9 if rate1 else None,
        torch=torch.__version__, rows=rows), indent=2))
    print("\n".join(lines))
    print(f"\nwritten to {base_path}.md/.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
