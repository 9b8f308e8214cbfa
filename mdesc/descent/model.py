"""What study 1 trains: the LSTM sentiment classifier, its settings, the optimiser, batching.

Paper (Design: docs/multiple_descent.md): Embedding(vocab, 32) -> LSTM(32, 60) -> Linear(60, 1)
+ sigmoid, binary cross-entropy.  The padding id 0 embeds to a fixed zero vector, so padding is
exactly zero input to the LSTM (docs/conventions.md: a run is the drive, then zero input).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from mdesc.data.sentiment import EncodedSplit
from mdesc.errors import UserError
from mdesc.options import option

OPTIMIZERS = ("adam", "sgd", "rmsprop")


class RunError(UserError):
    """A run folder or setting problem; the message says how to fix it."""


@dataclass
class ModelSettings:
    """Architecture.  Paper: Embedding(vocab, 32) -> LSTM(32, 60) -> Linear(60, 1) + sigmoid."""

    embed_dim: int = option(32, "embedding width", metavar="N")
    hidden_size: int = option(60, "LSTM width H", metavar="H")
    num_layers: int = option(1, "stacked LSTM layers", flag="--layers", metavar="N")

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


@dataclass
class TrainSettings:
    """Optimisation.  ``epochs`` may be raised on a later call to continue a run; ``device``
    may change between calls; every other field must stay as the run was started with."""

    epochs: int = option(40, "train up to this epoch (far past the best one); raise it later to "
                         "continue a run", metavar="N")
    optimizer: str = option("adam", "the optimiser", choices=OPTIMIZERS)
    lr: float = option(1e-3, "learning rate", metavar="X")
    batch_size: int = option(64, "reviews per batch", metavar="N")
    weight_decay: float = option(0.0, "weight decay", metavar="X")
    momentum: float = option(0.0, "SGD/RMSprop momentum", metavar="X")
    seed: int = option(0, "seeds the train/test split, the initial weights and the shuffling")
    device: str = option("cpu", "cpu, cuda, cuda:N or auto", cli=False)

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
