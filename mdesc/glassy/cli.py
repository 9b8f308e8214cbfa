"""`mdesc glassy`: width x depth x seed sweeps of deep RNNs on the Bach chorales (study 2).

    mdesc glassy sweep   --out DIR [--depths 1 2] [--widths 4 8 16 32] [--seeds 0 1 2] ...
    mdesc glassy analyze DIR [--results RESULTS] [--thresholds 1.2 1.0] [--partial]

`sweep` trains every net (tanh RNNs: all widths x seeds of a depth as one batched group;
resumable: re-running the same command continues where it stopped), then fits and plots;
`analyze` redoes the fits and figures (of a partial sweep too, with --partial). The defaults
(depths 1, 2; widths 4-32; one seed; 2000 steps on all chorales) take a few minutes on one core.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path


def _depth_steps(text: str) -> tuple[int, int]:
    try:
        d, s = text.split("=")
        return int(d), int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEPTH=STEPS, e.g. 3=50000")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "glassy", help="glassy dynamics near the learnability transition (deep RNN, Bach chorales)",
        description="Width x depth x seed sweeps of deep recurrent nets trained by SGD on the "
        "four-part Bach chorales: power-law loss decay, learning-time divergence at a critical "
        "width, aging of the weights.")
    sub = parser.add_subparsers(dest="glassy_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    sw = sub.add_parser("sweep", help="train a (depth, width, seed) sweep, then fit and plot",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sw.add_argument("--out", required=True, help="sweep folder (settings, runs/, state)")
    sw.add_argument("--results", default=None,
                    help="folder for tables and figures (default: --out)")
    sw.add_argument("--depths", type=int, nargs="+", default=[1, 2])
    sw.add_argument("--widths", type=int, nargs="+", default=[4, 8, 16, 32])
    sw.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one net per width and seed (weights and minibatches)")
    sw.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn",
                    help="rnn = tanh RNN, trained batched; lstm/gru are trained one at a time")
    sw.add_argument("--steps", type=int, default=2000, help="SGD updates per net")
    sw.add_argument("--depth-steps", type=_depth_steps, nargs="*", default=[],
                    metavar="DEPTH=STEPS", help="other numbers of updates for some depths")
    sw.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    sw.add_argument("--momentum", type=float, default=0.0)
    sw.add_argument("--grad-clip", type=float, default=0.0,
                    help="clip each net's gradient norm to this (0: no clipping)")
    sw.add_argument("--batch-size", type=int, default=4, help="windows per SGD update")
    sw.add_argument("--window", type=int, default=64,
                    help="16th-note steps per training window (each from a zero state)")
    sw.add_argument("--data", choices=["music21", "fixture"], default="music21",
                    help="music21: all four-part chorales (parsed once, cached); fixture: the 8 "
                    "shipped with mdesc")
    sw.add_argument("--n-train", type=int, default=0,
                    help="use only the first N training chorales of the split (0: all)")
    sw.add_argument("--test-fraction", type=float, default=0.2,
                    help="fraction of chorales held out (the split is by chorale)")
    sw.add_argument("--split-seed", type=int, default=0)
    sw.add_argument("--n-records", type=int, default=40, help="log-spaced loss records per net")
    sw.add_argument("--waiting-times", type=int, nargs="+", default=None,
                    help="aging waiting times tau_w (default: 4, a factor 4 apart, up to steps/8)")
    sw.add_argument("--n-lags", type=int, default=16, help="log-spaced lags per waiting time")
    sw.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sw.add_argument("--round-robin", type=int, default=0, metavar="STEPS",
                    help="train the depths in turns of STEPS updates (0: one depth after the "
                    "other), so an interrupted sweep has all depths equally far")
    sw.add_argument("--thresholds", type=float, nargs="+", default=[1.4, 1.2, 1.0],
                    help="training-loss thresholds (nats per voice and step) for t*")
    sw.add_argument("--fit-from", type=float, default=0.05,
                    help="fit the power law from t >= FIT_FROM * steps")
    sw.add_argument("--aging-min-tw", type=float, default=None,
                    help="measure the aging collapse on waiting times >= this only (e.g. past "
                    "the initial transient; default: all)")
    sw.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    sw.add_argument("--no-analysis", action="store_true", help="train only")
    sw.add_argument("--no-progress", action="store_true", help="no progress lines")
    sw.set_defaults(func=cmd_sweep)

    an = sub.add_parser("analyze", help="fit and plot a sweep folder",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    an.add_argument("out", help="folder written by `mdesc glassy sweep`")
    an.add_argument("--results", default=None, help="folder for tables and figures "
                    "(default: the sweep folder)")
    an.add_argument("--thresholds", type=float, nargs="+", default=None,
                    help="loss thresholds for t* (default: those of the sweep command)")
    an.add_argument("--fit-from", type=float, default=None,
                    help="power-law fit start as a fraction of the steps (default: the sweep's)")
    an.add_argument("--aging-min-tw", type=float, default=None,
                    help="aging collapse on waiting times >= this only (default: the sweep's)")
    an.add_argument("--censor-spikes", action="store_true",
                    help="analyse each net only up to its first loss spike")
    an.add_argument("--partial", action="store_true",
                    help="analyse unfinished groups with their records so far")
    an.set_defaults(func=cmd_analyze)


def _settings(args):
    from mdesc.cli import UserError
    from mdesc.glassy.sweep import SweepSettings

    for name in ("steps", "n_records", "n_lags", "threads", "batch_size", "window"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if args.steps < 16:
        raise UserError("--steps must be >= 16 for log-spaced records and aging waiting times")
    if min(args.widths) < 1 or min(args.depths) < 1:
        raise UserError("--widths and --depths must be >= 1")
    if args.lr <= 0:
        raise UserError("--lr must be > 0")
    if not 0 <= args.test_fraction < 1:
        raise UserError("--test-fraction must be in [0, 1)")
    if len(set(args.seeds)) != len(args.seeds) or len(set(args.widths)) != len(args.widths):
        raise UserError("--widths and --seeds must not repeat a value")
    steps = dict(args.depth_steps)
    for d, s in steps.items():
        if d not in args.depths or s < 16:
            raise UserError(f"--depth-steps {d}={s}: the depth must be one of --depths and "
                            "the steps >= 16")
    if args.waiting_times:
        top = min([args.steps, *steps.values()])
        bad = [t for t in args.waiting_times if not 1 <= t < top]
        if bad:
            raise UserError(f"--waiting-times {bad}: each must be in [1, {top}) (the fewest "
                            "steps of any depth)")
    return SweepSettings(
        depths=tuple(args.depths), widths=tuple(args.widths), seeds=tuple(args.seeds),
        steps=args.steps, depth_steps=steps, cell=args.cell, lr=args.lr,
        momentum=args.momentum, grad_clip=args.grad_clip if args.grad_clip > 0 else None,
        batch_size=args.batch_size, window=args.window, n_records=args.n_records,
        waiting_times=tuple(args.waiting_times) if args.waiting_times else None,
        n_lags=args.n_lags, data=args.data, test_fraction=args.test_fraction,
        split_seed=args.split_seed, n_train=args.n_train, dtype=args.dtype)


def cmd_sweep(args) -> int:
    import torch

    from mdesc import store
    from mdesc.cli import UserError
    from mdesc.glassy.sweep import run_sweep

    settings = _settings(args)
    torch.set_num_threads(args.threads)
    log = (lambda line: None) if args.no_progress else (lambda line: print(line, flush=True))
    try:
        info = run_sweep(args.out, settings, log=log, round_robin=args.round_robin)
    except ImportError as e:
        raise UserError(f"{e}; or use --data fixture for the chorales shipped with mdesc")
    except (store.StoreError, ValueError) as e:
        raise UserError(str(e))
    print(f"trained: wall times (s) {info['wall_s']}", flush=True)
    if args.no_analysis:
        return 0
    return _analyze(Path(args.out), Path(args.results or args.out), args.thresholds,
                    args.fit_from, partial=False, aging_min_tw=args.aging_min_tw)


def cmd_analyze(args) -> int:
    from mdesc import store
    from mdesc.cli import UserError

    out = Path(args.out)
    if not store.RunFolder(out).exists():
        raise UserError(f"{out} holds no sweep (no settings.json): give a folder written by "
                        "`mdesc glassy sweep`")
    prev = store.RunFolder(args.results or out)
    analysis = prev.read_json("fits.json").get("analysis", {}) if prev.path("fits.json").exists() \
        else {}
    thresholds = args.thresholds or analysis.get("thresholds") or [1.4, 1.2, 1.0]
    fit_from = args.fit_from if args.fit_from is not None else analysis.get("fit_from", 0.05)
    min_tw = args.aging_min_tw if args.aging_min_tw is not None else analysis.get("aging_min_tw")
    return _analyze(out, Path(args.results or out), thresholds, fit_from, args.partial, min_tw,
                    args.censor_spikes)


def _analyze(out: Path, results: Path, thresholds, fit_from, partial: bool,
             aging_min_tw: float | None = None, censor_spikes: bool = False) -> int:
    import numpy as np

    from mdesc import store
    from mdesc.cli import UserError
    from mdesc.glassy.figures import write_figures
    from mdesc.glassy.summary import analyze_sweep
    from mdesc.glassy.sweep import collect, group_walls

    try:
        settings, nets = collect(out, partial=partial)
    except FileNotFoundError as e:
        raise UserError(str(e))
    if not nets:
        raise UserError(f"{out} has no trained nets yet; run the sweep command first")
    result = analyze_sweep(nets, thresholds, fit_from, aging_min_tw=aging_min_tw,
                           censor_spikes=censor_spikes)
    result["settings"] = settings.to_dict()
    result["analysis"] = {"thresholds": list(thresholds), "fit_from": fit_from,
                          "aging_min_tw": aging_min_tw, "censor_spikes": censor_spikes,
                          "partial": partial,
                          "steps_reached": {f"d{d}": min(n.step for n in nets if n.depth == d)
                                            for d in sorted({n.depth for n in nets})},
                          "groups": group_walls(out)}
    curves = {}
    for n in nets:
        key = f"d{n.depth}_w{n.width}_s{n.seed}"
        for name in ("times", "train_loss", "test_loss", "batch_mean", "batch_max"):
            curves[f"{key}/{name}"] = np.array(getattr(n, name))  # copies: no shared memory
        for tw, lag, delta in zip(n.aging.waiting_times, n.aging.lags, n.aging.delta):
            curves[f"{key}/aging/{int(tw)}/lag"] = np.array(lag, dtype=np.int64)
            curves[f"{key}/aging/{int(tw)}/delta"] = np.array(delta, dtype=np.float64)
    result["curves_file"] = "curves.safetensors (per net: loss records and aging curves)"
    results.mkdir(parents=True, exist_ok=True)
    store.write_json(results / "fits.json", result)
    store.save_tensors(results / "curves.safetensors", curves,
                       {"nets": [f"d{n.depth}_w{n.width}_s{n.seed}" for n in nets]})
    _write_csv(results / "nets.csv", result["nets"])
    _write_csv(results / "critical_width.csv", [
        {"depth": c["depth"], "threshold": c["threshold"],
         **{f"pooled_{k}": v for k, v in c["pooled"].items()},
         **{f"seeds_w_c_{k}": v for k, v in c["w_c_seeds"].items()},
         "fraction_seeds_fitted": c["fraction_fitted"]} for c in result["critical_width"]])
    aging_nets = nets
    if censor_spikes:
        from mdesc.glassy.summary import censor_at, first_spike_time
        aging_nets = [censor_at(n, first_spike_time(n)) for n in nets]
    names = write_figures(results, nets, result, aging_nets=aging_nets)
    _print_summary(result)
    print(f"wrote {results}/fits.json, curves.safetensors, nets.csv, critical_width.csv, "
          + ", ".join(names))
    return 0


def _print_summary(result) -> None:
    print("depth width seeds  final loss (mean)  L_inf>0 (frac)  alpha (mean)  aging ratio (med)")
    for r in result["widths"]:
        print(f"{r['depth']:5d} {r['width']:5d} {r['n_seeds']:5d}  "
              f"{r['final_train_loss']['mean']:17.4f}  {r['fraction_l_inf_positive']:14.2f}  "
              f"{r['alpha']['mean']:12.3f}  {r['aging_ratio']['median']:.3g}")
    for c in result["critical_width"]:
        p, s = c["pooled"], c["w_c_seeds"]
        if "w_c" in p:
            print(f"depth {c['depth']}, L* = {c['threshold']:g}: pooled w_c = {p['w_c']:.3g} "
                  f"+- {p['w_c_err']:.2g}" + (" (at bound: no divergence)" if p["at_bound"] else "")
                  + (f"; over seeds {s['mean']:.3g} [{s['lo']:.3g}, {s['hi']:.3g}] (n={s['n']})"
                     if s["n"] > 1 else ""))
        else:
            print(f"depth {c['depth']}, L* = {c['threshold']:g}: {p['error']}")
    for a in result["aging"]:
        lr = a["log10_ratio"]
        if a["n_nets"]:
            print(f"aging, depth {a['depth']} {a['phase']} w_c={a['w_c']:.3g}: {a['n_nets']} nets, "
                  f"median collapse ratio {10 ** lr['median'] if math.isfinite(lr['median']) else math.nan:.3g}, "
                  f"fraction collapsing {a['fraction_collapsing']:.2f}")


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io
    import json

    from mdesc import store

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (json.dumps(store.to_json(v)) if isinstance(v, (list, dict)) else v)
                         for k, v in r.items()})
    store.atomic_write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    """``python -m mdesc.glassy.cli sweep ...``: the same as ``mdesc glassy sweep ...``, without
    building the other studies' commands."""
    import sys

    from mdesc.cli import UserError

    parser = argparse.ArgumentParser(prog="mdesc")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["glassy", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mdesc glassy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
