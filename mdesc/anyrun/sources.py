"""Inputs of a sweep of any training run: checkpoints, the model, probe inputs and metrics.

Everything here reads files a user's own training loop wrote; nothing is unpickled:

- **checkpoints** (:func:`discover_checkpoints`): a folder, a glob, or a list of files, each a
  ``.safetensors`` file or a PyTorch file (``.pt``, ``.pth``, ``.bin``, ``.ckpt``) read with
  ``torch.load(weights_only=True)`` through :func:`mdesc.store.read_checkpoint`.  The training
  axis is the last integer in each file name (``epoch_12.pt`` -> 12, ``ckpt-step=3000.pt`` ->
  3000; or the group of a regular expression, ``epoch=([0-9]+)``), or comes from an explicit
  order file (one file name per line, optionally followed by its position on the axis).
- **the model** (:func:`model_from_factory`, :class:`RecurrentStack`): an importable
  ``package.module:factory`` callable (with optional keyword arguments), or a plain
  Embedding -> recurrent -> Linear stack described by flags; :func:`fit_state_dict` maps a
  checkpoint's keys onto the stack by role and names a checkpoint that does not fit.
- **probe inputs** (:func:`load_probe`): token ids ``(B, T)`` or feature sequences
  ``(B, T, I)`` (batch first, as data sets are stored; ``time_major=True`` for ``(T, B, ...)``)
  in a ``.safetensors``, ``.npy``/``.npz`` (``allow_pickle=False``) or ``.pt`` file, with optional
  per-sequence lengths.
- **metrics**: :mod:`mdesc.anyrun.metrics`.
"""
from __future__ import annotations

import glob as _glob
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mdesc import store
from mdesc.core.cells import CELLS
from mdesc.core.engine import check_lengths
from mdesc.errors import UserError
from mdesc.sweep.settings import select_samples

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


class SourceError(UserError):
    """An input of the sweep that cannot be used as given; the message says how to fix it."""


# ----------------------------------------------------------------------------- checkpoints

@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file and its position on the training axis."""

    step: int
    path: Path

    @property
    def key(self) -> str:
        """The record key of this checkpoint in the store (the study-1 spelling)."""
        return f"epoch_{self.step:04d}"


_INT = re.compile(r"\d+")


def step_from_name(path: str | os.PathLike, pattern: str | None = None) -> int | None:
    """The training-axis value in a file name: the last integer in the name without its suffix,
    or the first group of the regular expression ``pattern`` (``r"epoch=([0-9]+)"`` for Lightning's
    ``epoch=3-step=1200.ckpt``).  None if there is none."""
    name = Path(path).name
    if pattern is not None:
        m = re.search(pattern, name)
        return int(m.group(1)) if m and m.groups() and m.group(1) is not None else None
    for suffix in CHECKPOINT_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    found = _INT.findall(name)
    return int(found[-1]) if found else None


def _expand(sources: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise SourceError("no checkpoints given: pass a folder, a glob such as 'ckpts/*.pt', "
                          "or checkpoint files")
    paths: list[Path] = []
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                           and q.name.endswith(CHECKPOINT_SUFFIXES))
            if not found:
                raise SourceError(f"{p} holds no checkpoint files (names ending in "
                                  f"{', '.join(CHECKPOINT_SUFFIXES)})")
            paths += found
        elif p.is_file():
            paths.append(p)
        elif _glob.has_magic(text):
            found = sorted(Path(q) for q in _glob.glob(text) if Path(q).is_file())
            if not found:
                raise SourceError(f"the glob {text!r} matches no files")
            paths += found
        else:
            raise SourceError(f"{text} is neither a checkpoint file, a folder nor a glob that "
                              "matches files")
    return list(dict.fromkeys(paths))


def read_order_file(path: str | os.PathLike) -> list[tuple[str, int | None]]:
    """``[(file name, step or None), ...]`` from an order file.

    One checkpoint per line, in training order: ``name`` or ``name step`` (whitespace or a
    comma between them); blank lines and lines starting with ``#`` are ignored.  Without steps
    the position in the file (0, 1, ...) is the training axis.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"order file {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        if len(parts) > 2 or (len(parts) == 2 and not re.fullmatch(r"-?\d+", parts[1])):
            raise SourceError(f"{path}:{n}: expected 'file' or 'file step' (an integer), got {line!r}")
        rows.append((parts[0], int(parts[1]) if len(parts) == 2 else None))
    if not rows:
        raise SourceError(f"order file {path} lists no checkpoints")
    with_step = sum(s is not None for _, s in rows)
    if with_step not in (0, len(rows)):
        raise SourceError(f"{path}: give a step on every line or on none")
    return rows


def discover_checkpoints(sources, order_file: str | os.PathLike | None = None,
                         step_pattern: str | None = None) -> list[Checkpoint]:
    """Checkpoints sorted along the training axis (see the module doc; ``step_pattern``: see
    :func:`step_from_name`).

    Raises :class:`SourceError` when a file name holds no integer (pass an order file), when two
    checkpoints land on the same step, or when the order file names a file that is not there.
    """
    if order_file is not None:
        rows = read_order_file(order_file)
        base = Path(order_file).parent
        if sources is not None:
            given = _expand(sources)
            by_name = {p.name: p for p in given}
            by_name.update({os.fspath(p): p for p in given})
        else:
            by_name = {}
        out = []
        for i, (name, step) in enumerate(rows):
            p = by_name.get(name) or by_name.get(Path(name).name)
            if p is None:
                cand = Path(name) if Path(name).is_absolute() else base / name
                if not cand.is_file() and sources is not None and len(given) and given[0].parent.is_dir():
                    cand = given[0].parent / name
                if not cand.is_file():
                    raise SourceError(f"order file {order_file} names {name}, which is not among the "
                                      "checkpoints given (nor a file beside the order file)")
                p = cand
            out.append(Checkpoint(i if step is None else step, p))
    else:
        out = []
        if step_pattern is not None:
            try:
                if re.compile(step_pattern).groups < 1:
                    raise SourceError(f"--step-pattern {step_pattern!r} needs a group around the "
                                      r"number, e.g. 'epoch=(\d+)'")
            except re.error as e:
                raise SourceError(f"--step-pattern {step_pattern!r} is not a regular expression ({e})") from e
        for p in _expand(sources):
            step = step_from_name(p, step_pattern)
            if step is None:
                what = (f"it does not match --step-pattern {step_pattern!r}" if step_pattern
                        else "its name holds no integer")
                raise SourceError(f"cannot place {p} on the training axis: {what}. Name "
                                  "checkpoints like epoch_12.pt, or pass an order file (--order) "
                                  "that lists them in training order")
            out.append(Checkpoint(step, p))
    seen: dict[int, Path] = {}
    for c in out:
        if c.step < 0:
            raise SourceError(f"{c.path}: training-axis value {c.step} is negative")
        if c.step in seen:
            raise SourceError(f"{seen[c.step]} and {c.path} are both at step {c.step} of the "
                              "training axis; keep one, or pass an order file (--order)")
        seen[c.step] = c.path
    return sorted(out, key=lambda c: c.step)


def read_state_dict(path: str | os.PathLike, state_key: str | None = None,
                    strip_prefix: str | None = None) -> dict:
    """The weights in a checkpoint file, without unpickling code: the state dict of
    :func:`mdesc.store.read_checkpoint` (safetensors; PyTorch files read with
    ``torch.load(weights_only=True)``, a state dict found under the usual keys or named by
    ``state_key``, dotted for nested entries; ``strip_prefix`` removes a prefix such as DDP's
    ``"module."`` from every key).  Raises :class:`mdesc.store.CheckpointError` naming the file.
    """
    return store.read_checkpoint(path, state_key=state_key, strip_prefix=strip_prefix)[0]


# ----------------------------------------------------------------------------- models

def model_from_factory(spec: str, kwargs: Mapping[str, Any] | None = None):
    """Call ``package.module:factory`` (a function or class) with ``kwargs``; returns the module."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise SourceError(f"model factory {spec!r} must look like 'package.module:factory' "
                          "(an importable module, a colon, a callable in it)")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise SourceError(f"cannot import {module_name!r} for the model factory {spec!r} ({e}); "
                          "is it installed, or on PYTHONPATH?") from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SourceError(f"{module_name} has no attribute {attr!r} (model factory {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SourceError(f"{spec} is not callable")
    try:
        model = obj(**dict(kwargs or {}))
    except TypeError as e:
        raise SourceError(f"calling {spec} with keyword arguments {dict(kwargs or {})} failed "
                          f"({e}); pass the right ones with --factory-kwargs '{{...}}'") from e
    if not isinstance(model, nn.Module):
        raise SourceError(f"{spec}(...) returned a {type(model).__name__}, not a torch nn.Module")
    return model


class RecurrentStack(nn.Module):
    """Embedding -> recurrent (LSTM, GRU or Elman RNN) -> Linear, built from flags.

    ``vocab_size`` + ``embed_dim`` for token-id inputs (an ``nn.Embedding`` first), or
    ``input_size`` for feature inputs (no embedding).  ``output_size`` 0/None: no readout.
    Module names ``embedding``, ``rnn``, ``linear``; :func:`fit_state_dict` maps other names by
    role.  ``forward(seq)`` (time major) returns the readout of every step ``(T, B, output)``.
    """

    def __init__(self, cell: str = "lstm", hidden_size: int = 60, num_layers: int = 1,
                 vocab_size: int | None = None, embed_dim: int | None = None,
                 input_size: int | None = None, output_size: int | None = 1, bias: bool = True):
        super().__init__()
        self.architecture = dict(cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                                 vocab_size=vocab_size, embed_dim=embed_dim,
                                 input_size=input_size, output_size=output_size, bias=bias)
        if cell not in CELLS:
            raise SourceError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if (vocab_size is None) == (input_size is None):
            raise SourceError("give the vocabulary size (token-id inputs: Embedding first) or "
                              "the input size (feature inputs, no Embedding), not both")
        if vocab_size is not None:
            if embed_dim is None:
                raise SourceError("token-id inputs need the embedding size (--embed-dim)")
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            width = embed_dim
        else:
            width = input_size
        for name, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("input width", width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SourceError(f"{name} must be a positive integer, got {v!r}")
        if cell == "lstm":
            self.rnn = nn.LSTM(width, hidden_size, num_layers, bias=bias)
        elif cell == "gru":
            self.rnn = nn.GRU(width, hidden_size, num_layers, bias=bias)
        else:
            self.rnn = nn.RNN(width, hidden_size, num_layers, bias=bias,
                              nonlinearity=cell.split("_")[1])
        if output_size:
            self.linear = nn.Linear(hidden_size, output_size)
        self.cell = cell

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        x = self.embedding(seq) if hasattr(self, "embedding") else seq
        out, _ = self.rnn(x)
        return self.linear(out) if hasattr(self, "linear") else out


def _prefix_groups(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for k, v in state.items():
        prefix, _, param = k.rpartition(".")
        groups.setdefault(prefix, {})[param] = v
    return groups


def _role_map(state: Mapping[str, Any], model) -> dict[str, str] | None:
    """Prefix renames {checkpoint prefix: model prefix} found by role, or None if ambiguous.

    Roles are read off the checkpoint's own shapes (so a checkpoint of another size still maps,
    and the shape check then names what differs): the one module with ``weight_hh_l0``, the
    embedding (a lone 2-D ``weight`` as wide as that module's input) and the readout (a
    ``weight`` [+ ``bias``] as wide as its hidden state)."""
    want = _prefix_groups(model.state_dict())
    have = _prefix_groups(state)
    rec = [p for p, g in have.items() if "weight_hh_l0" in g and "weight_ih_l0" in g]
    if len(rec) != 1 or "rnn" not in want:
        return None
    roles = {rec[0]: "rnn"}
    width = have[rec[0]]["weight_ih_l0"].shape[1]
    hidden = have[rec[0]]["weight_hh_l0"].shape[1]
    rest = {p: g for p, g in have.items() if p != rec[0]}
    two_d = {p: g for p, g in rest.items() if "weight" in g and getattr(g["weight"], "dim", lambda: 0)() == 2}
    if "embedding" in want:
        cand = [p for p, g in two_d.items() if set(g) == {"weight"} and g["weight"].shape[1] == width]
        if len(cand) > 1 and "linear" in want:  # a bias-less readout of the same width
            cand = [p for p in cand if two_d[p]["weight"].shape[0] != want["linear"]["weight"].shape[0]]
        if len(cand) != 1:
            return None
        roles[cand[0]] = "embedding"
    if "linear" in want:
        cand = [p for p, g in two_d.items() if p not in roles and set(g) <= {"weight", "bias"}
                and g["weight"].shape[1] == hidden]
        if len(cand) != 1:
            return None
        roles[cand[0]] = "linear"
    return roles


def fit_state_dict(state: Mapping[str, Any], model, where: str = "checkpoint") -> dict:
    """``state`` with keys that ``model.load_state_dict(strict=True)`` accepts.

    If the names already match, ``state`` is returned as it is.  For a :class:`RecurrentStack`
    whose names differ (``lstm.weight_ih_l0`` instead of ``rnn.weight_ih_l0``), modules are
    matched by role: the one recurrent module, the embedding (a bias-less weight whose width is
    the recurrent input) and the readout (a weight whose width is the hidden size).  Anything
    that still does not fit raises :class:`SourceError` naming ``where``, the missing and
    unexpected keys and the shapes that differ.
    """
    want = model.state_dict()
    state = dict(state)
    if set(state) != set(want) and getattr(model, "cell", None) in CELLS:
        roles = _role_map(state, model)
        if roles is not None:
            renamed = {}
            for k, v in state.items():
                prefix, _, param = k.rpartition(".")
                renamed[f"{roles[prefix]}.{param}" if prefix in roles else k] = v
            if set(renamed) == set(want):
                state = renamed
    problems = []
    missing = sorted(set(want) - set(state))
    unexpected = sorted(set(state) - set(want))
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(want[k].shape)}"
              for k in sorted(set(state) & set(want))
              if getattr(state[k], "shape", None) != want[k].shape]
    if shapes:
        problems.append("shapes differ (" + "; ".join(shapes[:5]) + (", ..." if len(shapes) > 5 else "") + ")")
    if problems:
        raise SourceError(f"{where} does not fit the model: {'; '.join(problems)}. Check the "
                          "architecture flags (or the factory), --state-key/--strip-prefix, or pass "
                          "--skip-bad to leave such checkpoints out")
    return state


def _short(items: Sequence[str], k: int = 6) -> str:
    return "[" + ", ".join(items[:k]) + (f", ... ({len(items)} in all)" if len(items) > k else "") + "]"


def recurrent_module(model):
    """The model's single recurrent module (nn.LSTM / nn.GRU / nn.RNN), or None."""
    found = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    return found[0] if len(found) == 1 else None


def probe_for(model, seq):
    """The time-major probe in the layout the model's recurrent module expects."""
    rnn = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    return seq.transpose(0, 1) if rnn and rnn[0].batch_first else seq


# ----------------------------------------------------------------------------- probe inputs

@dataclass
class Probe:
    """Fixed probe inputs in the core's layout: ``seq`` (T, B) int64 ids or (T, B, I) floats
    (time major), ``lengths`` (B,) int64 or None, and ``index`` (B,): which rows of the file."""

    seq: Any
    lengths: Any
    index: list[int]

    @property
    def is_ids(self) -> bool:
        return not self.seq.is_floating_point()

    @property
    def drive_steps(self) -> int:
        return int(self.seq.shape[0])


def _read_tensor_file(path: Path, key: str | None, role: str,
                      defaults: Sequence[str]) -> tuple[Any, dict]:
    """(tensor, every tensor in the file) from .safetensors/.npy/.npz/.pt; ``key`` names one."""
    if not path.is_file():
        raise SourceError(f"{role} file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors = store.load_tensors(path)[0]
    elif suffix in (".npy", ".npz"):
        try:
            loaded = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise SourceError(f"{path} holds Python objects, which mdesc does not unpickle ({e}); "
                              "save a plain numeric array") from e
        if suffix == ".npy":
            tensors = {"": torch.from_numpy(np.ascontiguousarray(loaded))}
        else:
            tensors = {k: torch.from_numpy(np.ascontiguousarray(loaded[k])) for k in loaded.files}
    elif suffix in (".pt", ".pth"):
        # a probe file may hold a bare tensor, which store.read_checkpoint (state dicts only)
        # refuses: the store's weights-only load, without the state-dict search
        obj = store.load_torch_file(path)
        if isinstance(obj, torch.Tensor):
            tensors = {"": obj}
        elif isinstance(obj, Mapping):
            tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        else:
            raise SourceError(f"{path} holds a {type(obj).__name__}; save a tensor or a dict of tensors")
    else:
        raise SourceError(f"{role} file {path}: use .safetensors, .npy, .npz or .pt")
    if key is not None:
        if key not in tensors:
            raise SourceError(f"{path} has no tensor {key!r} (it has {sorted(tensors)})")
        return tensors[key], tensors
    if len(tensors) == 1:
        return next(iter(tensors.values())), tensors
    for name in defaults:
        if name in tensors:
            return tensors[name], tensors
    raise SourceError(f"{path} holds several tensors ({sorted(tensors)}); name the {role} one "
                      f"(e.g. --probe-key)")


def load_probe(path: str | os.PathLike, key: str | None = None, *, lengths=None,
               lengths_key: str | None = None, time_major: bool = False,
               samples: int | None = None, seed: int = 0) -> Probe:
    """Probe inputs from a tensor file (see the module doc).

    ``lengths`` is a tensor, a path to a tensor file, or None: then a tensor named
    ``lengths_key`` (default ``"lengths"``) in the probe file is used if there is one, else
    every sequence is driven for its full length.  ``samples`` keeps a seeded subset of that
    many sequences (sorted indices, :func:`mdesc.sweep.select_samples`).
    """
    path = Path(path)
    seq, everything = _read_tensor_file(path, key, "probe", ("ids", "input_ids", "inputs", "x", "seq"))
    if seq.is_complex() or seq.dtype == torch.bool:
        raise SourceError(f"{path}: probe inputs must be integer token ids or real features, got {seq.dtype}")
    if not seq.is_floating_point():
        seq = seq.to(torch.int64)
    elif seq.dtype not in (torch.float32, torch.float64):
        seq = seq.to(torch.float32)
    want = "(B, T) token ids or (B, T, I) features" + (" [time major: (T, B, ...)]" if time_major else "")
    if seq.dim() not in (2, 3) or (seq.dim() == 3 and not seq.is_floating_point()):
        raise SourceError(f"{path}: probe tensor has shape {tuple(seq.shape)} ({seq.dtype}); "
                          f"expected {want}")
    if seq.dim() == 2 and seq.is_floating_point():
        raise SourceError(f"{path}: a 2-D float probe is ambiguous; store features as (B, T, I) "
                          "(I = 1 for scalar series) or token ids as integers")
    if not time_major:
        seq = seq.transpose(0, 1)
    T, B = int(seq.shape[0]), int(seq.shape[1])
    if lengths is None:
        name = lengths_key or "lengths"
        if name in everything and everything[name] is not seq:
            lengths = everything[name]
        elif lengths_key is not None:
            raise SourceError(f"{path} has no tensor {lengths_key!r} (it has {sorted(everything)})")
    elif isinstance(lengths, (str, os.PathLike)):
        lengths = _read_tensor_file(Path(lengths), lengths_key, "lengths", ("lengths",))[0]
    if lengths is not None:
        try:
            lengths = check_lengths(lengths, T, B)
        except ValueError as e:
            raise SourceError(f"probe {e}") from None
    index = list(range(B))
    if samples is not None:
        if samples < 1:
            raise SourceError(f"samples must be at least 1, got {samples}")
        if samples < B:
            index = select_samples(B, samples, seed).tolist()
            sel = torch.tensor(index)
            seq = seq.index_select(1, sel)
            lengths = None if lengths is None else lengths.index_select(0, sel)
    return Probe(seq.contiguous(), lengths, index)
