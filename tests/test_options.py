"""Command-line options generated from settings dataclasses (mdesc.options)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from mdesc.options import HelpFormatter, add_options, from_args, given_options, option


@dataclass(frozen=True)
class Settings:
    samples: int = option(200, "sequences per checkpoint", metavar="N")
    rate: float = option(0.5, "a rate")
    twins: str = option("both", "which twins", choices=("both", "drive_end", "start"))
    mode: Literal["a", "b"] = option("a", "a mode")
    seeds: tuple[int, ...] = option((0,), "seeds")
    dtype: str | None = option(None, "precision", default_help="the core's choice")
    progress: bool = option(True, "progress bars")
    seed: int = option(0, "the seed", flag="--sweep-seed")
    hidden: int = option(3, "not an option", cli=False)
    out: str = option(help="output folder", kw_only=True)


def _parser(**kw):
    p = argparse.ArgumentParser(prog="x", formatter_class=HelpFormatter)
    add_options(p, Settings, **kw)
    return p


def test_defaults_live_in_the_dataclass_and_are_shown_once():
    text = _parser().format_help()
    assert "sequences per checkpoint [default: 200]" in text
    assert "[default: the core's choice]" in text and "(default:" not in text
    assert "--hidden" not in text and "--sweep-seed" in text and "--no-progress" in text
    assert "[default: 500]" in _parser(defaults={"samples": 500}).format_help()
    assert "[default: float64]" in _parser(defaults={"dtype": "float64"}).format_help()


def test_types_choices_and_lists_come_from_annotations():
    p = _parser()
    a = p.parse_args(["--out", "o", "--samples", "7", "--rate", "0.25", "--seeds", "1", "2",
                      "--mode", "b", "--no-progress", "--sweep-seed", "3"])
    s = from_args(Settings, a)
    assert s == Settings(samples=7, rate=0.25, seeds=(1, 2), mode="b", progress=False, seed=3,
                         out="o")
    for bad in (["--out", "o", "--samples", "x"], ["--out", "o", "--mode", "c"],
                ["--out", "o", "--twins", "neither"], []):
        with pytest.raises(SystemExit):
            p.parse_args(bad)


def test_not_given_is_not_the_default_so_presets_apply_between():
    a = _parser().parse_args(["--out", "o", "--samples", "200"])
    assert given_options(Settings, a) == {"samples": 200, "out": "o"}
    s = from_args(Settings, a, overrides={"samples": 500, "rate": 0.1})
    assert (s.samples, s.rate) == (200, 0.1)   # typed beats preset; preset beats default
    base = Settings(out="b", seed=9)
    assert from_args(Settings, _parser().parse_args(["--out", "o"]), base=base).seed == 9
    assert from_args(Settings, _parser().parse_args(["--out", "o"]), dtype="float64").dtype == "float64"


def test_a_command_may_respell_a_flag():
    p = argparse.ArgumentParser()
    add_options(p, Settings, flags={"samples": "--reviews"})
    a = p.parse_args(["--out", "o", "--reviews", "5"])
    assert from_args(Settings, a).samples == 5 and "--samples" not in p.format_help()


def test_only_exclude_and_prefix():
    p = argparse.ArgumentParser()
    dests = add_options(p, Settings, only=("samples", "seed"), dest_prefix="s_")
    assert dests == ["s_samples", "s_seed"]
    a = p.parse_args(["--samples", "3"])
    assert a.s_samples == 3 and not hasattr(a, "s_seed")
    assert given_options(Settings, a, dest_prefix="s_") == {"samples": 3}
    assert "--sweep-seed SEED" in p.format_help() and "S_SEED" not in p.format_help()
