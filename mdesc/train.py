"""Training harness for the multiple-descent study: an LSTM sentiment classifier trained far
past its best epoch, every epoch's weights saved.

Run folder layout (everything a sweep or report needs; nothing else is read later)::

    run/config.json                       data, model and training settings (+ split sizes)
    run/vocab.json                        the vocabulary, index = token id
    run/data.safetensors                  encoded splits: {train,test}_{ids,lengths,labels}
    run/checkpoints/epoch_NNNN.safetensors  model weights after epoch NNNN (0 = initial);
                                          metadata: epoch and train/test loss and accuracy
    run/checkpoints/optimizer_NNNN.safetensors  optimizer state after epoch NNNN (only the
                                          latest is kept; it is what a resumed run continues)
    run/history.json                      the per-epoch metrics as one table (convenience)

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``),
weights and optimizer state with ``safetensors`` (no pickle).  Per epoch the optimizer state is
written first and the checkpoint second: an epoch is *complete* when both exist, and a re-run
continues after the last complete epoch.  Shuffling is seeded per epoch, so an interrupted and
resumed run gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from mdesc.data.sentiment import EncodedSplit, TextSettings, load_sentiment
from mdesc.store import atomic_path, atomic_write_text

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.safetensors$")
OPTIMIZER_RE = re.compile(r"^optimizer_(\d{4,})\.safetensors$")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


class RunError(ValueError):
    """A run folder or setting problem; the message says how to fix it."""


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read (corrupt, truncated, or not safetensors)."""


# ----------------------------------------------------------------------------- the model


@dataclass
class ModelSettings:
    """Architecture.  Paper: Embedding(vocab, 32) -> LSTM(32, 60) -> Linear(60, 1) + sigmoid."""

    embed_dim: int = 32
    hidden_size: int = 60
    num_layers: int = 1

    def check(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise RunError(f"{f.name} must be at least 1, got {getattr(self, f.name)}")


class SentimentLSTM(nn.Module):
    """Embedding -> (stacked) LSTM -> Linear(hidden, 1); outputs the logit of "positive".

    Holds exactly one ``nn.Embedding`` (``padding_idx=0``: the padding token is a fixed zero
    vector, i.e. zero input) and one ``nn.LSTM`` (``batch_first=False``), so the core's
    ``mdesc.max_lyapunov(model, ids)`` and friends accept it with ids of shape (T, B).

    ``forward(ids, lengths)``: ids (T, B) int64 padded at the end, lengths (B,) -> logits (B,),
    read from the last layer's h at each review's last real token.  The probability of
    "positive" is ``sigmoid(logit)``; the loss is binary cross-entropy on it.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 60,
                 num_layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(ids))                         # (T, B, H)
        last = out[lengths.to(out.device) - 1, torch.arange(out.shape[1], device=out.device)]
        return self.readout(last).squeeze(-1)


def build_model(config: dict) -> SentimentLSTM:
    """The (untrained) model described by a run's ``config.json`` contents."""
    m = config["model"]
    return SentimentLSTM(config["vocab_size"], m["embed_dim"], m["hidden_size"], m["num_layers"])


# ----------------------------------------------------------------------------- settings


@dataclass
class TrainSettings:
    """Optimisation.  ``epochs`` may be raised on a later call to continue a run; ``device``
    may change between calls; every other field must stay as the run was started with."""

    epochs: int = 40
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.0          # SGD / RMSprop only
    seed: int = 0
    device: str = "cpu"

    def check(self) -> None:
        if self.epochs < 0:
            raise RunError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                           f"got {self.optimizer!r}")
        if not self.lr > 0:
            raise RunError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 1:
            raise RunError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise RunError("weight_decay and momentum must be >= 0")


# Fields that may differ between the call that started a run and a later call.
_MUTABLE_TRAIN_FIELDS = ("epochs", "device")


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA if available) -> torch.device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise RunError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} requested but this torch has no usable CUDA; "
                       "use --device cpu")
    return dev


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum,
                               weight_decay=s.weight_decay)
    return torch.optim.RMSprop(model.parameters(), lr=s.lr, momentum=s.momentum,
                               weight_decay=s.weight_decay)


# ----------------------------------------------------------------------------- files


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` to a temp file in the same folder, then replace."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Weights and metadata of one checkpoint (safetensors only; nothing is unpickled).

    Returns ``(state_dict, metadata)`` with metadata values parsed from JSON (epoch, losses,
    accuracies).  Raises :class:`CheckpointError` naming the file if it cannot be read.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    parsed = {}
    for k, v in meta.items():
        try:
            parsed[k] = json.loads(v)
        except ValueError:
            parsed[k] = v
    return state, parsed


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of a run's weight checkpoints, sorted by epoch."""
    ckdir = Path(run_dir) / CHECKPOINT_DIR
    if not ckdir.is_dir():
        return []
    out = [(int(m.group(1)), ckdir / n) for n in os.listdir(ckdir)
           if (m := CHECKPOINT_RE.match(n))]
    return sorted(out)


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:04d}.safetensors"


def _optimizer_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"optimizer_{epoch:04d}.safetensors"


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
    save_tensors_atomic(path, tensors, meta)


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        state: dict[int, dict] = {}
        for key in f.keys():
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = f.get_tensor(key)
    for idx, st in json.loads(meta["extra_state"]).items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir} is not a training run folder (no {CONFIG_FILE}); "
                       f"create one with `mdesc descent train --run-dir {run_dir}`")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_run_data(run_dir: str | os.PathLike) -> tuple[EncodedSplit, EncodedSplit]:
    """The run's encoded (train, test) splits as saved when the run started."""
    from safetensors.numpy import load_file

    d = load_file(str(Path(run_dir) / "data.safetensors"))
    return tuple(EncodedSplit(d[f"{s}_ids"], d[f"{s}_lengths"], d[f"{s}_labels"])
                 for s in ("train", "test"))


# ----------------------------------------------------------------------------- training


@torch.no_grad()
def evaluate(model: SentimentLSTM, split: EncodedSplit, device: torch.device,
             batch_size: int = 512) -> tuple[float, float]:
    """Mean binary cross-entropy (nats) and accuracy of ``model`` on ``split`` (eval mode)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for lo in range(0, len(split), batch_size):
        ids, lengths, y = _batch(split, np.arange(lo, min(lo + batch_size, len(split))), device)
        logits = model(ids, lengths)
        total_loss += nn.functional.binary_cross_entropy_with_logits(
            logits, y, reduction="sum").item()
        correct += ((logits > 0).float() == y).sum().item()
    return total_loss / len(split), correct / len(split)


def _batch(split: EncodedSplit, idx: np.ndarray, device: torch.device):
    """(T, B) ids trimmed to the longest review in the batch, lengths, labels."""
    lengths = split.lengths[idx]
    ids = split.ids[idx, : int(lengths.max())]
    return (torch.from_numpy(np.ascontiguousarray(ids.T)).to(device),
            torch.from_numpy(lengths).to(device),
            torch.from_numpy(split.labels[idx]).to(device))


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


def _complete_epochs(run_dir: Path) -> list[int]:
    ckdir = run_dir / CHECKPOINT_DIR
    if not ckdir.is_dir():
        return []
    opts = {int(m.group(1)) for n in os.listdir(ckdir) if (m := OPTIMIZER_RE.match(n))}
    return sorted(e for e, _ in list_checkpoints(run_dir) if e in opts)


def _start_run(run_dir: Path, data: TextSettings, model: ModelSettings,
               train: TrainSettings, progress: bool) -> dict:
    """Encode the data and write config/vocab/data files of a new run folder."""
    from safetensors.numpy import save_file

    train_split, test_split, vocab = load_sentiment(data, progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINT_DIR).mkdir(exist_ok=True)
    arrays = {}
    for name, sp in (("train", train_split), ("test", test_split)):
        arrays.update({f"{name}_ids": sp.ids, f"{name}_lengths": sp.lengths,
                       f"{name}_labels": sp.labels})
    with atomic_path(run_dir / "data.safetensors") as tmp:
        save_file(arrays, str(tmp))
    atomic_write_text(run_dir / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    config = {"study": "multiple_descent", "data": data.to_dict(), "model": asdict(model),
              "train": {k: v for k, v in asdict(train).items()
                        if k not in _MUTABLE_TRAIN_FIELDS},
              "vocab_size": len(vocab), "n_train": len(train_split), "n_test": len(test_split),
              "loss": "binary cross-entropy on sigmoid(logit), nats",
              "padding": "ids padded at the end with 0 (embedding padding_idx=0 = zero input); "
                         "the logit is read at each review's last real token"}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2))  # written last
    return config


def _check_same_settings(config: dict, data: TextSettings, model: ModelSettings,
                         train: TrainSettings, run_dir: Path) -> None:
    wanted = {"data": data.to_dict(), "model": asdict(model),
              "train": {k: v for k, v in asdict(train).items()
                        if k not in _MUTABLE_TRAIN_FIELDS}}
    diffs = [f"{sec}.{k}: run has {config[sec].get(k)!r}, asked for {v!r}"
             for sec, d in wanted.items() for k, v in d.items() if config[sec].get(k) != v]
    if diffs:
        raise RunError(f"{run_dir} was started with other settings ({'; '.join(diffs)}); "
                       "use the same settings to resume it, or a new --run-dir")


def train_run(run_dir: str | os.PathLike, data: TextSettings | None = None,
              model: ModelSettings | None = None, train: TrainSettings | None = None,
              on_epoch: Callable[[int, dict], None] | None = None,
              progress: bool = True) -> dict:
    """Train (or continue training) the run in ``run_dir`` up to ``train.epochs`` epochs.

    A new folder is created and filled (config, vocabulary, encoded data, epoch-0 checkpoint);
    an existing one must have been started with the same settings (``epochs`` and ``device``
    may differ) and continues after its last complete epoch.  ``on_epoch(epoch, metrics)`` is
    called after each epoch's files are safely written (tests use it to interrupt).

    Returns the run's history: ``{"epoch": [...], "train_loss": [...], ...}`` (all epochs).
    """
    data = data or TextSettings()
    model_s = model or ModelSettings()
    train = train or TrainSettings()
    data.check()
    model_s.check()
    train.check()
    device = resolve_device(train.device)
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).exists():
        config = read_config(run_dir)
        _check_same_settings(config, data, model_s, train, run_dir)
    else:
        if run_dir.exists() and any(run_dir.iterdir()):
            stray = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
            if stray and set(stray) - {CHECKPOINT_DIR, "data.safetensors", "vocab.json"}:
                raise RunError(f"{run_dir} exists and is not a training run folder; "
                               "choose an empty or new --run-dir")
        config = _start_run(run_dir, data, model_s, train, progress)
    train_split, test_split = load_run_data(run_dir)

    torch.manual_seed(train.seed)
    net = build_model(config).to(device)
    opt = make_optimizer(net, train)
    done = _complete_epochs(run_dir)
    if done:
        start = done[-1]
        state, _ = load_checkpoint(checkpoint_path(run_dir, start))
        net.load_state_dict(state)
        load_optimizer(_optimizer_path(run_dir, start), opt)
    else:
        start = 0
        _save_epoch(run_dir, net, opt, 0, train_split, test_split, device)

    n_batches = math.ceil(len(train_split) / train.batch_size)
    todo = max(train.epochs - start, 0)
    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=todo * n_batches, desc=f"train epochs {start + 1}-{train.epochs}",
                   unit="batch", disable=not progress, dynamic_ncols=True)
        try:
            for epoch in range(start + 1, train.epochs + 1):
                _train_epoch(net, opt, train_split, train, epoch, device, bar)
                metrics = _save_epoch(run_dir, net, opt, epoch, train_split, test_split, device)
                bar.set_postfix(epoch=epoch, train=f"{metrics['train_loss']:.3g}",
                                test=f"{metrics['test_loss']:.3g}",
                                acc=f"{metrics['test_acc']:.3f}")
                if on_epoch is not None:
                    on_epoch(epoch, metrics)
        finally:
            bar.close()
    return read_history(run_dir)


def _save_epoch(run_dir: Path, net, opt, epoch: int, train_split, test_split, device) -> dict:
    """Evaluate, then write optimizer state and checkpoint (the commit point) atomically."""
    train_loss, train_acc = evaluate(net, train_split, device)
    test_loss, test_acc = evaluate(net, test_split, device)
    metrics = {"epoch": epoch, "train_loss": train_loss, "test_loss": test_loss,
               "train_acc": train_acc, "test_acc": test_acc}
    save_optimizer(_optimizer_path(run_dir, epoch), opt, epoch)
    save_tensors_atomic(checkpoint_path(run_dir, epoch), net.state_dict(),
                        {k: json.dumps(v) for k, v in metrics.items()})
    for old in range(epoch - 1, -1, -1):  # only the newest optimizer state is needed
        p = _optimizer_path(run_dir, old)
        if p.exists():
            p.unlink()
    _write_history(run_dir)
    return metrics


def read_history(run_dir: str | os.PathLike) -> dict[str, list]:
    """Per-epoch metrics from the checkpoints' metadata (unreadable checkpoints skipped)."""
    cols = {k: [] for k in ("epoch", "train_loss", "test_loss", "train_acc", "test_acc")}
    for epoch, path in list_checkpoints(run_dir):
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
        except Exception:
            continue
        for k in cols:
            cols[k].append(json.loads(meta[k]) if k in meta else
                           (epoch if k == "epoch" else float("nan")))
    return cols


def _write_history(run_dir: Path) -> None:
    atomic_write_text(run_dir / "history.json", json.dumps(read_history(run_dir)))
