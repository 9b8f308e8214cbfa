"""Ensemble training throughput (issue 24): seed-epochs per second for E = 1, 4, 8, 16 members
trained as one computation, against one-at-a-time plain PyTorch training, in the same run.

    .venv/bin/python benchmarks/bench_ensemble_train.py [--sizes 1 4 8 16] [--reviews 256]
        [--threads N] [--backend auto] [--device cpu] [--out benchmarks/results/ensemble_train.json]

Shapes: the paper preset (Embedding(10,000, 32) -> LSTM(32, 60) -> Linear(60, 1), Adam, batch
32), on --reviews synthetic reviews of exactly 500 tokens (random ids; the timing does not depend
on the words), so T = 500 in every batch.  One seed-epoch = one pass over the reviews by one
model.  Timed: the training steps only (no evaluation, no files):

- one at a time: the single-run trainer's inner loop (``mdesc.descent.run._train_epoch``:
  nn.LSTM, torch.optim.Adam), one seed after another; best of --repeat epochs;
- ensemble: ``mdesc.ensemble.train``'s training epoch (``_Group.train_epoch``: stacked weights,
  :func:`mdesc.ensemble.recurrent.ensemble_recurrent` with --backend, batched Adam); best of
  --repeat epochs for each E.

% of the matmul rate: useful FLOPs (forward and backward of the LSTM's matrix products,
6 (I + H) 4H per token; the embedding, readout and pointwise work are not counted) per second,
over the rate of a 2048^2 float32 matrix product measured in the same run with the same threads.
The machine is shared: the load average is recorded beside every number.  Prints a table and
writes JSON (with the CPU name) to --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_lyapunov import cpu_model  # noqa: E402  (the CPU's name, as every benchmark writes it)
from mdesc.data.sentiment import EncodedSplit  # noqa: E402
from mdesc.descent.model import ModelSettings, TrainSettings, make_optimizer  # noqa: E402
from mdesc.descent.run import _train_epoch  # noqa: E402
from mdesc.ensemble import _op  # noqa: E402
from mdesc.ensemble import train as ET  # noqa: E402
from mdesc.ensemble.model import build_members  # noqa: E402

VOCAB, T = 10_000, 500
MODEL = ModelSettings(embed_dim=32, hidden_size=60, num_layers=1)
TRAIN = TrainSettings(optimizer="adam", lr=5e-4, batch_size=32, epochs=1)


def matmul_rate(device, size: int = 2048) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    _sync(device)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 * 5 / best


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_split(n: int, seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, VOCAB, size=(n, T), dtype=np.int64)
    return EncodedSplit(ids, np.full(n, T, dtype=np.int64),
                        rng.integers(0, 2, size=n).astype(np.float32))


def config() -> dict:
    return {"model": dataclasses.asdict(MODEL), "vocab_size": VOCAB, "classes": 2}


class _NoBar:
    def update(self, n: int) -> None:
        pass


def time_one_at_a_time(split, device, repeat: int) -> float:
    """Seconds per seed-epoch of the single-run trainer's inner loop (best of ``repeat``)."""
    net = build_members(config(), [1])[0].to(device)
    opt = make_optimizer(net, TRAIN)
    best = float("inf")
    for epoch in range(1, repeat + 1):
        _sync(device)
        t0 = time.perf_counter()
        _train_epoch(net, opt, split, dataclasses.replace(TRAIN, seed=1), epoch, device, _NoBar())
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def time_ensemble(split, n_models: int, device, backend: str, repeat: int) -> float:
    """Seconds per epoch of E members trained together (best of ``repeat``)."""
    empty = EncodedSplit(split.ids[:0], split.lengths[:0], split.labels[:0])
    members = [ET._Member(seed, None, None, dataclasses.replace(TRAIN, seed=seed), config(),
                          (split, empty, empty)) for seed in range(1, n_models + 1)]
    group = ET._Group(members, device, backend)
    best = float("inf")
    for epoch in range(1, repeat + 1):
        _sync(device)
        t0 = time.perf_counter()
        group.train_epoch(epoch, _NoBar())
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--reviews", type=int, default=256)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", default="auto", choices=ET.BACKENDS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ensemble_train.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split = synthetic_split(args.reviews)
    flops = args.reviews * T * 6 * (MODEL.embed_dim + MODEL.hidden_size) * 4 * MODEL.hidden_size
    rate = matmul_rate(device)
    uses_op = _op.available(torch.empty(0, device=device)) and args.backend != "torch"
    single = time_one_at_a_time(split, device, args.repeat)
    rows = []
    print(f"one at a time: {single:.2f} s per seed-epoch = {1 / single:.3f} seed-epochs/s "
          f"({100 * flops / single / rate:.1f}% of the matmul rate {rate / 1e9:.1f} GFLOP/s)")
    out = {"machine": cpu_model(), "cores": os.cpu_count(), "device": str(device),
           "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "backend": args.backend, "extension_op_used": bool(uses_op),
           "shapes": {"embed": MODEL.embed_dim, "hidden": MODEL.hidden_size, "layers": 1,
                      "batch": TRAIN.batch_size, "tokens": T, "reviews": args.reviews,
                      "vocab": VOCAB, "optimizer": "adam"},
           "useful_gflop_per_seed_epoch": flops / 1e9, "matmul_gflops": rate / 1e9,
           "one_at_a_time_seconds_per_seed_epoch": [single],
           "one_at_a_time_fraction_of_matmul": flops / single / rate,
           "ensemble": rows,
           "note": "shared 2-core machine: numbers are noisy; best of --repeat epochs"}
    for E in args.sizes:
        load = os.getloadavg()[0]
        s = time_ensemble(split, E, device, args.backend, args.repeat)
        row = {"E": E, "seconds_per_epoch": s, "seed_epochs_per_s": E / s,
               "speedup": E / s * single, "gflops": E * flops / s / 1e9,
               "fraction_of_matmul": E * flops / s / rate, "load_average": load}
        rows.append(row)
        print(f"E = {E:2d}: {s:.2f} s per epoch = {E / s:.3f} seed-epochs/s, "
              f"{row['speedup']:.2f}x one at a time, {100 * row['fraction_of_matmul']:.1f}% of "
              f"matmul (load {load:.1f})")
        _write(args.out, out)  # after every E: a long run killed midway keeps what it measured
    single2 = time_one_at_a_time(split, device, args.repeat)  # the baseline again, after
    out["one_at_a_time_seconds_per_seed_epoch"].append(single2)
    out["one_at_a_time_fraction_of_matmul"] = flops / min(single, single2) / rate
    print(f"one at a time again: {single2:.2f} s per seed-epoch")
    _write(args.out, out)
    print(f"wrote {args.out}")
    return 0


def _write(path: str, out: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
