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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mdesc.store import atomic_write_text

SWEEP_DIR = "sweep"
SETTINGS_FILE = "settings.json"
RECORD_RE = re.compile(r"^epoch_(\d{4,})\.json$")
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
    ``lyapunov_max``     (C,) f64    mean over reviews of lambda_1 (natural log per step),
                                     over the reviews whose tangent run stayed finite
    ``lyapunov_stderr``  (C,) f64    standard error of that mean (std ddof=1 / sqrt(n))
    ``nonfinite_fraction`` (C,) f64  fraction of reviews whose tangent run went non-finite
    ``reduced_sum``      (C, S) f64  sum_j h_T,j of the unperturbed run, per review
                                     (the bifurcation diagram)
    ``distance``         (C, S) f64  D_i = |h'_T - h_T| + e^-15 per review
    ``lyapunov``         (C, S) f64  lambda_1 per review (NaN where non-finite)
    ``lyapunov_spectrum`` (C, k) f64 mean over (finite) reviews of lambda_1..lambda_k
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


def read_sweep_settings(run_dir: str | os.PathLike) -> dict:
    """The settings a run's sweep was made with (``run_dir/sweep/settings.json``)."""
    with open(Path(run_dir) / SWEEP_DIR / SETTINGS_FILE, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepSettings:
    """How every checkpoint is analysed (recorded in ``run/sweep/settings.json``).

    n_samples:    number of test reviews analysed (a seeded random subset of the test split;
                  all of it if smaller).  Paper: 500.
    total_steps:  steps in all per run: the drive (the padded review length ``max_len`` of the
                  run; each review switches to zero input after its own length) followed by
                  zero input.  Paper: 1600 (500 + 1100).
    perturbation: standard deviation of the Gaussian perturbation of the initial h for D_i.
    k:            Lyapunov exponents per review (1 = the largest only; more = top-k spectrum).
    qr_every:     re-orthonormalisation interval of the tangent vectors.
    seed:         seeds the review subset, the perturbation and the initial tangent frame.
    chunk:        checkpoints analysed per call of the core (all in one extension call).
    distance_dtype: precision of the two runs behind D_i.  float64 by default: in float32
                  two runs that converge to the same fixed point stop a few rounding units
                  apart (|h' - h| ~ 1e-7, about e^-16, the size of the e^-15 floor), which lifts
                  D~ of a clearly ordered checkpoint (lambda_1 ~ -0.1) to about -14.5 instead of
                  -15; float64 puts it on the floor.  float32 is ~5x faster on a CPU.
    lyapunov_dtype: precision of the tangent runs (renormalised, so float32 is accurate: it
                  agrees with float64 to ~1e-7 per step on these models).
    every:        analyse only epochs divisible by this (a coarse first pass over a long run;
                  a later sweep with a smaller value fills in the rest, keeping what exists).
    """

    n_samples: int = 500
    total_steps: int = 1600
    perturbation: float = 1e-6
    k: int = 1
    qr_every: int = 10
    seed: int = 0
    chunk: int = 4
    distance_dtype: str = "float64"
    lyapunov_dtype: str = "float32"
    every: int = 1

    def check(self, drive_steps: int | None = None) -> None:
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be at least 2 (a standard error needs two), "
                             f"got {self.n_samples}")
        if not self.perturbation > 0:
            raise ValueError(f"perturbation must be positive, got {self.perturbation}")
        if self.k < 1 or self.qr_every < 1 or self.chunk < 1 or self.every < 1:
            raise ValueError("k, qr_every, chunk and every must be at least 1")
        for name in ("distance_dtype", "lyapunov_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be float32 or float64, got {getattr(self, name)!r}")
        if drive_steps is not None and self.total_steps <= drive_steps:
            raise ValueError(f"total_steps ({self.total_steps}) must exceed the drive length, "
                             f"i.e. the run's max_len ({drive_steps}); raise --total-steps")


# Settings that must match for records to be comparable (`chunk` and `every` only decide
# how much is done per call).
_RESULT_FIELDS = ("n_samples", "total_steps", "perturbation", "k", "qr_every", "seed",
                  "distance_dtype", "lyapunov_dtype")
DTYPES = ("float32", "float64")


def select_samples(n_test: int, n_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of the test reviews analysed: a seeded subset of size min(n, n_test)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_test)[: min(n_samples, n_test)]).astype(np.int64)


def _prepare_settings(run_dir: Path, settings: SweepSettings, n_test: int,
                      drive_steps: int) -> dict:
    """Write or check ``sweep/settings.json``; returns its contents."""
    sweep_dir = run_dir / SWEEP_DIR
    sample_index = select_samples(n_test, settings.n_samples, settings.seed)
    wanted = {k: getattr(settings, k) for k in _RESULT_FIELDS}
    wanted.update(drive_steps=drive_steps, zero_input_steps=settings.total_steps - drive_steps,
                  sample_index=sample_index.tolist())
    path = sweep_dir / SETTINGS_FILE
    if path.exists():
        have = read_sweep_settings(run_dir)
        diffs = [f"{k}: sweep has {have.get(k)!r}, asked for {v!r}"
                 for k, v in wanted.items() if k != "sample_index" and have.get(k) != v]
        if not diffs and have.get("sample_index") != wanted["sample_index"]:
            diffs.append("the analysed test reviews differ")
        if diffs:
            raise SweepSettingsError(
                f"{sweep_dir} holds a sweep made with other settings ({'; '.join(diffs)}); "
                f"use the same settings to resume it, or delete {sweep_dir} to start over")
        return have
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted))
    return wanted


class SweepSettingsError(ValueError):
    """The sweep folder was made with other settings; the message says what to do."""


def _finite_or_none(x: float):
    x = float(x)
    return x if math.isfinite(x) else None


def _finite_mean_stderr(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over reviews (axis 1) of the finite entries of x (C, S, k), and its standard
    error (std with ddof=1 / sqrt(n finite)); NaN where fewer than 1 (mean) / 2 (stderr)."""
    ok = np.isfinite(x)
    n = ok.sum(axis=1)
    xs = np.where(ok, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = xs.sum(axis=1) / n
        var = (np.where(ok, x - mean[:, None, :], 0.0) ** 2).sum(axis=1) / (n - 1)
        stderr = np.sqrt(var / n)
    return np.where(n >= 1, mean, np.nan), np.where(n >= 2, stderr, np.nan)


def sweep_run(run_dir: str | os.PathLike, settings: SweepSettings | None = None,
              device: str = "cpu", on_record: Callable[[int, dict], None] | None = None,
              progress: bool = True) -> dict:
    """Analyse every checkpoint of a training run that has no sweep record yet.

    For each chunk of ``settings.chunk`` checkpoints, one call of
    :func:`mdesc.asymptotic_distance` and one of :func:`mdesc.lyapunov_checkpoints` (the same
    drive + zero-input runs, the same reviews) produce every checkpoint's numbers; then one
    record per checkpoint is written atomically to ``run/sweep/epoch_NNNN.json`` and
    ``on_record(epoch, record)`` is called.  Re-running continues where a killed sweep stopped;
    checkpoints written by a training run that is still going are picked up on the next call.

    Unreadable checkpoints (not safetensors, truncated, or weights of another shape) are
    skipped with a warning naming the file.  Returns ``{"computed": [epochs], "skipped":
    [paths], "existing": n}``.
    """
    import torch

    import mdesc
    from mdesc.descent.run import (CheckpointError, build_model, list_checkpoints,
                                   load_checkpoint, load_run_data, read_config,
                                   resolve_device)

    settings = settings or SweepSettings()
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    drive_steps = int(config["data"]["max_len"])
    settings.check(drive_steps)
    dev = resolve_device(device)
    _, test = load_run_data(run_dir)
    stored = _prepare_settings(run_dir, settings, len(test), drive_steps)
    sample_index = np.asarray(stored["sample_index"], dtype=np.int64)
    sweep_dir = run_dir / SWEEP_DIR

    # (T, S) ids of the analysed reviews; each switches to zero input after its own length.
    ids = torch.from_numpy(np.ascontiguousarray(test.ids[sample_index].T)).to(dev)
    lengths = torch.from_numpy(test.lengths[sample_index]).to(dev)
    zero_steps = int(stored["zero_input_steps"])
    template = build_model(config).to(dev)

    todo, existing = [], 0
    for epoch, path in list_checkpoints(run_dir):
        if epoch % settings.every:
            continue
        rec = _read_record(_record_path(sweep_dir, epoch))
        if rec is not None and _valid_record(rec, epoch, len(sample_index), sample_index):
            existing += 1
        else:
            todo.append((epoch, path))

    computed, skipped = [], []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="sweep checkpoints", unit="ckpt", disable=not progress,
               dynamic_ncols=True)
    try:
        for lo in range(0, len(todo), settings.chunk):
            epochs, states, metas = [], [], []
            for epoch, path in todo[lo: lo + settings.chunk]:
                try:
                    state, meta = load_checkpoint(path)
                    template.load_state_dict(state)  # checks names and shapes
                except (CheckpointError, RuntimeError) as e:
                    warnings.warn(f"skipping checkpoint {path}: it cannot be read as this "
                                  f"run's model ({str(e).splitlines()[0]})", stacklevel=2)
                    skipped.append(str(path))
                    bar.update(1)
                    continue
                epochs.append(epoch)
                states.append({k: v.to(dev) for k, v in state.items()})
                metas.append(meta)
            if not epochs:
                continue
            dist = mdesc.asymptotic_distance(
                states, ids, lengths=lengths, zero_input_steps=zero_steps,
                perturbation=settings.perturbation, seed=settings.seed, template=template,
                dtype=getattr(torch, settings.distance_dtype))
            lyap = mdesc.lyapunov_checkpoints(
                states, ids, k=settings.k, template=template, lengths=lengths,
                zero_input_steps=zero_steps, qr_every=settings.qr_every, seed=settings.seed,
                dtype=getattr(torch, settings.lyapunov_dtype))
            log_d = dist.log_distance.detach().double().cpu().numpy().reshape(len(epochs))
            d_i = dist.distance.detach().double().cpu().numpy().reshape(len(epochs), -1)
            red = dist.reduced_sum.detach().double().cpu().numpy().reshape(len(epochs), -1)
            expo = lyap.exponents.detach().double().cpu().numpy().reshape(
                len(epochs), len(sample_index), settings.k)
            nonfinite = lyap.nonfinite.detach().cpu().numpy().reshape(len(epochs), -1)
            mean, stderr = _finite_mean_stderr(expo)
            for c, epoch in enumerate(epochs):
                rec = {
                    "epoch": epoch,
                    "checkpoint": f"checkpoints/epoch_{epoch:04d}.safetensors",
                    **{k: _finite_or_none(metas[c].get(k, float("nan")))
                       for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
                    "log_distance": _finite_or_none(log_d[c]),
                    "lyapunov_max": _finite_or_none(mean[c, 0]),
                    "lyapunov_stderr": _finite_or_none(stderr[c, 0]),
                    "nonfinite_fraction": float(nonfinite[c].mean()),
                    "lyapunov_spectrum": [_finite_or_none(v) for v in mean[c]],
                    "sample_index": sample_index.tolist(),
                    "reduced_sum": [_finite_or_none(v) for v in red[c]],
                    "distance": [_finite_or_none(v) for v in d_i[c]],
                    "lyapunov": [_finite_or_none(v) for v in expo[c, :, 0]],
                }
                atomic_write_text(_record_path(sweep_dir, epoch), json.dumps(rec))
                computed.append(epoch)
                bar.update(1)
                bar.set_postfix(epoch=epoch, D=f"{log_d[c]:.2f}", lam=f"{mean[c, 0]:.4f}")
                if on_record is not None:
                    on_record(epoch, rec)
    finally:
        bar.close()
    return {"computed": computed, "skipped": skipped, "existing": existing}
