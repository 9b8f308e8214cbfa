"""What a StabilityMonitor step costs against a training epoch, on one machine, in one run.

    python benchmarks/bench_anyrun_monitor.py                       # the paper's model, CPU
    python benchmarks/bench_anyrun_monitor.py --device cuda         # on a GPU

The model is the multiple-descent paper's (Embedding(10000, 32) -> LSTM(32, 60) -> Linear(60, 1),
BCE, Adam, batch 32, reviews of 500 tokens); an epoch is --train-reviews reviews (random token ids:
the cost does not depend on the words).  The monitor measures --probe reviews driven for 500
steps then 1,100 zero-input steps: lambda_1 over the zero-input window (float32) and D~ of the
drive-end twin (float64), the monitor's default, and optionally the t = 0 twin too (--twins both).
Prints one JSON object (machine, threads, seconds per epoch, seconds per monitor step, ratio).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import torch

from mdesc.anyrun import StabilityMonitor


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line)
    except Exception:  # noqa: BLE001 - only for the record
        return platform.processor() or "unknown"


class Net(torch.nn.Module):
    def __init__(self, vocab=10000):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, 32, padding_idx=0)
        self.lstm = torch.nn.LSTM(32, 60)
        self.fc = torch.nn.Linear(60, 1)

    def forward(self, ids):  # (T, B)
        return self.fc(self.lstm(self.embedding(ids))[0][-1]).squeeze(-1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--train-reviews", type=int, default=1000)
    p.add_argument("--length", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--probe", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--zero-input-steps", type=int, default=1100)
    p.add_argument("--twins", choices=("drive_end", "both"), default="drive_end")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up batch)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 10000, (a.length, a.train_reviews), generator=g).to(dev)
    y = torch.randint(0, 2, (a.train_reviews,), generator=g).float().to(dev)
    torch.manual_seed(0)
    net = Net().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=5e-4)

    def epoch():
        for i in range(0, a.train_reviews, a.batch):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[:, i:i + a.batch]),
                                                                        y[i:i + a.batch])
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    opt.zero_grad()
    net(x[:, :a.batch]).sum().backward()  # warm-up
    epoch_s = []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        epoch()
        epoch_s.append(time.perf_counter() - t0)
    rows = []
    twins = ("drive_end", "start") if a.twins == "both" else ("drive_end",)
    for n in a.probe:
        probe = torch.randint(1, 10000, (n, a.length), generator=g)
        with tempfile.TemporaryDirectory() as tmp:
            mon = StabilityMonitor(tmp, probe, zero_input_steps=a.zero_input_steps, twins=twins)
            mon.step(net, 0)  # first call: opens the store, loads the extension
            times = []
            for e in range(1, 3):
                t0 = time.perf_counter()
                mon.step(net, e)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        best = min(times)
        rows.append({"probe_reviews": n, "monitor_s": round(best, 3),
                     "fraction_of_epoch": round(best / min(epoch_s), 4)})
    print(json.dumps({
        "machine": _cpu_name() if dev.type == "cpu" else torch.cuda.get_device_name(dev),
        "device": str(dev), "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "model": "Embedding(10000,32) -> LSTM(32,60) -> Linear(60,1)",
        "epoch": {"train_reviews": a.train_reviews, "length": a.length, "batch": a.batch,
                  "seconds": [round(s, 3) for s in epoch_s]},
        "monitor": {"drive": a.length, "zero_input_steps": a.zero_input_steps, "twins": list(twins),
                    "rows": rows},
        "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
