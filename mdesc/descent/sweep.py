"""Study 1's stability sweep: the engine (:mod:`mdesc.sweep`) over a run folder's checkpoints.

The protocol (docs/multiple_descent.md; conventions: docs/conventions.md): each of S test
reviews (a seeded subset of the run's test split, the probe) drives the model for the run's
padded length ``max_len`` (or its own length, ``drive="own_length"``), then zero input follows
until ``total_steps`` steps in all (paper: 500 + 1100 = 1600).  Per checkpoint the engine
records lambda_1 over the zero-input window with the drive's exponent beside, D~ of both twins
(perturbed where the zero input begins, the primary, and at t = 0) and the reduced sums
(:mod:`mdesc.sweep.record`).  One record per checkpoint, ``run/sweep/epoch_NNNN.json``, written
atomically; a killed sweep resumes.  Checkpoints are read by :func:`mdesc.store.read_checkpoint`
(safetensors); one that cannot be read is skipped, named in one readable line (``say``) and
listed in ``run/sweep/skipped.json`` for the report.  Sweeps recorded before issue 10
(``window="all"``, one twin perturbed at t = 0) are still read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mdesc import store
from mdesc.descent.folder import CHECKPOINT_DIR, DescentRun
from mdesc.descent.model import build_model, resolve_device
from mdesc.descent.run import load_run_data, read_config
from mdesc.sweep import (LOG_DISTANCE_FLOOR, SAMPLE_KEYS, SCALAR_KEYS, Job, Probe,
                         RunDescription, SweepSettings, SweepSettingsError, SweepStore,
                         recorded_settings, select_jobs, select_samples, sweep_jobs)
from mdesc.sweep import load_table as _load_table
from mdesc.sweep import report as _report
from mdesc.sweep.table import record_key

# Study 1 in words (the report, figures and claims speak of the run through it).
DESCRIPTION = RunDescription(task="sentiment classification (LSTM)", loss="binary cross-entropy",
                             probe="test reviews", sample="test review", axis="epoch", accuracy=True,
                             title="Multiple descents and order–chaos transitions")

# Study 1's settings where they differ from the engine's defaults (a paper-length run; the
# command line's quick defaults and the paper preset are applied over these, in cli.py).
STUDY_SETTINGS = dict(n_samples=500, total_steps=1600, qr_every=10, drive="padded")


def study_settings(**given) -> SweepSettings:
    """Study 1's sweep settings: the engine's defaults, then STUDY_SETTINGS, then ``given``."""
    return SweepSettings(**{**STUDY_SETTINGS, **given})


def read_sweep_settings(run_dir: str | os.PathLike) -> dict:
    """The settings a run's sweep was made with (older files in the current form)."""
    return SweepStore(run_dir).settings()


def describe(run_dir: str | os.PathLike) -> RunDescription:
    """The run's description: the one recorded with its sweep, else study 1's (sweeps before
    the engine recorded none) named after the folder."""
    d = SweepStore(run_dir).description()
    return d or RunDescription(**{**DESCRIPTION.to_dict(), "name": Path(run_dir).name})


def load_table(run_dir: str | os.PathLike, say: Callable[[str], None] | None = None) -> dict:
    """The run table of a run folder's sweep (:func:`mdesc.sweep.load_table`), described as
    study 1 describes its runs."""
    table = _load_table(run_dir, say=say, what=f"`mdesc descent sweep --run-dir {run_dir}`")
    table["settings"] = {**table["settings"], "description": describe(run_dir).to_dict()}
    return table


def write_report(run_dir: str | os.PathLike, table=None, analysis=None, out_dir=None,
                 **phase_settings) -> Path:
    """The engine's report (:func:`mdesc.sweep.write_report`) of a run folder, in study 1's
    words; returns the path of ``report.html``."""
    table = load_table(run_dir) if table is None else table
    return _report.write_report(run_dir, table, analysis, out_dir,
                                description=describe(run_dir), **phase_settings)


def write_pooled_report(run_dirs, out_dir, names=None, **phase_settings) -> Path:
    """The engine's pooled report (:func:`mdesc.sweep.write_pooled_report`) of several seeds,
    in study 1's words; returns the path of ``pooled.html``."""
    return _report.write_pooled_report(run_dirs, out_dir, names=names,
                                       description=describe(run_dirs[0]), **phase_settings)


def _open(run: DescentRun, settings: SweepSettings, n_test: int, drive_steps: int) -> dict:
    """Write or check ``sweep/settings.json`` and the run's description."""
    settings.check(drive_steps)
    sample_index = select_samples(n_test, settings.n_samples, settings.seed)
    st = SweepStore(run.root)
    stored = st.open(recorded_settings(settings, drive_steps, sample_index,
                                       drive=settings.drive or "padded"))
    if st.description() is None:
        st.write_description(RunDescription(**{**DESCRIPTION.to_dict(), "name": run.root.name}))
    return stored


def check_sweep_settings(run_dir: str | os.PathLike | None, settings: SweepSettings,
                         drive_steps: int) -> None:
    """Validate sweep settings before any training: bad values, and a mismatch with a sweep
    already on disk, are SweepSettingsErrors now rather than after the training."""
    settings.check(drive_steps)
    if run_dir is None:
        return
    run = DescentRun(run_dir)
    if SweepStore(run.root).exists() and run.is_run():
        _, test = load_run_data(run.root)
        _open(run, settings, len(test), drive_steps)


def sweep_run(run_dir: str | os.PathLike, settings: SweepSettings | None = None,
              device: str = "cpu", on_record: Callable[[int, dict], None] | None = None,
              progress: bool = True, say: Callable[[str], None] | None = print,
              limit: int | None = None, epochs: tuple[int, int] | None = None) -> dict:
    """Analyse every checkpoint of a training run that has no sweep record yet.

    The engine (:func:`mdesc.sweep.sweep_jobs`) over ``run/checkpoints`` with the run's test
    reviews as the probe; ``on_record(epoch, record)`` is called after each record is written.
    Re-running continues where a killed sweep stopped; checkpoints written by a training run
    still going are picked up by the next call.  Unreadable checkpoints (not safetensors,
    truncated, or weights of another shape) are skipped: one readable line each through
    ``say``, listed in ``sweep/skipped.json``.  ``limit``: at most this many checkpoints in
    this call (epochs in order), so a long sweep can be time-boxed and resumed.
    ``epochs=(first, last)``: only checkpoints in that range.  Returns ``{"computed":
    [epochs], "skipped": [paths], "existing": n}``.
    """
    settings = settings or study_settings()
    run = DescentRun(run_dir)
    config = read_config(run.root)
    drive_steps = int(config["data"]["max_len"])
    if limit is not None and limit < 1:
        raise SweepSettingsError(f"--limit must be at least 1, got {limit}")
    dev = resolve_device(device)
    _, test = load_run_data(run.root)
    stored = _open(run, settings, len(test), drive_steps)
    sample_index = np.asarray(stored["sample_index"], dtype=np.int64)
    # (T, S) ids of the analysed reviews; each switches to zero input after its own length
    # ("own_length"), or all after the padded length (padding ids embed to zero: one drive)
    ids = torch.from_numpy(np.ascontiguousarray(test.ids[sample_index].T)).to(dev)
    lengths = None if stored["drive"] == "padded" else \
        torch.from_numpy(test.lengths[sample_index]).to(dev)
    template = build_model(config).to(dev)
    st = SweepStore(run.root)
    jobs = [Job(epoch, path, f"{CHECKPOINT_DIR}/{path.name}") for epoch, path in run.checkpoints()]
    todo, existing = select_jobs(jobs, st, sample_index, every=settings.every, steps=epochs,
                                 limit=limit)

    def load(job: Job):
        state, meta = store.read_checkpoint(job.path)
        template.load_state_dict(state)  # checks names and shapes
        return {k: v.to(dev) for k, v in state.items()}, meta

    def why(job: Job, e: Exception) -> str:
        return f"it cannot be read as this run's model ({str(e).splitlines()[0][:160]})"

    probe = Probe(ids, lengths, sample_index.tolist(), int(stored["zero_input_steps"]))
    try:
        computed, skipped = sweep_jobs(
            todo, st, settings, probe, load, template=template,
            errors=(store.CheckpointError, RuntimeError), on_bad=why,
            notice=say if say is not None else (lambda msg: None), progress=progress,
            on_record=on_record)
    finally:
        st.write_skipped_list()
    return {"computed": computed, "skipped": [p for p, _ in skipped], "existing": len(existing)}


__all__ = ["SweepSettings", "SweepSettingsError", "sweep_run", "load_table", "select_samples",
           "read_sweep_settings", "check_sweep_settings", "study_settings", "record_key",
           "DESCRIPTION", "STUDY_SETTINGS", "describe", "write_report", "write_pooled_report", "LOG_DISTANCE_FLOOR", "SCALAR_KEYS", "SAMPLE_KEYS"]
