"""`mdesc trajectories`: chaos of the training map across a learning-rate sweep.

The options come from the settings dataclasses (each default once, with its help):
:class:`TrajectoriesCommand` (the command's own), :class:`SingleNetSettings` (one network per
learning rate) and :class:`~mdesc.trajectories.sweep.PaperPreset` (the ``[paper]`` options).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mdesc import cli as mdesc_cli
from mdesc.errors import UserError
from mdesc.options import HelpFormatter, add_options, from_args, option
from mdesc.store import StoreError, atomic_write_text

from . import report
from .figures import plot_learning_rate_sweep
from .model import PAPER_SETTING, dataset_problem, paper_problem
from .run import learning_rate_sweep
from .sweep import PaperPreset, ensemble_sweep

__all__ = ["TrajectoriesCommand", "SingleNetSettings", "register", "main"]

DEFAULT_OUT = "runs/trajectories"
PAPER_OUT = "runs/trajectories-paper"
DEFAULT_LRS = "log:0.01:10:16"

DESCRIPTION = f"""\
Chaos of the training map (full-batch gradient descent) across learning rates.

Two modes:

  --preset paper   the paper's setting (MLP 4-10-3 sigmoid, softmax cross-entropy, float64,
                   weights N(0,1), biases 0, full-batch GD on 120 Iris flowers, raw features)
                   as batched ensembles: eta = 1 (200 epochs, 500 initialisations x 5
                   perturbations x 14 sizes 1e-14..1e-1), the same eta = 1 ensemble summed in
                   reverse sample order, eta = 5 (10,000 epochs, 20 initialisations), eta = 0.01
                   (1000 epochs, 20 initialisations, the 14 sizes) and a sweep of 13 rates
                   between (500 epochs, 20 initialisations each); per rate the distribution of
                   the twin and tangent exponents, median with bootstrap interval, fraction
                   positive beyond its error, replica distance vs time per size, loss regimes
                   and the Lyapunov spectrum.  Options marked [paper].  Default output:
                   {PAPER_OUT}.
  otherwise        one network (a small MLP on a scikit-learn data set) per learning rate,
                   with replicas, a renormalised twin and a tangent vector.  Default output:
                   {DEFAULT_OUT}.

Re-running the same command resumes (finished rates or chunks are loaded, not recomputed); an
output folder holding a run with other settings is refused.
"""


@dataclass(frozen=True)
class TrajectoriesCommand:
    """The options of the command itself (both modes)."""

    preset: str = option("none", "'paper': the paper's setting as batched ensembles (options "
                         "marked [paper]); 'none': one network per learning rate",
                         choices=("none", "paper"))
    lrs: str | None = option(None, "learning rates: comma-separated, or log:START:STOP:NUM; "
                             "[paper]: the rates of the sweep between the paper's",
                             default_help=f"{DEFAULT_LRS}; [paper]: 13 rates log-spaced "
                             "strictly between 0.01 and 5")
    only: str | None = option(None, "[paper] comma-separated rate keys to run (e.g. lr=1,lr=5)",
                              default_help="all")
    threads: int = option(1, "torch CPU threads")
    out: str | None = option(None, "run folder (resumable)",
                             default_help=f"{DEFAULT_OUT}, [paper] {PAPER_OUT}")
    figure: bool = option(True, "draw the figures (--no-figure: tables only)")


@dataclass(frozen=True)
class SingleNetSettings:
    """One network per learning rate (:func:`~mdesc.trajectories.run.learning_rate_sweep`
    on :func:`~mdesc.trajectories.model.dataset_problem`)."""

    steps: int = option(2000, "full-batch GD steps per learning rate")
    replicas: int = option(4, "perturbed replicas per learning rate")
    eps: float = option(1e-8, "initial distance of each replica (and the twin) from the "
                        "reference")
    renorm_every: int = option(1, "steps between renormalisations of the twin's offset back "
                               "to eps")
    warmup: int = option(0, "first steps not counted in the exponent estimates")
    jvp: bool = option(True, "the tangent-map (Jacobian-vector product) estimate (--no-jvp: "
                       "skip it)")
    tangent_mode: str = option("double_backward", "how J v is computed: Hessian-vector product "
                               "by double backward, or torch.func.jvp (forward over reverse; "
                               "same numbers, slower)", choices=("double_backward", "forward"))
    dataset: str = option("iris", "scikit-learn data set (shipped with the package, no "
                          "download)", choices=("iris", "wine", "breast_cancer", "digits"))
    hidden: str = option("16", "hidden layer sizes, comma-separated (e.g. 16 or 32,32)")
    activation: str = option("tanh", "hidden activation", choices=("tanh", "sigmoid", "relu"))
    loss: str = option("cross_entropy", "training loss", choices=("cross_entropy", "mse"))
    standardize: bool = option(False, "scale features to zero mean, unit variance (off: raw "
                               "features)")
    seed: int = option(0, "seed of the initial network and of the perturbation directions "
                       "([paper]: of the initialisations)")


def _parse_lrs(text: str) -> list[float]:
    """'0.01,0.1,1' or 'log:START:STOP:NUM' (NUM values log-spaced, both ends included)."""
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
        "trajectories", help=mdesc_cli.COMMANDS["trajectories"][1], description=DESCRIPTION,
        formatter_class=HelpFormatter)
    add_options(p, TrajectoriesCommand)
    add_options(p.add_argument_group("one network per learning rate (and --seed for both)"),
                SingleNetSettings)
    add_options(p.add_argument_group("[paper] the paper's preset"), PaperPreset)
    p.set_defaults(func=run)


def _command_record(cmd: TrajectoriesCommand, single: SingleNetSettings, paper: PaperPreset,
                    **extra) -> dict:
    """Every setting of the call, resolved (``command.json``; the keys of the flags)."""
    args = {"command": "trajectories", "preset": cmd.preset, "lrs": cmd.lrs}
    args.update({k: getattr(paper, k) for k in ("n_init_1", "n_init_5", "n_init_001",
                                                 "steps_001", "sweep_inits", "sweep_steps",
                                                 "n_init_5_more", "long_001_steps")})
    args.update(no_reversed_check=not paper.reversed_check, only=cmd.only)
    args.update({k: getattr(single, k) for k in ("steps", "replicas", "eps", "renorm_every",
                                                  "warmup")})
    args.update(no_jvp=not single.jvp, tangent_mode=single.tangent_mode)
    args.update({k: getattr(single, k) for k in ("dataset", "hidden", "activation", "loss",
                                                  "standardize", "seed")})
    args.update(threads=cmd.threads, out=cmd.out, no_figure=not cmd.figure)
    return {"command": "mdesc trajectories", "args": args, **extra}


def run(args: argparse.Namespace) -> int:
    cmd = from_args(TrajectoriesCommand, args)
    single = from_args(SingleNetSettings, args)
    paper = from_args(PaperPreset, args)
    if cmd.preset == "paper":
        return run_paper(cmd, single, paper)
    return run_single(cmd, single, paper)


def _hidden_sizes(text: str) -> list[int]:
    try:
        hidden = [int(h) for h in str(text).split(",") if h.strip()]
    except ValueError:
        raise UserError(f"--hidden {text!r}: give layer sizes as integers, e.g. 16 or "
                        "32,32.") from None
    if not hidden or min(hidden) < 1:
        raise UserError(f"--hidden {text!r}: layer sizes must be positive integers.")
    return hidden


def _check_single(s: SingleNetSettings, threads: int) -> None:
    for name, value, low in (("--steps", s.steps, 16), ("--replicas", s.replicas, 0),
                             ("--renorm-every", s.renorm_every, 1), ("--threads", threads, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}.")
    if not 0 <= s.warmup < s.steps:
        raise UserError(f"--warmup must be in [0, --steps), got {s.warmup}.")
    if not (s.eps > 0 and s.eps < 1):
        raise UserError(f"--eps must be in (0, 1), got {s.eps}.")


def run_single(cmd: TrajectoriesCommand, s: SingleNetSettings, paper: PaperPreset) -> int:
    """One network per learning rate, then its table and figure."""
    lrs = _parse_lrs(cmd.lrs or DEFAULT_LRS)
    hidden = _hidden_sizes(s.hidden)
    _check_single(s, cmd.threads)
    torch.set_num_threads(cmd.threads)
    out = Path(cmd.out or DEFAULT_OUT)
    problem = dataset_problem(s.dataset, hidden=hidden, activation=s.activation, seed=s.seed,
                              loss=s.loss, standardize=s.standardize)
    print(f"mdesc trajectories: {problem.name}, {problem.n_params} parameters; "
          f"{len(lrs)} learning rates x {s.steps} steps, {s.replicas} replicas, "
          f"eps={s.eps:g}; results in {out}/")
    try:
        sweep = learning_rate_sweep(
            problem, lrs, s.steps, n_replicas=s.replicas, eps=s.eps,
            renorm_every=s.renorm_every, warmup=s.warmup, jvp=s.jvp,
            tangent_mode=s.tangent_mode, seed=s.seed, out=out, progress=True)
    except StoreError as e:
        raise UserError(str(e)) from None
    csv_path, json_path = sweep.write_table(out)
    atomic_write_text(out / "command.json",
                      json.dumps(_command_record(cmd, s, paper), indent=1) + "\n")
    if cmd.figure:
        fig = plot_learning_rate_sweep(sweep, out / "sweep.png")
        print(f"figure: {fig}")
    print(f"table: {csv_path}, {json_path}")
    print(f"{'lr':>8} {'lambda_twin':>12} {'lambda_jvp':>11} {'lambda_rep':>11} "
          f"{'final loss':>11}  regime")
    for r in sweep.runs:
        print(f"{r.lr:8.4g} {r.lyapunov_twin:+12.5f} {r.lyapunov_jvp:+11.5f} "
              f"{r.lyapunov_replicas:+11.5f} {r.loss[-1]:11.4g}  {r.regime}")
    return 0


def _paper_jobs(cmd: TrajectoriesCommand, paper: PaperPreset) -> list:
    """The preset's jobs, checked, with --lrs as the sweep's rates and --only applied."""
    for name, value in (("--n-init-1", paper.n_init_1), ("--n-init-5", paper.n_init_5),
                        ("--n-init-001", paper.n_init_001), ("--sweep-inits", paper.sweep_inits),
                        ("--threads", cmd.threads)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}.")
    for name, value in (("--steps-001", paper.steps_001), ("--sweep-steps", paper.sweep_steps)):
        if value < 32:
            raise UserError(f"{name} must be >= 32 (the regime statistics need a series), "
                            f"got {value}.")
    if cmd.lrs:
        paper = dataclasses.replace(paper, sweep_rates=tuple(_parse_lrs(cmd.lrs)))
    jobs = paper.jobs()
    if cmd.only:
        wanted = {k.strip() for k in cmd.only.split(",") if k.strip()}
        unknown = wanted - {j.key for j in jobs}
        if unknown:
            raise UserError(f"--only {cmd.only!r}: no rate {', '.join(sorted(unknown))}; the "
                            f"keys are {', '.join(j.key for j in jobs)}.")
        jobs = [j for j in jobs if j.key in wanted]
    return jobs


def run_paper(cmd: TrajectoriesCommand, single: SingleNetSettings, paper: PaperPreset) -> int:
    """The paper's preset as batched ensembles, then the figures and tables of the sweep."""
    jobs = _paper_jobs(cmd, paper)
    torch.set_num_threads(cmd.threads)
    out = Path(cmd.out or PAPER_OUT)
    problem = paper_problem()
    print(f"mdesc trajectories --preset paper: {problem.name}, {problem.n_params} parameters "
          f"({int(problem.weight_mask.sum())} weights); results in {out}/")
    print("setting: " + json.dumps(PAPER_SETTING))
    for j in jobs:
        print(f"  {j.key}: {j.steps} epochs, {j.n_init} initialisations, {j.n_pert} "
              f"perturbations x {len(j.eps)} sizes {j.eps[0]:g}..{j.eps[-1]:g}, spectrum of "
              f"{j.spectrum_inits} ({j.spectrum_T} steps), sample order {j.sample_order}")
    t0 = time.perf_counter()
    try:
        ensemble_sweep(out, jobs, seed=single.seed, log=lambda m: print(m, flush=True))
    except StoreError as e:
        raise UserError(str(e)) from None
    record = _command_record(cmd, single, paper, seconds_this_call=time.perf_counter() - t0)
    atomic_write_text(out / "command.json", json.dumps(record, indent=1) + "\n")
    for path in report.write_report(out, figures=cmd.figure):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mdesc.trajectories.cli trajectories ...``: the same as ``mdesc trajectories
    ...`` (the recorded commands use this spelling)."""
    return mdesc_cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
