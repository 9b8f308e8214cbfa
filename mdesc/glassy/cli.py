"""`mdesc glassy`: width x depth x seed sweeps of deep RNNs on the Bach chorales (study 2).

    mdesc glassy sweep   --out DIR [--depths 1 2] [--widths 4 8 16 32] [--seeds 0 1 2] ...
    mdesc glassy analyze DIR [--results RESULTS] [--thresholds 1.2 1.0] [--partial]

`sweep` trains every net (tanh RNNs: all widths x seeds of a depth as one batched group;
resumable: re-running the same command continues where it stopped), then fits and plots;
`analyze` redoes the fits and figures (of a partial sweep too, with --partial). The defaults
(depths 1, 2; widths 4-32; one seed; 2000 steps on all chorales) take a few minutes on one core.
The options come from the settings dataclasses (each default once, with its help):
:class:`~mdesc.glassy.sweep.SweepSettings`, :class:`~mdesc.glassy.summary.AnalysisSettings`
and :class:`SweepCommand`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mdesc import cli as mdesc_cli
from mdesc import store
from mdesc.errors import UserError
from mdesc.glassy.claims import ScalingSettings, scaling_analysis
from mdesc.glassy.figures import plot_lr_check, write_figures
from mdesc.glassy.lrcheck import lr_stability, run_lr_check
from mdesc.glassy.summary import AnalysisSettings, analyze_sweep, censor_at, first_spike_time
from mdesc.glassy.sweep import SweepSettings, collect, group_walls, run_sweep
from mdesc.options import HelpFormatter, add_options, from_args, given_options, option

__all__ = ["SweepCommand", "register", "main"]

_SWEEP_ANALYSIS = ("thresholds", "fit_from", "aging_min_tw")  # analysis options of `sweep`


@dataclass(frozen=True)
class SweepCommand:
    """The options of the commands themselves (not settings of the results)."""

    out: str = option(help="sweep folder (settings, runs/, state)")
    results: str | None = option(None, "folder for tables and figures",
                                 default_help="the sweep folder, --out")
    round_robin: int = option(0, "train the depths in turns of STEPS updates (0: one depth "
                              "after the other), so an interrupted sweep has all depths "
                              "equally far", metavar="STEPS")
    threads: int = option(1, "torch CPU threads")
    analysis: bool = option(True, "fit and plot after training (--no-analysis: train only)")
    progress: bool = option(True, "progress lines (--no-progress: none)")


@dataclass(frozen=True)
class LrCheckCommand:
    """The options of ``mdesc glassy lr-check`` besides the grid."""

    out: str = option(help="folder of the check (one sweep folder per rate, lr_check.json, "
                      "lr_check.png)")
    lrs: tuple[float, ...] = option((0.05, 0.1, 0.2, 0.5), "learning rates to try")
    max_ratio: float = option(2.0, "a spike: a minibatch loss above this times its bin's mean")
    max_rise: float = option(0.1, "a spike: the full training loss rising by more than this "
                             "fraction between records")
    t_from: float = option(10.0, "count spikes from this SGD step on (past the first updates)")
    threads: int = option(1, "torch CPU threads")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "glassy", help=mdesc_cli.COMMANDS["glassy"][1],
        description="Width x depth x seed sweeps of deep recurrent nets trained by SGD on the "
        "four-part Bach chorales: power-law loss decay, learning-time divergence at a critical "
        "width, aging of the weights.")
    sub = parser.add_subparsers(dest="glassy_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 0)[1])

    sw = sub.add_parser("sweep", help="train a (depth, width, seed) sweep, then fit and plot",
                        formatter_class=HelpFormatter)
    add_options(sw, SweepCommand)
    add_options(sw.add_argument_group("the sweep (recorded in settings.json)"), SweepSettings)
    add_options(sw.add_argument_group("the analysis"), AnalysisSettings, only=_SWEEP_ANALYSIS)
    add_options(sw.add_argument_group("the tests of the curve shapes"), ScalingSettings)
    sw.set_defaults(func=cmd_sweep)

    an = sub.add_parser("analyze", help="fit and plot a sweep folder",
                        formatter_class=HelpFormatter)
    an.add_argument("out", help="folder written by `mdesc glassy sweep`")
    add_options(an, SweepCommand, only=("results",))
    shown = {n: " ".join(map(str, v)) if isinstance(v, tuple) else str(v).lower()
             for n, v in ((n, getattr(AnalysisSettings, n)) for n in _SWEEP_ANALYSIS)}
    add_options(an, AnalysisSettings,
                defaults={n: f"the sweep's (its fits.json), else {v}" for n, v in shown.items()})
    add_options(an.add_argument_group("the tests of the curve shapes"), ScalingSettings)
    an.set_defaults(func=cmd_analyze)

    lr = sub.add_parser("lr-check", help="train the grid briefly at several learning rates and "
                        "report the largest stable one", formatter_class=HelpFormatter)
    add_options(lr, LrCheckCommand)
    add_options(lr.add_argument_group("the grid of each rate (recorded per rate)"),
                SweepSettings, exclude=("lr",))
    lr.set_defaults(func=cmd_lr_check)


def _check(settings: SweepSettings) -> None:
    """Raise UserError on settings a sweep cannot use."""
    for name in ("steps", "n_records", "n_lags", "batch_size", "window"):
        if getattr(settings, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    if settings.steps < 16:
        raise UserError("--steps must be >= 16 for log-spaced records and aging waiting times")
    if min(settings.widths) < 1 or min(settings.depths) < 1:
        raise UserError("--widths and --depths must be >= 1")
    if settings.lr <= 0:
        raise UserError("--lr must be > 0")
    if not 0 <= settings.test_fraction < 1:
        raise UserError("--test-fraction must be in [0, 1)")
    if len(set(settings.seeds)) != len(settings.seeds) or \
            len(set(settings.widths)) != len(settings.widths):
        raise UserError("--widths and --seeds must not repeat a value")
    for d, s in settings.depth_steps.items():
        if d not in settings.depths or s < 16:
            raise UserError(f"--depth-steps {d}={s}: the depth must be one of --depths and "
                            "the steps >= 16")
    if settings.waiting_times:
        top = min([settings.steps, *settings.depth_steps.values()])
        bad = [t for t in settings.waiting_times if not 1 <= t < top]
        if bad:
            raise UserError(f"--waiting-times {list(bad)}: each must be in [1, {top}) (the "
                            "fewest steps of any depth)")


def _settings(args) -> SweepSettings:
    given = given_options(SweepSettings, args)
    clip = given.get("grad_clip")
    settings = from_args(SweepSettings, args, depth_steps=dict(given.get("depth_steps", ())),
                         grad_clip=clip if clip is not None and clip > 0 else None)
    _check(settings)
    return settings


def cmd_sweep(args) -> int:
    settings = _settings(args)
    cmd = from_args(SweepCommand, args)
    if cmd.threads < 1:
        raise UserError("--threads must be >= 1")
    torch.set_num_threads(cmd.threads)
    log = (lambda line: print(line, flush=True)) if cmd.progress else (lambda line: None)
    try:
        info = run_sweep(cmd.out, settings, log=log, round_robin=cmd.round_robin)
    except ImportError as e:
        raise UserError(f"{e}; or use --data fixture for the chorales shipped with mdesc")
    except ValueError as e:  # the store's errors are UserErrors already
        raise UserError(str(e)) from e
    print(f"trained: wall times (s) {info['wall_s']}", flush=True)
    if not cmd.analysis:
        return 0
    return _analyze(Path(cmd.out), Path(cmd.results or cmd.out), from_args(AnalysisSettings, args),
                    from_args(ScalingSettings, args))


def cmd_lr_check(args) -> int:
    cmd = from_args(LrCheckCommand, args)
    if not cmd.lrs or min(cmd.lrs) <= 0:
        raise UserError("--lrs: give one or more learning rates > 0")
    settings = _settings(args)
    torch.set_num_threads(max(cmd.threads, 1))
    try:
        groups = run_lr_check(cmd.out, settings, cmd.lrs,
                              log=lambda line: print(line, flush=True))
    except ImportError as e:
        raise UserError(f"{e}; or use --data fixture for the chorales shipped with mdesc")
    except ValueError as e:
        raise UserError(str(e)) from e
    check = lr_stability(groups, cmd.max_ratio, cmd.max_rise, cmd.t_from)
    check["settings"] = settings.to_dict()
    store.write_json(Path(cmd.out) / "lr_check.json", check)
    plot_lr_check(Path(cmd.out) / "lr_check.png", groups, check)
    for e in check["per_lr"]:
        print(f"lr {e['lr']:g}: {'stable' if e['stable'] else 'UNSTABLE'} "
              f"({e['n_unstable']} of {len(e['nets'])} nets spiked or diverged)")
    print(f"largest stable lr: {check['largest_stable_lr']} (per depth "
          f"{check['largest_stable_lr_by_depth']}); wrote {cmd.out}/lr_check.json, lr_check.png")
    return 0


def cmd_analyze(args) -> int:
    out = Path(args.out)
    if not store.RunFolder(out).exists():
        raise UserError(f"{out} holds no sweep (no settings.json): give a folder written by "
                        "`mdesc glassy sweep`")
    results = Path(getattr(args, "results", None) or out)
    prev = store.RunFolder(results)
    stored = prev.read_json("fits.json").get("analysis", {}) if prev.path("fits.json").exists() \
        else {}
    # options not given: the sweep's last analysis (fits.json), else the defaults
    inherited = {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()
                 if k in _SWEEP_ANALYSIS and v not in (None, [])}
    return _analyze(out, results, from_args(AnalysisSettings, args, overrides=inherited),
                    from_args(ScalingSettings, args))


def _analyze(out: Path, results: Path, a: AnalysisSettings,
             s: ScalingSettings = ScalingSettings()) -> int:
    try:
        settings, nets = collect(out, partial=a.partial)
    except FileNotFoundError as e:
        raise UserError(str(e))
    if not nets:
        raise UserError(f"{out} has no trained nets yet; run the sweep command first")
    result = analyze_sweep(nets, list(a.thresholds), a.fit_from, aging_min_tw=a.aging_min_tw,
                           censor_spikes=a.censor_spikes)
    result["settings"] = settings.to_dict()
    result["analysis"] = {"thresholds": list(a.thresholds), "fit_from": a.fit_from,
                          "aging_min_tw": a.aging_min_tw, "censor_spikes": a.censor_spikes,
                          "partial": a.partial,
                          "steps_reached": {f"d{d}": min(n.step for n in nets if n.depth == d)
                                            for d in sorted({n.depth for n in nets})},
                          "groups": group_walls(out)}
    result["curves_file"] = "curves.safetensors (per net: loss records and aging curves)"
    results.mkdir(parents=True, exist_ok=True)
    _write_tables(results, result, nets)
    aging_nets = [censor_at(n, first_spike_time(n)) for n in nets] if a.censor_spikes else nets
    scaling = scaling_analysis(aging_nets, result, s)
    store.write_json(results / "scaling.json", scaling)
    names = write_figures(results, nets, result, aging_nets=aging_nets, scaling=scaling)
    _print_summary(result)
    print(f"wrote {results}/fits.json, scaling.json, curves.safetensors, nets.csv, "
          "critical_width.csv, " + ", ".join(names))
    return 0


def _write_tables(results: Path, result: dict, nets) -> None:
    """fits.json, curves.safetensors (every net's records), nets.csv, critical_width.csv."""
    curves = {}
    for n in nets:
        key = f"d{n.depth}_w{n.width}_s{n.seed}"
        for name in ("times", "train_loss", "test_loss", "batch_mean", "batch_max"):
            curves[f"{key}/{name}"] = np.array(getattr(n, name))  # copies: no shared memory
        for tw, lag, delta in zip(n.aging.waiting_times, n.aging.lags, n.aging.delta):
            curves[f"{key}/aging/{int(tw)}/lag"] = np.array(lag, dtype=np.int64)
            curves[f"{key}/aging/{int(tw)}/delta"] = np.array(delta, dtype=np.float64)
    store.write_json(results / "fits.json", result)
    store.save_tensors(results / "curves.safetensors", curves,
                       {"nets": [f"d{n.depth}_w{n.width}_s{n.seed}" for n in nets]})
    _write_csv(results / "nets.csv", result["nets"])
    _write_csv(results / "critical_width.csv", [
        {"depth": c["depth"], "threshold": c["threshold"],
         **{f"pooled_{k}": v for k, v in c["pooled"].items()},
         **{f"seeds_w_c_{k}": v for k, v in c["w_c_seeds"].items()},
         "fraction_seeds_fitted": c["fraction_fitted"]} for c in result["critical_width"]])


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
    """``python -m mdesc.glassy.cli sweep ...``: the same as ``mdesc glassy sweep ...`` (the
    recorded commands use this spelling)."""
    return mdesc_cli.main(["glassy", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
