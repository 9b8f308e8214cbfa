"""What a sweep measures (:class:`SweepSettings`) and what the run is (:class:`RunDescription`).

One settings class for every run that goes through the engine: the multiple-descent study's
run folders (:mod:`mdesc.descent.sweep`) and any run's checkpoints or a monitored training
loop (:mod:`mdesc.anyrun`).  Its recorded form (:func:`recorded_settings`) is what a resumed
sweep is checked against; settings files written before the engine existed are read through
:func:`upgrade_recorded` (conventions: docs/conventions.md; protocol: docs/multiple_descent.md).
Torch-free.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from mdesc.errors import UserError
from mdesc.options import option

WINDOWS = ("zero_input", "all")
DRIVES = ("padded", "own_length")
TWINS = ("drive_end", "start")
DTYPES = ("float32", "float64")
LOG_DISTANCE_FLOOR = -15.0  # ln(e^-15): D~ at this value means every sequence converged (order)


class SweepSettingsError(UserError):
    """Bad sweep settings; the message says what to change."""


def _twins_word(value: str) -> tuple:
    """``--twins both|drive_end|start`` -> the twins to run."""
    if value == "both":
        return TWINS
    if value in TWINS:
        return (value,)
    raise ValueError(f"--twins must be both, drive_end or start, got {value!r}")


@dataclass
class SweepSettings:
    """How every checkpoint is measured (recorded with the sweep; a resumed sweep must match).

    n_samples:        probe sequences analysed: a seeded subset of this many (None: all).
    zero_input_steps: zero-input steps after the drive (paper: 1100 after a 500-step drive).
    total_steps:      the run length in all instead (drive + zero input; study 1's
                      ``--total-steps``, paper 1600): when set, ``zero_input_steps`` is
                      ``total_steps`` minus the drive length.
    perturbation:     standard deviation of the twins' Gaussian perturbation of h.
    k:                Lyapunov exponents per sequence (1: lambda_1 only).
    qr_every:         re-orthonormalisation interval (None: the core's default).
    seed:             seeds the subset, the perturbation and the initial tangent frame.
    twins:            where twins are perturbed, the first is the primary D~: "drive_end"
                      (where the zero input begins) and/or "start" (t = 0).
    window:           steps counted for lambda_1: "zero_input" (each sequence's zero-input
                      phase; the drive's exponent is recorded beside) or "all" (drive + zero
                      input, as sweeps before issue 10 did).
    warmup:           uncounted steps at the start of the counted window.
    drive:            where each drive ends: "own_length" (each sequence's own length, exact),
                      "padded" (the probe's full padded length for every sequence: one drive,
                      the paper's "500 driven steps"; a shorter sequence's padding is then its
                      input), or None: the run's choice (study 1: padded; any run: own_length).
    distance_dtype:   precision of the twin runs (float64: the plain twin; float32: an LSTM's
                      twin carries the difference itself, exact on the floor).
    lyapunov_dtype:   precision of the tangent runs (renormalised: float32 is accurate).
    chunk:            checkpoints per call of the core (memory vs speed; may change on resume).
    every:            measure only steps divisible by this (a coarse first pass).
    """

    n_samples: int | None = option(None, "probe sequences analysed per checkpoint: a seeded "
                                   "subset (paper: 500 test reviews)", flag="--samples",
                                   metavar="N", default_help="all")
    zero_input_steps: int = option(1100, "zero-input steps after each drive (paper: 1100 "
                                   "after 500)", metavar="N")
    total_steps: int | None = option(None, "steps per run in all instead: the drive, then zero "
                                     "input (paper: 500 + 1100)", metavar="N",
                                     default_help="drive + --zero-input-steps")
    perturbation: float = option(1e-6, "std of the twins' Gaussian perturbation of h",
                                 metavar="X")
    k: int = option(1, "Lyapunov exponents per sequence (1 = the largest)", metavar="K")
    qr_every: int | None = option(None, "re-orthonormalisation interval of the tangent vectors",
                                  metavar="N", default_help="the core's: 10 for k = 1, else 5")
    seed: int = option(0, "seeds the sequence subset, the perturbation and the tangent frame")
    twins: tuple = option(TWINS, "which twins of the finite-perturbation test to run: "
                          "perturbed where the zero input begins (drive_end, the primary D~), "
                          "at t = 0 (start), or both", type=_twins_word,
                          nargs="?", metavar="{both,drive_end,start}", default_help="both")
    window: str = option("zero_input", "steps counted for lambda_1: the zero-input phase (the "
                         "drive's exponent is recorded beside) or all steps (drive + zero "
                         "input, as sweeps before issue 10 did)", choices=WINDOWS,
                         flag="--lyapunov-window")
    warmup: int = option(0, "uncounted steps at the start of the counted window", metavar="N")
    drive: str | None = option(None, "where each drive ends: after each sequence's own length "
                               "(exact) or after the probe's padded length for every sequence "
                               "(one drive, the paper's 500 driven steps)", choices=DRIVES,
                               default_help="the run's: study 1 padded, any run own_length")
    distance_dtype: str = option("float64", "precision of the runs behind D~ (float32: an "
                                 "LSTM's twin carries the difference itself, exact on the "
                                 "floor)", choices=DTYPES)
    lyapunov_dtype: str = option("float32", "precision of the tangent runs", choices=DTYPES)
    chunk: int = option(4, "checkpoints per call of the compiled core (memory vs speed)",
                        metavar="N")
    every: int = option(1, "analyse only steps divisible by EVERY (a coarse first pass; a "
                        "later sweep with a smaller value fills in the rest)", metavar="EVERY")

    def __post_init__(self):
        self.twins = tuple(self.twins)

    def check(self, drive_steps: int | None = None) -> "SweepSettings":
        """Raise SweepSettingsError saying what to change; returns self."""
        def at_least(name, minimum=1, optional=False):
            v = getattr(self, name)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
                raise SweepSettingsError(f"{flag_of(name)} must be at least {minimum}, got {v!r}")

        at_least("n_samples", 2, optional=True)  # a standard error needs two sequences
        at_least("zero_input_steps")
        at_least("total_steps", optional=True)
        for name in ("k", "chunk", "every"):
            at_least(name)
        at_least("qr_every", optional=True)
        at_least("warmup", 0)
        if not (isinstance(self.perturbation, (int, float)) and math.isfinite(self.perturbation)
                and self.perturbation > 0):
            raise SweepSettingsError(f"{flag_of('perturbation')} must be positive, got {self.perturbation}")
        for name in ("distance_dtype", "lyapunov_dtype"):
            if getattr(self, name) not in DTYPES:
                raise SweepSettingsError(f"{name} must be float32 or float64, got "
                                         f"{getattr(self, name)!r}")
        if self.window not in WINDOWS:
            raise SweepSettingsError(f"{flag_of('window')} must be one of {', '.join(WINDOWS)}, got "
                                     f"{self.window!r}")
        if not self.twins or any(t not in TWINS for t in self.twins) or \
                len(set(self.twins)) != len(self.twins):
            raise SweepSettingsError(f"twins must be a non-empty list from {TWINS}, got "
                                     f"{list(self.twins)!r}")
        if self.drive is not None and self.drive not in DRIVES:
            raise SweepSettingsError(f"{flag_of('drive')} must be one of {', '.join(DRIVES)}, got "
                                     f"{self.drive!r}")
        if drive_steps is not None:
            self._check_length(drive_steps)
        return self

    def _check_length(self, drive_steps: int) -> None:
        if self.total_steps is not None and self.total_steps <= drive_steps:
            raise SweepSettingsError(
                f"--total-steps ({self.total_steps}) must exceed the drive length, i.e. "
                f"the run's --max-len ({drive_steps}); raise --total-steps")
        zero = self.zero_steps(drive_steps)
        if self.window == "zero_input" and zero <= self.warmup:
            raise SweepSettingsError(
                f"{flag_of('warmup')} ({self.warmup}) leaves no counted zero-input step after a "
                f"{drive_steps}-step drive and {zero} zero-input steps")

    def zero_steps(self, drive_steps: int) -> int:
        """The zero-input steps after a ``drive_steps``-step drive (the one place
        ``total_steps`` becomes ``zero_input_steps``)."""
        if self.total_steps is not None:
            return int(self.total_steps) - int(drive_steps)
        return int(self.zero_input_steps)

    def replace(self, **changes: Any) -> "SweepSettings":
        return SweepSettings(**{**asdict(self), **changes})


def flag_of(name: str) -> str:
    """The command-line flag of a SweepSettings field (for messages)."""
    f = {f.name: f for f in fields(SweepSettings)}[name]
    return (f.metadata.get("mdesc.option") or {}).get("flag") or "--" + name.replace("_", "-")


# Fields that decide only how much is done per call: they may change when a sweep resumes.
MUTABLE = ("chunk", "every")


def recorded_settings(settings: SweepSettings, drive_steps: int, sample_index,
                      drive: str, **source: Any) -> dict:
    """The settings a store records (and a resumed sweep must match): every measuring field,
    resolved (``zero_input_steps`` after this drive, ``drive``), the analysed sequences and
    what the source adds (e.g. the probe's checksum and the parameter shapes)."""
    out = {f.name: getattr(settings, f.name) for f in fields(SweepSettings)
           if f.name not in MUTABLE}
    out.update(twins=list(settings.twins), drive=drive, drive_steps=int(drive_steps),
               zero_input_steps=settings.zero_steps(drive_steps),
               sample_index=[int(i) for i in sample_index])
    if out["total_steps"] is None:
        out.pop("total_steps")
    out.update(source)
    return out


# Defaults of sweeps recorded before a field existed (their meaning then).
LEGACY = {"window": "all", "twins": ["start"], "warmup": 0, "drive": "own_length"}


def upgrade_recorded(stored: Mapping[str, Any]) -> dict:
    """A settings file of any mdesc version in the current form: study-1 sweeps before issue
    10 (no ``window``/``twins``: lambda_1 over all steps, one twin at t = 0), study-1 sweeps
    that named the warmup ``lyapunov_warmup``, and any-run stores (``warmup`` and
    ``lyapunov_warmup`` both, no ``n_samples`` or ``drive``, ``chunk`` among the settings)."""
    out = dict(stored)
    any_run = "probe" in out
    if "lyapunov_warmup" in out:
        out.setdefault("warmup", out["lyapunov_warmup"])
        del out["lyapunov_warmup"]
    for name in MUTABLE:
        out.pop(name, None)
    if any_run:
        out.setdefault("n_samples", None)
        out.setdefault("drive", "own_length")
        out.setdefault("window", "zero_input")
    out = {**LEGACY, **out}
    out["twins"] = list(out["twins"])
    return out


def select_samples(n_total: int, n_samples: int | None, seed: int) -> np.ndarray:
    """Sorted indices of the probe sequences analysed: a seeded subset of min(n, n_total)
    (None: all of them)."""
    if n_samples is None:
        return np.arange(n_total, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_total)[: min(n_samples, n_total)]).astype(np.int64)


@dataclass
class RunDescription:
    """What the run is, in words: the report, figures and claims speak of it.

    Recorded beside the sweep's settings (``sweep/description.json``; changing it never
    refuses a resume).  Study 1 describes itself (:data:`mdesc.descent.sweep.DESCRIPTION`);
    any run says what it knows.

    name:     the run (or seed) name shown in titles (default: the folder's name).
    task:     what the model was trained to do, e.g. "sentiment classification".
    loss:     the loss, e.g. "binary cross-entropy" (shown as "loss (<loss>, nats)").
    probe:    the probe inputs, plural, e.g. "test reviews".
    sample:   one probe input, e.g. "review".
    metric:   the held-out loss of the metrics (the table's ``test_loss``), e.g. "test loss"
              or "validation loss"; the report says it wherever it names that loss.
    axis:     the training axis, e.g. "epoch" or "step".
    accuracy: whether the run has accuracies (test_acc) to report.
    title:    the report's heading.
    """

    name: str = option("", "the run's name in the report's titles", flag="--run-name",
                       default_help="the output folder's name")
    task: str = option("any training run", "what the model was trained to do, for the report",
                       metavar="TEXT")
    loss: str = option("training loss", "the loss's name, for the report (e.g. "
                       "'cross-entropy')", flag="--loss-name", metavar="TEXT")
    probe: str = option("probe sequences", "what the probe inputs are, plural, for the report",
                        flag="--probe-name", metavar="TEXT")
    sample: str = option("sequence", "one probe input, for the report", flag="--sample-name",
                         metavar="TEXT")
    metric: str = option("test loss", "what the metrics' held-out loss is, for the report "
                         "(e.g. 'validation loss'; a val_loss column says so itself)",
                         flag="--metric-name", metavar="TEXT")
    axis: str = option("epoch", "the training axis", cli=False)
    accuracy: bool = option(False, "whether the run has accuracies", cli=False)
    title: str = option("Order–chaos transitions along training", "the report's heading",
                        cli=False)
    extra: dict = option(help="more about the run", default_factory=dict, cli=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "RunDescription":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(d or {}).items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    def words(self, text: str) -> str:
        """``text`` with "test loss" (and "test-loss", capitalised or not) said as this run's
        ``metric``: the report's wording of the held-out loss."""
        m = self.metric or "test loss"
        for old, new in (("test loss", m), ("test-loss", m.replace(" ", "-"))):
            text = text.replace(old, new).replace(old.capitalize(), new[:1].upper() + new[1:])
        return text
