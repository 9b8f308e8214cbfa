"""A (depth x width x seed) sweep: data, groups, resumable training, and its records.

The sweep folder (a :class:`mdesc.store.RunFolder`) holds ``settings.json`` (checked on
resume), ``data.json`` (the split and the encoding), and one group folder per depth under
``runs/``: ``runs/d{depth}`` for the batched tanh-RNN groups (:func:`train_ensemble`, all widths
x seeds of the depth in one computation), or ``runs/d{depth}_w{width}_s{seed}`` per net for the
LSTM/GRU cells (:func:`train_glassy_run`, one at a time). :func:`collect` turns either into one
:class:`NetRecord` per net, the input of the analyses.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any, Callable

import numpy as np
import torch

from mdesc import store
from mdesc.data import chorales as ch
from mdesc.glassy.analysis import AgingCurves
from mdesc.glassy.ensemble import EnsembleConfig, load_ensemble, train_ensemble
from mdesc.glassy.model import EnsembleRNN
from mdesc.glassy.run import (RESULT_FILE, STATE_FILE, GlassyConfig, load_glassy_run,
                              train_glassy_run)
from mdesc.options import option

__all__ = ["SweepSettings", "NetRecord", "load_data", "run_sweep", "collect", "group_dir",
           "group_walls", "records_from_results"]


def _depth_steps(text: str) -> tuple[int, int]:
    try:
        d, s = text.split("=")
        return int(d), int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEPTH=STEPS, e.g. 3=50000")


@dataclasses.dataclass
class SweepSettings:
    """Everything that defines a sweep's results (recorded in ``settings.json``); each field is
    an option of ``mdesc glassy sweep`` with its help.

    depths, widths, seeds: the grid; steps: SGD updates per net, with ``depth_steps``
    ({depth: steps}) overriding it for some depths (a documented cut); cell: "rnn" (batched)
    or "lstm"/"gru" (one at a time); lr, momentum, grad_clip (None: no clipping), batch_size
    (windows per update); window: 16th-note steps per training window (``chunk_tokens``);
    n_records, waiting_times, n_lags: the loss and aging schedules; data: "music21" (all
    four-part chorales) or "fixture"; test_fraction, split_seed: the split by chorale;
    n_train, subset_seed: train on n_train chorales of the training split chosen by
    :meth:`~mdesc.data.chorales.ChoraleSet.nested_subset` (0 = all; subset_seed is recorded only
    when n_train > 0, where it has an effect); dtype: float32/float64.
    """

    depths: tuple[int, ...] = option((1, 2), "depths (layers) of the nets")
    widths: tuple[int, ...] = option((4, 8, 16, 32), "widths (units per layer) of the nets")
    seeds: tuple[int, ...] = option((0,), "one net per width and seed (weights and minibatches)")
    steps: int = option(2000, "SGD updates per net")
    depth_steps: dict[int, int] = option(
        help="other numbers of updates for some depths", type=_depth_steps, nargs="*",
        metavar="DEPTH=STEPS", default_factory=dict, default_help="none")
    cell: str = option("rnn", "rnn = tanh RNN, trained batched; lstm/gru are trained one at a "
                       "time", choices=("rnn", "lstm", "gru"))
    lr: float = option(0.1, "SGD learning rate")
    momentum: float = option(0.0, "SGD momentum")
    grad_clip: float | None = option(None, "clip each net's gradient norm to this (0: no "
                                     "clipping)")
    batch_size: int = option(4, "windows per SGD update")
    window: int = option(64, "16th-note steps per training window (each from a zero state)")
    n_records: int = option(40, "log-spaced loss records per net")
    waiting_times: tuple[int, ...] | None = option(
        None, "aging waiting times tau_w", default_help="4, a factor 4 apart, up to steps/8")
    n_lags: int = option(16, "log-spaced lags per waiting time")
    data: str = option("music21", "music21: all four-part chorales (parsed once, cached); "
                       "fixture: the 8 shipped with mdesc", choices=("music21", "fixture"))
    test_fraction: float = option(0.2, "fraction of chorales held out (the split is by "
                                  "chorale)")
    split_seed: int = option(0, "seed of the split by chorale")
    n_train: int = option(0, "train on N chorales of the training split, chosen by the seeded "
                          "rule of --subset-seed (0: all of them)")
    subset_seed: int = option(0, "seed of the rule choosing the --n-train chorales: the first N "
                              "of a seeded permutation of the training split, so smaller sets "
                              "are nested in larger ones")
    dtype: str = option("float32", "weights dtype", choices=("float32", "float64"))

    def steps_for(self, depth: int) -> int:
        return int(self.depth_steps.get(depth, self.depth_steps.get(str(depth), self.steps)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["depth_steps"] = {str(k): int(v) for k, v in sorted(self.depth_steps.items())}
        if not self.n_train:  # no subset: the seed has no effect (and older folders lack it)
            del d["subset_seed"]
        return d


@dataclasses.dataclass
class NetRecord:
    """One net's records, whatever trained it (see :func:`collect`).

    times (R,), train_loss/test_loss/batch_mean/batch_max (R,) (NaN where not reached or not
    recorded), aging: :class:`~mdesc.glassy.analysis.AgingCurves`, step: updates done,
    steps: updates planned.
    """

    depth: int
    width: int
    seed: int
    n_parameters: int
    times: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    batch_mean: np.ndarray
    batch_max: np.ndarray
    aging: Any
    step: int
    steps: int

    @property
    def finished(self) -> bool:
        return self.step >= self.steps


def load_data(settings: SweepSettings, progress: bool = False):
    """The windows of the split: ``(train (T, B, V), train_lengths, test, test_lengths, vocab,
    info)``; the vocabulary covers all chorales; the split is by chorale."""
    allc = ch.load_fixture_chorales() if settings.data == "fixture" else \
        ch.load_chorales(progress=progress)
    vocab = ch.VoiceVocabulary.from_grids(allc.grids)
    train, test = allc.split(settings.test_fraction, seed=settings.split_seed)
    if settings.n_train < 0 or settings.n_train > len(train):
        raise ValueError(f"n_train {settings.n_train}: the training split has {len(train)} "
                         "chorales; pass at most that (0 = all)")
    if settings.n_train:
        train = train.nested_subset(settings.n_train, settings.subset_seed)
    tok, lens, src = ch.chunk_tokens(train, vocab, settings.window)
    out = [np.ascontiguousarray(tok.transpose(1, 0, 2)), lens]
    info = {"source": settings.data, "n_chorales": len(allc), "n_train_chorales": len(train),
            "subset_rule": (f"the first {settings.n_train} of "
                            f"default_rng({settings.subset_seed}).permutation of the training "
                            "split" if settings.n_train else "all of the training split"),
            "n_test_chorales": len(test), "n_train_windows": int(len(lens)),
            "n_train_predictions": int((lens - 1).sum()),
            "train_names": train.names, "test_names": test.names,
            "window": settings.window, "steps_per_quarter": ch.STEPS_PER_QUARTER,
            "vocab_sizes": list(vocab.sizes), "vocab_low": list(vocab.low),
            "vocab_high": list(vocab.high),
            "encoding": "16th-note grid, no transposition; per voice token 0 = rest, "
                        "1 + pitch - low = pitch; input = concatenated one-hots; target = the "
                        "next step of all 4 voices; windows of `window` predictions from a "
                        "zero state"}
    if len(test):
        ttok, tlens, _ = ch.chunk_tokens(test, vocab, settings.window)
        out += [np.ascontiguousarray(ttok.transpose(1, 0, 2)), tlens]
        info["n_test_windows"] = int(len(tlens))
    else:
        out += [None, None]
    return (*out, vocab, info)


def group_dir(root, depth: int, width: int | None = None, seed: int | None = None) -> str:
    name = f"d{depth}" if width is None else f"d{depth}_w{width}_s{seed}"
    return os.path.join(os.fspath(root), "runs", name)


def _group_config(settings: SweepSettings, depth: int):
    widths = [w for w in sorted(settings.widths) for _ in settings.seeds]
    seeds = [s for _ in sorted(settings.widths) for s in settings.seeds]
    return EnsembleConfig(depth=depth, widths=tuple(widths), seeds=tuple(seeds),
                          steps=settings.steps_for(depth), lr=settings.lr,
                          momentum=settings.momentum, grad_clip=settings.grad_clip,
                          batch_size=settings.batch_size, n_records=settings.n_records,
                          waiting_times=settings.waiting_times, n_lags=settings.n_lags,
                          dtype=settings.dtype)


def run_sweep(root, settings: SweepSettings, log: Callable[[str], None] = print,
              progress: bool = False, stop_after: int | None = None,
              save_every_s: float = 60.0, round_robin: int = 0) -> dict[str, Any]:
    """Train (or resume, or reuse) every group of the sweep; returns ``{"wall_s": {...}}``.

    stop_after: stop each group after this many updates (tests; re-running continues).
    round_robin: if > 0 (batched groups only), train the depths in turns of this many updates,
    so that an interrupted sweep has every depth equally far (the result is the same: each
    group resumes exactly).
    """
    if round_robin > 0 and settings.cell == "rnn":
        top = max(settings.steps_for(d) for d in settings.depths)
        if stop_after is not None:
            top = min(top, stop_after)
        limit, info = 0, {"wall_s": {}}
        while limit < top:
            limit = min(limit + round_robin, top)
            info = run_sweep(root, settings, log, progress, limit, save_every_s)
        return info
    folder = store.RunFolder(root)
    folder.open(settings.to_dict())
    tok, lens, ttok, tlens, vocab, info = load_data(settings, progress)
    folder.write_json("data.json", info)
    walls = {}
    for depth in settings.depths:
        t0 = time.perf_counter()
        if settings.cell == "rnn":
            cfg = _group_config(settings, depth)
            log(f"depth {depth}: {len(cfg.widths)} nets (widths {sorted(settings.widths)} x "
                f"seeds {list(settings.seeds)}) as one batched group, {cfg.steps} steps")
            res = train_ensemble(group_dir(root, depth), tok, lens, cfg, vocab.sizes, ttok, tlens,
                                 data_info={"see": "data.json"}, log=log, stop_after=stop_after,
                                 save_every_s=save_every_s)
            walls[f"d{depth}"] = res.info.get("wall_s")
        else:
            dtype = {"float32": torch.float32, "float64": torch.float64}[settings.dtype]
            for w in sorted(settings.widths):
                for s in settings.seeds:
                    cfg = GlassyConfig(width=w, depth=depth, cell=settings.cell,
                                       steps=settings.steps_for(depth), lr=settings.lr,
                                       momentum=settings.momentum, grad_clip=settings.grad_clip,
                                       batch_size=settings.batch_size,
                                       n_records=settings.n_records,
                                       waiting_times=settings.waiting_times,
                                       n_lags=settings.n_lags, seed=s)
                    run = train_glassy_run(group_dir(root, depth, w, s), tok, lens, cfg,
                                           vocab.sizes, ttok, tlens, progress=progress,
                                           stop_after=stop_after, dtype=dtype)
                    if run is not None:
                        walls[f"d{depth}_w{w}_s{s}"] = run.info["wall_s"]
        log(f"depth {depth}: done or stopped after {time.perf_counter() - t0:.0f} s")
    return {"wall_s": walls}


def collect(root, partial: bool = False) -> tuple[SweepSettings, list[NetRecord]]:
    """Every net's records in a sweep folder. With ``partial=True`` unfinished batched groups
    contribute their records so far (``NetRecord.step < steps``); without, an unfinished group
    raises FileNotFoundError naming it."""
    folder = store.RunFolder(root)
    raw = folder.settings()
    raw["depth_steps"] = {int(k): v for k, v in raw.get("depth_steps", {}).items()}
    for key in ("depths", "widths", "seeds"):
        raw[key] = tuple(raw[key])
    if raw.get("waiting_times") is not None:
        raw["waiting_times"] = tuple(raw["waiting_times"])
    settings = SweepSettings(**raw)
    nets: list[NetRecord] = []
    missing = []
    for depth in settings.depths:
        if settings.cell == "rnn":
            try:
                res = load_ensemble(group_dir(root, depth), partial=partial)
            except FileNotFoundError:
                missing.append(f"d{depth}")
                continue
            n_par = res.info.get("n_parameters")
            if n_par is None:
                n_par = EnsembleRNN(settings_vocab(folder), res.config.widths, depth).n_parameters
            for i, (w, s) in enumerate(zip(res.config.widths, res.config.seeds)):
                nets.append(NetRecord(depth, w, s, int(n_par[i]), res.times,
                                      np.where(res.reached(), res.train_loss[:, i], np.nan),
                                      np.where(res.reached(), res.test_loss[:, i], np.nan),
                                      res.batch_mean[:, i], res.batch_max[:, i], res.aging(i),
                                      res.step, res.config.steps))
        else:
            for w in sorted(settings.widths):
                for s in settings.seeds:
                    try:
                        run = load_glassy_run(group_dir(root, depth, w, s))
                    except FileNotFoundError:
                        missing.append(f"d{depth}_w{w}_s{s}")
                        continue
                    nan = np.full(run.times.shape, np.nan)
                    nets.append(NetRecord(depth, w, s, int(run.info["n_parameters"]),
                                          run.times, run.train_loss, run.test_loss, nan, nan,
                                          run.aging(), run.config.steps, run.config.steps))
    if missing and not partial:
        raise FileNotFoundError(f"unfinished runs in {root}: {', '.join(missing)}; re-run the "
                                "sweep command to finish them (or analyse with --partial)")
    return settings, nets


def group_walls(root) -> dict[str, dict[str, Any]]:
    """Per batched group: wall seconds of training so far and updates done (from its result or
    its state file)."""
    out: dict[str, dict[str, Any]] = {}
    runs = os.path.join(os.fspath(root), "runs")
    if not os.path.isdir(runs):
        return out
    for name in sorted(os.listdir(runs), key=store.natural_key):
        folder = store.RunFolder(os.path.join(runs, name))
        if folder.path(RESULT_FILE).exists():
            rec = folder.read_json(RESULT_FILE)
            out[name] = {"wall_s": rec["info"].get("wall_s"), "step": rec["step"],
                         "finished": True}
        elif folder.path(STATE_FILE).exists():
            meta = store.read_checkpoint(folder.path(STATE_FILE), metadata_only=True)[1]
            out[name] = {"wall_s": meta["wall_s"], "step": meta["step"], "finished": False}
    return out


def settings_vocab(folder: store.RunFolder) -> list[int]:
    return list(folder.read_json("data.json")["vocab_sizes"])


def records_from_results(results) -> tuple[dict[str, Any], list[NetRecord]]:
    """``(fits, nets)`` of an analysed sweep rebuilt from its results folder alone
    (``fits.json`` and ``curves.safetensors``, as ``mdesc glassy analyze`` writes them), so the
    analyses can be redone without the run folder. The nets are as recorded (uncensored)."""
    folder = store.RunFolder(results)
    fits = folder.read_json("fits.json")
    tensors, meta = folder.load_tensors("curves.safetensors")
    rows = {f"d{r['depth']}_w{r['width']}_s{r['seed']}": r for r in fits["nets"]}
    nets = []
    for key in meta["nets"]:
        r = rows[key]

        def get(name, key=key):
            return tensors[f"{key}/{name}"].numpy()

        tws = sorted({int(k.split("/")[2]) for k in tensors if k.startswith(f"{key}/aging/")})
        aging = AgingCurves(np.asarray(tws, dtype=np.int64),
                            [get(f"aging/{t}/lag") for t in tws],
                            [get(f"aging/{t}/delta") for t in tws])
        nets.append(NetRecord(r["depth"], r["width"], r["seed"], r["n_parameters"],
                              get("times"), get("train_loss"), get("test_loss"),
                              get("batch_mean"), get("batch_max"), aging, r["step"], r["steps"]))
    return fits, nets
