"""Command-line options generated from settings dataclasses, so each default exists once.

A settings dataclass declares every option where its default lives::

    @dataclass(frozen=True)
    class SweepSettings:
        samples: int = option(200, "test sequences analysed per checkpoint")
        qr_every: int = option(10, "re-orthonormalisation interval", metavar="N")
        twins: str = option("both", "which twins to run", choices=("both", "drive_end", "start"))
        seed: int = option(0, "seeds the sample and the frame", flag="--sweep-seed")

    add_options(parser, SweepSettings)          # --samples N [default: 200] ...
    settings = from_args(SweepSettings, args)   # defaults <- overrides <- what the user typed

Options not typed on the command line leave no attribute on the namespace (``argparse.SUPPRESS``),
so :func:`from_args` can tell "not given" from "given the default" and apply presets in between.
The type of each option comes from the field's annotation: ``int``, ``float``, ``str``, ``bool``
(``--flag`` / ``--no-flag``), ``X | None``, ``Literal[...]`` (choices), ``tuple[X, ...]`` or
``list[X]`` (one or more values).  This module imports neither torch nor numpy.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable, Mapping

__all__ = ["option", "add_options", "cli_fields", "from_args", "given_options", "HelpFormatter"]

_KEY = "mdesc.option"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; option help states its default itself (once)."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           choices: Iterable[Any] | None = None, metavar: str | None = None,
           type: Callable[[str], Any] | None = None, nargs: str | int | None = None,
           default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
           default_help: str | None = None, cli: bool = True, **field_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line option.

    ``flag`` overrides the option string (default ``--field-name``); ``type``/``nargs`` override
    what the annotation implies; ``default_help`` replaces the shown default (e.g. "the core's
    choice" for a ``None`` default); ``cli=False`` keeps the field off the command line.
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
            "metavar": metavar, "type": type, "nargs": nargs, "default_help": default_help,
            "cli": cli}
    metadata = dict(field_kwargs.pop("metadata", {}) or {}, **{_KEY: meta})
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, **field_kwargs)
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


def _meta(f: dataclasses.Field) -> dict[str, Any]:
    return f.metadata.get(_KEY) or {"help": "", "flag": None, "choices": None, "metavar": None,
                                    "type": None, "nargs": None, "default_help": None, "cli": True}


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _argument_kwargs(tp: Any, meta: Mapping[str, Any]) -> dict[str, Any]:
    """argparse keywords (type, nargs, choices, action) implied by a field's annotation."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    kw: dict[str, Any] = {}
    if tp is bool:
        kw["action"] = argparse.BooleanOptionalAction
    elif origin is typing.Literal:
        kw["choices"] = typing.get_args(tp)
        kw["type"] = type(typing.get_args(tp)[0])
    elif origin in (tuple, list, typing.Sequence) or tp in (tuple, list):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kw["nargs"] = "+"
        kw["type"] = _strip_optional(inner[0]) if inner else str
    elif tp in (int, float, str):
        kw["type"] = tp
    if meta.get("type") is not None:
        kw["type"] = meta["type"]
    if meta.get("nargs") is not None:
        kw["nargs"] = meta["nargs"]
    if meta.get("choices") is not None:
        kw["choices"] = meta["choices"]
    if meta.get("metavar") is not None:
        kw["metavar"] = meta["metavar"]
    if kw.get("action") is not None:
        kw.pop("type", None)
    return kw


def _shown_default(f: dataclasses.Field, meta: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    if f.name in defaults:  # a command's preset replaces the dataclass default
        value = defaults[f.name]
    elif meta.get("default_help") is not None:
        return meta["default_help"]
    elif f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return None
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options."""
    return [f for f in dataclasses.fields(cls) if f.init and _meta(f).get("cli", True)]


def add_options(parser: argparse.ArgumentParser | Any, cls: type, *, only: Iterable[str] | None = None,
                exclude: Iterable[str] = (), dest_prefix: str = "",
                defaults: Mapping[str, Any] | None = None,
                flags: Mapping[str, str] | None = None) -> list[str]:
    """Add one option per field of the settings dataclass ``cls`` to ``parser`` (or a group).

    ``only``/``exclude`` select fields by name; ``dest_prefix`` keeps two classes' fields apart on
    one namespace; ``defaults`` are the values to *show* in the help where a command's preset
    replaces the dataclass default; ``flags`` respells some options for one command
    (``{"seed": "--sweep-seed"}``: the value still goes to the field).  A field without a default
    becomes a required option.  Returns the dests.
    """
    hints = typing.get_type_hints(cls)
    only = set(only) if only is not None else None
    exclude, defaults, dests = set(exclude), dict(defaults or {}), []
    for f in cli_fields(cls):
        if (only is not None and f.name not in only) or f.name in exclude:
            continue
        meta = _meta(f)
        kw = _argument_kwargs(hints[f.name], meta)
        shown = _shown_default(f, meta, defaults)
        required = shown is None and f.default is dataclasses.MISSING \
            and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
        text = meta.get("help") or ""
        if shown is not None and kw.get("action") is not argparse.BooleanOptionalAction:
            text = f"{text} [default: {shown}]".strip()
        elif kw.get("action") is argparse.BooleanOptionalAction:
            text = f"{text} [default: {'on' if shown == 'True' else 'off'}]".strip()
        dest = dest_prefix + f.name
        if "metavar" not in kw and "choices" not in kw and kw.get("action") is None:
            kw["metavar"] = f.name.upper()  # not the prefixed dest's
        flag = (flags or {}).get(f.name) or meta.get("flag") or "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=dest, help=text.replace("%", "%%"), required=required,
                            **({} if required else {"default": argparse.SUPPRESS}), **kw)
        dests.append(dest)
    return dests


def given_options(cls: type, args: argparse.Namespace, *, dest_prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user typed on the command line, ``{field: value}``."""
    out = {}
    for f in cli_fields(cls):
        if hasattr(args, dest_prefix + f.name):
            value = getattr(args, dest_prefix + f.name)
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out


def from_args(cls: type, args: argparse.Namespace, *, dest_prefix: str = "",
              overrides: Mapping[str, Any] | None = None, base: Any = None, **fixed: Any) -> Any:
    """Build ``cls`` from its defaults (or ``base``, an instance), then ``overrides`` (a preset),
    then the options given on the command line, then ``fixed`` (values the command sets itself)."""
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)
              if f.init and base is not None}
    values.update(overrides or {})
    values.update(given_options(cls, args, dest_prefix=dest_prefix))
    values.update(fixed)
    return cls(**values)
