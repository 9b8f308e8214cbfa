"""`mdesc trajectories`: chaos of the training map across a learning-rate sweep.

Trains a small MLP on Iris (or another scikit-learn data set) by full-batch gradient descent
at each learning rate, with replicas perturbed by eps, a renormalised twin and a tangent
vector, and writes one file per learning rate, a summary table and a figure into --out.
Re-running the same command skips learning rates that are already done.
"""
from __future__ import annotations

import argparse
import math

DEFAULT_OUT = "results/trajectories"


def _parse_lrs(text: str) -> list[float]:
    """'0.01,0.1,1' or 'log:START:STOP:NUM' (NUM values log-spaced, both ends included)."""
    from mdesc.cli import UserError

    text = text.strip()
    try:
        if text.startswith("log:"):
            _, a, b, n = text.split(":")
            a, b, n = float(a), float(b), int(n)
            if not (a > 0 and b > 0 and n >= 1):
                raise ValueError
            if n == 1:
                return [a]
            return [float(f"{a * (b / a) ** (i / (n - 1)):.4g}") for i in range(n)]
        lrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--lrs {text!r} is not understood; give comma-separated positive numbers "
                        "(e.g. 0.01,0.1,1) or log:START:STOP:NUM (e.g. log:0.01:10:16).") from None
    if not lrs or any(not (x > 0 and math.isfinite(x)) for x in lrs):
        raise UserError(f"--lrs {text!r}: learning rates must be positive finite numbers.")
    return lrs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "trajectories",
        help="chaos in training trajectories: Lyapunov exponent of gradient descent "
        "vs learning rate",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lrs", default="log:0.01:10:16",
                   help="learning rates: comma-separated, or log:START:STOP:NUM")
    p.add_argument("--steps", type=int, default=2000, help="full-batch GD steps per learning rate")
    p.add_argument("--replicas", type=int, default=4, help="perturbed replicas per learning rate")
    p.add_argument("--eps", type=float, default=1e-8,
                   help="initial distance of each replica (and the twin) from the reference")
    p.add_argument("--renorm-every", type=int, default=1,
                   help="steps between renormalisations of the twin's offset back to eps")
    p.add_argument("--warmup", type=int, default=0,
                   help="first steps not counted in the exponent estimates")
    p.add_argument("--no-jvp", action="store_true",
                   help="skip the tangent-map (Jacobian-vector product) estimate")
    p.add_argument("--tangent-mode", default="double_backward",
                   choices=["double_backward", "forward"],
                   help="how J v is computed: Hessian-vector product by double backward, or "
                   "torch.func.jvp (forward over reverse; same numbers, slower)")
    p.add_argument("--dataset", default="iris", choices=["iris", "wine", "breast_cancer", "digits"],
                   help="scikit-learn data set (shipped with the package, no download)")
    p.add_argument("--hidden", default="16",
                   help="hidden layer sizes, comma-separated (e.g. 16 or 32,32)")
    p.add_argument("--activation", default="tanh", choices=["tanh", "sigmoid", "relu"])
    p.add_argument("--loss", default="cross_entropy", choices=["cross_entropy", "mse"])
    p.add_argument("--standardize", action="store_true",
                   help="scale features to zero mean, unit variance (default: raw features)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial network and of the perturbation directions")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", default=DEFAULT_OUT, help="results folder (resumable)")
    p.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mdesc.cli import UserError

    lrs = _parse_lrs(args.lrs)
    try:
        hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    except ValueError:
        raise UserError(f"--hidden {args.hidden!r}: give layer sizes as integers, e.g. 16 or "
                        "32,32.") from None
    if not hidden or min(hidden) < 1:
        raise UserError(f"--hidden {args.hidden!r}: layer sizes must be positive integers.")
    for name, value, low in (("--steps", args.steps, 16), ("--replicas", args.replicas, 0),
                             ("--renorm-every", args.renorm_every, 1),
                             ("--threads", args.threads, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}.")
    if not 0 <= args.warmup < args.steps:
        raise UserError(f"--warmup must be in [0, --steps), got {args.warmup}.")
    if not (args.eps > 0 and args.eps < 1):
        raise UserError(f"--eps must be in (0, 1), got {args.eps}.")

    import json
    from pathlib import Path

    import torch

    from mdesc import trajectories as tr
    from mdesc.store import atomic_write_text

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    problem = tr.dataset_problem(args.dataset, hidden=hidden, activation=args.activation,
                                 seed=args.seed, loss=args.loss, standardize=args.standardize)
    print(f"mdesc trajectories: {problem.name}, {problem.n_params} parameters; "
          f"{len(lrs)} learning rates x {args.steps} steps, {args.replicas} replicas, "
          f"eps={args.eps:g}; results in {out}/")
    try:
        sweep = tr.learning_rate_sweep(
            problem, lrs, args.steps, n_replicas=args.replicas, eps=args.eps,
            renorm_every=args.renorm_every, warmup=args.warmup, jvp=not args.no_jvp,
            tangent_mode=args.tangent_mode, seed=args.seed, out=out, progress=True)
    except tr.SettingsMismatch as e:
        raise UserError(str(e)) from None
    csv_path, json_path = sweep.write_table(out)
    command = {"command": "mdesc trajectories", "args": {k: v for k, v in vars(args).items()
                                                         if k != "func"}}
    atomic_write_text(out / "command.json", json.dumps(command, indent=1) + "\n")
    if not args.no_figure:
        fig = tr.plot_learning_rate_sweep(sweep, out / "sweep.png")
        print(f"figure: {fig}")
    print(f"table: {csv_path}, {json_path}")
    print(f"{'lr':>8} {'lambda_twin':>12} {'lambda_jvp':>11} {'lambda_rep':>11} "
          f"{'final loss':>11}  regime")
    for r in sweep.runs:
        print(f"{r.lr:8.4g} {r.lyapunov_twin:+12.5f} {r.lyapunov_jvp:+11.5f} "
              f"{r.lyapunov_replicas:+11.5f} {r.loss[-1]:11.4g}  {r.regime}")
    return 0
