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


def _floats(text: str) -> list[float]:
    from mdesc.cli import UserError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--gains must be comma-separated numbers, e.g. 0.5,1,2,4; got {text!r}")
    if not values or any(v < 0 for v in values):
        raise UserError(f"--gains must list non-negative numbers, got {text!r}")
    return values


def gain_sweep(args: argparse.Namespace) -> int:
    import torch

    import mdesc
    from mdesc.cli import UserError

    for name in ("hidden", "layers", "batch", "steps", "drive"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.drive > args.steps:
        raise UserError(f"--drive ({args.drive}) cannot exceed --steps ({args.steps})")
    if args.warmup < 0 or args.warmup >= args.steps - args.drive:
        raise UserError(f"--warmup ({args.warmup}) must be >= 0 and leave counted zero-input steps: "
                        f"--steps - --drive = {args.steps - args.drive} zero-input steps")
    torch.set_num_threads(args.threads) if args.threads else None
    gains = _floats(args.gains)
    g = torch.Generator().manual_seed(args.seed)
    models = []
    for gain in gains:
        lstm = torch.nn.LSTM(args.input, args.hidden, num_layers=args.layers)
        with torch.no_grad():
            for p in lstm.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * gain / args.hidden ** 0.5)
        models.append(lstm)
    seq = torch.randn(args.drive, args.batch, args.input, generator=g)
    zero = args.steps - args.drive
    lyap = mdesc.lyapunov_checkpoints(models, seq, k=1, zero_input_steps=zero, warmup=args.warmup,
                                      window="zero_input", dtype=torch.float32)
    dist = mdesc.asymptotic_distance(models, seq, zero_input_steps=zero, perturb_at="drive_end",
                                     dtype=torch.float64)
    print(f"LSTM(input={args.input}, hidden={args.hidden}, layers={args.layers}), {args.batch} noise "
          f"sequences, {args.drive} driven + {zero} zero-input steps; lambda_1 over the zero-input "
          f"steps after a warm-up of {args.warmup}, D~ of twins perturbed at the drive's end")
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
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gains", default="0.5,1,2,4,8,16,32", help="comma-separated weight gains g")
    p.add_argument("--hidden", type=int, default=60, help="hidden size H (default 60)")
    p.add_argument("--input", type=int, default=32, help="input size (default 32)")
    p.add_argument("--layers", type=int, default=1, help="LSTM layers (default 1)")
    p.add_argument("--batch", type=int, default=32, help="noise sequences per gain (default 32)")
    p.add_argument("--steps", type=int, default=1600, help="total steps per run (default 1600)")
    p.add_argument("--drive", type=int, default=500, help="steps of noise input before zero input (default 500)")
    p.add_argument("--warmup", type=int, default=100, help="uncounted zero-input steps after the drive (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.set_defaults(func=gain_sweep)
