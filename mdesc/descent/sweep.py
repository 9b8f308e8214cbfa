"""Checkpoint sweeps: the asymptotic stability analysis of every saved epoch of a run.

The protocol (docs/multiple_descent.md; conventions: docs/conventions.md): each of S test
reviews drives the model for its own length, then zero input follows until ``total_steps``
steps in all (paper: 500 + 1100 = 1600).  Asymptotic stability is a property of the zero-input
dynamics, so by default (``window="zero_input"``) for every checkpoint the sweep records

- from :func:`mdesc.lyapunov_checkpoints` with ``window="zero_input"``: the largest Lyapunov
  exponent (natural log per step) of every review counted over its zero-input phase only, and,
  beside it, the exponent of its drive (``lyapunov_driven``);
- from :func:`mdesc.asymptotic_distance`, for **both twins**: the twin perturbed where the zero
  input begins (``perturb_at="drive_end"``, the reproduction's code; the primary D~) and the twin
  perturbed at t = 0 (``"start"``, the paper's wording), each with D_i = |h'_T - h_T| + e^-15
  and D~ = mean_i ln D_i; t = 0 twins that the drive made bit-identical to their run are
  counted (``n_collapsed_start``) and their D_i says nothing about the zero-input phase;
- the reduced sums sum_j h_T,j (the bifurcation diagram).

Sweeps recorded before this (``window="all"``, one twin perturbed at t = 0) are still read:
their settings lack ``window``/``twins`` and mean exactly that.

One record per checkpoint, ``run/sweep/epoch_NNNN.json`` (paths: :mod:`mdesc.descent.folder`),
written atomically; a killed sweep resumes by skipping the epochs that have a valid record.
Checkpoints are read with ``safetensors`` only; one that cannot be read is skipped, named in
one readable line (``say``), and listed in ``run/sweep/skipped.json`` for the report.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mdesc import store
from mdesc.descent.folder import DescentRun, record_key

LOG_DISTANCE_FLOOR = -15.0  # ln(e^-15): D~ at this value means every review converged (order)
WINDOWS = ("zero_input", "all")
DRIVES = ("padded", "own_length")
TWINS = ("drive_end", "start")
LEGACY = {"window": "all", "twins": ["start"], "lyapunov_warmup": 0, "drive": "own_length"}  # sweeps before issue 10
SKIPPED_FILE = "skipped.json"

# Scalar per-checkpoint columns of the run table (float64, NaN where unknown).
SCALAR_KEYS = ("train_loss", "test_loss", "train_acc", "test_acc", "log_distance",
               "lyapunov_max", "lyapunov_stderr", "nonfinite_fraction")
EXTRA_SCALAR_KEYS = ("log_distance_drive_end", "log_distance_start", "n_collapsed_start",
                     "lyapunov_max_driven", "lyapunov_stderr_driven", "seconds")
# Per-review columns (C, S) of the run table.
SAMPLE_KEYS = ("reduced_sum", "distance", "lyapunov")
EXTRA_SAMPLE_KEYS = ("distance_drive_end", "distance_start", "collapsed_start",
                     "lyapunov_driven")
DTYPES = ("float32", "float64")


class SweepSettingsError(ValueError):
    """Bad sweep settings; the message says what to do."""


@dataclass
class SweepSettings:
    """How every checkpoint is analysed (recorded in ``run/sweep/settings.json``).

    n_samples:    test reviews analysed (a seeded random subset of the test split).  Paper: 500.
    total_steps:  steps per run: the drive (the run's padded length ``max_len``; each review
                  switches to zero input after its own length), then zero input.  Paper: 1600.
    perturbation: standard deviation of the Gaussian perturbation of h for D_i.
                  Reproduction: 1e-3 (the quick default, 1e-6, predates the preset).
    twins:        which twins to run, the first is the primary D~: "drive_end" (perturbed where
                  the zero input begins) and/or "start" (perturbed at t = 0).
    window:       steps counted for lambda_1: "zero_input" (each review's zero-input phase; the
                  drive's exponent is recorded beside) or "all" (drive + zero input, as sweeps
                  before issue 10 did).
    lyapunov_warmup: uncounted steps at the start of the counted window.
    drive:        where the drive ends: "padded" (default: after the run's padded length
                  max_len for every review, the paper's "500 driven steps"; a shorter review is
                  already in zero input -- its padding -- for its last max_len - L steps, which
                  the zero-input window then does not count) or "own_length" (after each
                  review's own length: exact per review, but the core then makes one call per
                  distinct length, several times slower on long reviews).
    k:            Lyapunov exponents per review (1 = the largest only).
    qr_every:     re-orthonormalisation interval of the tangent vectors.
    seed:         seeds the review subset, the perturbation and the initial tangent frame.
    chunk:        checkpoints analysed per call of the core.
    distance_dtype: precision of the runs behind D_i: float64 (the plain twin: h' - h of two
                  runs) or float32 (an LSTM's twin then carries the difference itself,
                  ``method="delta"``, exact on the floor; with lyapunov_dtype float32 too, the
                  drive-end twin and lambda_1 share one run of mdesc.stability_record).
    lyapunov_dtype: precision of the tangent runs (renormalised: float32 is accurate).
    every:        analyse only epochs divisible by this (a coarse first pass; a later sweep
                  with a smaller value fills in the rest, keeping what exists).
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
    twins: list = field(default_factory=lambda: list(TWINS))
    window: str = "zero_input"
    lyapunov_warmup: int = 0
    drive: str = "padded"

    def check(self, drive_steps: int | None = None) -> None:
        """Raises SweepSettingsError saying what to change (called before any training)."""
        if self.n_samples < 2:
            raise SweepSettingsError(f"--samples must be at least 2 (a standard error needs "
                                     f"two reviews), got {self.n_samples}")
        if not (isinstance(self.perturbation, (int, float)) and math.isfinite(self.perturbation)
                and self.perturbation > 0):
            raise SweepSettingsError(f"--perturbation must be positive, got {self.perturbation}")
        for name in ("k", "qr_every", "chunk", "every"):
            if getattr(self, name) < 1:
                raise SweepSettingsError(f"--{name.replace('_', '-')} must be at least 1, got "
                                         f"{getattr(self, name)}")
        for name in ("distance_dtype", "lyapunov_dtype"):
            if getattr(self, name) not in DTYPES:
                raise SweepSettingsError(f"{name} must be float32 or float64, got "
                                         f"{getattr(self, name)!r}")
        if self.window not in WINDOWS:
            raise SweepSettingsError(f"--window must be one of {', '.join(WINDOWS)}, got "
                                     f"{self.window!r}")
        if not self.twins or any(t not in TWINS for t in self.twins) or \
                len(set(self.twins)) != len(self.twins):
            raise SweepSettingsError(f"twins must be a non-empty list from {TWINS}, got "
                                     f"{self.twins!r}")
        if self.drive not in DRIVES:
            raise SweepSettingsError(f"--drive must be one of {', '.join(DRIVES)}, got "
                                     f"{self.drive!r}")
        if self.lyapunov_warmup < 0:
            raise SweepSettingsError(f"--lyapunov-warmup must be >= 0, got "
                                     f"{self.lyapunov_warmup}")
        if drive_steps is not None:
            if self.total_steps <= drive_steps:
                raise SweepSettingsError(
                    f"--total-steps ({self.total_steps}) must exceed the drive length, i.e. "
                    f"the run's --max-len ({drive_steps}); raise --total-steps")
            if self.window == "zero_input" and \
                    self.total_steps - drive_steps <= self.lyapunov_warmup:
                raise SweepSettingsError(
                    f"--lyapunov-warmup ({self.lyapunov_warmup}) leaves no counted zero-input "
                    f"step after a {drive_steps}-step drive in {self.total_steps} steps")


# Settings that must match for records to be comparable (`chunk` and `every` only decide how
# much is done per call).
_RESULT_FIELDS = ("n_samples", "total_steps", "perturbation", "k", "qr_every", "seed",
                  "distance_dtype", "lyapunov_dtype", "twins", "window", "lyapunov_warmup",
                  "drive")


def select_samples(n_test: int, n_samples: int, seed: int) -> np.ndarray:
    """Sorted indices of the test reviews analysed: a seeded subset of size min(n, n_test)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n_test)[: min(n_samples, n_test)]).astype(np.int64)


def read_sweep_settings(run_dir: str | os.PathLike) -> dict:
    """The settings a run's sweep was made with, legacy fields filled in."""
    return {**LEGACY, **store.read_json(DescentRun(run_dir).sweep.settings_path)}


def _prepare_settings(run: DescentRun, settings: SweepSettings, n_test: int,
                      drive_steps: int) -> dict:
    """Write or check ``sweep/settings.json`` (the store's one settings check)."""
    sample_index = select_samples(n_test, settings.n_samples, settings.seed)
    wanted = {k: getattr(settings, k) for k in _RESULT_FIELDS}
    wanted.update(drive_steps=drive_steps, zero_input_steps=settings.total_steps - drive_steps,
                  sample_index=sample_index.tolist())
    if run.sweep.exists():
        have = read_sweep_settings(run.root)
        try:
            store.check_settings(run.sweep_dir, have, wanted)
        except store.SettingsMismatch as e:
            raise SweepSettingsError(str(e)) from None
        return have
    run.sweep.open(wanted)
    return store.to_json(wanted)


def _finite_or_none(x):
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


def _valid_record(rec, epoch: int, sample_index=None) -> bool:
    """A record is valid if it has every key, the right epoch and consistent lengths."""
    if not isinstance(rec, dict) or rec.get("epoch") != epoch:
        return False
    needed = ("sample_index", "lyapunov_spectrum") + SAMPLE_KEYS + SCALAR_KEYS
    if any(k not in rec for k in needed):
        return False
    s = len(rec["sample_index"])
    if sample_index is not None and list(rec["sample_index"]) != list(sample_index):
        return False
    return all(isinstance(rec[k], list) and len(rec[k]) == s for k in SAMPLE_KEYS)


def _as_float(v) -> float:
    return float("nan") if v is None else float(v)


def load_table(run_dir: str | os.PathLike, say: Callable[[str], None] | None = None
               ) -> dict[str, np.ndarray]:
    """Read a run's sweep records as the *run table*: one row per analysed checkpoint.

    Rows are the checkpoints that have a valid record, sorted by epoch (a sweep in progress
    gives fewer rows).  C rows, S reviews, k exponents.  Keys (numpy arrays):

    ``epoch`` (C,) int64; ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc`` (C,);
    ``log_distance`` (C,) the primary D~ (the first twin of the sweep's ``twins``: drive-end by
    default; t = 0 in legacy sweeps); ``log_distance_drive_end``, ``log_distance_start`` (C,)
    each twin's D~ (NaN if not run); ``n_collapsed_start`` (C,) t = 0 twins the drive made
    bit-identical; ``lyapunov_max``, ``lyapunov_stderr`` (C,) mean lambda_1 over reviews over
    the sweep's ``window`` and its standard error; ``lyapunov_max_driven``,
    ``lyapunov_stderr_driven`` (C,) the drive's exponent (NaN for window "all");
    ``nonfinite_fraction`` (C,); ``seconds`` (C,) sweep time per checkpoint;
    ``reduced_sum``, ``distance``, ``distance_drive_end``, ``distance_start``,
    ``collapsed_start`` (0/1), ``lyapunov``, ``lyapunov_driven`` (C, S); ``lyapunov_spectrum``
    (C, k); ``sample_index`` (S,).  ``table["settings"]`` is the sweep's settings (a dict) and
    ``table["skipped"]`` the checkpoints the sweep could not read (a list of strings).
    Unreadable or inconsistent records are ignored (named through ``say``) and recomputed by
    the next sweep.
    """
    run = DescentRun(run_dir)
    settings = read_sweep_settings(run.root) if run.sweep.exists() else dict(LEGACY)
    sample_index = settings.get("sample_index")
    records = []
    for epoch, path in run.record_files():
        rec = run.read_record(epoch)
        if not _valid_record(rec, epoch, sample_index):
            if say is not None:
                say(f"ignoring unreadable or inconsistent sweep record {path}; "
                    "`mdesc descent sweep` recomputes it")
            continue
        records.append(rec)
    if not records:
        raise FileNotFoundError(
            f"{run.root} has no sweep records (expected {run.sweep_dir}/epoch_NNNN.json); "
            f"run `mdesc descent sweep --run-dir {run.root}` first")
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
    table["settings"] = settings
    skipped = run.sweep_dir / SKIPPED_FILE
    table["skipped"] = store.read_json(skipped) if skipped.is_file() else []
    return table


def check_sweep_settings(run_dir: str | os.PathLike | None, settings: SweepSettings,
                         drive_steps: int) -> None:
    """Validate sweep settings before any training: bad values, and a mismatch with a sweep
    already on disk, are SweepSettingsErrors now rather than after the training."""
    settings.check(drive_steps)
    if run_dir is None:
        return
    run = DescentRun(run_dir)
    if run.sweep.exists() and run.is_run():
        from mdesc.descent.run import load_run_data

        _, test = load_run_data(run.root)
        _prepare_settings(run, settings, len(test), drive_steps)


def sweep_run(run_dir: str | os.PathLike, settings: SweepSettings | None = None,
              device: str = "cpu", on_record: Callable[[int, dict], None] | None = None,
              progress: bool = True, say: Callable[[str], None] | None = print,
              limit: int | None = None, epochs: tuple[int, int] | None = None) -> dict:
    """Analyse every checkpoint of a training run that has no sweep record yet.

    Per chunk of ``settings.chunk`` checkpoints: one call of :func:`mdesc.lyapunov_checkpoints`
    and one of :func:`mdesc.asymptotic_distance` per twin (the same reviews, the same drive +
    zero-input runs) -- or, in float32 on an LSTM, one :func:`mdesc.stability_record` for lambda_1
    and the drive-end twin together (equal to the two calls to rounding) plus the other twin; one record per checkpoint is written atomically and
    ``on_record(epoch, record)`` is called.  Re-running continues where a killed sweep stopped;
    checkpoints written by a training run still going are picked up by the next call.

    Unreadable checkpoints (not safetensors, truncated, or weights of another shape) are
    skipped: one readable line each through ``say`` (never a raw warning inside the progress
    bar), and listed in ``sweep/skipped.json``.  ``limit``: analyse at most this many
    checkpoints in this call (newest-first priority is not implied: epochs in order), so a
    long sweep can be time-boxed and resumed.  ``epochs=(first, last)``: only checkpoints in
    that range (e.g. to resolve a transition first).  Returns ``{"computed": [epochs], "skipped":
    [paths], "existing": n}``.
    """
    import torch

    import mdesc
    from mdesc.descent.folder import CheckpointError, load_checkpoint
    from mdesc.descent.model import build_model, resolve_device
    from mdesc.descent.run import load_run_data, read_config

    settings = settings or SweepSettings()
    run = DescentRun(run_dir)
    config = read_config(run.root)
    drive_steps = int(config["data"]["max_len"])
    settings.check(drive_steps)
    dev = resolve_device(device)
    _, test = load_run_data(run.root)
    stored = _prepare_settings(run, settings, len(test), drive_steps)
    sample_index = np.asarray(stored["sample_index"], dtype=np.int64)
    S = len(sample_index)

    # (T, S) ids of the analysed reviews; each switches to zero input after its own length.
    ids = torch.from_numpy(np.ascontiguousarray(test.ids[sample_index].T)).to(dev)
    lengths = torch.from_numpy(test.lengths[sample_index]).to(dev)
    if stored["drive"] == "padded":  # padding ids embed to zero: the same inputs, one drive
        lengths = None
    zero_steps = int(stored["zero_input_steps"])
    template = build_model(config).to(dev)
    twins, window = list(stored["twins"]), stored["window"]
    # float32 throughout on an LSTM: lambda_1 (zero-input window) and the drive-end twin's D~
    # come from one run of mdesc.stability_record (the same numbers as the two calls, to rounding,
    # for ~1.4x the cost of lambda_1 alone instead of ~2x)
    record_in_one_run = (window == "zero_input" and "drive_end" in twins
                         and settings.distance_dtype == settings.lyapunov_dtype == "float32"
                         and any(isinstance(m, torch.nn.LSTM) for m in template.modules()))

    todo, existing = [], 0
    for epoch, path in run.checkpoints():
        if epoch % settings.every:
            continue
        if epochs is not None and not epochs[0] <= epoch <= epochs[1]:
            continue
        if _valid_record(run.read_record(epoch), epoch, sample_index):
            existing += 1
        else:
            todo.append((epoch, path))
    if limit is not None:
        if limit < 1:
            raise SweepSettingsError(f"--limit must be at least 1, got {limit}")
        todo = todo[:limit]

    computed, skipped = [], []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="sweep checkpoints", unit="ckpt", disable=not progress,
               dynamic_ncols=True)

    def notice(msg: str) -> None:
        if say is not None:
            (bar.write if progress else say)(msg)

    try:
        for lo in range(0, len(todo), settings.chunk):
            t0 = time.perf_counter()
            epochs, states, metas = [], [], []
            for epoch, path in todo[lo: lo + settings.chunk]:
                try:
                    state, meta = load_checkpoint(path)
                    template.load_state_dict(state)  # checks names and shapes
                except (CheckpointError, RuntimeError) as e:
                    notice(f"skipping checkpoint {path}: it cannot be read as this run's model "
                           f"({str(e).splitlines()[0][:160]})")
                    skipped.append(str(path))
                    bar.update(1)
                    continue
                epochs.append(epoch)
                states.append({k: v.to(dev) for k, v in state.items()})
                metas.append(meta)
            if not epochs:
                continue
            C = len(epochs)
            dist, lyap = {}, None
            with warnings.catch_warnings(record=True) as seen:  # shown below, one line each
                warnings.simplefilter("always")
                if record_in_one_run:  # lambda_1 and the drive-end twin share one fused run
                    lyap, dist["drive_end"] = mdesc.stability_record(
                        states, ids, k=settings.k, template=template, lengths=lengths,
                        zero_input_steps=zero_steps, warmup=settings.lyapunov_warmup,
                        qr_every=settings.qr_every, perturbation=settings.perturbation,
                        seed=settings.seed, dtype=torch.float32)
                for twin in twins:
                    if twin in dist:
                        continue
                    dist[twin] = mdesc.asymptotic_distance(
                        states, ids, lengths=lengths, zero_input_steps=zero_steps,
                        perturbation=settings.perturbation, perturb_at=twin, seed=settings.seed,
                        template=template, dtype=getattr(torch, settings.distance_dtype))
                if lyap is None:
                    lyap = mdesc.lyapunov_checkpoints(
                        states, ids, k=settings.k, template=template, lengths=lengths,
                        zero_input_steps=zero_steps, qr_every=settings.qr_every, seed=settings.seed,
                        warmup=settings.lyapunov_warmup, window=window,
                        dtype=getattr(torch, settings.lyapunov_dtype))
            for w in {str(w.message).splitlines()[0] for w in seen}:
                notice(f"warning (epochs {epochs[0]}-{epochs[-1]}): {w}")  # one line each
            expo = lyap.exponents.detach().double().cpu().numpy().reshape(C, S, settings.k)
            mean, stderr = _finite_mean_stderr(expo)
            driven = getattr(lyap, "driven_exponents", None)
            if driven is not None:
                dexpo = driven.detach().double().cpu().numpy().reshape(C, S, -1)
                dmean, dstderr = _finite_mean_stderr(dexpo[..., :1])
            nonfinite = lyap.nonfinite.detach().cpu().numpy().reshape(C, -1)
            per_ckpt = (time.perf_counter() - t0) / C
            prim = dist[twins[0]]
            red = prim.reduced_sum.detach().double().cpu().numpy().reshape(C, S)
            for c, epoch in enumerate(epochs):
                rec = {
                    "epoch": epoch,
                    "checkpoint": f"checkpoints/epoch_{epoch:04d}.safetensors",
                    **{k: _finite_or_none(metas[c].get(k, float("nan")))
                       for k in ("train_loss", "test_loss", "train_acc", "test_acc")},
                    "lyapunov_max": _finite_or_none(mean[c, 0]),
                    "lyapunov_stderr": _finite_or_none(stderr[c, 0]),
                    "nonfinite_fraction": float(nonfinite[c].mean()),
                    "lyapunov_spectrum": [_finite_or_none(v) for v in mean[c]],
                    "sample_index": sample_index.tolist(),
                    "reduced_sum": [_finite_or_none(v) for v in red[c]],
                    "lyapunov": [_finite_or_none(v) for v in expo[c, :, 0]],
                    "window": window,
                    "seconds": per_ckpt,
                }
                if driven is not None:
                    rec.update(lyapunov_max_driven=_finite_or_none(dmean[c, 0]),
                               lyapunov_stderr_driven=_finite_or_none(dstderr[c, 0]),
                               lyapunov_driven=[_finite_or_none(v) for v in dexpo[c, :, 0]])
                for twin, d in dist.items():
                    d_i = d.distance.detach().double().cpu().numpy().reshape(C, S)[c]
                    rec[f"log_distance_{twin}"] = _finite_or_none(
                        d.log_distance.reshape(C)[c])
                    rec[f"distance_{twin}"] = [_finite_or_none(v) for v in d_i]
                    if twin == "start" and getattr(d, "collapsed", None) is not None:
                        col = d.collapsed.reshape(C, S)[c].cpu().numpy()
                        rec["collapsed_start"] = [int(v) for v in col]
                        rec["n_collapsed_start"] = int(col.sum())
                rec["log_distance"] = rec[f"log_distance_{twins[0]}"]
                rec["distance"] = rec[f"distance_{twins[0]}"]
                run.write_record(epoch, rec)
                computed.append(epoch)
                bar.update(1)
                bar.set_postfix(epoch=epoch, D=f"{rec['log_distance'] or math.nan:.2f}",
                                lam=f"{mean[c, 0]:.4f}")
                if on_record is not None:
                    on_record(epoch, rec)
    finally:
        bar.close()
        _update_skipped(run, skipped)
    return {"computed": computed, "skipped": skipped, "existing": existing}


def _update_skipped(run: DescentRun, skipped: list[str]) -> None:
    """``sweep/skipped.json``: checkpoints skipped as unreadable that still have no record."""
    path = run.sweep_dir / SKIPPED_FILE
    old = store.read_json(path) if path.is_file() else []
    keep = []
    for p in sorted(set(old) | set(skipped)):
        name = Path(p).name
        epoch = int(name.split("_")[1].split(".")[0]) if name.startswith("epoch_") else None
        if epoch is None or not run.record_path(epoch).is_file():
            keep.append(p)
    if keep or path.is_file():
        store.write_json(path, keep)


__all__ = ["SweepSettings", "SweepSettingsError", "sweep_run", "load_table", "select_samples",
           "read_sweep_settings", "check_sweep_settings", "record_key", "LOG_DISTANCE_FLOOR",
           "SCALAR_KEYS", "SAMPLE_KEYS"]
