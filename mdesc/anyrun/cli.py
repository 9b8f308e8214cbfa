"""`mdesc analyse-run`: the stability sweep, phase analysis and report of any run's checkpoints."""
from __future__ import annotations

import argparse
import json

import torch

from mdesc import store
from mdesc.anyrun.distributed import check_device
from mdesc.anyrun.sources import CELLS, SourceError
from mdesc.anyrun.sweep import sweep_checkpoints
from mdesc.errors import UserError
from mdesc.options import HelpFormatter
from mdesc.sweep.cli_options import (add_description_options, add_phase_options,
                                     add_sweep_options, description_from_args,
                                     phase_settings_from_args, sweep_settings_from_args)

EPILOG = """\
examples:
  # your own model class (any importable factory), a folder of .pt / .safetensors files
  mdesc analyse-run ckpts/ --out analysis/ --factory mypkg.models:make_model \\
      --factory-kwargs '{"vocab": 10000}' --probe probe.safetensors --metrics metrics.csv

  # a plain Embedding -> LSTM/GRU/RNN -> Linear model: its sizes and cell are read off the
  # checkpoints' tensor shapes (and printed); flags given override what is read
  mdesc analyse-run 'ckpts/epoch_*.pt' --out analysis/ --probe probe.npy --lengths lengths.npy

  # sharded over 4 GPUs (one rank per GPU; on CPUs, gloo): the same command under torchrun
  torchrun --standalone --nproc-per-node 4 -m mdesc analyse-run ckpts/ --out analysis/ ...

The training axis is the last integer in each file name (epoch_12.pt -> 12) unless --order
names the files in order.  Re-running the same command resumes (records are per checkpoint).
Outputs: OUT/sweep/epoch_NNNN.json (one record per checkpoint), OUT/report/report.html.
Docs: docs/anyrun.md.
"""


_Formatter = HelpFormatter  # every option states its default itself, once


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyse-run", aliases=["analyze-run"],
        help="stability sweep + phase analysis + report of ANY run's checkpoints (torchrun-able)",
        description="Sweep a folder (or glob) of checkpoints from any training loop: lambda_1 "
                    "over the zero-input window, the asymptotic distance D~ of perturbed twins "
                    "and reduced sums of fixed probe inputs for every checkpoint, then the "
                    "multiple-descent study's order/chaos phase analysis and HTML report.",
        epilog=EPILOG, formatter_class=_Formatter)
    p.add_argument("checkpoints", nargs="*",
                   help="checkpoint files, folders or globs (.safetensors, .pt, .pth, .bin, "
                        ".ckpt); may be omitted with --order")
    p.add_argument("--out", required=True, help="output folder (the store; re-run to resume)")
    p.add_argument("--order", metavar="FILE",
                   help="order file: one checkpoint file per line in training order, optionally "
                        "followed by its step")
    p.add_argument("--step-pattern", metavar="REGEX",
                   help="read the training axis from this regex's group instead of the last "
                        "integer in each name, e.g. 'epoch=(\\d+)' for Lightning's "
                        "epoch=3-step=1200.ckpt")
    _add_model_options(p)
    g = p.add_argument_group("probe inputs")
    g.add_argument("--probe", required=True, metavar="FILE",
                   help="token ids (B, T) or features (B, T, I) in .safetensors/.npy/.npz/.pt")
    g.add_argument("--probe-key", metavar="NAME", help="the tensor's name in a multi-tensor file")
    g.add_argument("--lengths", metavar="FILE", help="drive length per sequence (B,) (default: "
                   "a 'lengths' tensor in the probe file, else the full length)")
    g.add_argument("--lengths-key", metavar="NAME", help="name of the lengths tensor")
    g.add_argument("--time-major", action="store_true", help="the probe is stored (T, B, ...)")
    add_sweep_options(p.add_argument_group("measurement (mdesc.sweep.SweepSettings)"),
                      exclude=("every",))
    add_description_options(p.add_argument_group(
        "the run in words, for the report (mdesc.sweep.RunDescription)"))
    g = p.add_argument_group("run")
    g.add_argument("--metrics", metavar="FILE",
                   help="CSV/JSON of test loss (and train loss, accuracies) per checkpoint")
    g.add_argument("--skip-bad", action="store_true",
                   help="leave out (and list) checkpoints that do not read or fit the model, "
                        "instead of stopping at the first")
    g.add_argument("--device", default="auto",
                   help="auto (each rank's GPU if any, else CPU), cpu, cuda, cuda:1, ... "
                        "[default: auto]")
    g.add_argument("--no-distributed", action="store_true",
                   help="ignore torchrun's environment (one process does everything)")
    g.add_argument("--no-report", action="store_true", help="records only, no report")
    g.add_argument("--threads", type=int, help="torch CPU threads [default: torch's]")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_phase_options(p.add_argument_group("phase analysis (as in mdesc descent report)"))
    p.set_defaults(func=cmd_analyse_run)


def _add_model_options(p) -> None:
    """--factory, or the stack's flags (each read off the first checkpoint when not given)."""
    g = p.add_argument_group("model (a factory; or a plain Embedding -> LSTM/GRU/RNN -> Linear "
                             "stack, its sizes read off the first checkpoint and printed)")
    g.add_argument("--factory", metavar="PKG.MODULE:CALLABLE",
                   help="importable callable that returns the (untrained) model")
    g.add_argument("--factory-kwargs", metavar="JSON", default="{}",
                   help="keyword arguments for the factory, as a JSON object [default: {}]")
    g.add_argument("--cell", choices=CELLS,
                   help="recurrent cell of the Embedding -> recurrent -> Linear stack "
                        "[default: read off the checkpoint]")
    g.add_argument("--vocab-size", type=int, metavar="N",
                   help="token-id inputs: the embedding's vocabulary "
                   "[default: read off the checkpoint]")
    g.add_argument("--embed-dim", type=int, metavar="N",
                   help="token-id inputs: the embedding width "
                   "[default: read off the checkpoint]")
    g.add_argument("--input-size", type=int, metavar="N",
                   help="feature inputs (no embedding): their width "
                   "[default: read off the checkpoint]")
    g.add_argument("--hidden-size", type=int, metavar="N", help="recurrent hidden size "
                   "[default: read off the checkpoint]")
    g.add_argument("--num-layers", type=int, metavar="N", help="stacked recurrent layers "
                   "[default: read off the checkpoint]")
    g.add_argument("--output-size", type=int, metavar="N", help="readout width (0: no readout) "
                   "[default: read off the checkpoint]")
    g.add_argument("--no-bias", action="store_true", help="the recurrent layers have no bias "
                   "[default: read off the checkpoint]")
    g.add_argument("--state-key", metavar="KEY",
                   help="the weights sit under this key of a .pt file, dotted if nested "
                        "[default: the file itself if it is a state dict, else the first of the "
                        f"entries {', '.join(store.STATE_KEYS)} that is one, else its one "
                        "entry that is a state dict]")
    g.add_argument("--strip-prefix", metavar="PREFIX",
                   help="remove this prefix from every weight name (e.g. 'module.' or 'model.')")


ARCHITECTURE_FLAGS = ("cell", "vocab_size", "embed_dim", "input_size", "hidden_size",
                      "num_layers", "output_size")


def _model_arg(args):
    """``(model, factory kwargs)``: the factory, or the stack's flags that were given (the
    rest is read off the first checkpoint)."""
    given = {f: getattr(args, f) for f in ARCHITECTURE_FLAGS if getattr(args, f) is not None}
    if args.no_bias:
        given["bias"] = False
    if args.factory:
        if given:
            raise UserError(f"--factory builds the model; drop the architecture flags "
                            f"({', '.join('--' + f.replace('_', '-') for f in given)})")
        try:
            kwargs = json.loads(args.factory_kwargs)
        except json.JSONDecodeError as e:
            raise UserError(f"--factory-kwargs is not valid JSON ({e}): pass an object such as "
                            "'{\"vocab\": 100}'")
        if not isinstance(kwargs, dict):
            raise UserError("--factory-kwargs must be a JSON object")
        return args.factory, kwargs
    return given, None


def cmd_analyse_run(args) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    if not args.checkpoints and not args.order:
        raise UserError("give checkpoint files, folders or globs, or --order FILE")
    model, kwargs = _model_arg(args)
    check_device(None if args.device == "auto" else args.device)
    try:
        settings = sweep_settings_from_args(args).check()
        result = sweep_checkpoints(
            args.checkpoints or None, args.out, model, args.probe, lengths=args.lengths,
            probe_key=args.probe_key, time_major=args.time_major,
            metrics=args.metrics, order_file=args.order, step_pattern=args.step_pattern,
            settings=settings, factory_kwargs=kwargs, state_key=args.state_key,
            strip_prefix=args.strip_prefix, skip_bad=args.skip_bad,
            device=None if args.device == "auto" else args.device,
            distributed=False if args.no_distributed else "auto", report=not args.no_report,
            phase_settings=phase_settings_from_args(args),
            description=description_from_args(args) or None,
            progress=not args.no_progress, say=print)
    except (SourceError, store.StoreError, ValueError, TypeError) as e:
        raise UserError(str(e)) from e
    if result.rank != 0:
        return 0
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}")
    t = result.table
    print(f"{len(t['epoch'])} checkpoints in {args.out} ({len(result.computed)} measured now"
          f"{' by rank 0' if result.world > 1 else ''}, {len(result.existing)} already stored"
          f"{f', {len(result.skipped)} skipped' if result.skipped else ''})")
    print(f"{'step':>8} {'lambda_1':>10} {'stderr':>9} {'driven':>9} {'D~':>9} {'D~(t=0)':>9} "
          f"{'test_loss':>10}")
    for i, step in enumerate(t["epoch"]):
        print(f"{int(step):>8} {t['lyapunov_max'][i]:10.4f} {t['lyapunov_stderr'][i]:9.4f} "
              f"{t['lyapunov_max_driven'][i]:9.4f} {t['log_distance'][i]:9.3f} "
              f"{t['log_distance_start'][i]:9.3f} {t['test_loss'][i]:10.4g}")
    if result.report is not None:
        print(f"report: {result.report}")
    return 0
