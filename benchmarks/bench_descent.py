"""Study 1 throughput: training epochs per hour on the paper preset (seeds in parallel) and the
sweep's seconds per checkpoint, on this machine, now.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_descent.py \
        [--epochs 2] [--parallel 1 2] [--checkpoints 4] [--samples 100 500] \
        [--out benchmarks/results/descent.json]

Training: ``mdesc descent train --preset paper`` (the Pang & Lee corpus must be present, see
docs/multiple_descent.md) for --epochs epochs in fresh temporary run folders, 1 thread per
process, N processes side by side (one seed each); epochs/hour counts the epochs after the
first (the first includes reading and encoding the corpus).  Sweep: the preset's sweep (both
twins, zero-input window, 1,600 steps) of --checkpoints checkpoints of the first run, for each
--samples.  The machine is shared: the load average is recorded beside every number.
Prints one JSON object and writes it with --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MDESC = [sys.executable, "-m", "mdesc"]


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if "Model name" in l)
    except Exception:  # noqa: BLE001 - only for the record
        return "unknown"


def _epoch_times(run: Path) -> list[float]:
    files = sorted((run / "checkpoints").glob("epoch_*.safetensors"))
    return [f.stat().st_mtime for f in files]


def bench_training(tmp: Path, epochs: int, parallel: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = [tmp / f"p{parallel}-seed{s}" for s in range(1, parallel + 1)]
    t0, load0 = time.time(), os.getloadavg()[0]
    procs = [subprocess.Popen(MDESC + ["descent", "train", "--preset", "paper", "--threads", "1",
                                       "--quiet", "--seed", str(s), "--epochs", str(epochs),
                                       "--run-dir", str(r)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL)
             for s, r in zip(range(1, parallel + 1), runs)]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"training failed (exit codes {codes})")
    per_epoch = []
    for r in runs:
        ts = _epoch_times(r)       # epoch 0 .. epochs
        per_epoch += [b - a for a, b in zip(ts[1:], ts[2:])] or [ts[-1] - ts[0]]
    s = sum(per_epoch) / len(per_epoch)
    return {"processes": parallel, "epochs_each": epochs, "seconds_per_epoch": s,
            "epochs_per_hour_per_process": 3600 / s, "epochs_per_hour_total": parallel * 3600 / s,
            "wall_seconds": time.time() - t0, "load_average_before": load0,
            "load_average_after": os.getloadavg()[0], "run": str(runs[0])}


def bench_sweep(run: Path, samples: int, checkpoints: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    load0 = time.time(), os.getloadavg()[0]
    sub = run.parent / f"{run.name}-sweep{samples}"
    subprocess.run(["cp", "-r", str(run), str(sub)], check=True)
    every = 1
    t0 = time.time()
    subprocess.run(MDESC + ["descent", "sweep", "--preset", "paper", "--threads", "1", "--quiet",
                            "--samples", str(samples), "--every", str(every),
                            "--run-dir", str(sub)], env=env, cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    recs = [json.loads(p.read_text()) for p in sorted((sub / "sweep").glob("epoch_*.json"))]
    secs = [r["seconds"] for r in recs][:checkpoints]
    return {"samples": samples, "checkpoints": len(recs),
            "seconds_per_checkpoint": sum(secs) / len(secs), "wall_seconds": wall,
            "load_average_before": load0[1], "load_average_after": os.getloadavg()[0]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    p.add_argument("--checkpoints", type=int, default=3,
                   help="checkpoints swept (= --epochs + 1 at most)")
    p.add_argument("--samples", type=int, nargs="+", default=[100, 500])
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    out = {"machine": _cpu_name(), "cpus": os.cpu_count(), "threads_per_process": 1,
           "preset": "paper", "training": [], "sweep": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.parallel:
            out["training"].append(bench_training(tmp, args.epochs, n))
        first = Path(out["training"][0]["run"])
        for s in args.samples:
            out["sweep"].append(bench_sweep(first, s, args.checkpoints))
    for t in out["training"]:
        t.pop("run")
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
