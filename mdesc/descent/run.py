"""Training for the multiple-descent study: an LSTM sentiment classifier trained far past its
best epoch, every epoch's weights saved (paths: :mod:`mdesc.descent.folder`).

Per epoch the optimizer state is written first and the checkpoint second: an epoch is
*complete* when both exist.  A re-run continues after the newest complete epoch whose two files
both read (a damaged newest checkpoint is named and skipped; the optimizer states of the newest
``KEEP_OPTIMIZER_STATES`` epochs are kept for that).  Shuffling is seeded per epoch, so an
interrupted and resumed run gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mdesc import store
from mdesc.core.floss import FlossingPenalty
from mdesc.data import sentiment
from mdesc.data.sentiment import EncodedSplit, TextSettings
from mdesc.descent.folder import (CHECKPOINT_DIR, KEEP_OPTIMIZER_STATES, CheckpointError,
                                  DescentRun, load_checkpoint,
                                  save_safetensors)
from mdesc.descent.model import (ModelSettings, RunError, SentimentLSTM, TrainSettings, _batch,
                                 build_model, evaluate, head_loss, make_optimizer,
                                 recorded, resolve_device)
from mdesc.sweep.record import param_change, weights_of

__all__ = ["train_run", "read_history", "read_config", "load_run_data", "load_run_splits",
           "load_splits", "RunData", "list_checkpoints", "checkpoint_path", "load_checkpoint",
           "save_optimizer", "load_optimizer", "save_optimizer_state", "read_optimizer_state",
           "CheckpointError", "RunError", "KEEP_OPTIMIZER_STATES", "SentimentLSTM"]

# Fields that may differ between the call that started a run and a later call.
_MUTABLE_TRAIN_FIELDS = ("epochs", "device")
#: the parameter change of an epoch recorded with its metrics (mdesc.sweep.record.param_change)
PARAM_CHANGE = ("param_change", "param_change_relative")


# ----------------------------------------------------------------------------- files

def read_config(run_dir: str | os.PathLike) -> dict:
    try:
        return DescentRun(run_dir).config()
    except store.StoreError as e:
        raise RunError(str(e)) from None


def load_run_data(run_dir: str | os.PathLike) -> tuple[EncodedSplit, EncodedSplit]:
    """The run's encoded (train, test) splits as saved when the run started."""
    train, _, test = load_run_splits(run_dir)
    return train, test


def load_run_splits(run_dir: str | os.PathLike
                    ) -> tuple[EncodedSplit, EncodedSplit, EncodedSplit]:
    """The run's encoded (train, val, test) splits as saved when the run started (val has no
    items when the run has no validation split)."""
    d = DescentRun(run_dir).load_data()
    return tuple(EncodedSplit(d[f"{s}_ids"], d[f"{s}_lengths"], d[f"{s}_labels"])
                 if f"{s}_ids" in d else _empty_like(d["train_ids"], d["train_labels"])
                 for s in ("train", "val", "test"))


def _empty_like(ids: np.ndarray, labels: np.ndarray) -> EncodedSplit:
    return EncodedSplit(ids[:0], np.zeros(0, np.int64), labels[:0])


@dataclass
class RunData:
    """What a run trains and is evaluated on: encoded splits (``val`` may have no items), the
    vocabulary (index = token id) and the number of classes (2 = the binary head)."""

    train: EncodedSplit
    val: EncodedSplit
    test: EncodedSplit
    vocab: list[str]
    classes: int


def load_splits(data: TextSettings, progress: bool = False, data_path=None) -> RunData:
    """The ONE loader of a new run's data: (train, val, test), vocabulary and class count
    (``val`` has no items unless ``data.val_count`` > 0; it is carved from the training
    documents, never from the test ones: :func:`mdesc.data.sentiment.load_splits`)."""
    d = sentiment.load_splits(data, progress, data_path)
    return RunData(d.train, d.val, d.test, d.vocab, len(d.classes))


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of a run's weight checkpoints, sorted by epoch."""
    return DescentRun(run_dir).checkpoints()


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return DescentRun(run_dir).checkpoint_path(epoch)


def save_optimizer(path: Path, opt: torch.optim.Optimizer, epoch: int) -> None:
    """Optimizer state as safetensors (:func:`save_optimizer_state` of ``opt.state_dict()``)."""
    save_optimizer_state(path, opt.state_dict(), epoch)


def save_optimizer_state(path: Path, sd: dict, epoch: int) -> None:
    """A torch optimizer ``state_dict`` as safetensors: tensors under
    ``state.<param>.<name>``, the rest (param groups, non-tensor state) as JSON metadata."""
    tensors, extra = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v):
                tensors[f"state.{idx}.{name}"] = v
            else:
                extra.setdefault(str(idx), {})[name] = v
    meta = {"epoch": json.dumps(epoch), "param_groups": json.dumps(sd["param_groups"]),
            "extra_state": json.dumps(extra)}
    save_safetensors(path, tensors, meta)


def read_optimizer_state(path: Path) -> dict:
    """The torch optimizer ``state_dict`` written by :func:`save_optimizer_state`
    (CheckpointError if the file is not one)."""
    tensors, meta = store.read_checkpoint(path)
    try:
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
        for idx, st in meta["extra_state"].items():
            state.setdefault(int(idx), {}).update(st)
        return {"state": state, "param_groups": meta["param_groups"]}
    except (KeyError, ValueError, AttributeError, TypeError) as e:
        raise CheckpointError(f"cannot restore the optimizer state in {path}: {e}") from e


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    """Restore an optimizer state written by :func:`save_optimizer` (CheckpointError if not)."""
    sd = read_optimizer_state(path)
    try:
        opt.load_state_dict(sd)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot restore the optimizer state in {path}: {e}") from e


# ----------------------------------------------------------------------------- training

def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The per-(seed, epoch) generator of a run: first the epoch's shuffling, then its dropout
    masks (batch by batch), so a resumed run and an ensemble member reproduce exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def clip_gradients(params, clip_norm: float | None) -> None:
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)


def _train_epoch(model, opt, split: EncodedSplit, s: TrainSettings, epoch: int,
                 device: torch.device, progress, floss=None) -> None:
    """One epoch; ``floss``: the run's FlossingPenalty (None: off), called with the run's global
    step number so a resumed run floss on the same steps as an uninterrupted one."""
    model.train()
    gen = epoch_generator(s.seed, epoch)
    order = torch.randperm(len(split), generator=gen).numpy()
    model.dropout_generator = gen
    n_batches = math.ceil(len(split) / s.batch_size)
    for b, lo in enumerate(range(0, len(split), s.batch_size)):
        ids, lengths, y = _batch(split, order[lo: lo + s.batch_size], device)
        opt.zero_grad(set_to_none=True)
        loss = head_loss(model(ids, lengths), y)
        if floss is not None:
            loss = loss + floss(model, step=(epoch - 1) * n_batches + b).to(loss.dtype)
        loss.backward()
        clip_gradients(model.parameters(), s.clip_norm)
        opt.step()
        progress.update(1)
    model.dropout_generator = None


def start_folder(run: DescentRun, data: TextSettings, model: ModelSettings,
                 train: TrainSettings, loaded: RunData, data_file: str | None) -> dict:
    """Write config/vocab/data files of a new run folder from its ``loaded`` data
    (``data_file``: the corpus file read, recorded)."""
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name in ("train", "val", "test"):
        sp = getattr(loaded, name)
        if name != "val" or len(sp):
            arrays.update({f"{name}_ids": sp.ids, f"{name}_lengths": sp.lengths,
                           f"{name}_labels": sp.labels})
    run.save_data(arrays)
    run.write_vocab(loaded.vocab)
    binary = loaded.classes == 2
    config = {"study": "multiple_descent", **_wanted(data, model, train),
              "vocab_size": len(loaded.vocab), "n_train": len(loaded.train),
              "n_test": len(loaded.test),
              **({"n_val": len(loaded.val)} if len(loaded.val) else {}),
              "classes": loaded.classes, "data_file": data_file,
              "loss": "binary cross-entropy on sigmoid(logit), nats" if binary else
                      f"softmax cross-entropy over {loaded.classes} classes, nats",
              "padding": "ids padded at the end with 0 (embedding padding_idx=0 = zero input); "
                         "the logit is read at each review's last real token"}
    run.write_config(config)  # written last: a folder with config.json is a complete start
    return config


def _start_run(run: DescentRun, data: TextSettings, model: ModelSettings,
               train: TrainSettings, progress: bool, data_path=None) -> dict:
    """Encode the data and write config/vocab/data files of a new run folder."""
    loaded = load_splits(data, progress, data_path)
    return start_folder(run, data, model, train, loaded, sentiment.data_file(data, data_path))


def _wanted(data: TextSettings, model: ModelSettings, train: TrainSettings) -> dict:
    kept = recorded(train, TrainSettings.NEW_FIELDS)
    return {"data": data.to_dict(), "model": model.to_dict(),
            "train": {k: v for k, v in kept.items() if k not in _MUTABLE_TRAIN_FIELDS}}


def _flat(d: dict) -> dict:
    return {f"{sec}.{k}": v for sec, sub in d.items() for k, v in sub.items()}


def check_same_settings(config: dict, data: TextSettings, model: ModelSettings,
                        train: TrainSettings, run_dir) -> None:
    """The store's one settings check on the recorded data/model/train sections (a field a
    folder does not record was added later: it holds the field's default)."""
    wanted = _flat(_wanted(data, model, train))
    stored = _flat({s: config.get(s, {}) for s in ("data", "model", "train")})
    defaults = {f"{sec}.{f.name}": f.default for sec, cls in
                (("data", type(data)), ("model", ModelSettings), ("train", TrainSettings))
                for f in fields(cls)}
    for have, other in ((stored, wanted), (wanted, stored)):  # unrecorded = the default
        for key in set(other) - set(have):
            if key in defaults:
                have[key] = defaults[key]
    store.check_settings(run_dir, stored, wanted)


def train_run(run_dir: str | os.PathLike, data: TextSettings | None = None,
              model: ModelSettings | None = None, train: TrainSettings | None = None,
              on_epoch: Callable[[int, dict], None] | None = None,
              progress: bool = True, data_path: str | os.PathLike | None = None,
              say: Callable[[str], None] | None = print) -> dict:
    """Train (or continue training) the run in ``run_dir`` up to ``train.epochs`` epochs.

    A new folder is created and filled (config, vocabulary, encoded data, epoch-0 checkpoint);
    an existing one must have been started with the same settings (``epochs`` and ``device``
    may differ; otherwise :class:`mdesc.store.SettingsMismatch`) and continues after its newest
    readable complete epoch.  ``on_epoch(epoch, metrics)`` is called after each epoch's files
    are safely written (tests use it to interrupt).  ``data_path``: where the ``pang_lee``
    corpus is (read only when a run starts).  ``say`` receives one-line notices (what the run
    resumed from, which unreadable files were skipped).

    Returns the run's history: ``{"epoch": [...], "train_loss": [...], ...}`` (all epochs).
    """
    data = data or TextSettings()
    model_s = model or ModelSettings()
    train = train or TrainSettings()
    data.check()
    model_s.check()
    train.check()
    device = resolve_device(train.device)
    run = DescentRun(run_dir)
    config = check_folder(run, data, model_s, train)
    if config is None:
        config = _start_run(run, data, model_s, train, progress, data_path)
    splits = load_run_splits(run.root)

    torch.manual_seed(train.seed)
    net = build_model(config).to(device)
    opt = make_optimizer(net, train)
    done = run.complete_epochs()
    if done:
        start = resume_newest(run.root, done, lambda e: _load_epoch(run, e, net, opt), say)
    else:
        start = 0
        _save_epoch(run, net, opt, 0, splits, device)

    n_batches = math.ceil(len(splits[0]) / train.batch_size)
    floss = flossing_penalty(train, splits[0], device)
    todo = max(train.epochs - start, 0)
    if todo:
        from tqdm.auto import tqdm  # optional progress bar, imported only when training

        bar = tqdm(total=todo * n_batches, desc=f"train epochs {start + 1}-{train.epochs}",
                   unit="batch", disable=not progress, dynamic_ncols=True)
        try:
            for epoch in range(start + 1, train.epochs + 1):
                before = weights_of(net)
                seen = len(floss.history) if floss is not None else 0
                _train_epoch(net, opt, splits[0], train, epoch, device, bar, floss)
                change = param_change(before, weights_of(net))
                extra = {k: change[k] for k in PARAM_CHANGE}
                if floss is not None:
                    extra.update(floss_metrics(floss.history[seen:]))
                metrics = _save_epoch(run, net, opt, epoch, splits, device, extra)
                bar.set_postfix(epoch=epoch, train=f"{metrics['train_loss']:.3g}",
                                test=f"{metrics['test_loss']:.3g}",
                                acc=f"{metrics['test_acc']:.3f}")
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
        finally:
            bar.close()
    return read_history(run.root)


def check_folder(run: DescentRun, data: TextSettings, model: ModelSettings,
                 train: TrainSettings) -> dict | None:
    """An existing run's config (its settings checked against these), or None for a new or
    empty folder (a folder holding anything else is refused)."""
    if run.is_run():
        config = read_config(run.root)
        check_same_settings(config, data, model, train, run.root)
        return config
    if run.root.exists() and any(run.root.iterdir()):
        stray = [p.name for p in run.root.iterdir() if not p.name.startswith(".")]
        if stray and set(stray) - {CHECKPOINT_DIR, "data.safetensors", "vocab.json"}:
            raise RunError(f"{run.root} exists and is not a training run folder; "
                           "choose an empty or new --run-dir")
    return None


def epoch_metrics(epoch: int, scores: dict[str, tuple[float, float]],
                  change: dict | None = None) -> dict:
    """A checkpoint's metrics: ``scores`` maps split name -> (loss, accuracy) (val only when
    the run has a validation split); ``change``: the epoch's parameter change."""
    metrics = {"epoch": epoch}
    for key in ("loss", "acc"):
        for name in ("train", "test"):
            metrics[f"{name}_{key}"] = scores[name][key == "acc"]
    if "val" in scores:
        metrics.update(val_loss=scores["val"][0], val_acc=scores["val"][1])
    return {**metrics, **(change or {})}


def write_epoch(run: DescentRun, epoch: int, state: dict, optimizer_state: dict,
                metrics: dict) -> None:
    """Write an epoch's optimizer state, then its checkpoint (the commit point), atomically;
    prune old optimizer states and rewrite history.json."""
    save_optimizer_state(run.optimizer_path(epoch), optimizer_state, epoch)
    run.save_checkpoint(epoch, state, metrics)
    run.prune_optimizer_states(epoch)
    _write_history(run)


#: the flossing record of an epoch (runs trained with --floss): the mean lambda_1 of the probe
#: over the epoch's flossing steps, and how many of them were finite
FLOSS = ("floss_lambda", "floss_terms")


def flossing_penalty(s: TrainSettings, split: EncodedSplit, device: torch.device):
    """The run's :class:`mdesc.FlossingPenalty` (None when ``--floss`` is off): the first
    ``floss_probe`` training reviews as the probe (their own lengths, then 100 zero-input steps,
    the zero-input window), the run's seed for the tangent frame."""
    target_weight = s.floss_target_weight()
    if target_weight is None:
        return None
    ids, lengths, _ = _batch(split, np.arange(min(s.floss_probe, len(split))), device)
    return FlossingPenalty(target=target_weight[0], weight=target_weight[1], every=s.floss_every,
                           probe=ids, lengths=lengths, seed=s.seed)


def floss_metrics(history: list[dict]) -> dict:
    finite = [h["value"] for h in history if h["finite"]]
    return {"floss_lambda": float(np.mean(finite)) if finite else float("nan"),
            "floss_terms": len(finite)}


def _save_epoch(run: DescentRun, net, opt, epoch: int, splits, device,
                change: dict | None = None) -> dict:
    """Evaluate on every split (train, val when it has items, test), then write the epoch."""
    scores = {name: evaluate(net, sp, device)
              for name, sp in zip(("train", "val", "test"), splits) if len(sp)}
    metrics = epoch_metrics(epoch, scores, change)
    write_epoch(run, epoch, net.state_dict(), opt.state_dict(), metrics)
    return metrics




class Unreadable(Exception):
    """A file of an epoch that cannot be read or restored (path and the first line why)."""

    def __init__(self, path: Path, reason: BaseException | str):
        why = str(reason).splitlines()[0][:160] if str(reason) else type(reason).__name__
        super().__init__(f"{path} ({why})")
        self.path = path


def read_epoch(run: DescentRun, epoch: int) -> tuple[dict, dict]:
    """The weights and the torch optimizer state dict of a complete epoch (Unreadable names
    the file that is not)."""
    ck, op = run.checkpoint_path(epoch), run.optimizer_path(epoch)
    try:
        state, _ = load_checkpoint(ck)
    except CheckpointError as e:
        raise Unreadable(ck, e) from None
    try:
        return state, read_optimizer_state(op)
    except CheckpointError as e:
        raise Unreadable(op, e) from None


def _load_epoch(run: DescentRun, epoch: int, net, opt) -> str:
    state, opt_state = read_epoch(run, epoch)
    ck, op = run.checkpoint_path(epoch), run.optimizer_path(epoch)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise Unreadable(ck, e) from None
    try:
        opt.load_state_dict(opt_state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise Unreadable(op, f"cannot restore the optimizer state: {e}") from None
    return f"{ck.name} + {op.name}"


def resume_newest(where, done: list[int], load: Callable[[int], str], say) -> int:
    """The newest epoch of ``done`` that ``load(epoch)`` restores (it returns the files it
    read, or raises :class:`Unreadable`).  Unreadable files are named (one line each through
    ``say``) and skipped; RunError if no kept epoch can be restored."""
    bad = []
    for epoch in reversed(done):
        try:
            files = load(epoch)
        except Unreadable as e:
            bad.append(str(e))
            continue
        if say is not None:
            for b in bad:
                say(f"skipped unreadable {b}")
            say(f"resuming {where} from epoch {epoch} ({files})")
        return epoch
    raise RunError(f"{where}: no kept epoch can be resumed; unreadable: {'; '.join(bad)}. "
                   "Delete the damaged files listed (training then continues from the newest "
                   "epoch that has both a checkpoint and an optimizer state) or start a new "
                   "--run-dir")


def read_history(run_dir: str | os.PathLike) -> dict[str, list]:
    """Per-epoch metrics from the checkpoints' metadata (unreadable checkpoints skipped), with
    the parameter change of each epoch (|W_e - W_(e-1)|, total L2 and relative to
    |W_(e-1)|; NaN for epoch 0 and for runs trained before it was recorded)."""
    cols = {k: [] for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc")
            + PARAM_CHANGE}
    metas = []
    for epoch, path in DescentRun(run_dir).checkpoints():
        try:
            metas.append((epoch, store.read_checkpoint(path, metadata_only=True)[1]))
        except CheckpointError:
            continue
    metas = _recorded_rows(DescentRun(run_dir), metas) + metas
    metas.sort(key=lambda em: em[0])
    if any("val_loss" in meta for _, meta in metas):
        cols.update(val_loss=[], val_acc=[])
    if any("floss_lambda" in meta for _, meta in metas):
        cols.update({k: [] for k in FLOSS})
    for epoch, meta in metas:
        for k in cols:
            cols[k].append(meta[k] if k in meta else
                           (epoch if k == "epoch" else float("nan")))
    return cols


def _recorded_rows(run: DescentRun, metas: list) -> list[tuple[int, dict]]:
    """Rows of history.json for epochs before the newest checkpoint whose checkpoints are not in
    the folder (a run continued from its packed newest state on another machine, or checkpoints
    deleted to save space): the metrics recorded when those epochs were trained.  Rows after the
    newest checkpoint are stale (that epoch will be trained again) and are dropped."""
    if not metas or not run.history_path.is_file():
        return []
    try:
        old = store.read_json(run.history_path)
        rows = [{k: old[k][i] for k in old} for i in range(len(old["epoch"]))]
    except (store.StoreError, KeyError, IndexError, TypeError):
        return []  # an unreadable history is rebuilt from the checkpoints alone
    have, newest = {e for e, _ in metas}, max(e for e, _ in metas)
    return [(int(r["epoch"]), r) for r in rows
            if int(r["epoch"]) not in have and int(r["epoch"]) < newest]


def _write_history(run: DescentRun) -> None:
    store.atomic_write_text(run.history_path, json.dumps(read_history(run.root)))
