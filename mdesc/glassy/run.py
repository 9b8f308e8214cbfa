"""Resumable training runs of study 2; every file goes through :mod:`mdesc.store`.

* :func:`train_ensemble` -- the sweep's workhorse: many tanh RNNs of one depth (all widths x
  seeds of a group) trained as one batched computation (:class:`~mdesc.glassy.model.EnsembleRNN`),
  each by its own plain SGD on its own loss and its own minibatches. Equal, to rounding, to
  training each net alone with :func:`train_glassy_run` and the same settings (tested in float64).
* :func:`train_glassy_run` -- one net at a time (any cell: rnn, lstm, gru): the reference.

Both record the full training (and test) loss at log-spaced times, and the mean-square weight
change ``Delta(tau_w, tau)`` after each waiting time ``tau_w`` on the :func:`aging_schedule`.
Minibatches are drawn without replacement by ``numpy.random.default_rng([seed, 1, step])``, so a
resumed run repeats exactly the batches an uninterrupted one would, and nets with the same seed
see the same batches whatever their width. State is saved atomically (safetensors + JSON, no
pickle) and a re-run with the same settings resumes from it; other settings are refused with the
store's one :class:`~mdesc.store.SettingsMismatch` message.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from mdesc import store
from mdesc.glassy.analysis import (AgingCurves, aging_correlation, aging_schedule, fit_power_law,
                                   learning_time, log_spaced_times)
from mdesc.glassy.model import VoiceRNN

__all__ = ["GlassyConfig", "GlassyRun", "train_glassy_run", "load_glassy_run",
           "data_fingerprint", "batch_indices", "default_waiting_times", "STATE_FILE",
           "RUN_FILE", "SNAPSHOT_FILE", "RunData", "Schedule", "SCHEDULE_FIELDS",
           "open_run_folder"]

STATE_FILE = "state.safetensors"
RUN_FILE = "run.json"
SNAPSHOT_FILE = "snapshots.safetensors"
RESULT_FILE = "result.json"
WEIGHTS_FILE = "weights.safetensors"


def data_fingerprint(*arrays) -> str:
    """Short sha1 of arrays' bytes, recorded to tell whether a resumed run sees the same data."""
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def batch_indices(seed: int, step: int, n_train: int, batch: int) -> np.ndarray:
    """The (sorted) training examples of SGD update ``step`` for a run seeded ``seed``."""
    if batch >= n_train:
        return np.arange(n_train)
    rng = np.random.default_rng([int(seed), 1, int(step)])
    return np.sort(rng.choice(n_train, batch, replace=False))


def default_waiting_times(steps: int, n: int = 4, factor: int = 4) -> tuple[int, ...]:
    """``n`` waiting times a ``factor`` apart, the largest ``steps // 8``."""
    top = max(steps // 8, 1)
    return tuple(sorted({max(top // factor ** k, 1) for k in range(n)}))


# ============================================================================ one net at a time

@dataclasses.dataclass(kw_only=True)
class Schedule:
    """The SGD and recording settings a one-net run and a batched group share.

    steps: SGD updates; lr, momentum: SGD as ``torch.optim.SGD`` (momentum 0 by default);
    grad_clip: if set, the gradient's global norm is clipped to it before each update;
    batch_size: sequences per update (:func:`batch_indices`); ``None`` = full batch.
    n_records: about this many log-spaced times (plus t = 0) at which the full training (and
    test) loss is evaluated. waiting_times: the aging ``tau_w`` (default
    :func:`default_waiting_times`); n_lags: lags per waiting time (see :func:`aging_schedule`).
    A subclass names its recorded settings, in their order, in ``_RECORDED``.
    """

    steps: int = 2000
    lr: float = 0.1
    momentum: float = 0.0
    grad_clip: float | None = None
    batch_size: int | None = None
    n_records: int = 40
    waiting_times: tuple[int, ...] | None = None
    n_lags: int = 20

    _RECORDED: ClassVar[tuple[str, ...]] = ()

    def resolved_waiting_times(self) -> tuple[int, ...]:
        if self.waiting_times is not None:
            return tuple(int(x) for x in self.waiting_times)
        return default_waiting_times(self.steps)

    def record_times(self) -> np.ndarray:
        """(R,) int64: t = 0 and about ``n_records`` log-spaced updates (full-loss records)."""
        return np.concatenate([[0], log_spaced_times(self.steps, self.n_records)]).astype(np.int64)

    def snapshot_times(self) -> np.ndarray:
        """The :func:`aging_schedule` of the waiting times (weights compared there)."""
        return aging_schedule(self.resolved_waiting_times(), self.steps, self.n_lags)

    def to_dict(self) -> dict[str, Any]:
        """The recorded settings (``_RECORDED``, in that order), waiting times resolved."""
        d = dataclasses.asdict(self)
        d["waiting_times"] = list(self.resolved_waiting_times())
        return {name: d[name] for name in self._RECORDED}


SCHEDULE_FIELDS = tuple(f.name for f in dataclasses.fields(Schedule))


@dataclasses.dataclass
class GlassyConfig(Schedule):
    """Settings of one training run (all recorded with its results).

    width, depth, cell: the recurrent core (see :class:`VoiceRNN`); the SGD and recording
    settings of :class:`Schedule` (keywords); seed: weight init and batches; device: "cpu",
    "cuda", ...
    """

    width: int
    depth: int = 1
    cell: str = "rnn"
    seed: int = 0
    device: str = "cpu"

    _RECORDED: ClassVar[tuple[str, ...]] = ("width", "depth", "cell", *SCHEDULE_FIELDS, "seed",
                                            "device")


@dataclasses.dataclass
class GlassyRun:
    """A finished one-net run: its settings and records.

    times: (R,) int64 record times (SGD updates, from 0); train_loss, test_loss: (R,) float64
    nats per voice and step (test_loss NaN without test data); snapshot_times: (K,) int64;
    snapshots: (K, P) flattened weights (in the weights dtype) (``VoiceRNN.flat_weights``) or None when the
    run folder has no snapshot file; aging_curves: Delta at the configured waiting times.
    info: settings, data description, parameter count, wall time, versions.
    """

    config: GlassyConfig
    times: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    snapshot_times: np.ndarray
    snapshots: np.ndarray | None
    aging_curves: AgingCurves
    info: dict[str, Any]

    def power_law(self, **kwargs):
        """:func:`~mdesc.glassy.analysis.fit_power_law` of the training loss."""
        return fit_power_law(self.times, self.train_loss, **kwargs)

    def learning_time(self, threshold: float) -> float:
        return learning_time(self.times, self.train_loss, threshold)

    def aging(self, waiting_times: Sequence[int] | None = None) -> AgingCurves:
        """Aging curves at ``waiting_times`` (default: the configured ones, stored with the run).
        Other waiting times need the snapshots and must be snapshot times."""
        default = self.config.resolved_waiting_times()
        if waiting_times is None or tuple(int(x) for x in waiting_times) == default:
            return self.aging_curves
        if self.snapshots is None:
            raise FileNotFoundError("this run's snapshot file is missing; only the stored aging "
                                    f"curves at waiting times {default} are available")
        return aging_correlation(self.snapshot_times, self.snapshots, waiting_times)


@dataclasses.dataclass
class RunData:
    """The token windows a run trains on, checked once: ``train`` and ``test`` are
    ``(tokens (T, B, V) int64, lengths (B,) int64)``; ``test`` is None without held-out data."""

    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor] | None

    @classmethod
    def of(cls, train_tokens, train_lengths, test_tokens=None, test_lengths=None) -> "RunData":
        test = None if test_tokens is None else _as_tokens(test_tokens, test_lengths, "test")
        return cls(_as_tokens(train_tokens, train_lengths, "train"), test)

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[1])

    def fingerprint(self) -> str:
        """:func:`data_fingerprint` of the windows (recorded to check a resumed run's data)."""
        test = self.test or (None, None)
        return data_fingerprint(*(None if a is None else a.numpy() for a in (*self.train, *test)))


def _as_tokens(tokens, lengths, what: str):
    tokens = torch.as_tensor(np.asarray(tokens), dtype=torch.int64)
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.int64)
    if tokens.ndim != 3 or tokens.shape[1] != lengths.shape[0]:
        raise ValueError(f"{what}_tokens must be (T, B, V) and {what}_lengths (B,), got "
                         f"{tuple(tokens.shape)} and {tuple(lengths.shape)}")
    return tokens, lengths


def open_run_folder(out_dir, config, vocab_sizes: Sequence[int], data: RunData,
                    **extra: Any) -> tuple[store.RunFolder, dict[str, Any]]:
    """The run folder of ``config`` (a :class:`GlassyConfig` or an ``EnsembleConfig``) opened
    with its settings (config, vocabulary, data fingerprint, then ``extra``): recorded the first
    time, checked on resume, a mismatch naming the differing fields of the config."""
    folder = store.RunFolder(out_dir)
    settings = {"config": config.to_dict(), "vocab_sizes": [int(v) for v in vocab_sizes],
                "data_fingerprint": data.fingerprint(), **extra}
    if folder.exists():  # name the differing fields of the config, not just "config"
        store.check_settings(folder.root, _flat(folder.settings()), _flat(settings))
    folder.open(settings)
    return folder, settings


class _NetRecords:
    """One net's records so far: full losses at the record times, flat weights at the
    snapshot times (the aging schedule); saved with the state, so a resumed run continues."""

    def __init__(self, config: GlassyConfig, data: RunData, device: torch.device):
        self.record_set = set(config.record_times().tolist())
        self.snap_set = set(config.snapshot_times().tolist())
        self.train = tuple(a.to(device) for a in data.train)
        self.test = None if data.test is None else tuple(a.to(device) for a in data.test)
        self.times: list[int] = []
        self.train_loss: list[float] = []
        self.test_loss: list[float] = []
        self.s_times: list[int] = []
        self.snaps: list[np.ndarray] = []

    def observe(self, t: int, model: VoiceRNN) -> None:
        if t in self.record_set and (not self.times or self.times[-1] < t):
            self.times.append(t)
            self.train_loss.append(_mean_loss(model, *self.train))
            self.test_loss.append(math.nan if self.test is None else _mean_loss(model, *self.test))
        if t in self.snap_set and (not self.s_times or self.s_times[-1] < t):
            self.s_times.append(t)
            self.snaps.append(model.flat_weights().cpu().numpy())

    def meta(self) -> dict[str, Any]:
        return {"times": self.times, "train_loss": self.train_loss, "test_loss": self.test_loss,
                "snapshot_times": self.s_times}

    def restore(self, tensors: dict, meta: dict) -> None:
        self.times, self.s_times = list(meta["times"]), list(meta["snapshot_times"])
        self.train_loss = [math.nan if x is None else x for x in meta["train_loss"]]
        self.test_loss = [math.nan if x is None else x for x in meta["test_loss"]]
        if self.s_times:
            self.snaps = list(tensors["snapshots"].cpu().numpy())


def _mean_loss(model: VoiceRNN, tok: torch.Tensor, lens: torch.Tensor) -> float:
    """Mean loss per voice and step over all windows, in blocks of 256 windows."""
    with torch.no_grad():
        total, count = 0.0, 0
        for a in range(0, tok.shape[1], 256):
            s, c = model.loss(tok[:, a:a + 256], lens[a:a + 256], reduction="sum")
            total += float(s)
            count += int(c)
    return total / max(count, 1)


def _save_net_state(path, model: VoiceRNN, opt, records: _NetRecords, step: int,
                    wall_s: float) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            tensors[f"momentum.{i}"] = buf
    if records.snaps:
        tensors["snapshots"] = np.stack(records.snaps)
    store.save_tensors(path, tensors, {"step": step, **records.meta(), "wall_s": wall_s})


def _restore_net_state(path, model: VoiceRNN, opt, records: _NetRecords,
                       device: torch.device) -> tuple[int, float]:
    """Load a saved state into ``model``, ``opt`` and ``records``: ``(step, wall seconds)``."""
    tensors, meta = store.read_checkpoint(path, device=str(device))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    for i, p in enumerate(model.parameters()):
        if f"momentum.{i}" in tensors:
            opt.state[p]["momentum_buffer"] = tensors[f"momentum.{i}"]
    records.restore(tensors, meta)
    return int(meta["step"]), float(meta["wall_s"])


def train_glassy_run(out_dir: str | os.PathLike, train_tokens, train_lengths,
                     config: GlassyConfig, vocab_sizes: Sequence[int],
                     test_tokens=None, test_lengths=None, data_info: dict | None = None,
                     progress: bool = True, save_every_s: float = 10.0,
                     stop_after: int | None = None, dtype=torch.float32,
                     callback: Callable[[int], None] | None = None) -> GlassyRun | None:
    """Train one :class:`VoiceRNN` by SGD, recording what the glassy analyses need; resumable.

    out_dir: the run's folder (a :class:`mdesc.store.RunFolder`). A finished run there with the
    same settings and data is loaded and returned without training; an unfinished one is resumed
    from its last saved state; other settings raise :class:`mdesc.store.SettingsMismatch`.
    train_tokens: (T, B, V) int64 tokens; train_lengths: (B,) valid lengths (padding after);
    test_tokens/test_lengths: the same for held-out data (optional). dtype: of the weights.
    State is saved atomically to ``state.safetensors`` at record and snapshot times and every
    1000th update, at most once every ``save_every_s`` seconds, and when ``stop_after`` stops it
    (return None: a planned interruption, as if killed); callback(step) runs after each update.
    Returns the finished :class:`GlassyRun` (``run.json`` + ``snapshots.safetensors``).
    """
    data = RunData.of(train_tokens, train_lengths, test_tokens, test_lengths)
    folder, settings = open_run_folder(out_dir, config, vocab_sizes, data,
                                       dtype=str(dtype).replace("torch.", ""))
    if folder.path(RUN_FILE).exists():
        return load_glassy_run(out_dir)
    device = torch.device(config.device)
    n_train = data.n_train
    batch = n_train if config.batch_size is None else min(int(config.batch_size), n_train)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = VoiceRNN(vocab_sizes, config.width, config.depth, config.cell)
    model = model.to(device=device, dtype=dtype)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    records = _NetRecords(config, data, device)
    step, wall_before = 0, 0.0
    state_path = folder.path(STATE_FILE)
    if state_path.exists():
        step, wall_before = _restore_net_state(state_path, model, opt, records, device)
    t_start = time.perf_counter()

    def save_state() -> None:
        _save_net_state(state_path, model, opt, records, step,
                        wall_before + (time.perf_counter() - t_start))

    records.observe(step, model)
    last_save = time.perf_counter()
    bar = None
    if progress:  # tqdm only when a progress bar is asked for
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=step, unit="step", leave=False,
                   desc=f"{config.cell} d={config.depth} w={config.width}")
    tok, lens = records.train
    try:
        while step < config.steps:
            idx = torch.as_tensor(batch_indices(config.seed, step, n_train, batch), device=device)
            opt.zero_grad(set_to_none=True)
            model.loss(tok[:, idx], lens[idx]).backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            step += 1
            records.observe(step, model)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(step)
            if ((step in records.record_set or step in records.snap_set or step % 1000 == 0)
                    and time.perf_counter() - last_save >= save_every_s):
                save_state()
                last_save = time.perf_counter()
            if stop_after is not None and step >= stop_after and step < config.steps:
                save_state()
                return None
    finally:
        if bar is not None:
            bar.close()
    wall = wall_before + (time.perf_counter() - t_start)
    return _finish_net(folder, config, settings, data_info, records, params, n_train, wall)


def _finish_net(folder: store.RunFolder, config: GlassyConfig, settings: dict,
                data_info: dict | None, records: _NetRecords, params, n_train: int,
                wall: float) -> GlassyRun:
    """Write the finished run (``run.json``, ``snapshots.safetensors``), drop the state file."""
    info = {"settings": settings, "data": data_info or {},
            "n_parameters": int(sum(p.numel() for p in params)), "n_train_sequences": n_train,
            "wall_s": wall, "torch_version": torch.__version__,
            "final_train_loss": records.train_loss[-1],
            "nonfinite": bool(not np.isfinite(records.train_loss[-1]))}
    snap_arr = np.stack(records.snaps)
    snap_t = np.asarray(records.s_times, dtype=np.int64)
    run = GlassyRun(config=config, times=np.asarray(records.times, dtype=np.int64),
                    train_loss=np.asarray(records.train_loss, dtype=np.float64),
                    test_loss=np.asarray(records.test_loss, dtype=np.float64),
                    snapshot_times=snap_t, snapshots=snap_arr,
                    aging_curves=aging_correlation(snap_t, snap_arr,
                                                   config.resolved_waiting_times()),
                    info=info)
    folder.save_tensors(SNAPSHOT_FILE, {"times": snap_t, "weights": snap_arr})
    folder.write_json(RUN_FILE, {
        "config": config.to_dict(), "times": run.times, "train_loss": run.train_loss,
        "test_loss": run.test_loss, "snapshot_times": snap_t,
        "aging": run.aging_curves.to_dict(), "info": info})
    state_path = folder.path(STATE_FILE)
    if state_path.exists():
        state_path.unlink()
    return run


def _flat(settings: dict) -> dict:
    """Settings with the ``config`` entries lifted to the top level (for the mismatch message)."""
    out = {k: v for k, v in settings.items() if k != "config"}
    out.update(settings.get("config", {}))
    return out


def _floats(values) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def load_glassy_run(out_dir: str | os.PathLike) -> GlassyRun:
    """Read a finished run written by :func:`train_glassy_run` (snapshots only if its
    snapshot file is there)."""
    folder = store.RunFolder(out_dir)
    if not folder.path(RUN_FILE).exists():
        raise FileNotFoundError(f"{folder.path(RUN_FILE)} not found: the run there has not "
                                "finished (re-run the same training command to resume it)")
    rec = folder.read_json(RUN_FILE)
    cfg = dict(rec["config"])
    cfg["waiting_times"] = tuple(cfg["waiting_times"]) if cfg.get("waiting_times") else None
    snaps = None
    if folder.path(SNAPSHOT_FILE).exists():
        snaps = folder.load_tensors(SNAPSHOT_FILE)[0]["weights"].numpy()
    ag = rec["aging"]
    curves = AgingCurves(np.asarray(ag["waiting_times"], dtype=np.int64),
                         [np.asarray(x, dtype=np.int64) for x in ag["lags"]],
                         [_floats(x) for x in ag["delta"]])
    return GlassyRun(config=GlassyConfig(**cfg), times=np.asarray(rec["times"], dtype=np.int64),
                     train_loss=_floats(rec["train_loss"]), test_loss=_floats(rec["test_loss"]),
                     snapshot_times=np.asarray(rec["snapshot_times"], dtype=np.int64),
                     snapshots=snaps, aging_curves=curves, info=rec["info"])
