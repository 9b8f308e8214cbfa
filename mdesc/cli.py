"""The `mdesc` command.

Each study registers its subcommands from its own command-line module (`mdesc/<study>/cli.py`,
the only place that builds argparse parsers); this file only assembles them.  Heavy imports (torch, matplotlib) happen inside the command functions so
`mdesc --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Command-line modules, each exposing `register(subparsers)`; a command sets
# `func=callable(args) -> int` with `parser.set_defaults(func=...)`.
COMMAND_MODULES = (
    "mdesc.core.cli",
    "mdesc.descent.cli",
    "mdesc.glassy.cli",
    "mdesc.trajectories.cli",
    "mdesc.anyrun.cli",
)


def _import(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if not (name == e.name or name.startswith(f"{e.name}.")):
            raise  # a missing dependency inside the module: a real error
    return None  # that study is not installed in this build


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdesc",
        description="Training dynamics as a dynamical system: Lyapunov spectra of LSTMs, "
        "order/chaos phases across checkpoints (multiple descents), glassy dynamics, "
        "and chaos of the training map.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = _import(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"mdesc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmdesc {args.command}: interrupted; completed results are saved, "
              "run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
