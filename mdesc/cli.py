"""The `mdesc` command.

Each study builds its subcommands in its own command-line module (``mdesc/<study>/cli.py``, the
only places that build argparse parsers, from the studies' settings dataclasses through
:mod:`mdesc.options`).  This file is the one lazy place of the command line: it knows the
commands' names and one-line help without importing anything, and imports a study's module only
when one of its commands runs, so ``mdesc --help`` loads neither torch nor the extension.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from mdesc.errors import UserError

__all__ = ["COMMANDS", "ALIASES", "UserError", "build_parser", "main"]

# command -> (module that registers it with `register(subparsers)`, one-line help).  A module may
# register several commands (mdesc.descent.cli: `descent` and `run`); each command sets
# `func=callable(args) -> int` with `parser.set_defaults(func=...)`.
COMMANDS = {
    "gain-sweep": ("mdesc.core.cli",
                   "order-to-chaos transition of a random LSTM vs its weight gain (no data)"),
    "descent": ("mdesc.descent.cli",
                "multiple descents as order-chaos transitions (LSTM, sentiment)"),
    "run": ("mdesc.descent.cli", "multiple-descent study start to finish with quick defaults "
            "(= descent run; about 150 s of CPU time)"),
    "glassy": ("mdesc.glassy.cli",
               "glassy dynamics near the learnability transition (deep RNN, Bach chorales)"),
    "trajectories": ("mdesc.trajectories.cli", "chaos in training trajectories: Lyapunov "
                     "exponent of gradient descent vs learning rate"),
    "analyse-run": ("mdesc.anyrun.cli", "stability sweep + phase analysis + report of ANY run's "
                    "checkpoints (torchrun-able)"),
}
ALIASES = {"analyze-run": "analyse-run"}

DESCRIPTION = ("Training dynamics as a dynamical system: Lyapunov spectra of recurrent nets, "
               "order/chaos phases across checkpoints (multiple descents), glassy dynamics, "
               "and chaos of the training map.  `mdesc COMMAND --help` describes a command; "
               "--debug (anywhere) shows the traceback behind an error message.")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: with every command's real options when ``command`` names one, else the
    command list only (nothing imported)."""
    parser = argparse.ArgumentParser(prog="mdesc", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    command = ALIASES.get(command, command)
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).register(sub)
    else:
        for name, (_, text) in COMMANDS.items():
            aliases = [a for a, target in ALIASES.items() if target == name]
            sub.add_parser(name, help=text, aliases=aliases, add_help=False)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named on the command line (the first word not starting with '-')."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run ``mdesc ARGV``.  ``--debug`` (anywhere) shows the traceback of a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if debug:
            raise
        print(f"mdesc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmdesc {args.command}: interrupted; completed results are saved, "
              "run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
