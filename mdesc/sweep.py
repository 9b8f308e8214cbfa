"""Checkpoint sweeps: the asymptotic stability analysis of every saved epoch of a run.

A *run folder* (written by :mod:`mdesc.train`) holds ``config.json``, ``data.safetensors``
(the encoded train/test split) and ``checkpoints/epoch_NNNN.safetensors`` (the weights after
epoch NNNN; epoch 0 = the initial weights).  :func:`sweep_run` analyses every checkpoint and
writes one record per checkpoint to ``run/sweep/epoch_NNNN.json``; :func:`load_table` reads
those records back as the *run table*, the arrays every plot and the phase analysis use.

The protocol (Design §1 item 1): each of S test reviews drives the model for its own length,
then zero input follows until ``total_steps`` steps in all (paper: 500 + 1100 = 1600).  For
each checkpoint we record, from :func:`mdesc.asymptotic_distance`, the per-review distance
D_i = |h'_T - h_T| + e^-15 between a run and a run whose initial h was perturbed, their mean
log D~ = mean_i ln D_i (floor -15: order; above: chaos) and the reduced sums sum_j h_T,j; and,
from :func:`mdesc.lyapunov_checkpoints`, the largest Lyapunov exponent (natural log per step)
of every review under the same drive + zero-input run (optionally the top k).

The store is crash-safe: every record is written to a temporary file in ``run/sweep/`` and
moved into place with ``os.replace``, so a record either exists completely or not at all;
a killed sweep resumes by skipping the epochs that already have a valid record.  Checkpoints
are read with ``safetensors`` only (no pickle is ever executed); one that cannot be read is
skipped with a warning naming the file.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

SWEEP_DIR = "sweep"
SETTINGS_FILE = "settings.json"
RECORD_RE = re.compile(r"^epoch_(\d{4,})\.json$")
CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.safetensors$")
LOG_DISTANCE_FLOOR = -15.0  # ln(e^-15): D~ at this value means every review converged (order)

# Scalar per-checkpoint columns of the run table (float64, NaN where unknown).
SCALAR_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc", "log_distance",
               "lyapunov_max", "lyapunov_stderr", "nonfinite_fraction")
# Per-review columns (C, S) of the run table.
SAMPLE_KEYS = ("reduced_sum", "distance", "lyapunov")


def load_table(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a run's sweep records as the *run table*: one row per analysed checkpoint.

    ``run_dir`` is a run folder (``mdesc descent train`` / :func:`mdesc.train.train_run`)
    whose sweep has been (partly) done (``mdesc descent sweep`` / :func:`sweep_run`).  Rows
    are the checkpoints that have a valid record, sorted by epoch; a sweep still in progress
    simply gives fewer rows.  C = number of rows, S = number of test reviews analysed, k =
    number of Lyapunov exponents computed per review (1 unless the sweep asked for more).

    Returns a dict of numpy arrays:

    ==================== =========== ======================================================
    key                  shape/dtype meaning
    ==================== =========== ======================================================
    ``epoch``            (C,) int64  epoch of the checkpoint (0 = initial weights)
    ``train_loss``       (C,) f64    mean binary cross-entropy (nats) on the training set
    ``test_loss``        (C,) f64    mean binary cross-entropy (nats) on the test set
    ``train_acc``        (C,) f64    accuracy in [0, 1] on the training set
    ``test_acc``         (C,) f64    accuracy in [0, 1] on the test set
    ``log_distance``     (C,) f64    D~ = mean_i ln D_i; floor -15 (order), above = chaos
    ``lyapunov_max``     (C,) f64    mean over reviews of lambda_1 (natural log per step)
    ``lyapunov_stderr``  (C,) f64    standard error of that mean over reviews
    ``nonfinite_fraction`` (C,) f64  fraction of reviews whose tangent run went non-finite
    ``reduced_sum``      (C, S) f64  sum_j h_T,j of the unperturbed run, per review
                                     (the bifurcation diagram)
    ``distance``         (C, S) f64  D_i = |h'_T - h_T| + e^-15 per review
    ``lyapunov``         (C, S) f64  lambda_1 per review (NaN where non-finite)
    ``lyapunov_spectrum`` (C, k) f64 mean over reviews of lambda_1..lambda_k
    ``sample_index``     (S,) int64  which test reviews (indices into the run's test split)
    ==================== =========== ======================================================

    The losses and accuracies are computed in eval mode on the full train and test splits
    after each epoch (recorded by the trainer in the checkpoint's metadata); NaN where a
    value is unknown.  The sweep's settings (S, total steps, perturbation, seed, k, ...) are
    in ``run_dir/sweep/settings.json`` (see :func:`read_sweep_settings`).

    Raises FileNotFoundError if the run folder has no sweep records at all.
    """
    run_dir = Path(run_dir)
    records = _load_records(run_dir / SWEEP_DIR)
    if not records:
        raise FileNotFoundError(
            f"{run_dir} has no sweep records (expected {run_dir / SWEEP_DIR}/epoch_NNNN.json); "
            f"run `mdesc descent sweep --run-dir {run_dir}` first")
    records.sort(key=lambda r: r["epoch"])
    table: dict[str, np.ndarray] = {
        "epoch": np.array([r["epoch"] for r in records], dtype=np.int64)}
    for key in SCALAR_KEYS:
        table[key] = np.array([_as_float(r.get(key)) for r in records], dtype=np.float64)
    for key in SAMPLE_KEYS:
        table[key] = np.array([[_as_float(v) for v in r[key]] for r in records],
                              dtype=np.float64)
    table["lyapunov_spectrum"] = np.array(
        [[_as_float(v) for v in r["lyapunov_spectrum"]] for r in records], dtype=np.float64)
    table["sample_index"] = np.asarray(records[0]["sample_index"], dtype=np.int64)
    return table


def _as_float(v) -> float:
    return float("nan") if v is None else float(v)


# ----------------------------------------------------------------------------- records


def _record_path(sweep_dir: Path, epoch: int) -> Path:
    return sweep_dir / f"epoch_{epoch:04d}.json"


def _valid_record(rec, epoch: int, n_samples: int | None, sample_index=None) -> bool:
    """A record is valid if it has every key, the right epoch and consistent lengths."""
    if not isinstance(rec, dict) or rec.get("epoch") != epoch:
        return False
    needed = ("sample_index", "lyapunov_spectrum") + SAMPLE_KEYS + SCALAR_KEYS
    if any(k not in rec for k in needed):
        return False
    s = len(rec["sample_index"])
    if n_samples is not None and s != n_samples:
        return False
    if sample_index is not None and list(rec["sample_index"]) != list(sample_index):
        return False
    return all(isinstance(rec[k], list) and len(rec[k]) == s for k in SAMPLE_KEYS)


def _read_record(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _load_records(sweep_dir: Path) -> list[dict]:
    """All valid records in ``sweep_dir``; invalid ones are reported and ignored."""
    if not sweep_dir.is_dir():
        return []
    settings = read_sweep_settings(sweep_dir.parent) if (sweep_dir / SETTINGS_FILE).exists() \
        else None
    sample_index = settings.get("sample_index") if settings else None
    out = []
    for name in sorted(os.listdir(sweep_dir)):
        m = RECORD_RE.match(name)
        if not m:
            continue
        rec = _read_record(sweep_dir / name)
        if not _valid_record(rec, int(m.group(1)), None, sample_index):
            warnings.warn(f"ignoring unreadable or inconsistent sweep record {sweep_dir / name}; "
                          "`mdesc descent sweep` recomputes it", stacklevel=3)
            continue
        out.append(rec)
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, fsync, replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_sweep_settings(run_dir: str | os.PathLike) -> dict:
    """The settings a run's sweep was made with (``run_dir/sweep/settings.json``)."""
    with open(Path(run_dir) / SWEEP_DIR / SETTINGS_FILE, encoding="utf-8") as f:
        return json.load(f)
