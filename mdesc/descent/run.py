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
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mdesc import store
from mdesc.data.pang_lee import find_corpus
from mdesc.data.sentiment import EncodedSplit, TextSettings, load_sentiment
from mdesc.descent.folder import (CHECKPOINT_DIR, KEEP_OPTIMIZER_STATES, CheckpointError,
                                  DescentRun, load_checkpoint,
                                  save_safetensors)
from mdesc.descent.model import (ModelSettings, RunError, SentimentLSTM, TrainSettings, _batch,
                                 build_model, evaluate, make_optimizer, resolve_device)
from mdesc.sweep.record import param_change, weights_of

__all__ = ["train_run", "read_history", "read_config", "load_run_data", "list_checkpoints",
           "checkpoint_path", "load_checkpoint", "save_optimizer", "load_optimizer",
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
    d = DescentRun(run_dir).load_data()
    return tuple(EncodedSplit(d[f"{s}_ids"], d[f"{s}_lengths"], d[f"{s}_labels"])
                 for s in ("train", "test"))


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of a run's weight checkpoints, sorted by epoch."""
    return DescentRun(run_dir).checkpoints()


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return DescentRun(run_dir).checkpoint_path(epoch)


def save_optimizer(path: Path, opt: torch.optim.Optimizer, epoch: int) -> None:
    """Optimizer state as safetensors: tensors under ``state.<param>.<name>``, the rest
    (param groups, non-tensor state) as JSON in the metadata."""
    sd = opt.state_dict()
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


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    """Restore an optimizer state written by :func:`save_optimizer` (CheckpointError if not)."""
    tensors, meta = store.read_checkpoint(path)
    try:
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
        for idx, st in meta["extra_state"].items():
            state.setdefault(int(idx), {}).update(st)
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot restore the optimizer state in {path}: {e}") from e


# ----------------------------------------------------------------------------- training

def _train_epoch(model, opt, split: EncodedSplit, s: TrainSettings, epoch: int,
                 device: torch.device, progress) -> None:
    model.train()
    gen = torch.Generator().manual_seed(s.seed * 1_000_003 + epoch)  # same order on resume
    order = torch.randperm(len(split), generator=gen).numpy()
    for lo in range(0, len(split), s.batch_size):
        ids, lengths, y = _batch(split, order[lo: lo + s.batch_size], device)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.binary_cross_entropy_with_logits(model(ids, lengths), y)
        loss.backward()
        opt.step()
        progress.update(1)



def _start_run(run: DescentRun, data: TextSettings, model: ModelSettings,
               train: TrainSettings, progress: bool, data_path=None) -> dict:
    """Encode the data and write config/vocab/data files of a new run folder."""
    train_split, test_split, vocab = load_sentiment(data, progress, data_path)
    run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, sp in (("train", train_split), ("test", test_split)):
        arrays.update({f"{name}_ids": sp.ids, f"{name}_lengths": sp.lengths,
                       f"{name}_labels": sp.labels})
    run.save_data(arrays)
    run.write_vocab(vocab)
    config = {"study": "multiple_descent", **_wanted(data, model, train),
              "vocab_size": len(vocab), "n_train": len(train_split), "n_test": len(test_split),
              "data_file": _data_file(data, data_path),
              "loss": "binary cross-entropy on sigmoid(logit), nats",
              "padding": "ids padded at the end with 0 (embedding padding_idx=0 = zero input); "
                         "the logit is read at each review's last real token"}
    run.write_config(config)  # written last: a folder with config.json is a complete start
    return config


def _wanted(data: TextSettings, model: ModelSettings, train: TrainSettings) -> dict:
    return {"data": data.to_dict(), "model": asdict(model),
            "train": {k: v for k, v in asdict(train).items() if k not in _MUTABLE_TRAIN_FIELDS}}


def _flat(d: dict) -> dict:
    return {f"{sec}.{k}": v for sec, sub in d.items() for k, v in sub.items()}


def check_same_settings(config: dict, data: TextSettings, model: ModelSettings,
                        train: TrainSettings, run_dir) -> None:
    """The store's one settings check on the recorded data/model/train sections."""
    wanted = _flat(_wanted(data, model, train))
    stored = {k: v for k, v in _flat({s: config.get(s, {}) for s in ("data", "model", "train")}
                                     ).items()}
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
    if run.is_run():
        config = read_config(run.root)
        check_same_settings(config, data, model_s, train, run.root)
    else:
        if run.root.exists() and any(run.root.iterdir()):
            stray = [p.name for p in run.root.iterdir() if not p.name.startswith(".")]
            if stray and set(stray) - {CHECKPOINT_DIR, "data.safetensors", "vocab.json"}:
                raise RunError(f"{run.root} exists and is not a training run folder; "
                               "choose an empty or new --run-dir")
        config = _start_run(run, data, model_s, train, progress, data_path)
    train_split, test_split = load_run_data(run.root)

    torch.manual_seed(train.seed)
    net = build_model(config).to(device)
    opt = make_optimizer(net, train)
    done = run.complete_epochs()
    if done:
        start = _resume(run, net, opt, done, say)
    else:
        start = 0
        _save_epoch(run, net, opt, 0, train_split, test_split, device)

    n_batches = math.ceil(len(train_split) / train.batch_size)
    todo = max(train.epochs - start, 0)
    if todo:
        from tqdm.auto import tqdm  # optional progress bar, imported only when training

        bar = tqdm(total=todo * n_batches, desc=f"train epochs {start + 1}-{train.epochs}",
                   unit="batch", disable=not progress, dynamic_ncols=True)
        try:
            for epoch in range(start + 1, train.epochs + 1):
                before = weights_of(net)
                _train_epoch(net, opt, train_split, train, epoch, device, bar)
                change = param_change(before, weights_of(net))
                metrics = _save_epoch(run, net, opt, epoch, train_split, test_split, device,
                                      {k: change[k] for k in PARAM_CHANGE})
                bar.set_postfix(epoch=epoch, train=f"{metrics['train_loss']:.3g}",
                                test=f"{metrics['test_loss']:.3g}",
                                acc=f"{metrics['test_acc']:.3f}")
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
        finally:
            bar.close()
    return read_history(run.root)


def _save_epoch(run: DescentRun, net, opt, epoch: int, train_split, test_split, device,
                change: dict | None = None) -> dict:
    """Evaluate, then write optimizer state and checkpoint (the commit point) atomically;
    ``change``: the epoch's parameter change (recorded with the metrics)."""
    train_loss, train_acc = evaluate(net, train_split, device)
    test_loss, test_acc = evaluate(net, test_split, device)
    metrics = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
               "train_acc": train_acc, "test_acc": test_acc, **(change or {})}
    save_optimizer(run.optimizer_path(epoch), opt, epoch)
    run.save_checkpoint(epoch, net.state_dict(), metrics)
    run.prune_optimizer_states(epoch)
    _write_history(run)
    return metrics


def _data_file(data: TextSettings, data_path) -> str | None:
    if data.source != "pang_lee":
        return None
    return str(find_corpus(data_path))


def _resume(run: DescentRun, net, opt, done: list[int], say) -> int:
    """Load the newest complete epoch whose checkpoint and optimizer state both read.

    Unreadable files are named (one line each through ``say``) and skipped; returns the
    epoch resumed from.  Raises RunError if no kept epoch can be read.
    """
    bad = []
    for epoch in reversed(done):
        ck, op = run.checkpoint_path(epoch), run.optimizer_path(epoch)
        try:
            state, _ = load_checkpoint(ck)
            net.load_state_dict(state)
        except (CheckpointError, RuntimeError) as e:
            bad.append(f"{ck} ({str(e).splitlines()[0][:160]})")
            continue
        try:
            load_optimizer(op, opt)
        except CheckpointError as e:
            bad.append(f"{op} ({str(e).splitlines()[0][:160]})")
            continue
        if say is not None:
            for b in bad:
                say(f"skipped unreadable {b}")
            say(f"resuming {run.root} from epoch {epoch} ({ck.name} + {op.name})")
        return epoch
    raise RunError(f"{run.root}: no kept epoch can be resumed; unreadable: {'; '.join(bad)}. "
                   "Delete the damaged files listed (training then continues from the newest "
                   "epoch that has both a checkpoint and an optimizer state) or start a new "
                   "--run-dir")


def read_history(run_dir: str | os.PathLike) -> dict[str, list]:
    """Per-epoch metrics from the checkpoints' metadata (unreadable checkpoints skipped), with
    the parameter change of each epoch (|W_e - W_(e-1)|, total L2 and relative to
    |W_(e-1)|; NaN for epoch 0 and for runs trained before it was recorded)."""
    cols = {k: [] for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc")
            + PARAM_CHANGE}
    for epoch, path in DescentRun(run_dir).checkpoints():
        try:
            _, meta = store.read_checkpoint(path, metadata_only=True)
        except CheckpointError:
            continue
        for k in cols:
            cols[k].append(meta[k] if k in meta else
                           (epoch if k == "epoch" else float("nan")))
    return cols


def _write_history(run: DescentRun) -> None:
    store.atomic_write_text(run.history_path, json.dumps(read_history(run.root)))
