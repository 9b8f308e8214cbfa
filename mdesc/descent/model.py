"""What study 1 trains: the LSTM sentiment classifier, its settings, the optimiser, batching.

Paper (Design: docs/multiple_descent.md): Embedding(vocab, 32) -> LSTM(32, 60) -> Linear(60, 1)
+ sigmoid, binary cross-entropy.  The padding id 0 embeds to a fixed zero vector, so padding is
exactly zero input to the LSTM (docs/conventions.md: a run is the drive, then zero input).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from mdesc.data.sentiment import EncodedSplit
from mdesc.errors import UserError
from mdesc.options import option

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: recurrent cells, and the module attribute holding each one (LSTM's stays ``lstm``, so every
#: checkpoint written before other cells existed still loads)
CELLS = ("lstm", "gru", "rnn_tanh")
CELL_ATTR = {"lstm": "lstm", "gru": "gru", "rnn_tanh": "rnn"}
INITS = ("pytorch", "reproduction")


class RunError(UserError):
    """A run folder or setting problem; the message says how to fix it."""


def recorded(settings, since: tuple[str, ...]) -> dict:
    """``asdict(settings)`` without the fields added after the first recorded runs (``since``)
    that hold their defaults, so a run made with the defaults records what it always did."""
    d = asdict(settings)
    defaults = {f.name: f.default for f in fields(settings)}
    return {k: v for k, v in d.items() if not (k in since and v == defaults[k])}


@dataclass
class ModelSettings:
    """Architecture.  Paper: Embedding(vocab, 32) -> LSTM(32, 60) -> Linear(60, 1) + sigmoid.

    ``init``: "pytorch" (the modules' own initialisation, as every run before the option) or
    "reproduction" (the published reproduction's: embedding U(-0.1, 0.1) with the padding row
    zero, each gate block of W_hh orthogonal, W_ih Xavier-uniform, recurrent biases zero; the
    readout keeps PyTorch's initialisation).  Dropout (training only; masks drawn from the
    run's per-(seed, epoch) generator): ``embed_dropout`` on the embedded inputs, ``dropout``
    on the outputs of every stacked layer but the last and on the state read by the readout.
    """

    embed_dim: int = option(32, "embedding width", metavar="N")
    hidden_size: int = option(60, "recurrent width H", metavar="H")
    num_layers: int = option(1, "stacked recurrent layers", flag="--layers", metavar="N")
    cell: str = option("lstm", "recurrent cell", choices=CELLS)
    embed_dropout: float = option(0.0, "dropout on the embedded inputs (training only)",
                                  metavar="P")
    dropout: float = option(0.0, "dropout between stacked layers and before the readout "
                            "(training only)", metavar="P")
    init: str = option("pytorch", "initialisation: pytorch (the modules' own) or reproduction "
                       "(embedding U(-0.1,0.1), orthogonal W_hh gate blocks, Xavier W_ih, zero "
                       "biases)", choices=INITS)

    #: fields added after the first recorded runs (recorded only when not at their default)
    NEW_FIELDS = ("cell", "embed_dropout", "dropout", "init")

    def check(self) -> None:
        for name in ("embed_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise RunError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.cell not in CELLS:
            raise RunError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.init not in INITS:
            raise RunError(f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        for name in ("embed_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise RunError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return recorded(self, self.NEW_FIELDS)


def dropout_scale(gen: torch.Generator | None, shape, p: float, like: torch.Tensor
                  ) -> torch.Tensor:
    """Inverted-dropout multiplier (kept units 1/(1-p), dropped 0) of ``shape``, drawn on the
    CPU in float32 from ``gen`` whatever the dtype and device, so a run and an ensemble member
    with the same generator draw the same masks."""
    keep = torch.rand(tuple(shape), generator=gen) >= p
    return keep.to(like.device, like.dtype) * (1.0 / (1.0 - p))


_RECURRENT = {"lstm": (nn.LSTM, {}), "gru": (nn.GRU, {}),
              "rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"})}
_LAYER_OP = {"lstm": torch.lstm, "gru": torch.gru, "rnn_tanh": torch.rnn_tanh}


class SentimentLSTM(nn.Module):
    """Embedding -> (stacked) LSTM, GRU or tanh RNN -> Linear; outputs logits.

    Holds exactly one ``nn.Embedding`` (``padding_idx=0``: the padding token is a fixed zero
    vector, i.e. zero input) and one recurrent module (``batch_first=False``; attribute
    ``lstm``, ``gru`` or ``rnn``), so the core's ``mdesc.max_lyapunov(model, ids)`` and friends
    accept it with ids of shape (T, B).

    ``forward(ids, lengths)``: ids (T, B) int64 padded at the end, lengths (B,) -> logits, read
    from the last layer's h at each review's last real token: (B,) for two classes (the logit
    of class 1; binary cross-entropy on its sigmoid), (B, C) for C > 2 classes (softmax
    cross-entropy).  In training mode dropout masks come from ``self.dropout_generator`` (the
    trainer sets it; None = torch's global generator).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 60,
                 num_layers: int = 1, cell: str = "lstm", classes: int = 2,
                 embed_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        module, kwargs = _RECURRENT[cell]
        setattr(self, CELL_ATTR[cell], module(embed_dim, hidden_size, num_layers=num_layers,
                                               **kwargs))
        self.readout = nn.Linear(hidden_size, 1 if classes == 2 else classes)
        self.cell, self.classes = cell, classes
        self.embed_dropout, self.dropout = embed_dropout, dropout
        self.dropout_generator: torch.Generator | None = None

    @property
    def recurrent(self) -> nn.RNNBase:
        return getattr(self, CELL_ATTR[self.cell])

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids)
        drop = self.training and self.dropout > 0
        if self.training and self.embed_dropout > 0:
            x = x * dropout_scale(self.dropout_generator, x.shape, self.embed_dropout, x)
        if drop and self.recurrent.num_layers > 1:
            out = self._layer_by_layer(x)
        else:
            out, _ = self.recurrent(x)                                  # (T, B, H)
        last = out[lengths.to(out.device) - 1, torch.arange(out.shape[1], device=out.device)]
        if drop:
            last = last * dropout_scale(self.dropout_generator, last.shape, self.dropout, last)
        logits = self.readout(last)
        return logits.squeeze(-1) if self.classes == 2 else logits

    def _layer_by_layer(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked layers one at a time (PyTorch's own one-layer ops), with dropout drawn
        from the run's generator between them."""
        rec, op = self.recurrent, _LAYER_OP[self.cell]
        for layer in range(rec.num_layers):
            params = [getattr(rec, f"{n}_l{layer}") for n in
                      ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h0 = x.new_zeros(1, x.shape[1], rec.hidden_size)
            hx = (h0, h0) if self.cell == "lstm" else h0
            x = op(x, hx, params, True, 1, 0.0, True, False, False)[0]
            if layer < rec.num_layers - 1:
                x = x * dropout_scale(self.dropout_generator, x.shape, self.dropout, x)
        return x


@torch.no_grad()
def reproduction_init(net: SentimentLSTM) -> None:
    """The published reproduction's initialisation (ModelSettings.init = "reproduction"),
    drawn from torch's global generator in this order: embedding, then per layer W_ih, W_hh."""
    nn.init.uniform_(net.embedding.weight, -0.1, 0.1)
    net.embedding.weight[0].zero_()
    rec = net.recurrent
    for layer in range(rec.num_layers):
        nn.init.xavier_uniform_(getattr(rec, f"weight_ih_l{layer}"))
        w_hh = getattr(rec, f"weight_hh_l{layer}")
        for block in w_hh.split(rec.hidden_size, 0):
            nn.init.orthogonal_(block)
        getattr(rec, f"bias_ih_l{layer}").zero_()
        getattr(rec, f"bias_hh_l{layer}").zero_()


def build_model(config: dict) -> SentimentLSTM:
    """The (untrained) model described by a run's ``config.json`` contents, initialised with
    torch's global generator (seed it first: the trainers call ``torch.manual_seed(seed)``)."""
    m = config["model"]
    net = SentimentLSTM(config["vocab_size"], m["embed_dim"], m["hidden_size"], m["num_layers"],
                        cell=m.get("cell", "lstm"), classes=config.get("classes", 2),
                        embed_dropout=m.get("embed_dropout", 0.0),
                        dropout=m.get("dropout", 0.0))
    if m.get("init", "pytorch") == "reproduction":
        reproduction_init(net)
    return net


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
    seed: int = option(0, "seeds the initial weights, the shuffling and the dropout masks (and "
                       "the train/test split unless --data-seed is given)")
    device: str = option("cpu", "cpu, cuda, cuda:N or auto", cli=False)
    adam_eps: float = option(1e-8, "Adam/AdamW epsilon", metavar="X")
    clip_norm: float | None = option(None, "clip each step's gradient to this total L2 norm "
                                     "(torch.nn.utils.clip_grad_norm_)", metavar="X",
                                     default_help="off")
    data_seed: int | None = option(None, "seeds the train/test split (an ensemble's members "
                                   "then share one split)", metavar="N",
                                   default_help="--seed; with --seeds, the first seed")

    floss: str | None = option(None, "gradient flossing (mdesc.FlossingPenalty): add "
                               "WEIGHT * (lambda_1 - TARGET)^2 of the zero-input dynamics, on a "
                               "fixed probe of training reviews, to every --floss-every-th step's "
                               "loss", metavar="TARGET,WEIGHT", default_help="off")
    floss_every: int = option(10, "training steps between flossing terms", metavar="N")
    floss_probe: int = option(16, "training reviews in the flossing probe (the first N of the "
                              "training split)", metavar="N")

    #: fields added after the first recorded runs (recorded only when not at their default)
    NEW_FIELDS = ("adam_eps", "clip_norm", "data_seed", "floss", "floss_every", "floss_probe")

    def floss_target_weight(self) -> tuple[float, float] | None:
        """``floss`` as (target, weight), None when off; RunError when it does not parse."""
        if self.floss is None:
            return None
        try:
            target, weight = (float(v) for v in str(self.floss).split(","))
        except ValueError:
            raise RunError(f"--floss needs TARGET,WEIGHT (e.g. 0,0.1 holds lambda_1 at 0 with "
                           f"weight 0.1), got {self.floss!r}") from None
        if not (math.isfinite(target) and math.isfinite(weight) and weight >= 0):
            raise RunError(f"--floss needs a finite TARGET and a finite WEIGHT >= 0, "
                           f"got {self.floss!r}")
        return target, weight

    @property
    def split_seed(self) -> int:
        """The seed of the data split: ``data_seed``, or ``seed`` when it is None."""
        return self.seed if self.data_seed is None else self.data_seed

    def check(self) -> None:
        if self.epochs < 0:
            raise RunError(f"epochs must be >= 0, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise RunError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, "
                           f"got {self.optimizer!r}")
        if not self.lr > 0:
            raise RunError(f"lr must be positive, got {self.lr}")
        self.floss_target_weight()
        if self.floss_every < 1 or self.floss_probe < 1:
            raise RunError(f"--floss-every and --floss-probe must be at least 1, got "
                           f"{self.floss_every} and {self.floss_probe}")
        if self.batch_size < 1:
            raise RunError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise RunError("weight_decay and momentum must be >= 0")
        if not self.adam_eps > 0:
            raise RunError(f"adam_eps must be positive, got {self.adam_eps}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise RunError(f"clip_norm must be positive (or None = off), got {self.clip_norm}")


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


def make_optimizer(params, s: TrainSettings, lr: float | None = None) -> torch.optim.Optimizer:
    """The run's torch optimizer over ``params`` (a module or an iterable of tensors);
    ``lr`` overrides ``s.lr``."""
    params = list(params.parameters() if isinstance(params, nn.Module) else params)
    lr = s.lr if lr is None else lr
    if s.optimizer in ("adam", "adamw"):
        cls = torch.optim.Adam if s.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, eps=s.adam_eps, weight_decay=s.weight_decay)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)


def head_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy on sigmoid(logit) for (..., B) logits, softmax cross-entropy for
    (..., B, C) logits (labels: 0/1 floats, or class ids)."""
    if logits.dim() == y.dim():
        return nn.functional.binary_cross_entropy_with_logits(logits, y.to(logits.dtype),
                                                              reduction=reduction)
    return nn.functional.cross_entropy(logits.flatten(0, -2), y.flatten().long(),
                                       reduction=reduction)


def head_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Correct answers (bool, the labels' shape): logit > 0 for two classes, else argmax."""
    if logits.dim() == y.dim():
        return (logits > 0).to(y.dtype) == y
    return logits.argmax(-1) == y.long()


@torch.no_grad()
def evaluate(model: SentimentLSTM, split: EncodedSplit, device: torch.device,
             batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy of ``model`` on ``split`` (eval mode)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for lo in range(0, len(split), batch_size):
        ids, lengths, y = _batch(split, np.arange(lo, min(lo + batch_size, len(split))), device)
        logits = model(ids, lengths)
        total_loss += head_loss(logits, y, reduction="sum").item()
        correct += head_correct(logits, y).sum().item()
    return total_loss / len(split), correct / len(split)


def _batch(split: EncodedSplit, idx: np.ndarray, device: torch.device):
    """(T, B) ids trimmed to the longest review in the batch, lengths, labels."""
    lengths = split.lengths[idx]
    ids = split.ids[idx, : int(lengths.max())]
    return (torch.from_numpy(np.ascontiguousarray(ids.T)).to(device),
            torch.from_numpy(lengths).to(device),
            torch.from_numpy(split.labels[idx]).to(device))
