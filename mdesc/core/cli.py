"""`mdesc gain-sweep`: the order-to-chaos transition of a random LSTM as its recurrent gain grows.

A quick, self-contained demonstration of the core (no data, no training): an LSTM with
N(0, g^2/H) weights, driven by Gaussian noise and then left to run on zero input, for a range of
gains g.  For each gain it reports, over the zero-input phase only (the asymptotic window,
docs/conventions.md §4; --warmup steps after the drive uncounted), the largest Lyapunov exponent
(fused kernel, one call for all gains as a checkpoint batch), the drive's own exponent beside it,
and the paper's asymptotic distance D~ of twins perturbed where the zero input begins (floor -15 =
order).  Each measure gives a verdict (lambda_1 > 0: chaos; D~ above its floor: chaos) and the
phase column says "order" or "chaos" where both agree, "disagree" where they do not (a lambda_1
near 0 within its error, or a perturbation that decays too slowly, or too little, within the
zero-input steps, can do that).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from mdesc.core.lyapunov import lyapunov_checkpoints
from mdesc.core.stability import asymptotic_distance
from mdesc.errors import UserError
from mdesc.options import HelpFormatter, add_options, from_args, option


@dataclass(frozen=True)
class GainSweepSettings:
    """Every setting of ``mdesc gain-sweep`` (each default written once, here)."""

    gains: str = option("0.5,1,2,4,8,16,32", "comma-separated weight gains g")
    hidden: int = option(60, "hidden size H")
    input: int = option(32, "input size")
    layers: int = option(1, "LSTM layers")
    batch: int = option(32, "noise sequences per gain")
    steps: int = option(1600, "total steps per run")
    drive: int = option(500, "steps of noise input before zero input")
    warmup: int = option(100, "uncounted zero-input steps after the drive")
    seed: int = option(0, "seed of the weights and the noise")
    threads: int = option(0, "torch threads (0: torch's choice)")


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--gains must be comma-separated numbers, e.g. 0.5,1,2,4; got {text!r}")
    if not values or any(v < 0 for v in values):
        raise UserError(f"--gains must list non-negative numbers, got {text!r}")
    return values


def _check(s: GainSweepSettings) -> list[float]:
    """The gains, once every setting is checked."""
    for name in ("hidden", "layers", "batch", "steps", "drive"):
        if getattr(s, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(s, name)}")
    if s.drive > s.steps:
        raise UserError(f"--drive ({s.drive}) cannot exceed --steps ({s.steps})")
    if s.warmup < 0 or s.warmup >= s.steps - s.drive:
        raise UserError(f"--warmup ({s.warmup}) must be >= 0 and leave counted zero-input steps: "
                        f"--steps - --drive = {s.steps - s.drive} zero-input steps")
    return _floats(s.gains)


def _models(s: GainSweepSettings, gains: list[float], g: torch.Generator) -> list[torch.nn.LSTM]:
    """One LSTM per gain, weights N(0, g^2/H)."""
    models = []
    for gain in gains:
        lstm = torch.nn.LSTM(s.input, s.hidden, num_layers=s.layers)
        with torch.no_grad():
            for p in lstm.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * gain / s.hidden ** 0.5)
        models.append(lstm)
    return models


def gain_sweep(args: argparse.Namespace) -> int:
    s = from_args(GainSweepSettings, args)
    gains = _check(s)
    if s.threads:
        torch.set_num_threads(s.threads)
    g = torch.Generator().manual_seed(s.seed)
    models = _models(s, gains, g)
    seq = torch.randn(s.drive, s.batch, s.input, generator=g)
    zero = s.steps - s.drive
    lyap = lyapunov_checkpoints(models, seq, k=1, zero_input_steps=zero, warmup=s.warmup,
                                window="zero_input", dtype=torch.float32)
    dist = asymptotic_distance(models, seq, zero_input_steps=zero, perturb_at="drive_end", dtype=torch.float64)
    print(f"LSTM(input={s.input}, hidden={s.hidden}, layers={s.layers}), {s.batch} noise "
          f"sequences, {s.drive} driven + {zero} zero-input steps; lambda_1 over the zero-input "
          f"steps after a warm-up of {s.warmup}, D~ of twins perturbed at the drive's end")
    print(f"{'gain':>8} {'lambda_1':>10} {'stderr':>9} {'driven':>9} {'D~':>9} {'by_lam':>7} "
          f"{'by_D':>6}  phase")
    driven = lyap.driven_exponents[..., 0].mean(dim=-1)
    for i, gain in enumerate(gains):
        lam, se, d = float(lyap.mean[i, 0]), float(lyap.stderr[i, 0]), float(dist.log_distance[i])
        by_lam = "chaos" if lam > 0 else "order"
        by_d = "chaos" if bool(dist.chaotic[i]) else "order"
        phase = by_lam if by_lam == by_d else "disagree"
        print(f"{gain:8.3g} {lam:10.4f} {se:9.4f} {float(driven[i]):9.4f} {d:9.3f} {by_lam:>7} "
              f"{by_d:>6}  {phase}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "gain-sweep", help="order-to-chaos transition of a random LSTM vs its weight gain (no data)",
        description=__doc__, formatter_class=HelpFormatter)
    add_options(p, GainSweepSettings)
    p.set_defaults(func=gain_sweep)
