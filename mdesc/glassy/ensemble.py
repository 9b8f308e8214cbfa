"""Batched, resumable training of many small nets at once (the run loop of a sweep group).

:func:`train_ensemble` trains the nets of one :class:`EnsembleConfig` -- tanh RNNs of one depth,
any widths and seeds -- as one :class:`~mdesc.glassy.model.EnsembleRNN` computation: one
forward and one backward pass per SGD update for all nets together. Each net keeps its own
plain SGD (``torch.optim.SGD`` semantics, optional momentum and per-net gradient-norm clipping
as ``clip_grad_norm_``), its own loss and its own minibatches (:func:`batch_indices` of its
seed), so its trajectory is the one :func:`~mdesc.glassy.run.train_glassy_run` gives it alone,
up to rounding (tests compare them in float64).

Records, per net: the full training and test loss at ``t = 0`` and log-spaced times; the mean
and the maximum of the minibatch losses between consecutive record times (spikes show up in the
maximum); and ``Delta(tau_w, tau)`` at every :func:`aging_schedule` time after each waiting
time, computed on the fly from the weights at ``tau_w`` (kept in the state), so no bulky weight
history is stored. Resumable through :mod:`mdesc.store`: ``settings.json`` (checked on resume),
``state.safetensors`` (weights, momentum, records, reference weights; atomic, every
``save_every_s``), and when finished ``result.json`` + ``weights.safetensors``.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch

from mdesc import store
from mdesc.glassy.analysis import AgingCurves
from mdesc.glassy.model import EnsembleRNN
from mdesc.glassy.run import (RESULT_FILE, SCHEDULE_FIELDS, STATE_FILE, WEIGHTS_FILE, RunData,
                              Schedule, batch_indices, open_run_folder)

__all__ = ["EnsembleConfig", "EnsembleResult", "train_ensemble", "load_ensemble"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclasses.dataclass
class EnsembleConfig(Schedule):
    """Settings of a batched group of nets (all recorded with its results).

    depth: layers of every net; widths, seeds: one entry per net (same length); the SGD and
    recording settings of :class:`~mdesc.glassy.run.Schedule` (keywords), the same for every
    net of the group. dtype: "float32" (fast) or "float64" (validation); eval_batch: windows
    per block when the full losses are evaluated (memory only, not recorded; the result does
    not depend on it beyond rounding).
    """

    depth: int
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    dtype: str = "float32"
    eval_batch: int = 128

    _RECORDED: ClassVar[tuple[str, ...]] = ("depth", "widths", "seeds", *SCHEDULE_FIELDS, "dtype")

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        self.seeds = tuple(int(s) for s in self.seeds)
        if len(self.widths) != len(self.seeds) or not self.widths:
            raise ValueError(f"widths and seeds must have one entry per net, got "
                             f"{len(self.widths)} widths and {len(self.seeds)} seeds")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(f"need steps >= 1 and lr > 0, got {self.steps}, {self.lr}")



@dataclasses.dataclass
class EnsembleResult:
    """Records of a group (finished, or the partial state of an unfinished one).

    times: (R,) record times; train_loss, test_loss, batch_mean, batch_max: (R, M) (NaN where
    not reached yet; batch_* at index k summarise the updates in ``(times[k-1], times[k]]``);
    snapshot_times: (S,); waiting_times: (K,); delta: (K, S, M) = Delta(tau_w_k,
    snapshot_times[j] - tau_w_k) for net m (NaN where ``snapshot_times[j] <= tau_w_k`` or not
    reached); step: updates done; finished: whether ``step == steps``.
    """

    config: EnsembleConfig
    times: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    batch_mean: np.ndarray
    batch_max: np.ndarray
    snapshot_times: np.ndarray
    waiting_times: np.ndarray
    delta: np.ndarray
    step: int
    info: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.step >= self.config.steps

    def aging(self, m: int) -> AgingCurves:
        """Aging curves of net m (lags with a recorded Delta only)."""
        lags, deltas = [], []
        for k, tw in enumerate(self.waiting_times):
            ok = (self.snapshot_times > tw) & np.isfinite(self.delta[k, :, m])
            lags.append((self.snapshot_times[ok] - tw).astype(np.int64))
            deltas.append(self.delta[k, ok, m].astype(np.float64))
        return AgingCurves(np.asarray(self.waiting_times, dtype=np.int64), lags, deltas)

    def reached(self) -> np.ndarray:
        """Mask of the record times reached so far."""
        return self.times <= self.step


def _record_arrays(result: EnsembleResult) -> dict[str, np.ndarray]:
    return {"train_loss": result.train_loss, "test_loss": result.test_loss,
            "batch_mean": result.batch_mean, "batch_max": result.batch_max,
            "delta": result.delta}


def _eval_losses(ens: EnsembleRNN, tok: torch.Tensor, lens: torch.Tensor, block: int) -> np.ndarray:
    """Mean loss of every net over all windows ``tok`` (T, N, V) (the same windows for all)."""
    m = len(ens.widths)
    sums = torch.zeros(m, dtype=torch.float64)
    counts = torch.zeros(m, dtype=torch.float64)
    with torch.no_grad():
        for a in range(0, tok.shape[1], block):
            t = tok[:, a:a + block]
            s, c = ens.loss_sums(t[:, None].expand(-1, m, -1, -1),
                                 lens[a:a + block][None].expand(m, -1))
            sums += s.double()
            counts += c.double()
    return (sums / counts.clamp(min=1)).numpy()


class _Group:
    """The training state of a batched group: the nets, their momentum buffers, the records
    (:class:`EnsembleResult`), the weights at each waiting time (``refs``) and the statistics of
    the current minibatch-loss bin; saved to and restored from the group's state file."""

    def __init__(self, config: EnsembleConfig, vocab_sizes: Sequence[int], data: RunData):
        self.config, self.data = config, data
        self.dtype = _DTYPES[config.dtype]
        self.m = m = len(config.widths)
        self.n_train = data.n_train
        self.batch = self.n_train if config.batch_size is None else \
            min(int(config.batch_size), self.n_train)
        times, tws = config.record_times(), np.asarray(config.resolved_waiting_times(), np.int64)
        snap_times = config.snapshot_times()
        self.rec_index = {int(t): k for k, t in enumerate(times)}
        self.snap_index = {int(t): j for j, t in enumerate(snap_times)}
        nan = lambda *s: np.full(s, np.nan)  # noqa: E731
        self.res = EnsembleResult(config, times, nan(len(times), m), nan(len(times), m),
                                  nan(len(times), m), nan(len(times), m), snap_times, tws,
                                  nan(len(tws), len(snap_times), m), 0, {})
        self.ens = EnsembleRNN.from_seeds(vocab_sizes, config.widths, config.depth, config.seeds,
                                          dtype=self.dtype)
        self.n_par = np.asarray(self.ens.n_parameters, dtype=np.float64)
        self.buffers: list[torch.Tensor | None] = [None] * len(self.ens.params)
        self.refs = torch.zeros(len(tws), m, sum(p[0].numel() for p in self.ens.params),
                                dtype=self.dtype)
        self.have_ref = np.zeros(len(tws), dtype=bool)
        self.bin_sum, self.bin_max, self.bin_n = np.zeros(m), np.full(m, -np.inf), 0

    def restore(self, path) -> float:
        """Load the saved state; returns the wall seconds trained before."""
        tensors, meta = store.read_checkpoint(path)
        with torch.no_grad():
            for i, name in enumerate(self.ens.names):
                self.ens.params[i].copy_(tensors[f"param.{name}"])
                if f"momentum.{name}" in tensors:
                    self.buffers[i] = tensors[f"momentum.{name}"].to(self.dtype)
        for key, arr in _record_arrays(self.res).items():
            arr[...] = tensors[key].numpy()
        self.refs.copy_(tensors["refs"])
        self.have_ref[:] = tensors["have_ref"].numpy().astype(bool)
        self.res.step = int(meta["step"])
        # the current bin's partial statistics were saved with the state
        self.bin_sum[:] = tensors["bin_sum"].numpy()
        self.bin_max[:] = tensors["bin_max"].numpy()
        self.bin_n = int(meta["bin_n"])
        return float(meta["wall_s"])

    def save(self, path, wall_s: float) -> None:
        ens = self.ens
        tensors = {f"param.{n}": p.detach() for n, p in zip(ens.names, ens.params)}
        tensors.update({f"momentum.{n}": b for n, b in zip(ens.names, self.buffers)
                        if b is not None})
        tensors.update(_record_arrays(self.res))
        tensors["refs"] = self.refs
        tensors["have_ref"] = torch.from_numpy(self.have_ref.astype(np.int8))
        tensors["bin_sum"], tensors["bin_max"] = self.bin_sum, self.bin_max
        store.save_tensors(path, tensors, {"step": self.res.step, "bin_n": self.bin_n,
                                           "wall_s": wall_s})

    def observe(self, t: int) -> None:
        """Full losses at a record time; the aging Delta (or a reference) at a snapshot time."""
        res, k = self.res, self.rec_index.get(t)
        if k is not None:
            res.train_loss[k] = _eval_losses(self.ens, *self.data.train, self.config.eval_batch)
            if self.data.test is not None:
                res.test_loss[k] = _eval_losses(self.ens, *self.data.test,
                                                self.config.eval_batch)
        j = self.snap_index.get(t)
        if j is not None:
            w = torch.cat([p.detach().reshape(self.m, -1) for p in self.ens.params], dim=1)
            for kk, tw in enumerate(res.waiting_times):
                if tw == t:
                    self.refs[kk] = w
                    self.have_ref[kk] = True
                elif tw < t and self.have_ref[kk]:
                    d = (w.double() - self.refs[kk].double()).pow(2).sum(dim=1).numpy()
                    res.delta[kk, j] = d / self.n_par

    def update(self) -> np.ndarray:
        """One SGD update of every net on its own minibatch; returns the (M,) minibatch losses
        and adds them to the current bin of ``batch_mean``/``batch_max``."""
        config, res, ens, m = self.config, self.res, self.ens, self.m
        by_seed = {s: batch_indices(s, res.step, self.n_train, self.batch)
                   for s in sorted(set(config.seeds))}
        idx = torch.as_tensor(np.stack([by_seed[s] for s in config.seeds]))     # (M, b)
        tok, lens = self.data.train
        sums, counts = ens.loss_sums(tok[:, idx], lens[idx])
        losses = sums / counts.clamp(min=1)
        for p in ens.params:
            p.grad = None
        losses.sum().backward()
        with torch.no_grad():
            grads = [p.grad * mk for p, mk in zip(ens.params, ens.masks)]
            if config.grad_clip is not None:
                norms = torch.stack([g.reshape(m, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
                coef = (config.grad_clip / (norms + 1e-6)).clamp(max=1.0)
                grads = [g * coef.reshape((m,) + (1,) * (g.ndim - 1)) for g in grads]
            for i, (p, g) in enumerate(zip(ens.params, grads)):
                if config.momentum:
                    if self.buffers[i] is None:
                        self.buffers[i] = g.clone()
                    else:
                        self.buffers[i].mul_(config.momentum).add_(g)
                    g = self.buffers[i]
                p.add_(g, alpha=-config.lr)
        lv = losses.detach().double().numpy()
        res.step += 1
        k = int(np.searchsorted(res.times, res.step))  # bin (times[k-1], times[k]]
        if self.bin_n == 0 or (k > 0 and res.step == res.times[k - 1] + 1):
            self.bin_sum[:], self.bin_max[:], self.bin_n = 0.0, -np.inf, 0
        self.bin_sum += lv
        self.bin_max = np.maximum(self.bin_max, lv)
        self.bin_n += 1
        res.batch_mean[k] = self.bin_sum / self.bin_n
        res.batch_max[k] = self.bin_max
        return lv


def train_ensemble(out_dir: str | os.PathLike, train_tokens, train_lengths,
                   config: EnsembleConfig, vocab_sizes: Sequence[int],
                   test_tokens=None, test_lengths=None, data_info: dict | None = None,
                   save_every_s: float = 60.0, stop_after: int | None = None,
                   log: Callable[[str], None] | None = None, log_every_s: float = 60.0,
                   callback: Callable[[int], None] | None = None) -> EnsembleResult:
    """Train every net of ``config`` by its own SGD, batched; resumable.

    out_dir: the group's folder; train_tokens (T, B, V) int64 and train_lengths (B,) (as for
    :func:`~mdesc.glassy.run.train_glassy_run`; e.g. ``chunk_tokens`` windows transposed);
    test_* the same for held-out data (optional); vocab_sizes: classes per voice.
    A finished group there is loaded, not retrained; an unfinished one resumes from its state;
    other settings or data raise :class:`mdesc.store.SettingsMismatch`.
    stop_after: save and return the partial result after this many updates (a planned
    interruption; re-running continues). log(line): progress lines, at most every
    ``log_every_s``. callback(step) runs after each update (tests use it).
    """
    data = RunData.of(train_tokens, train_lengths, test_tokens, test_lengths)
    folder, settings = open_run_folder(out_dir, config, vocab_sizes, data)
    if folder.path(RESULT_FILE).exists():
        return load_ensemble(out_dir)
    group = _Group(config, vocab_sizes, data)
    res, wall_before = group.res, 0.0
    state_path = folder.path(STATE_FILE)
    if state_path.exists():
        wall_before = group.restore(state_path)
    t_start = time.perf_counter()
    if stop_after is not None and res.step >= stop_after:
        res.info = {"wall_s": wall_before, "partial": True}
        return res
    if res.step == 0:
        group.observe(0)
    last_save = last_log = time.perf_counter()
    step0 = res.step
    while res.step < config.steps:
        lv = group.update()
        group.observe(res.step)
        if callback is not None:
            callback(res.step)
        now = time.perf_counter()
        if log is not None and now - last_log >= log_every_s:
            rate = (res.step - step0) / max(now - t_start, 1e-9)
            log(f"d={config.depth} step {res.step}/{config.steps} ({rate:.1f} updates/s, "
                f"{rate * group.m:.0f} model-steps/s); minibatch loss {np.nanmin(lv):.3f}.."
                f"{np.nanmax(lv):.3f}")
            last_log = now
        if stop_after is not None and res.step >= stop_after and res.step < config.steps:
            group.save(state_path, wall_before + (time.perf_counter() - t_start))
            res.info = {"wall_s": wall_before + (time.perf_counter() - t_start)}
            return res
        if now - last_save >= save_every_s and res.step < config.steps:
            group.save(state_path, wall_before + (time.perf_counter() - t_start))
            last_save = now
    wall = wall_before + (time.perf_counter() - t_start)
    return _finish_group(folder, group, settings, data_info, vocab_sizes, wall)


def _finish_group(folder: store.RunFolder, group: _Group, settings: dict,
                  data_info: dict | None, vocab_sizes: Sequence[int], wall: float
                  ) -> EnsembleResult:
    """Write the finished group (``result.json``, ``weights.safetensors``), drop the state."""
    res, ens, config = group.res, group.ens, group.config
    res.info = {"data": data_info or {}, "settings": settings, "n_parameters": ens.n_parameters,
                "n_train_sequences": group.n_train, "wall_s": wall,
                "torch_version": torch.__version__, "threads": torch.get_num_threads(),
                "python": sys.version.split()[0],
                "nonfinite": [bool(not np.isfinite(x)) for x in res.train_loss[-1]]}
    folder.save_tensors(WEIGHTS_FILE, {f"param.{n}": p.detach()
                                       for n, p in zip(ens.names, ens.params)},
                        {"widths": list(config.widths), "seeds": list(config.seeds),
                         "depth": config.depth, "vocab_sizes": list(vocab_sizes)})
    folder.write_json(RESULT_FILE, {"config": config.to_dict(), "times": res.times,
                                    "snapshot_times": res.snapshot_times,
                                    "waiting_times": res.waiting_times, "step": res.step,
                                    "info": res.info, **_record_arrays(res)})
    state_path = folder.path(STATE_FILE)
    if state_path.exists():
        state_path.unlink()
    return res


def _nan_array(x) -> np.ndarray:
    a = np.asarray(x, dtype=object)
    return np.where(a == None, np.nan, a).astype(np.float64)  # noqa: E711


def load_ensemble(out_dir: str | os.PathLike, partial: bool = False) -> EnsembleResult:
    """Read a group's records: the finished ``result.json``, or with ``partial=True`` the
    records of an unfinished group from its state file (NaN beyond the step reached)."""
    folder = store.RunFolder(out_dir)
    if folder.path(RESULT_FILE).exists():
        rec = folder.read_json(RESULT_FILE)
        cfg = dict(rec["config"])
        cfg["waiting_times"] = tuple(cfg["waiting_times"])
        config = EnsembleConfig(**cfg)
        return EnsembleResult(config, np.asarray(rec["times"], dtype=np.int64),
                              *(_nan_array(rec[k]) for k in ("train_loss", "test_loss",
                                                             "batch_mean", "batch_max")),
                              np.asarray(rec["snapshot_times"], dtype=np.int64),
                              np.asarray(rec["waiting_times"], dtype=np.int64),
                              _nan_array(rec["delta"]), int(rec["step"]), rec["info"])
    if not partial or not folder.path(STATE_FILE).exists():
        raise FileNotFoundError(f"{folder.root} holds no finished group ({RESULT_FILE}); re-run "
                                "the same sweep command to finish it")
    settings = folder.settings()
    cfg = dict(settings["config"])
    cfg["waiting_times"] = tuple(cfg["waiting_times"])
    config = EnsembleConfig(**cfg)
    tensors, meta = store.read_checkpoint(folder.path(STATE_FILE))
    tws = np.asarray(config.resolved_waiting_times(), dtype=np.int64)
    return EnsembleResult(config, config.record_times(), *(tensors[k].numpy() for k in
                                           ("train_loss", "test_loss", "batch_mean",
                                            "batch_max")),
                          config.snapshot_times(), tws, tensors["delta"].numpy(), int(meta["step"]),
                          {"wall_s": float(meta["wall_s"]), "partial": True,
                           "settings": settings})
