"""Lyapunov exponents of recurrent models (LSTM, GRU, RNN) driven by input sequences: the public
front door.

Algorithm (Benettin et al. 1980; Shimada & Nagashima 1979): propagate the state of every layer
together with k tangent vectors through the exact Jacobian of each step, re-orthonormalise the
tangent frame by QR every ``qr_every`` steps and accumulate log|R_ii| in float64.  After
``warmup`` uncounted steps, the i-th exponent is the mean over counted steps of that log growth,
in natural-log units per step.  The tangent space is the full state of every layer: for an
LSTM (h, c), ordered ``[h_1, c_1, ..., h_L, c_L]`` (n = 2*H*L); for a GRU or RNN h, ordered
``[h_1, ..., h_L]`` (n = H*L).  Conventions: docs/conventions.md.

Every run goes through one call of ``torch.ops.mdesc.tangent_run`` (csrc/), batched over
sequences and checkpoints; ``backend="reference"`` runs the same prepared problem through the
pure-PyTorch autograd implementation in :mod:`mdesc.reference` instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from mdesc.core import cells, schedule


def default_qr_every(k: int) -> int:
    """Default re-orthonormalisation interval: every 10 steps for k = 1, every 5 for larger frames."""
    return 10 if k == 1 else 5


@dataclass
class PreparedRun:
    """One problem in the kernels' layout (see csrc/mdesc.cpp for every shape)."""

    x: torch.Tensor        # [C|1, T, B, I]
    lengths: torch.Tensor  # [B] int64
    weights: cells.FlatWeights
    h0: torch.Tensor       # [C|1, L, B, H]
    c0: torch.Tensor       # [C|1, L, B, H]
    q0: torch.Tensor       # [C|1, B|1, n, k]
    zero_input_steps: int
    warmup: int
    qr_every: int
    checkpoint_axis: bool  # results keep a leading checkpoint axis
    settings: dict[str, Any] = field(default_factory=dict)
    kernel_options: dict[str, Any] = field(default_factory=dict)  # tuning keywords of _ops.tangent_run

    @property
    def steps(self) -> int:
        return self.x.shape[1] + self.zero_input_steps

    @property
    def k(self) -> int:
        return self.q0.shape[-1]

    def block_steps(self) -> torch.Tensor:
        """Counted steps in each re-orthonormalisation block, int64 [nblocks]."""
        return torch.tensor(schedule.block_sizes(self.steps, self.warmup, self.qr_every), dtype=torch.int64)


@dataclass
class LyapunovResult:
    """Lyapunov exponents and what is needed to trust them.

    Shapes use B sequences, k exponents and, for checkpoint batches, a leading C axis.

    exponents        float64 [(C,) B, k], natural log per step over the counted window
                     (``settings["window"]``: "all" or "zero_input", docs/conventions.md §4), in
                     the frame's Gram-Schmidt order, which is descending once converged
                     (finite-time estimates of close exponents may still be inverted); NaN where
                     the run went non-finite; -inf from the first column the frame lost on (see
                     ``lost_columns``)
    block_exponents  float64 [(C,) B, nblocks, k], local exponents of each re-orthonormalisation
                     block of the counted window (log growth in the block / its steps), to judge
                     convergence; NaN for padding blocks (see block_steps)
    block_steps      int64 [nblocks], counted steps in each block; int64 [B, nblocks] (zeros for
                     padding) when the windows of a zero-input-window run differ per sequence
                     (padded batches): either way it broadcasts as ``block_steps[..., None]``
                     against ``block_exponents``
    driven_exponents float64 [(C,) B, k] for ``window="zero_input"``: the exponents of each
                     sequence's drive (steps [0, l_b), all counted, from the initial frame);
                     None for ``window="all"``
    nonfinite        bool [(C,) B], runs whose state or tangent vectors became NaN/inf (their
                     exponents are NaN)
    (lost_columns)   property, int64 [(C,) B]: how many frame columns each run lost (docs/
                     conventions.md §3, "Singular tangent maps"): a column the steps of one
                     re-orthonormalisation block mapped to within LOST_COLUMN_EPS * eps of the
                     span of the earlier ones -- exactly (a dead ReLU unit, a zero weight row, a
                     gate saturated to exactly 0 or 1) or beyond the dtype's resolution (a growth
                     gap of more than ~ln(1/(64 eps)) per block: 11.8 nats in float32, 31 in
                     float64; use a smaller qr_every, or float64).  Its exponent and every later
                     one are -inf, the earlier ones exact.
    h_T, c_T         final states [(C,) L, B, H]
    settings         every setting of the run (k, steps, warmup, qr_every, seed, dtype, device,
                     backend, model shape, ...)
    """

    exponents: torch.Tensor
    block_exponents: torch.Tensor
    block_steps: torch.Tensor
    nonfinite: torch.Tensor
    h_T: torch.Tensor
    c_T: torch.Tensor
    settings: dict[str, Any]
    driven_exponents: torch.Tensor | None = None

    @property
    def lost_columns(self) -> torch.Tensor:
        """int64 [(C,) B]: the number of -inf exponents of each run, the frame columns lost to a
        singular tangent map or to the dtype's resolution (docs/conventions.md §3); 0 where
        ``nonfinite``."""
        return (torch.isneginf(self.exponents) & ~self.nonfinite[..., None]).sum(dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        """Mean over the batch, per exponent: [(C,) k]; NaN if any run went non-finite, -inf for
        an exponent that is -inf in some run (a singular tangent map)."""
        return self.exponents.mean(dim=-2)

    @property
    def stderr(self) -> torch.Tensor:
        """Standard error of ``mean`` over sequences (std with ddof=1 / sqrt(B)); NaN if B = 1."""
        B = self.exponents.shape[-2]
        if B < 2:
            return torch.full_like(self.mean, float("nan"))
        return self.exponents.std(dim=-2) / math.sqrt(B)

    def running_exponents(self) -> torch.Tensor:
        """Estimate after each block (cumulative log growth / cumulative steps): [(C,) B, nblocks, k].

        A converged estimate is flat over its last blocks (and stays at the final value over
        the padding blocks of a sequence whose window is shorter).
        """
        steps = self.block_steps.to(self.block_exponents)[..., None]
        growth = torch.where(steps > 0, self.block_exponents * steps, 0.0).cumsum(dim=-2)
        return growth / steps.cumsum(dim=-2)

    def derived(self, name: str, batches: int = 10):
        """A quantity derived from the spectrum, per sequence, with its batch-means error.

        ``name``: "positive_count" (number of positive exponents), "ks_entropy" (sum of the
        positive exponents, Pesin 1977) or "kaplan_yorke" (j + (λ_1+…+λ_j)/|λ_{j+1}|, Kaplan &
        Yorke 1979).  Refused, with the reason, when the k computed exponents do not determine
        it (e.g. all of them positive).  Formulas, errors and references: :mod:`mdesc.core.derived`.
        Returns a :class:`~mdesc.core.derived.Derived` (``value``, ``error``: [(C,) B]).
        """
        from mdesc.core import derived

        return derived.derive(name, self.exponents, self.block_exponents, self.block_steps,
                              n=self.settings.get("state_dim"), batches=batches)

    def positive_count(self, batches: int = 10):
        """Number of positive exponents per sequence (see :meth:`derived`)."""
        return self.derived("positive_count", batches)

    def ks_entropy(self, batches: int = 10):
        """Kolmogorov-Sinai entropy estimate per sequence, nats per step (see :meth:`derived`)."""
        return self.derived("ks_entropy", batches)

    def kaplan_yorke(self, batches: int = 10):
        """Kaplan-Yorke (Lyapunov) dimension per sequence (see :meth:`derived`)."""
        return self.derived("kaplan_yorke", batches)

    def __float__(self) -> float:
        """Mean of the largest exponent over every sequence (and checkpoint)."""
        return float(self.exponents[..., 0].mean())

    def __repr__(self) -> str:
        lead = self.exponents[..., 0]
        shape = "x".join(str(s) for s in self.exponents.shape)
        nonfinite = int(self.nonfinite.sum())
        return (f"LyapunovResult(exponents[{shape}], lambda_1 mean={float(lead.mean()):.6g}, "
                f"k={self.settings['k']}, steps={self.settings['steps']}, "
                f"window={self.settings.get('window', 'all')}, warmup={self.settings['warmup']}, "
                f"qr_every={self.settings['qr_every']}, "
                f"backend={self.settings['backend']}, nonfinite={nonfinite}, "
                f"lost_columns={int(self.lost_columns.sum())})")


# --------------------------------------------------------------------------------------------
# preparation: models and sequences -> PreparedRun


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The analysis dtype a model asks for: its recurrent module's parameter dtype."""
    if not isinstance(model, nn.Module):
        return torch.float32  # not a model: refused, with what is supported, by mdesc.core.cells
    rec = next((m for m in model.modules() if isinstance(m, nn.RNNBase)), model)
    params = [p for p in rec.parameters() if p.is_floating_point()]
    if not params:
        raise ValueError(f"{type(model).__name__} has no floating-point parameters to take the "
                         "analysis dtype from; pass dtype=torch.float32 or torch.float64")
    dtype = params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the model's parameters are {dtype}, but mdesc analyses in float32 or "
                         "float64: pass dtype=torch.float32 (or torch.float64) explicitly")
    return dtype


def _model_device(modules: Sequence[nn.Module]) -> torch.device:
    lstm, _ = cells.find_lstm(modules[0])
    return next(lstm.parameters()).device


def _as_time_major(seq: torch.Tensor, shape: cells.LSTMShape, ids: bool) -> torch.Tensor:
    """(T, B, ...) view of ``seq`` from the LSTM's layout; unbatched input gets B = 1."""
    feature_dims = 0 if ids else 1
    if seq.dim() == 1 + feature_dims:  # unbatched (T,) ids or (T, I) inputs
        return seq.unsqueeze(1)
    if seq.dim() != 2 + feature_dims:
        want = "(T, B)" if ids else "(T, B, I)"
        if shape.batch_first:
            want = "(B, T)" if ids else "(B, T, I)"
        raise ValueError(f"seq must have shape {want} for this {'batch_first ' if shape.batch_first else ''}"
                         f"{shape.name}{' (token ids)' if ids else ''}, got {tuple(seq.shape)}")
    return seq.transpose(0, 1) if shape.batch_first else seq


def _inputs(modules: Sequence[nn.Module], seq: torch.Tensor, dtype: torch.dtype,
            device: torch.device, shape: cells.LSTMShape) -> torch.Tensor:
    """x [C|1, T, B, I] for the kernels: seq itself, or each checkpoint's embedding of ids."""
    if not isinstance(seq, torch.Tensor):
        seq = torch.as_tensor(seq)
    if seq.device != device:
        raise ValueError(f"seq is on {seq.device} but the model is on {device}; move one of them")
    ids = not (seq.is_floating_point() or seq.is_complex())
    seq = _as_time_major(seq, shape, ids)
    T, B = seq.shape[0], seq.shape[1]
    if T == 0 or B == 0:
        raise ValueError(f"seq is empty (T={T}, B={B}); pass at least one step of one sequence")
    if ids:
        embeddings = [cells.find_lstm(m)[1] for m in modules]
        if embeddings[0] is None:
            raise ValueError("seq holds integer token ids but the model has no nn.Embedding to map "
                             "them; pass float inputs of shape (T, B, I) instead")
        num = embeddings[0].num_embeddings
        if int(seq.min()) < 0 or int(seq.max()) >= num:
            raise ValueError(f"token ids must be in [0, {num}) for this embedding, got range "
                             f"[{int(seq.min())}, {int(seq.max())}]")
        with torch.no_grad():
            x = torch.stack([e(seq).to(dtype) for e in embeddings])
    else:
        if seq.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"seq has dtype {seq.dtype}; pass float32 or float64 inputs "
                             "(or integer token ids for a model with an nn.Embedding)")
        x = seq.to(dtype).unsqueeze(0)
    if x.shape[-1] != shape.input_size:
        raise ValueError(f"inputs have {x.shape[-1]} features but the LSTM expects "
                         f"input_size={shape.input_size}")
    if not torch.isfinite(x).all():
        raise ValueError("seq (or its embedding) contains NaN or inf")
    return x.contiguous()


def _lengths(lengths, T: int, B: int, device: torch.device) -> torch.Tensor:
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int64, device=device)
    lengths = torch.as_tensor(lengths).to(device=device)
    if lengths.is_floating_point() or lengths.shape != (B,):
        raise ValueError(f"lengths must be {B} integers (one per sequence), got "
                         f"{lengths.dtype} {tuple(lengths.shape)}")
    lengths = lengths.to(torch.int64)
    if int(lengths.min()) < 1 or int(lengths.max()) > T:
        raise ValueError(f"lengths must be in [1, T={T}], got range [{int(lengths.min())}, "
                         f"{int(lengths.max())}]")
    return lengths.contiguous()


def _initial_state(value, name: str, C: int, shape: cells.LSTMShape, B: int, dtype, device):
    L, H = shape.num_layers, shape.hidden_size
    if value is None:
        return torch.zeros(1, L, B, H, dtype=dtype, device=device)
    value = torch.as_tensor(value).to(device=device, dtype=dtype)
    if value.shape == (L, B, H):
        value = value.unsqueeze(0)
    elif value.shape == (L, H):
        value = value[None, :, None, :].expand(1, L, B, H)
    if value.dim() != 4 or value.shape[0] not in (1, C) or value.shape[1:] != (L, B, H):
        raise ValueError(f"{name} must have shape (L, B, H) = ({L}, {B}, {H}) like nn.{shape.name}'s, "
                         f"or (C, L, B, H) for C checkpoints, got {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf")
    return value.contiguous()


def random_frame(n: int, k: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Seeded random orthonormal frame [n, k] (QR of a Gaussian matrix, diag R > 0)."""
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(n, k, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def _frame(q0, n: int, k: int | None, B: int, C: int, seed: int, dtype, device) -> torch.Tensor:
    if q0 is None:
        k = n if k is None else k
        return random_frame(n, k, seed).to(device=device, dtype=dtype)[None, None]
    q0 = torch.as_tensor(q0).to(dtype=torch.float64)
    if q0.dim() == 2:
        q0 = q0[None, None]
    elif q0.dim() == 3:
        q0 = q0[None]
    if q0.dim() != 4 or q0.shape[0] not in (1, C) or q0.shape[1] not in (1, B) or q0.shape[2] != n:
        raise ValueError(f"q0 must have shape (n, k), (B, n, k) or (C, B, n, k) with n = {n} (the "
                         f"tangent-space dimension: 2*H*L for an LSTM, H*L otherwise), "
                         f"got {tuple(q0.shape)}")
    if k is not None and q0.shape[-1] != k:
        raise ValueError(f"q0 has {q0.shape[-1]} columns but k={k}")
    if not torch.isfinite(q0).all():
        raise ValueError("q0 contains NaN or inf")
    # Orthonormalise so the first block's logs measure growth, not q0's own norms.
    q, r = torch.linalg.qr(q0)
    diag = torch.diagonal(r, dim1=-2, dim2=-1)
    if bool((diag.abs() <= 1e-12 * diag.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)).any()):
        raise ValueError("q0's columns are linearly dependent; pass k independent directions")
    return (q * torch.sign(diag).unsqueeze(-2)).to(device=device, dtype=dtype).contiguous()


def _check_k(k: int | None, n: int) -> None:
    if k is None:
        return
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise ValueError(f"k={k} exceeds the tangent-space dimension {n} (2*H*L for an LSTM, H*L "
                         f"for a GRU or RNN)")


def _nonneg_int(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def prepare(models, seq, *, k: int | None, lengths=None, zero_input_steps: int = 0, warmup: int = 0,
            qr_every: int | None = None, h0=None, c0=None, q0=None, seed: int = 0,
            dtype: torch.dtype | None = None, template: nn.Module | None = None,
            checkpoint_axis: bool = False, kernel_options: dict | None = None) -> PreparedRun:
    """Validate a user's problem and lay it out for the kernels.

    ``k`` is the number of tangent vectors (None: all n = 2*H*L; 0: forward run only).
    """
    modules = cells.resolve_checkpoints(models, template) if checkpoint_axis else [models]
    dtype_source = "model" if dtype is None else "explicit"
    dtype = _model_dtype(modules[0]) if dtype is None else _check_dtype(dtype)
    lstms = [cells.find_lstm(m)[0] for m in modules]
    shape = cells.lstm_shape(lstms[0])
    device = _model_device(modules)
    n = shape.state_dim
    if k != 0:
        _check_k(k, n)
    zero_input_steps = _nonneg_int(zero_input_steps, "zero_input_steps")
    warmup = _nonneg_int(warmup, "warmup")
    weights = cells.flatten(lstms, dtype, device)
    C = weights.checkpoints
    x = _inputs(modules, seq, dtype, device, shape)
    T, B = x.shape[1], x.shape[2]
    if k != 0 and warmup >= T + zero_input_steps:
        raise ValueError(f"warmup={warmup} leaves no counted steps in a run of "
                         f"{T + zero_input_steps} steps (T={T} + zero_input_steps={zero_input_steps})")
    frame = (torch.zeros(1, 1, n, 0, dtype=dtype, device=device) if k == 0
             else _frame(q0, n, k, B, C, seed, dtype, device))
    kk = frame.shape[-1]
    if qr_every is None:
        qr_every = default_qr_every(kk)
    qr_every = _nonneg_int(qr_every, "qr_every", minimum=1)
    settings = dict(
        k=kk, steps=T + zero_input_steps, driven_steps=T, zero_input_steps=zero_input_steps,
        warmup=warmup, counted_steps=T + zero_input_steps - warmup, qr_every=qr_every,
        seed=None if q0 is not None else seed, q0_given=q0 is not None,
        lengths_given=lengths is not None, h0_given=h0 is not None, c0_given=c0 is not None,
        dtype=str(dtype).replace("torch.", ""), device=str(device), checkpoints=C, batch=B,
        input_size=shape.input_size, hidden_size=shape.hidden_size, num_layers=shape.num_layers,
        state_dim=n,
    )
    settings["dtype_source"] = dtype_source
    return PreparedRun(
        x=x, lengths=_lengths(lengths, T, B, device), weights=weights,
        h0=_initial_state(h0, "h0", C, shape, B, dtype, device),
        c0=(_initial_state(c0, "c0", C, shape, B, dtype, device) if shape.c_size
            else cells.no_cell_state(c0, shape, B, dtype, device)),
        q0=frame, zero_input_steps=zero_input_steps, warmup=warmup, qr_every=qr_every,
        checkpoint_axis=checkpoint_axis, settings=settings, kernel_options=dict(kernel_options or {}),
    )


# --------------------------------------------------------------------------------------------
# running


def run_prepared(prep: PreparedRun, backend: str = "fused"):
    """(block_logs [C, B, nblocks, k], h_T [C, L, B, H], c_T) from the chosen backend."""
    if backend == "fused":
        from mdesc.core import _ops

        w = prep.weights
        device = prep.x.device.type
        if device != "cpu" and not _ops.has_kernel(device):
            raise RuntimeError(
                f"this build of mdesc has no {device.upper()} kernels (built with WITH_CUDA="
                f"{_ops.WITH_CUDA}); move the model and inputs to the CPU, or rebuild where torch "
                "has CUDA and nvcc matches it (FORCE_CUDA=1 pip install --no-build-isolation .)")
        unknown = sorted(set(prep.kernel_options) - set(_ops.KERNEL_OPTIONS))
        if unknown:
            raise ValueError(f"unknown kernel_options {unknown}; the kernels take "
                             f"{', '.join(_ops.KERNEL_OPTIONS)} (see mdesc.core._ops.tangent_run)")
        return _ops.tangent_run(prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0,
                                prep.q0, prep.zero_input_steps, prep.warmup, prep.qr_every,
                                cell=w.cell, **prep.kernel_options)
    if backend == "reference":
        from mdesc.core import reference

        return reference.run_prepared(prep)
    raise ValueError(f"backend must be 'fused' or 'reference', got {backend!r}")


def _result(prep: PreparedRun, block_logs, h_T, c_T, backend: str) -> LyapunovResult:
    steps = prep.block_steps()
    logs = block_logs.to(torch.float64)
    exponents = logs.sum(dim=-2) / float(steps.sum())
    # -inf exponents are lost columns of a singular tangent map (docs/conventions.md §3), kept;
    # anything else non-finite makes the whole run NaN
    nonfinite = (torch.isnan(exponents).any(dim=-1) | torch.isposinf(exponents).any(dim=-1)
                 | ~torch.isfinite(h_T).all(dim=(1, 3)) | ~torch.isfinite(c_T).all(dim=(1, 3)))
    exponents = exponents.masked_fill(nonfinite[..., None], float("nan"))
    block_exponents = (logs / steps.to(logs)[:, None]).masked_fill(nonfinite[..., None, None], float("nan"))
    if not prep.checkpoint_axis:
        exponents, block_exponents, nonfinite = exponents[0], block_exponents[0], nonfinite[0]
        h_T, c_T = h_T[0], c_T[0]
    settings = dict(prep.settings, backend=backend, window="all")
    return LyapunovResult(exponents.cpu(), block_exponents.cpu(), steps, nonfinite.cpu(), h_T, c_T,
                          settings)


WINDOWS = ("all", "zero_input")


def _spectrum(models, seq, k, *, checkpoint_axis: bool, backend: str, window: str = "all",
              **kwargs) -> LyapunovResult:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be a positive integer (or None for the full spectrum), got {k!r}")
    if window not in WINDOWS:
        raise ValueError(f"window must be 'all' (count the whole run after warmup) or 'zero_input' "
                         f"(count each sequence's zero-input phase after warmup), got {window!r}")
    if window == "all":
        prep = prepare(models, seq, k=k, checkpoint_axis=checkpoint_axis, **kwargs)
        block_logs, h_T, c_T = run_prepared(prep, backend)
        return _result(prep, block_logs, h_T, c_T, backend)
    warmup = _nonneg_int(kwargs.pop("warmup", 0), "warmup")
    zero = _nonneg_int(kwargs.get("zero_input_steps", 0), "zero_input_steps")
    if zero <= warmup:
        raise ValueError(f"window='zero_input' counts each sequence's zero-input phase after its "
                         f"first warmup={warmup} steps, and the longest drive is followed by only "
                         f"zero_input_steps={zero}: pass zero_input_steps > warmup")
    from mdesc.core import windows

    prep = prepare(models, seq, k=k, checkpoint_axis=checkpoint_axis, warmup=0, **kwargs)
    return windows.spectrum(prep, backend, warmup)


def lyapunov_spectrum(model: nn.Module, seq: torch.Tensor, k: int | None = None, *, lengths=None,
                      zero_input_steps: int = 0, warmup: int = 0, qr_every: int | None = None,
                      h0=None, c0=None, q0=None, seed: int = 0, dtype: torch.dtype | None = None,
                      kernel_options: dict | None = None,
                      window: str = "all", backend: str = "fused") -> LyapunovResult:
    """The k largest Lyapunov exponents of a recurrent model driven by each sequence of a batch.

    Args:
        model: ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (tanh or relu), or a module holding exactly
            one of them (see :mod:`mdesc.core.cells`).
        seq: inputs ``(T, B, I)`` (``(B, T, I)`` if the LSTM is batch_first; ``(T, I)`` for one
            sequence), or integer token ids ``(T, B)`` / ``(B, T)`` for a model whose single
            ``nn.Embedding`` maps them to the LSTM's input.  Must be on the model's device.
        k: number of exponents (default: all ``n``: 2*H*L for an LSTM, H*L for a GRU or RNN).
        lengths: drive length of each sequence of a padded batch ``(B,)``, in [1, T]; after it the
            sequence gets zero input.
        zero_input_steps: steps of zero input appended to every sequence (run length T + this).
        warmup: leading steps of the counted window that move state and frame but are not counted.
        qr_every: re-orthonormalisation interval (default 10 for k = 1, else 5).
        h0, c0: initial state ``(L, B, H)`` (default zeros); c0 for an LSTM only.
        q0: initial frame ``(n, k)`` or ``(B, n, k)``, rows ``[h_1, c_1, ..., h_L, c_L]`` (LSTM)
            or ``[h_1, ..., h_L]`` (GRU, RNN); it is
            orthonormalised first.  Default: seeded random orthonormal frame.
        seed: seed of the default frame.
        dtype: float32 or float64 propagation; default (None): the model's parameter dtype, so a
            float64 model is analysed in float64.  ``settings["dtype"]`` records the dtype used
            and ``settings["dtype_source"]`` whether it came from the model or was explicit.
            Logs always accumulate in float64.
        window: which steps are counted (docs/conventions.md §4).

            - ``"all"`` (default): steps ``[warmup, T + zero_input_steps)`` of the whole run.
            - ``"zero_input"``: the asymptotic window: for each sequence, only its zero-input
              phase, steps ``[l_b + warmup, T + zero_input_steps)`` with l_b its drive length
              (``lengths``, default T), i.e. the exponents of the autonomous dynamics started
              from the state the drive left (the frame restarts as ``q0`` / the seeded frame at
              each drive end; padded sequences are handled exactly, as separate runs would).
              ``driven_exponents`` holds the drive's exponents (steps ``[0, l_b)``) beside them.
              Use it to ask whether the model left to zero input is ordered or chaotic: a drive
              usually contracts strongly, and averaging it with a chaotic zero-input phase can
              flip the sign of lambda_1.  Needs ``zero_input_steps > warmup``.
        backend: "fused" (the compiled kernels) or "reference" (pure-PyTorch autograd oracle).
        kernel_options: tuning keywords of the fused kernels, e.g. ``{"cpu_tile_columns": 96}``
            or ``{"cuda_path": "stepwise"}`` (:func:`mdesc.core._ops.tangent_run` lists them);
            results do not depend on them beyond rounding.  Ignored by the reference backend.

    Returns:
        :class:`LyapunovResult` with ``exponents`` of shape ``(B, k)``, descending.
    """
    return _spectrum(model, seq, k, checkpoint_axis=False, backend=backend, window=window, lengths=lengths,
                     zero_input_steps=zero_input_steps, warmup=warmup, qr_every=qr_every, h0=h0,
                     c0=c0, q0=q0, seed=seed, dtype=dtype, kernel_options=kernel_options)


def max_lyapunov(model: nn.Module, seq: torch.Tensor, **kwargs) -> LyapunovResult:
    """The largest Lyapunov exponent (k = 1) of an LSTM for each sequence; see
    :func:`lyapunov_spectrum` for the arguments.  ``float(result)`` is its batch mean."""
    if "k" in kwargs:
        raise TypeError("max_lyapunov computes k = 1; use lyapunov_spectrum(..., k=...) for more")
    return lyapunov_spectrum(model, seq, 1, **kwargs)


def lyapunov_checkpoints(checkpoints: Sequence[nn.Module | dict], seq: torch.Tensor, k: int | None = 1,
                         *, template: nn.Module | None = None, lengths=None,
                         zero_input_steps: int = 0, warmup: int = 0, qr_every: int | None = None,
                         h0=None, c0=None, q0=None, seed: int = 0, kernel_options: dict | None = None,
                         dtype: torch.dtype | None = None, window: str = "all",
                         backend: str = "fused") -> LyapunovResult:
    """Exponents of many checkpoints of one architecture on the same inputs, in one kernel call.

    ``checkpoints`` is a list of modules, or of state dicts together with ``template`` (a module
    of the same architecture, e.g. the freshly built model).  Token ids are embedded with each
    checkpoint's own embedding.  ``exponents`` has shape ``(C, B, k)``; other arguments as in
    :func:`lyapunov_spectrum` (h0/c0/q0 may carry a leading C axis; ``window="zero_input"``
    counts each sequence's zero-input phase only).
    """
    return _spectrum(checkpoints, seq, k, checkpoint_axis=True, backend=backend, window=window,
                     template=template,
                     lengths=lengths, zero_input_steps=zero_input_steps, warmup=warmup,
                     qr_every=qr_every, h0=h0, c0=c0, q0=q0, seed=seed, dtype=dtype,
                     kernel_options=kernel_options)
