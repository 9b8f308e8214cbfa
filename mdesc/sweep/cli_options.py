"""The engine's command-line options, generated from its settings dataclasses.

Every command that runs the engine (``mdesc descent sweep|report|run|pool``, ``mdesc
analyse-run``) adds its options from :class:`~mdesc.sweep.SweepSettings`,
:class:`~mdesc.sweep.PhaseSettings` and :class:`~mdesc.sweep.RunDescription` through
:mod:`mdesc.options`, so each default exists once, in the dataclass; a command's preset is an
override dict applied between the dataclass defaults and what the user typed.  A command may
spell a flag its own way (``mdesc descent`` keeps ``--sweep-seed``, ``--spectrum-k`` and
``--lyapunov-warmup``: its ``--seed`` seeds the training); the value still goes to the one
field.
"""
from __future__ import annotations

import argparse
from typing import Any, Mapping

from mdesc.options import add_options, cli_fields, from_args, given_options
from mdesc.sweep.phases import PhaseSettings
from mdesc.sweep.settings import RunDescription, SweepSettings

PHASE_PREFIX = "phase_"
DESCRIPTION_PREFIX = "describe_"


def add_sweep_options(parser, *, flags: Mapping[str, str] | None = None,
                      exclude=(), defaults: Mapping[str, Any] | None = None) -> None:
    """One option per :class:`SweepSettings` field (``exclude`` left out); ``flags`` respells
    some (``{"seed": "--sweep-seed"}``); ``defaults`` are the defaults to show where the
    command's preset replaces the dataclass's."""
    add_options(parser, SweepSettings, exclude=exclude, defaults=defaults, flags=flags)


def cli_names(exclude=()) -> list[str]:
    """The SweepSettings fields that are command-line options, in order."""
    return [f.name for f in cli_fields(SweepSettings) if f.name not in set(exclude)]


def sweep_settings_from_args(args: argparse.Namespace,
                             overrides: Mapping[str, Any] | None = None) -> SweepSettings:
    """The dataclass defaults, then ``overrides`` (the command's preset), then the flags."""
    return from_args(SweepSettings, args, overrides=overrides)


def given_sweep_options(args: argparse.Namespace) -> dict[str, Any]:
    return given_options(SweepSettings, args)


def add_phase_options(parser) -> None:
    """``--distance-margin``, ``--measure``, ... (one per :class:`PhaseSettings` field on the
    command line); an option not given leaves no attribute (the setting's default applies)."""
    add_options(parser, PhaseSettings, dest_prefix=PHASE_PREFIX)


def phase_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The phase settings given on the command line, as keyword overrides for
    :func:`mdesc.sweep.analyse` / :func:`mdesc.sweep.write_report`."""
    return given_options(PhaseSettings, args, dest_prefix=PHASE_PREFIX)


def add_description_options(parser) -> None:
    """``--run-name``, ``--task``, ``--loss-name``, ``--probe-name``, ``--sample-name``."""
    add_options(parser, RunDescription, dest_prefix=DESCRIPTION_PREFIX)


def description_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The description fields given on the command line (the rest: RunDescription's)."""
    return given_options(RunDescription, args, dest_prefix=DESCRIPTION_PREFIX)
