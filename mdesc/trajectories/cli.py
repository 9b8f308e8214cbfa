"""`mdesc trajectories`: chaos of the training map across a learning-rate sweep.

Two modes:

* ``--preset paper``: the paper's setting (MLP 4-10-3 sigmoid, softmax cross-entropy, float64,
  weights N(0,1), biases 0, full-batch GD on 120 Iris flowers, raw features) as batched
  ensembles: eta = 1 (200 epochs, 500 initialisations x 5 perturbations x 14 sizes 1e-14..1e-1),
  the same eta = 1 ensemble summed in reverse sample order, eta = 5 (10,000 epochs, 20
  initialisations), eta = 0.01 (1000 epochs, 20 initialisations, the 14 sizes) and a sweep of
  13 rates between (500 epochs, 20 initialisations each); per rate the distribution of the
  twin and tangent exponents, median with bootstrap interval, fraction positive beyond its
  error, replica distance vs time per size, loss regimes and the Lyapunov spectrum.  Default
  output: runs/trajectories-paper.
* otherwise: one network (a small MLP on a scikit-learn data set) per learning rate, with
  replicas, a renormalised twin and a tangent vector.  Default output: runs/trajectories.

Re-running the same command resumes (finished rates or chunks are loaded, not recomputed); an
output folder holding a run with other settings is refused.
"""
from __future__ import annotations

import argparse
import math

DEFAULT_OUT = "runs/trajectories"
PAPER_OUT = "runs/trajectories-paper"


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
    p.add_argument("--preset", choices=["none", "paper"], default="none",
                   help="'paper': the paper's setting as batched ensembles (options below "
                   "marked [paper]); 'none': one network per learning rate")
    p.add_argument("--lrs", default=None,
                   help="learning rates: comma-separated, or log:START:STOP:NUM (default "
                   "log:0.01:10:16; [paper]: the rates of the sweep between the paper's, default "
                   "13 rates log-spaced strictly between 0.01 and 5)")
    p.add_argument("--n-init-1", type=int, default=500, help="[paper] initialisations at eta=1")
    p.add_argument("--n-init-5", type=int, default=20, help="[paper] initialisations at eta=5")
    p.add_argument("--n-init-001", type=int, default=20,
                   help="[paper] initialisations at eta=0.01")
    p.add_argument("--steps-001", type=int, default=1000, help="[paper] epochs at eta=0.01")
    p.add_argument("--sweep-inits", type=int, default=20,
                   help="[paper] initialisations per rate of the sweep")
    p.add_argument("--sweep-steps", type=int, default=500, help="[paper] epochs per sweep rate")
    p.add_argument("--n-init-5-more", type=int, default=40,
                   help="[paper] further initialisations at eta=5, a replicate (0: skip)")
    p.add_argument("--long-001-steps", type=int, default=5000,
                   help="[paper] epochs of the long eta=0.01 run (0: skip it)")
    p.add_argument("--no-reversed-check", action="store_true",
                   help="[paper] skip the eta=1 ensemble with the samples summed in reverse")
    p.add_argument("--only", default=None,
                   help="[paper] comma-separated rate keys to run (e.g. lr=1,lr=5); default all")
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
    p.add_argument("--out", default=None,
                   help=f"run folder (resumable; default {DEFAULT_OUT}, [paper] {PAPER_OUT})")
    p.add_argument("--no-figure", action="store_true", help="do not draw the figure")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mdesc.cli import UserError

    if args.preset == "paper":
        return run_paper(args)
    lrs = _parse_lrs(args.lrs or "log:0.01:10:16")
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
    from mdesc.store import StoreError, atomic_write_text

    torch.set_num_threads(args.threads)
    out = Path(args.out or DEFAULT_OUT)
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
    except StoreError as e:
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


def run_paper(args: argparse.Namespace) -> int:
    """The paper's preset as batched ensembles, then the figures and tables of the sweep."""
    from mdesc.cli import UserError

    for name, value in (("--n-init-1", args.n_init_1), ("--n-init-5", args.n_init_5),
                        ("--n-init-001", args.n_init_001), ("--sweep-inits", args.sweep_inits),
                        ("--threads", args.threads)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}.")
    for name, value in (("--steps-001", args.steps_001), ("--sweep-steps", args.sweep_steps)):
        if value < 32:
            raise UserError(f"{name} must be >= 32 (the regime statistics need a series), "
                            f"got {value}.")
    rates = _parse_lrs(args.lrs) if args.lrs else None

    import json
    import time
    from pathlib import Path

    import torch

    from mdesc import trajectories as tr
    from mdesc.store import StoreError, atomic_write_text

    torch.set_num_threads(args.threads)
    out = Path(args.out or PAPER_OUT)
    jobs = tr.paper_jobs(n_init_1=args.n_init_1, n_init_5=args.n_init_5,
                         n_init_001=args.n_init_001, steps_001=args.steps_001,
                         sweep_rates=rates, sweep_inits=args.sweep_inits,
                         sweep_steps=args.sweep_steps,
                         reversed_check=not args.no_reversed_check,
                         long_001_steps=args.long_001_steps,
                         n_init_5_more=args.n_init_5_more)
    if args.only:
        wanted = {k.strip() for k in args.only.split(",") if k.strip()}
        unknown = wanted - {j.key for j in jobs}
        if unknown:
            raise UserError(f"--only {args.only!r}: no rate {', '.join(sorted(unknown))}; the "
                            f"keys are {', '.join(j.key for j in jobs)}.")
        jobs = [j for j in jobs if j.key in wanted]
    problem = tr.paper_problem()
    print(f"mdesc trajectories --preset paper: {problem.name}, {problem.n_params} parameters "
          f"({int(problem.weight_mask.sum())} weights); results in {out}/")
    print("setting: " + json.dumps(tr.PAPER_SETTING))
    for j in jobs:
        print(f"  {j.key}: {j.steps} epochs, {j.n_init} initialisations, {j.n_pert} "
              f"perturbations x {len(j.eps)} sizes {j.eps[0]:g}..{j.eps[-1]:g}, spectrum of "
              f"{j.spectrum_inits} ({j.spectrum_T} steps), sample order {j.sample_order}")
    t0 = time.perf_counter()
    try:
        tr.ensemble_sweep(out, jobs, seed=args.seed, log=lambda m: print(m, flush=True))
    except StoreError as e:
        raise UserError(str(e)) from None
    command = {"command": "mdesc trajectories", "args": {k: v for k, v in vars(args).items()
                                                         if k != "func"},
               "seconds_this_call": time.perf_counter() - t0}
    atomic_write_text(out / "command.json", json.dumps(command, indent=1) + "\n")
    from mdesc.trajectories import report

    written = report.write_report(out, figures=not args.no_figure)
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mdesc.trajectories.cli trajectories ...``: the same command as
    ``mdesc trajectories ...``, without assembling the other studies' commands."""
    import sys

    from mdesc.cli import UserError

    parser = argparse.ArgumentParser(prog="mdesc")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mdesc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
