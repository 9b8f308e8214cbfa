"""The sweep's store (one record per checkpoint, resumable) and the run table read from it.

Layout, the same for a study-1 run folder, an ``mdesc analyse-run`` output and a
``StabilityMonitor`` folder (everything written atomically through :mod:`mdesc.store`)::

    ROOT/sweep/settings.json      the measurement settings (mdesc.sweep.settings.recorded_settings)
    ROOT/sweep/description.json   what the run is, in words (mdesc.sweep.RunDescription)
    ROOT/sweep/epoch_NNNN.json    one record per checkpoint (NNNN: the training-axis value)
    ROOT/sweep/skipped.json       the checkpoints left out as unreadable (the report lists them)
    ROOT/skipped/epoch_NNNN.json  one such checkpoint with the reason (one file each: rank-safe)
    ROOT/report/                  the report (mdesc.sweep.report.write_report)

A record that is missing, unreadable or inconsistent with the settings is recomputed by the next
sweep; :func:`load_table` names and ignores it.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mdesc import store
from mdesc.sweep.settings import (LEGACY, MUTABLE, RunDescription, SweepSettingsError,
                                  upgrade_recorded)

RECORDS = "sweep"
SKIPPED = "skipped"
SKIPPED_FILE = "skipped.json"
DESCRIPTION_FILE = "description.json"
RECORD_RE = re.compile(r"^epoch_(\d{4,})\.json$")

# Scalar per-checkpoint columns of the run table (float64, NaN where unknown).
SCALAR_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc", "log_distance",
               "lyapunov_max", "lyapunov_stderr", "nonfinite_fraction")
EXTRA_SCALAR_KEYS = ("log_distance_drive_end", "log_distance_start", "n_collapsed_start",
                     "lyapunov_max_driven", "lyapunov_stderr_driven", "seconds",
                     "param_change", "param_change_relative", "previous_epoch",
                     "nonfinite_weights")
# Per-sequence columns (C, S) of the run table.
SAMPLE_KEYS = ("reduced_sum", "distance", "lyapunov")
EXTRA_SAMPLE_KEYS = ("distance_drive_end", "distance_start", "collapsed_start",
                     "lyapunov_driven")


class SweepSettingsMismatch(SweepSettingsError, store.SettingsMismatch):
    """The settings asked for differ from those the store was made with (says which)."""


class NoRecordsError(store.StoreError, FileNotFoundError):
    """A store without a sweep record yet (:func:`load_table`): says the folder and the command
    that makes records.  Still a FileNotFoundError, as before it was a UserError."""


def record_key(step: int) -> str:
    return f"epoch_{int(step):04d}"


def valid_record(rec: Any, step: int, sample_index=None) -> bool:
    """A record is used (not recomputed) only if it has every key, the right step and
    consistent lengths, and analysed the settings' sequences."""
    if not isinstance(rec, dict) or rec.get("epoch") != step:
        return False
    need = ("sample_index", "lyapunov_spectrum") + SAMPLE_KEYS + SCALAR_KEYS
    if any(k not in rec for k in need):
        return False
    if sample_index is not None and list(rec["sample_index"]) != list(sample_index):
        return False
    s = len(rec["sample_index"])
    return all(isinstance(rec[k], list) and len(rec[k]) == s for k in SAMPLE_KEYS)


class SweepStore:
    """The sweep's files under ``root`` (see the module doc)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.folder = store.RunFolder(self.root)
        self.sweep_dir = self.root / RECORDS
        self.settings_path = self.sweep_dir / store.SETTINGS_FILE

    def exists(self) -> bool:
        return self.settings_path.is_file()

    def settings(self) -> dict:
        """The recorded settings in the current form (older files upgraded); LEGACY if none."""
        if not self.exists():
            return dict(LEGACY)
        return upgrade_recorded(store.read_json(self.settings_path))

    def open(self, wanted: Mapping[str, Any]) -> dict:
        """Record ``wanted``, or check it against the settings already recorded (the one
        settings check: a SweepSettingsError says which fields differ).

        A store that holds settings but no record yet (an earlier attempt that stopped before
        measuring anything) is started afresh with ``wanted``: only records are protected, so
        a failed first run never locks its folder."""
        if self.exists() and not self.steps():
            self.forget_skipped()
        elif self.exists():
            have = self.settings()
            try:
                store.check_settings(self.sweep_dir, have, wanted, ignore=MUTABLE)
            except store.SettingsMismatch as e:
                raise SweepSettingsMismatch(str(e)) from None
            return have
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(self.settings_path, dict(wanted))
        return store.to_json(dict(wanted))

    def forget_skipped(self) -> None:
        """Drop the skipped-checkpoint files (those of an attempt that recorded nothing)."""
        for stale in [*(self.root / SKIPPED).glob("*.json"), self.sweep_dir / SKIPPED_FILE]:
            if stale.is_file():
                stale.unlink()

    # the run's description ------------------------------------------------------------------
    def description(self) -> RunDescription | None:
        path = self.sweep_dir / DESCRIPTION_FILE
        return RunDescription.from_dict(store.read_json(path)) if path.is_file() else None

    def write_description(self, description: RunDescription) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        store.write_json(self.sweep_dir / DESCRIPTION_FILE, description.to_dict())

    # records --------------------------------------------------------------------------------
    def record_path(self, step: int) -> Path:
        return self.sweep_dir / f"{record_key(step)}.json"

    def steps(self) -> list[tuple[int, Path]]:
        """``[(step, path)]`` of the record files, sorted by step."""
        if not self.sweep_dir.is_dir():
            return []
        return sorted((int(m.group(1)), self.sweep_dir / n) for n in os.listdir(self.sweep_dir)
                      if (m := RECORD_RE.match(n)))

    def read(self, step: int) -> Any:
        """A record, or None if it is missing or unreadable (it is then recomputed)."""
        path = self.record_path(step)
        if not path.is_file():
            return None
        try:
            return store.read_json(path)
        except (store.StoreError, OSError):
            return None

    def has(self, step: int, sample_index=None) -> bool:
        return valid_record(self.read(step), step, sample_index)

    def records(self) -> dict[int, dict]:
        """``{step: record}`` of every readable record, sorted by step."""
        out = {}
        for step, _ in self.steps():
            rec = self.read(step)
            if rec is not None:
                out[step] = rec
        return out

    def write(self, step: int, record: Mapping[str, Any]) -> None:
        self.folder.write_record(RECORDS, record_key(step), dict(record))
        bad = self.folder.path(SKIPPED, record_key(step) + ".json")
        if bad.is_file():  # it reads now: no longer skipped
            bad.unlink()

    # skipped checkpoints --------------------------------------------------------------------
    def skip(self, step: int, path: str, reason: str) -> None:
        self.folder.write_record(SKIPPED, record_key(step),
                                 {"step": step, "checkpoint": str(path), "reason": reason})

    def skipped(self) -> list[dict]:
        """The skipped checkpoints that still have no record, by step."""
        out = []
        for key, rec in sorted(self.folder.records(SKIPPED).items()):
            m = re.match(r"^epoch_(\d+)$", key)
            if m and not self.record_path(int(m.group(1))).is_file():
                out.append(rec)
        return out

    def write_skipped_list(self) -> None:
        """``sweep/skipped.json``: the paths of the skipped checkpoints without a record (a
        list kept by sweeps before the per-checkpoint files is carried over)."""
        path = self.sweep_dir / SKIPPED_FILE
        old = store.read_json(path) if path.is_file() else []
        listed = {r["checkpoint"]: r["step"] for r in self.skipped()}
        for p in old:  # older sweeps: plain paths, epoch in the file name
            m = re.match(r"^epoch_(\d+)", Path(p).name)
            if m and not self.record_path(int(m.group(1))).is_file():
                listed.setdefault(p, int(m.group(1)))
        keep = sorted(listed, key=lambda p: (listed[p], p))
        if keep or path.is_file():
            store.write_json(path, keep)


def _as_float(v) -> float:
    return float("nan") if v is None else float(v)


# the commands that make a store's records (named when a store has none)
MAKERS = ("`mdesc descent sweep --run-dir RUN` (a study-1 run), `mdesc analyse-run CHECKPOINTS "
          "--out OUT` (any run's checkpoints) or a StabilityMonitor")


def load_table(root: str | os.PathLike, say: Callable[[str], None] | None = None,
               what: str | None = None) -> dict[str, Any]:
    """Read a store's records as the *run table*: one row per analysed checkpoint.

    Rows are the checkpoints with a valid record, sorted by the training axis (``epoch``; a
    sweep in progress gives fewer rows).  C rows, S probe sequences, k exponents.  Keys (numpy
    arrays): ``epoch`` (C,) int64; ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``
    (C,); ``log_distance`` (C,) the primary D~ (the first of the settings' ``twins``);
    ``log_distance_drive_end``, ``log_distance_start`` (C,) each twin's D~ (NaN if not run);
    ``n_collapsed_start`` (C,); ``lyapunov_max``, ``lyapunov_stderr`` (C,) mean lambda_1 over
    sequences over the settings' ``window`` and its standard error; ``lyapunov_max_driven``,
    ``lyapunov_stderr_driven`` (C,) the drive's exponent (NaN for window "all");
    ``nonfinite_fraction``, ``seconds`` (C,); ``nonfinite_weights`` (C,) 1 where the
    checkpoint's weights hold NaN or inf (not measured, labelled unknown), else NaN;
    ``reduced_sum``, ``distance``,
    ``distance_drive_end``, ``distance_start``, ``collapsed_start`` (0/1), ``lyapunov``,
    ``lyapunov_driven`` (C, S); ``lyapunov_spectrum`` (C, k); ``sample_index`` (S,).
    ``table["settings"]`` is the recorded settings (a dict, with the run's description under
    ``"description"`` when one was recorded: :func:`table_description`) and
    ``table["skipped"]`` the checkpoints left out as unreadable.  Unreadable or inconsistent records
    are ignored (named through ``say``) and recomputed by the next sweep.  A store without a
    valid record is a :class:`NoRecordsError` naming the folder and ``what`` makes records
    (default: the commands that do).
    """
    st = SweepStore(root)
    settings = st.settings()
    sample_index = settings.get("sample_index")
    records = []
    for step, path in st.steps():
        rec = st.read(step)
        if not valid_record(rec, step, sample_index):
            if say is not None:
                say(f"ignoring unreadable or inconsistent sweep record {path}; "
                    f"{what or 'the next sweep'} recomputes it")
            continue
        records.append(rec)
    if not records:
        raise NoRecordsError(
            f"{st.root} has no sweep records yet (expected {st.sweep_dir}/epoch_NNNN.json); "
            f"run {what or MAKERS} first to make them")
    return _columns(records, settings, st)


def _columns(records: list[dict], settings: dict, st: SweepStore) -> dict[str, Any]:
    primary = settings["twins"][0]
    table: dict = {"epoch": np.array([r["epoch"] for r in records], dtype=np.int64)}
    for key in SCALAR_KEYS + EXTRA_SCALAR_KEYS:
        table[key] = np.array([_as_float(r.get(key)) for r in records], dtype=np.float64)
    if np.all(np.isnan(table[f"log_distance_{primary}"])):  # legacy: only the primary
        table[f"log_distance_{primary}"] = table["log_distance"].copy()
    s = len(records[0]["sample_index"])
    for key in SAMPLE_KEYS + EXTRA_SAMPLE_KEYS:
        table[key] = np.array([[_as_float(v) for v in r[key]] if key in r else [math.nan] * s
                               for r in records], dtype=np.float64)
    if np.all(np.isnan(table[f"distance_{primary}"])):
        table[f"distance_{primary}"] = table["distance"].copy()
    table["lyapunov_spectrum"] = np.array(
        [[_as_float(v) for v in r["lyapunov_spectrum"]] for r in records], dtype=np.float64)
    table["sample_index"] = np.asarray(records[0]["sample_index"], dtype=np.int64)
    d = st.description()
    table["settings"] = {**settings, "description": d.to_dict()} if d is not None else settings
    skipped = st.sweep_dir / SKIPPED_FILE
    table["skipped"] = store.read_json(skipped) if skipped.is_file() else []
    return table


def table_description(table: Mapping[str, Any]) -> RunDescription | None:
    """The run's description recorded with a table's settings (None if none was)."""
    d = (table.get("settings") or {}).get("description")
    return RunDescription.from_dict(d) if d is not None else None
