"""Gradient flossing steers lambda_1: the penalty alone, from ordered and from chaotic random LSTMs.

    PYTHONPATH=. OMP_NUM_THREADS=1 python results/flossing/steer.py [--jobs 2] [--seeds 4]

For each start (ordered: gain 1; chaotic: gain 8) and seed, a random LSTM (input 2, H = 60, one
layer, float64, parameters N(0, gain^2 / H)) is trained with Adam on ``FlossingPenalty`` alone
(target lambda_1, weight 1) on a probe of 16 random drives (10 steps), lambda_1 counted over the
zero-input phase (40 steps, the first 20 uncounted: ``window="zero_input"``).  Before and after,
lambda_1 is measured by ``mdesc.max_lyapunov`` (the fused kernels) on 64 *held-out* drives, in the
training window and in the analyses' asymptotic window (1000 zero-input steps, 200 uncounted).

``--probe fresh`` draws 16 new drives every step instead (the probe a training loop would see:
a new minibatch each step).

Each run is one JSON file under runs/ (written atomically; a killed job resumes where it
stopped); summary.json / summary.md are re-derived from them every time.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
from pathlib import Path

import torch

import mdesc
from mdesc import stats, store

HERE = Path(__file__).resolve().parent
STARTS = {"ordered": 1.0, "chaotic": 8.0}
TRAIN_WINDOW = dict(window="zero_input", zero_input_steps=40, warmup=20)
ASYMPTOTIC_WINDOW = dict(window="zero_input", zero_input_steps=1000, warmup=200)


def make_lstm(hidden: int, gain: float, seed: int) -> torch.nn.LSTM:
    """A random LSTM (input 2), every parameter N(0, gain^2 / hidden), float64."""
    rnn = torch.nn.LSTM(2, hidden).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * gain / hidden ** 0.5)
    return rnn


def drives(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(10, batch, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def measure(rnn, held_out) -> dict:
    out = {}
    for name, window in (("train_window", TRAIN_WINDOW), ("asymptotic", ASYMPTOTIC_WINDOW)):
        r = mdesc.max_lyapunov(rnn, held_out, **window)
        out[name] = {"lambda": float(r), "stderr": float(r.stderr)}
    return out


def run_one(args) -> dict:
    start, seed, target, hidden, iterations, lr, probe_kind, path = args
    torch.set_num_threads(1)
    if Path(path).exists():
        return store.read_json(path)
    rnn = make_lstm(hidden, STARTS[start], seed)
    probe, held_out = drives(16, 1000 + seed), drives(64, 2000 + seed)
    before = measure(rnn, held_out)
    penalty = mdesc.FlossingPenalty(target=target, weight=1.0, probe=probe, **TRAIN_WINDOW)
    opt = torch.optim.Adam(rnn.parameters(), lr=lr)
    t0 = time.perf_counter()
    for i in range(iterations):
        opt.zero_grad()
        # "fresh": new drives every step (as minibatches of data are), so the model cannot fit
        # the finite-time exponent of one fixed set of drives
        seq = drives(16, 10_000 * (seed + 1) + i) if probe_kind == "fresh" else None
        penalty(rnn, seq).backward()
        opt.step()
    seconds = time.perf_counter() - t0
    rnn.requires_grad_(False)
    record = dict(start=start, gain=STARTS[start], seed=seed, target=target, hidden=hidden,
                  iterations=iterations, lr=lr, probe=probe_kind, before=before, after=measure(rnn, held_out),
                  probe_lambda=penalty.values, seconds=seconds)
    store.write_json(path, record)
    return record


def within(m: dict, target: float) -> bool:
    """The steering criterion of tests/test_floss.py: |lambda - target| <= 2 s.e. + 0.01."""
    return abs(m["lambda"] - target) <= 2 * m["stderr"] + 0.01


def summarise(records: list[dict], out: Path) -> None:
    rows, lines = [], ["| start | target | probe | seeds | window | lambda_1 before (mean [95% CI] over seeds) | "
                       "after | runs within 2 s.e. + 0.01 of target | s per run |",
                       "|---|---|---|---|---|---|---|---|---|"]
    groups = sorted({(r["start"], r["target"], r.get("probe", "fixed")) for r in records})
    for start, target, probe in groups:
        rs = [r for r in records if (r["start"], r["target"], r.get("probe", "fixed")) == (start, target, probe)]
        for window in ("train_window", "asymptotic"):
            b = stats.mean_interval([r["before"][window]["lambda"] for r in rs])
            a = stats.mean_interval([r["after"][window]["lambda"] for r in rs])
            hits = sum(within(r["after"][window], target) for r in rs)
            secs = sum(r["seconds"] for r in rs) / len(rs)
            rows.append(dict(start=start, target=target, probe=probe, window=window, seeds=[r["seed"] for r in rs],
                             before=b, after=a, within=hits, runs=len(rs), seconds_per_run=secs))
            lines.append(f"| {start} | {target:+g} | {probe} | {len(rs)} | {window} | {b['mean']:+.4f} "
                         f"[{b['lo']:+.4f}, {b['hi']:+.4f}] | {a['mean']:+.4f} [{a['lo']:+.4f}, "
                         f"{a['hi']:+.4f}] | {hits}/{len(rs)} | {secs:.0f} |")
    store.write_json(out / "summary.json", dict(rows=rows, train_window=TRAIN_WINDOW,
                                                asymptotic_window=ASYMPTOTIC_WINDOW))
    store.atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def cpu_name() -> str:
    """The CPU's model name (as lscpu prints it), for the record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--targets", type=float, nargs="+", default=[0.0])
    p.add_argument("--hidden", type=int, default=60)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--starts", nargs="+", choices=sorted(STARTS), default=sorted(STARTS))
    p.add_argument("--probe", choices=("fixed", "fresh"), default="fixed",
                   help="fixed: the same 16 drives every step; fresh: new drives every step")
    p.add_argument("--out", type=Path, default=HERE)
    a = p.parse_args()
    (a.out / "runs").mkdir(parents=True, exist_ok=True)
    suffix = "" if a.probe == "fixed" else f"_{a.probe}"
    store.write_json(a.out / f"command{suffix}.json", dict(vars(a), out=str(a.out), machine=cpu_name(),
                                                  torch=torch.__version__))
    jobs = [(start, seed, t, a.hidden, a.iterations, a.lr, a.probe,
             str(a.out / "runs" / f"{start}_seed{seed}_target{t:+g}{suffix}.json"))
            for t in a.targets for start in a.starts for seed in range(a.seeds)]
    if a.jobs > 1:
        with multiprocessing.get_context("spawn").Pool(a.jobs) as pool:
            records = pool.map(run_one, jobs, chunksize=1)
    else:
        records = [run_one(j) for j in jobs]
    done = sorted((a.out / "runs").glob("*.json"))
    summarise([json.loads(f.read_text()) for f in done], a.out)
    assert all(math.isfinite(r["after"]["train_window"]["lambda"]) for r in records)


if __name__ == "__main__":
    main()
