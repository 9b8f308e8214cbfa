"""Study 3 throughput: initialisations x steps per second, batched ensemble vs one at a time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_trajectories.py \
        [--inits 64] [--steps 40] [--eps 1 14] [--out benchmarks/results/trajectories.json]

The problem is the paper's preset (MLP 4-10-3 sigmoid on 120 Iris flowers, float64).  Per
initialisation every configuration trains the reference, a renormalised twin, a tangent vector
(Hessian-vector product) and 5 replicas per perturbation size (``--eps`` sizes: 1 = the sweep,
14 = the paper's eta = 1 run).  Three ways, the same numbers to rounding (tests check it):

* ``batched``: all ``--inits`` initialisations in one :func:`mdesc.trajectories.run_ensemble`
  call (every trajectory of every initialisation in one batched product per layer);
* ``one_init``: the same engine called once per initialisation (its replicas still batched);
* ``per_trajectory``: the one-trajectory code (:func:`mdesc.trajectories.train_replicas`,
  autograd, replicas batched by vmap), once per initialisation, on a subset.

The machine is shared: the load average is recorded beside every number.  Prints one JSON
object and writes it with --out.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import numpy as np
import torch


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if "Model name" in line)
    except Exception:  # noqa: BLE001 - only for the record
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inits", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--eps", type=int, nargs="+", default=[1, 14],
                    help="numbers of perturbation sizes to time (5 replicas each)")
    ap.add_argument("--per-trajectory-inits", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from mdesc import trajectories as tr

    pb = tr.paper_problem()
    W = pb.init(args.inits, seed=0)
    tr.run_ensemble(pb, W[:2], 1.0, 3)  # warm up (first forward-mode call compiles)
    rows = []
    for n_eps in args.eps:
        eps = list(np.logspace(-14, -1, n_eps)) if n_eps > 1 else [1e-8]
        traj = 2 + 5 * n_eps  # reference, twin, 5 replicas per size (+ the tangent)
        load = os.getloadavg()[0]
        t = time.perf_counter()
        tr.run_ensemble(pb, W, 1.0, args.steps, eps=eps, n_pert=5)
        batched = time.perf_counter() - t
        t = time.perf_counter()
        for m in range(args.inits):
            tr.run_ensemble(pb, W[m:m + 1], 1.0, args.steps, eps=eps, n_pert=5, init_ids=[m])
        one = time.perf_counter() - t
        k = args.per_trajectory_inits
        t = time.perf_counter()
        for m in range(k):
            # one trajectory code path: reference + tangent, 5*n_eps replicas and the twin
            tr.train_replicas(pb.as_problem(W[m]), 1.0, args.steps, n_replicas=5 * n_eps,
                              eps=1e-8)
        per_traj = (time.perf_counter() - t) * args.inits / k
        rate = args.inits * args.steps
        rows.append({"n_eps": n_eps, "trajectories_per_init": traj, "inits": args.inits,
                     "steps": args.steps, "load_average": load,
                     "batched_init_steps_per_s": rate / batched,
                     "one_init_init_steps_per_s": rate / one,
                     "per_trajectory_init_steps_per_s": rate / per_traj,
                     "batched_trajectory_steps_per_s": rate * traj / batched,
                     "speedup_vs_one_init": one / batched,
                     "speedup_vs_per_trajectory": per_traj / batched})
    result = {"machine": _cpu_name(), "threads": args.threads, "torch": torch.__version__,
              "rows": rows}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
