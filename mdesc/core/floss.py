"""Differentiable Lyapunov exponents: lambda_1 (or the leading k) as a training loss.

Gradient flossing (Engelken 2023, "Gradient flossing: improving gradient descent through dynamic
control of Jacobians", arXiv 2312.17306) puts the leading Lyapunov exponents of a recurrent
network into its loss.  An exponent is the mean over counted steps of ``log R_ii`` from the
re-orthonormalisations of a tangent frame pushed through the step Jacobians (Benettin et al.
1980); every ingredient of that estimate (the step, its Jacobian-vector products, the QR) is
differentiable, so backpropagation through the whole estimate gives the exact gradient of the
finite-time exponent with respect to every parameter.  The paper's own implementation is Julia on
the CPU; this is the PyTorch one.

:func:`differentiable_exponents` runs the same problem as :func:`mdesc.max_lyapunov` /
:func:`mdesc.lyapunov_spectrum` (validated by :func:`mdesc.core.engine.prepare`, the same
window, warm-up, re-orthonormalisation schedule, seeded frame and lost-column rule:
docs/conventions.md) in plain autograd PyTorch, reading the model's *live* parameters (and its
embedding, for token ids), so its value equals theirs to rounding and its gradient is autograd's.
It is the reference gradient: one Python iteration per step, the tangent vectors pushed by
forward-mode autodiff (``torch.func.jvp`` vmapped over the k columns, as
:mod:`mdesc.core.reference_backend` does), the frame re-orthonormalised with LAPACK's Householder
QR (``torch.linalg.qr``, differentiable) with diag R > 0.  Reverse mode through the JVPs is
double backward through PyTorch's own cell functions.

The frame is fixed by ``seed`` (or ``q0``) and is not a parameter, so two calls with the same
settings see the same frame: central finite differences of the exponent and its autograd
gradient describe the same function (tests/test_floss.py).

:func:`lyapunov_loss` reduces the exponents to a scalar; :class:`FlossingPenalty` is the training
hook (a plain loop, or a Lightning callback through :meth:`FlossingPenalty.lightning_callback`).
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Callable

import torch
from torch import nn
from torch.func import jvp, vmap

from mdesc.core import cells, engine, reference_backend, schedule, windows
from mdesc.errors import UserError

__all__ = ["FlossError", "FlossingPenalty", "differentiable_exponents", "import_lightning", "lyapunov_loss",
           "squared"]

#: The window of a flossing loss: the zero-input phase after each sequence's drive
#: (docs/conventions.md §4), the asymptotic dynamics the stability analyses label.
WINDOW = "zero_input"
#: Zero-input steps of a flossing loss.  A loss pays one autograd step per step (and keeps every
#: step's graph for the backward pass), so the default is shorter than the analyses' 1100.
ZERO_INPUT_STEPS = 100
#: Reductions of the (B, k) exponents by name (or pass a callable).
REDUCTIONS = ("mean",)
#: Backends with a gradient: the autograd reference (a fused backward is issue 28's second part).
BACKENDS = ("reference",)
# Householder's R_jj of an exactly dependent column carries rounding noise of up to ~100 eps:
# columns within this factor of the lost-column threshold are decided by Gram-Schmidt
# (reference_backend.lost_columns), exactly as the reference backend decides them.
_SCREEN = 2.0 ** 16


class FlossError(UserError):
    """A differentiable-exponent input (model, sequence, settings) that cannot be used as given."""


# --------------------------------------------------------------------------------------------
# the differentiable run


def _live_layer(rnn: nn.RNNBase, layer: int, dtype: torch.dtype):
    """(cell table row, w_ih, w_hh, b_ih, b_hh) of one layer, *not* detached, in ``dtype``."""
    row = cells.by_name(cells.cell_kind(rnn))
    w_ih = getattr(rnn, f"weight_ih_l{layer}").to(dtype)
    w_hh = getattr(rnn, f"weight_hh_l{layer}").to(dtype)
    if not rnn.bias:
        return row, w_ih, w_hh, None, None
    return row, w_ih, w_hh, getattr(rnn, f"bias_ih_l{layer}").to(dtype), getattr(rnn, f"bias_hh_l{layer}").to(dtype)


def _step(params, halves: int, H: int, s: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """One step of every layer on the flat state s [B, n] (rows [h_1, c_1, ...] or [h_1, ...]);
    x_t [B, I].  Each layer is PyTorch's own cell function (the cell table's ``step``)."""
    out, inp = [], x_t
    for layer, (row, w_ih, w_hh, b_ih, b_hh) in enumerate(params):
        state = tuple(s[:, (halves * layer + j) * H:(halves * layer + j + 1) * H] for j in range(halves))
        state = row.step(inp, state, w_ih, w_hh, b_ih, b_hh)
        out += state
        inp = state[0]
    return torch.cat(out, dim=1)


def _reorthonormalise(q: torch.Tensor):
    """Householder QR of frames q [B, n, k] with diag R > 0: (Q, log R_ii [B, k] float64), both
    differentiable.  Lost columns (docs/conventions.md §3: decided as the reference backend
    decides them) are zero in Q with log R_ii = -inf and carry no gradient."""
    qq, r = torch.linalg.qr(q)
    diag = torch.diagonal(r, dim1=-2, dim2=-1)
    with torch.no_grad():
        norms = torch.linalg.vector_norm(q.to(torch.float64), dim=-2)
        threshold = reference_backend.LOST_COLUMN_EPS * torch.finfo(q.dtype).eps * norms
        suspect = diag.abs().to(torch.float64) <= _SCREEN * threshold
        finite = torch.isfinite(q).flatten(-2).all(dim=-1)
        lost = torch.zeros_like(suspect)
        if bool((suspect & finite[:, None]).any()):
            lost = reference_backend.lost_columns(q.masked_fill(~finite[:, None, None], 0.0)) & finite[:, None]
    qq = (qq * torch.sign(diag).detach().unsqueeze(-2)).masked_fill(lost.unsqueeze(-2), 0.0)
    # log of 1 where lost, so the backward pass sees a finite derivative (times a zero gradient)
    logs = torch.log(torch.where(lost, torch.ones_like(diag), diag.abs())).to(torch.float64)
    return qq, logs.masked_fill(lost, -math.inf)


def _tangent_phase(params, halves: int, H: int, s, inputs: Callable, q, steps: int, warmup: int,
                   qr_every: int):
    """``steps`` steps from state s [B, n] and frame q [B, n, k] (input ``inputs(t)`` [B, I] at
    step t), counting ``[warmup, steps)`` on the re-orthonormalisation schedule of
    :mod:`mdesc.core.schedule`: (final state [B, n], summed counted log R_ii [B, k] float64)."""
    total = torch.zeros(q.shape[0], q.shape[-1], dtype=torch.float64, device=q.device)
    for t in range(steps):
        step = functools.partial(_step, params, halves, H, x_t=inputs(t))
        if q.shape[-1] == 1:  # one column: a plain JVP (vmap's batching costs ~30% at k = 1)
            q = jvp(step, (s,), (q[:, :, 0],))[1].unsqueeze(-1)
        else:
            q = vmap(lambda v: jvp(step, (s,), (v,))[1], in_dims=2, out_dims=2)(q)
        s = step(s)
        block = schedule.qr_block_after_step(t + 1, warmup, qr_every, steps)
        if block != -2:
            q, log_r = _reorthonormalise(q)
            if block >= 0:
                total = total + log_r
    return s, total


def _live_inputs(model: nn.Module, seq, prep: engine.PreparedRun) -> torch.Tensor:
    """x [T, B, I]: the prepared inputs, or, for token ids, the model's embedding of them with
    its autograd graph (the engine embeds under no_grad)."""
    rnn, embedding = cells.find_recurrent(model)
    seq = torch.as_tensor(seq)
    if embedding is None or seq.is_floating_point() or seq.is_complex():
        return prep.x[0]
    ids = seq.unsqueeze(1) if seq.dim() == 1 else (seq.transpose(0, 1) if rnn.batch_first else seq)
    return embedding(ids).to(prep.x.dtype)


def _prepare(model, seq, k, settings: dict) -> engine.PreparedRun:
    """The engine's validation, its ValueErrors as :class:`FlossError`."""
    if k == 0 or isinstance(k, bool) or not (k is None or isinstance(k, int)):
        raise FlossError(engine.K_MESSAGE.format(k=k))
    backend = settings.pop("backend", BACKENDS[0])
    if backend not in BACKENDS:
        raise FlossError(f"backend={backend!r} has no gradient yet; differentiable exponents run on "
                         f"{', '.join(map(repr, BACKENDS))} (autograd through the reference run)")
    if not isinstance(model, nn.Module):
        raise FlossError(f"model must be an nn.Module holding one recurrent module, got "
                         f"{type(model).__name__}. {cells.SUPPORTED}.")
    try:
        return engine.prepare(model, seq, k=k, checkpoint_axis=False, **settings)
    except FlossError:
        raise
    except ValueError as e:
        raise FlossError(str(e)) from e


def differentiable_exponents(model: nn.Module, seq: torch.Tensor, k: int | None = 1, *,
                             window: str = WINDOW, lengths=None,
                             zero_input_steps: int = ZERO_INPUT_STEPS, warmup: int = engine.WARMUP,
                             qr_every: int | None = None, h0=None, c0=None, q0=None,
                             seed: int = engine.SEED, dtype: torch.dtype | None = None,
                             backend: str = BACKENDS[0]) -> torch.Tensor:
    """The k leading Lyapunov exponents of each sequence, float64 [B, k], differentiable with
    respect to every parameter of ``model`` (its recurrent module's, and its embedding's when
    ``seq`` holds token ids).

    Arguments as in :func:`mdesc.lyapunov_spectrum` (same meaning, same validation), except the
    defaults of ``k`` (1), ``window`` (``"zero_input"``) and ``zero_input_steps`` (100).  The
    values equal that function's ``exponents`` for the same settings, to rounding.  A sequence
    whose run went non-finite gets NaN; a lost frame column (a singular tangent map) -inf, with
    a zero gradient.  Bad input raises :class:`FlossError` (a :class:`mdesc.errors.UserError`).
    """
    prep = _prepare(model, seq, k, dict(window=window, lengths=lengths, zero_input_steps=zero_input_steps,
                                        warmup=warmup, qr_every=qr_every, h0=h0, c0=c0, q0=q0,
                                        seed=seed, dtype=dtype, backend=backend))
    rnn = prep.weights.modules[0]
    dtype = prep.x.dtype
    L, H = rnn.num_layers, rnn.hidden_size
    halves = prep.q0.shape[-2] // (L * H)
    params = [_live_layer(rnn, layer, dtype) for layer in range(L)]
    x = _live_inputs(model, seq, prep)
    T, B = x.shape[0], x.shape[1]
    driving = (torch.arange(T, device=x.device)[:, None] < prep.lengths[None, :]).to(dtype)
    x = x * driving[..., None]  # zero input after each sequence's own drive
    zero = torch.zeros_like(x[0])
    s = torch.cat([torch.cat([prep.h0[0, layer], prep.c0[0, layer]], dim=1) for layer in range(L)], dim=1)
    q0 = prep.q0[0].expand(B, -1, -1)
    inputs = lambda t: x[t] if t < T else zero  # noqa: E731
    if prep.window == "all":
        s, total = _tangent_phase(params, halves, H, s, inputs, q0, prep.steps, prep.warmup, prep.qr_every)
        exponents = total / float(prep.steps - prep.warmup)
        return _nonfinite_to_nan(exponents, s)
    return _zero_input_window(params, halves, H, s, inputs, q0, prep)


def _zero_input_window(params, halves: int, H: int, s, inputs: Callable, q0, prep) -> torch.Tensor:
    """Exponents [B, k] of each sequence's zero-input phase: the drive (no tangent vectors) to
    each distinct drive length l, then, per group of that length (:func:`windows.length_groups`,
    as :func:`windows.chain` groups them), zero input to the run's end from the state the drive
    left, the frame restarted as ``q0``, ``prep.warmup`` steps uncounted."""
    groups = windows.length_groups(prep.lengths.cpu())
    drive_end = {}
    for t in range(groups[-1][1]):
        s = _step(params, halves, H, s, inputs(t))
        drive_end[t + 1] = s
    parts, order = [], []
    zero = torch.zeros_like(inputs(0))
    for idx, length in groups:
        dev_idx = idx.to(s.device)
        rest = prep.steps - length
        s_g, total = _tangent_phase(params, halves, H, drive_end[length].index_select(0, dev_idx),
                                    lambda t: zero.index_select(0, dev_idx), q0.index_select(0, dev_idx),
                                    rest, prep.warmup, prep.qr_every)
        parts.append(_nonfinite_to_nan(total / float(rest - prep.warmup), s_g))
        order.append(idx)
    inverse = torch.argsort(torch.cat(order)).to(s.device)
    return torch.cat(parts).index_select(0, inverse)


def _nonfinite_to_nan(exponents: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """NaN exponents for a run whose state or exponents went NaN or +inf (docs/conventions.md §3:
    -inf, a lost column, is kept), as :func:`mdesc.core.engine.lyapunov_result` does."""
    bad = (torch.isnan(exponents).any(dim=-1) | torch.isposinf(exponents).any(dim=-1)
           | ~torch.isfinite(s).all(dim=-1))
    return exponents.masked_fill(bad[:, None], float("nan"))


def lyapunov_loss(model: nn.Module, seq: torch.Tensor, k: int | None = 1, *, window: str = WINDOW,
                  reduce: str | Callable[[torch.Tensor], torch.Tensor] = "mean", **settings) -> torch.Tensor:
    """A scalar tensor built from the k leading Lyapunov exponents, differentiable with respect to
    every parameter of ``model``: gradient flossing's loss (Engelken 2023, arXiv 2312.17306).

    ``reduce="mean"`` (default) gives the mean over the batch of the mean of the k exponents
    (for k = 1, the batch mean of lambda_1, ``float(mdesc.max_lyapunov(...))`` for the same
    settings); a callable gets the float64 (B, k) exponents and returns a scalar tensor.  Every
    other argument as in :func:`differentiable_exponents` (and :func:`mdesc.lyapunov_spectrum`):
    ``window`` (default ``"zero_input"``), ``lengths``, ``zero_input_steps`` (default 100),
    ``warmup``, ``qr_every``, ``h0``, ``c0``, ``q0``, ``seed``, ``dtype``.

    Typical use::

        lam = mdesc.lyapunov_loss(model, probe, zero_input_steps=200, warmup=50)
        (task_loss + 0.1 * (lam - 0.0) ** 2).backward()
    """
    _check_reduce(reduce)
    exponents = differentiable_exponents(model, seq, k, window=window, **settings)
    return _reduce(exponents, reduce)


def _check_reduce(reduce) -> None:
    if not callable(reduce) and reduce not in REDUCTIONS:
        raise FlossError(f"reduce must be one of {', '.join(map(repr, REDUCTIONS))} or a function of "
                         f"the (B, k) exponents returning a scalar tensor, got {reduce!r}")


def _reduce(exponents: torch.Tensor, reduce) -> torch.Tensor:
    if reduce == "mean":
        return exponents.mean()
    value = reduce(exponents)
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        raise FlossError(f"reduce must return a scalar (0-dimensional) tensor, got "
                         f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
    return value


# --------------------------------------------------------------------------------------------
# the training hook

_LOSS_SETTINGS = frozenset(inspect.signature(differentiable_exponents).parameters) - {"model", "seq", "k"}
_CALLBACK = None  # the Lightning callback class, built on first use (Lightning is optional)


def squared(value: torch.Tensor, target: float) -> torch.Tensor:
    """The default penalty shape: (value - target)^2."""
    return (value - target) ** 2


class FlossingPenalty:
    """A training-loss term that holds the leading Lyapunov exponents at a target (gradient
    flossing, Engelken 2023): ``weight * penalty(lyapunov_loss(model, probe), target)``, by default
    ``weight * (mean lambda - target)^2``.

    In a plain loop::

        floss = mdesc.FlossingPenalty(target=0.0, weight=0.1, every=10, zero_input_steps=100)
        for step, (x, y) in enumerate(data):
            loss = task_loss(model(x), y) + floss(model, probe, step=step)
            loss.backward(); opt.step(); opt.zero_grad()

    The term is computed on the steps ``step % every == 0`` (``step`` defaults to the number of
    earlier calls) and is an exact zero (no graph) on the others.  ``floss(model, step)`` with an
    integer uses the ``probe`` given here.  As a Lightning callback:
    ``trainer = Trainer(callbacks=[floss.lightning_callback(probe)])``.

    Args:
        target: the exponent value to hold (0: the edge of chaos; < 0 ordered; > 0 chaotic).
        weight: the term's factor (>= 0).
        every: compute the term every ``every`` steps (>= 1); each costs one differentiable
            Lyapunov run (:func:`differentiable_exponents`).
        k: the number of leading exponents; ``reduce`` ("mean", or a function of the (B, k)
            exponents returning a scalar) turns them into the value compared with ``target``.
        probe: the default input sequences (as for :func:`mdesc.max_lyapunov`).
        penalty: ``penalty(value, target) -> scalar tensor`` (default :func:`squared`).
        **settings: those of :func:`lyapunov_loss` (``window``, ``zero_input_steps``, ``warmup``,
            ``qr_every``, ``lengths``, ``seed``, ``q0``, ``h0``, ``c0``, ``dtype``).

    ``history`` holds one dict per computed term: ``step``, ``value`` (the reduced exponent),
    ``exponents`` (batch mean per exponent), ``stderr`` (over the probe's sequences, per
    exponent), ``penalty`` (the weighted term) and ``finite``.  A non-finite value (a run that
    went NaN, or a lost column: -inf) is recorded and contributes zero, so one bad probe does
    not poison the training loss.
    """

    def __init__(self, target: float = 0.0, weight: float = 1.0, every: int = 1, k: int = 1, *,
                 probe=None, reduce="mean", penalty: Callable | None = None, **settings):
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            raise FlossError(f"target must be a finite number (the exponent to hold), got {target!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (0 <= weight < math.inf):
            raise FlossError(f"weight must be a finite number >= 0, got {weight!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise FlossError(f"every must be an integer >= 1 (compute the term every that many "
                             f"steps), got {every!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FlossError(engine.K_MESSAGE.format(k=k))
        unknown = sorted(set(settings) - _LOSS_SETTINGS)
        if unknown:
            raise FlossError(f"unknown settings {unknown}; FlossingPenalty passes "
                             f"{', '.join(sorted(_LOSS_SETTINGS))} to lyapunov_loss")
        _check_reduce(reduce)
        if penalty is not None and not callable(penalty):
            raise FlossError(f"penalty must be a function (value, target) -> scalar tensor, got {penalty!r}")
        self.target, self.weight, self.every, self.k = float(target), float(weight), every, k
        self.probe, self.reduce = probe, reduce
        self.penalty = squared if penalty is None else penalty
        self.settings = settings
        self.history: list[dict] = []
        self.calls = 0

    @property
    def values(self) -> list[float]:
        """The reduced exponent of every computed term, in order."""
        return [h["value"] for h in self.history]

    def __call__(self, model: nn.Module, seq_or_step=None, *, step: int | None = None) -> torch.Tensor:
        """The weighted term (a scalar tensor in the analysis dtype) at this step, or an exact zero
        on a step that is not a multiple of ``every``."""
        seq = seq_or_step
        if isinstance(seq_or_step, int) and not isinstance(seq_or_step, bool):
            if step is not None:
                raise FlossError("the step was given twice (positionally and as step=)")
            seq, step = None, seq_or_step
        seq = self.probe if seq is None else seq
        if seq is None:
            raise FlossError("no input sequences: pass them (floss(model, seq)) or give "
                             "FlossingPenalty(probe=...)")
        step = self.calls if step is None else step
        self.calls += 1
        dtype, device = _dtype_device(model, self.settings.get("dtype"))
        if step % self.every:
            return torch.zeros((), dtype=dtype, device=device)
        exponents = differentiable_exponents(model, seq, self.k, **self.settings)
        value = _reduce(exponents, self.reduce)
        term = self.weight * self.penalty(value, self.target)
        finite = bool(torch.isfinite(value.detach())) and bool(torch.isfinite(term.detach()))
        detached = exponents.detach()
        B = detached.shape[0]
        self.history.append(dict(
            step=int(step), value=float(value.detach()), exponents=detached.mean(dim=0).tolist(),
            stderr=(detached.std(dim=0) / math.sqrt(B)).tolist() if B > 1 else [math.nan] * detached.shape[1],
            penalty=float(term.detach()), finite=finite))
        if not finite:
            return torch.zeros((), dtype=dtype, device=device)
        return term.to(dtype)

    def lightning_callback(self, probe=None, *, attribute: str | None = None):
        """A PyTorch Lightning callback applying this penalty (Lightning is imported here).

        After each training backward pass (``on_after_backward``) it computes the term for
        ``trainer.global_step`` on ``probe`` (default: this penalty's ``probe``) and backpropagates
        it, divided by ``accumulate_grad_batches``, into the gradients the optimizer is about to
        use: the same update as adding it to the loss.  The model is the LightningModule, or its
        attribute ``attribute``; it must hold exactly one recurrent module.  Logs
        ``floss/value`` and ``floss/penalty``.
        """
        global _CALLBACK
        if _CALLBACK is None:
            _CALLBACK = _build_callback()
        return _CALLBACK(self, self.probe if probe is None else probe, attribute)


def _dtype_device(model, dtype):
    """(analysis dtype, device) of a model's recurrent module; FlossError for a model without one."""
    if not isinstance(model, nn.Module):
        raise FlossError(f"model must be an nn.Module holding one recurrent module, got "
                         f"{type(model).__name__}. {cells.SUPPORTED}.")
    try:
        rnn, _ = cells.find_recurrent(model)
    except ValueError as e:
        raise FlossError(str(e)) from e
    param = next(rnn.parameters())
    return (param.dtype if dtype is None else dtype), param.device


def import_lightning():
    """``lightning.pytorch`` (or ``pytorch_lightning``), or ImportError saying how to get it."""
    try:
        import lightning.pytorch as pl  # optional dependency: only the callback needs it
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError as e:
            raise ImportError("FlossingPenalty.lightning_callback needs PyTorch Lightning: pip install "
                              "lightning (or pytorch-lightning); FlossingPenalty works without it in "
                              "any plain training loop") from e
    return pl


def _build_callback():
    pl = import_lightning()

    class FlossingCallback(pl.Callback):
        """Adds a :class:`FlossingPenalty`'s gradient after every training backward pass."""

        def __init__(self, penalty: FlossingPenalty, probe, attribute: str | None):
            super().__init__()
            if probe is None:
                raise FlossError("the Lightning callback needs the probe sequences: "
                                 "lightning_callback(probe) or FlossingPenalty(probe=...)")
            self.penalty, self.probe, self.attribute = penalty, probe, attribute

        def on_after_backward(self, trainer, pl_module) -> None:
            model = pl_module if self.attribute is None else getattr(pl_module, self.attribute)
            probe = torch.as_tensor(self.probe).to(pl_module.device)
            with torch.enable_grad():
                term = self.penalty(model, probe, step=int(trainer.global_step))
                if term.requires_grad:
                    (term / max(1, int(trainer.accumulate_grad_batches))).backward()
            if term.requires_grad:
                last = self.penalty.history[-1]
                pl_module.log("floss/value", last["value"], on_step=True, on_epoch=False)
                pl_module.log("floss/penalty", last["penalty"], on_step=True, on_epoch=False)

    return FlossingCallback
