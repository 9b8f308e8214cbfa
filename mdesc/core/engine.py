"""The engine of the core: one problem validated and laid out once, run on a backend, its result.

Layers of :mod:`mdesc.core`, bottom up (each imports only the ones below it):

1. :mod:`~mdesc.core.cells` (the cell table; models -> flat weights), :mod:`~mdesc.core.schedule`
   (the re-orthonormalisation schedule), :mod:`~mdesc.core.results` (result types),
   :mod:`~mdesc.core.reference_backend` (the pure-PyTorch run).
2. this module: the defaults, :func:`prepare` (every input validated here, once: models -> flat
   weights, sequences, lengths, initial states, frame, dtype and device), :class:`PreparedRun`,
   :func:`run_prepared` (the fused kernels or the reference backend) and
   :func:`lyapunov_result`.
3. :mod:`~mdesc.core.windows`: the one chaining of each sequence's drive and zero-input phase.
4. the fronts: :mod:`~mdesc.core.lyapunov`, :mod:`~mdesc.core.twin`, :mod:`~mdesc.core.stability`,
   and :mod:`~mdesc.core.reference` (the fronts with ``backend="reference"``).

The compiled extension is optional (the reference backend runs without it), so
:mod:`mdesc.core._ops` is imported by :func:`run_prepared` when a fused run asks for it, not at
import (tests/test_lazy_import.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from mdesc.core import cells, reference_backend, schedule
from mdesc.core.results import LyapunovResult

# --------------------------------------------------------------------------------------------
# The defaults: every front takes its defaults from here (each value written once).

#: Leading steps of the counted window that move state and frame but are not counted.
WARMUP = 0
#: Seed of the default random frame and of the twin's perturbation.
SEED = 0
#: Which steps are counted: "all" (the whole run after warmup) or "zero_input" (each sequence's
#: zero-input phase after warmup; docs/conventions.md §4).
WINDOW = "all"
WINDOWS = ("all", "zero_input")
#: "fused" (the compiled kernels) or "reference" (the pure-PyTorch autograd run).
BACKEND = "fused"
BACKENDS = ("fused", "reference")
#: Zero-input steps after the drive for an exponent: none, the run is the drive as given.
LYAPUNOV_ZERO_INPUT_STEPS = 0
#: Zero-input steps after the drive for the finite-perturbation distance and the stability record:
#: the distance is defined by a long zero-input phase (the paper: 500 driven + 1100 zero-input
#: steps), where a perturbation either dies out (order) or survives (chaos).
DISTANCE_ZERO_INPUT_STEPS = 1100
#: Standard deviation of the Gaussian noise added to the twin's h.
PERTURBATION = 1e-6
#: Where the twin is perturbed: "drive_end" (where each sequence's zero input begins) or "start".
PERTURB_AT = "drive_end"
PERTURB_POINTS = ("drive_end", "start")
#: log of the offset added to every distance (the paper: -15).
FLOOR = -15.0
#: The distance's dtype when none is given (float32 rounding, ~e^-16, would lift D~ off its floor).
DISTANCE_DTYPE = torch.float64
#: Exponents per run of lyapunov_checkpoints and stability_record (lyapunov_spectrum: all n).
CHECKPOINT_K = 1

K_MESSAGE = "k must be a positive integer (or None for the full spectrum), got {k!r}"


def default_qr_every(k: int) -> int:
    """Default re-orthonormalisation interval: every 10 steps for k = 1, every 5 for larger frames."""
    return 10 if k == 1 else 5


@dataclass
class PreparedRun:
    """One problem in the kernels' layout (see csrc/mdesc.cpp for every shape).

    ``window`` and ``warmup`` are the counted window's: for ``window="all"`` one kernel call
    counts steps ``[warmup, steps)``; for ``"zero_input"`` :mod:`mdesc.core.windows` chains each
    sequence's drive and zero-input phase, and ``warmup`` counts from the drive's end.
    """

    x: torch.Tensor        # [C|1, T, B, I]
    lengths: torch.Tensor  # [B] int64
    weights: cells.FlatWeights
    h0: torch.Tensor       # [C|1, L, B, H]
    c0: torch.Tensor       # [C|1, L, B, H] (H = 0 for cells without a cell state)
    q0: torch.Tensor       # [C|1, B|1, n, k]
    zero_input_steps: int
    warmup: int
    qr_every: int
    checkpoint_axis: bool  # results keep a leading checkpoint axis
    settings: dict[str, Any] = field(default_factory=dict)
    kernel_options: dict[str, Any] = field(default_factory=dict)  # tuning keywords of _ops.tangent_run
    window: str = WINDOW

    @property
    def steps(self) -> int:
        return self.x.shape[1] + self.zero_input_steps

    @property
    def k(self) -> int:
        return self.q0.shape[-1]

    def block_steps(self) -> torch.Tensor:
        """Counted steps in each re-orthonormalisation block, int64 [nblocks]."""
        return torch.tensor(schedule.block_sizes(self.steps, self.warmup, self.qr_every), dtype=torch.int64)


# --------------------------------------------------------------------------------------------
# validation: models and sequences -> the kernels' layout


def _check_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    return dtype


def _model_dtype(rnn: nn.RNNBase) -> torch.dtype:
    """The analysis dtype a model asks for: its recurrent module's parameter dtype."""
    params = [p for p in rnn.parameters() if p.is_floating_point()]
    if not params:
        raise ValueError(f"{type(rnn).__name__} has no floating-point parameters to take the "
                         "analysis dtype from; pass dtype=torch.float32 or torch.float64")
    dtype = params[0].dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the model's parameters are {dtype}, but mdesc analyses in float32 or "
                         "float64: pass dtype=torch.float32 (or torch.float64) explicitly")
    return dtype


def _as_time_major(seq: torch.Tensor, shape: cells.RecurrentShape, ids: bool) -> torch.Tensor:
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


def _inputs(embeddings: Sequence[nn.Embedding | None], seq, dtype: torch.dtype, device: torch.device,
            shape: cells.RecurrentShape) -> torch.Tensor:
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
        raise ValueError(f"inputs have {x.shape[-1]} features but the {shape.name} expects "
                         f"input_size={shape.input_size}")
    if not torch.isfinite(x).all():
        raise ValueError("seq (or its embedding) contains NaN or inf")
    return x.contiguous()


def check_lengths(lengths, T: int, B: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 [B]: each sequence's own length in [1, T] (None: all T); a ValueError that says
    what is wrong otherwise.  The one check of lengths (the engine's and anyrun's probes)."""
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


def _initial_state(value, name: str, C: int, shape: cells.RecurrentShape, B: int, dtype, device):
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


def _check_k(k) -> None:
    """k: None (all n), 0 (a forward run without tangent vectors) or a positive integer."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(K_MESSAGE.format(k=k))


def _check_k_fits(k: int | None, n: int) -> None:
    if k is not None and k > n:
        raise ValueError(f"k={k} exceeds the tangent-space dimension {n} (2*H*L for an LSTM, H*L "
                         f"for a GRU or RNN)")


def nonneg_int(value, name: str, minimum: int = 0) -> int:
    """``value`` if it is an integer >= ``minimum`` (not a bool), else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_window(window: str, warmup: int, zero_input_steps: int) -> None:
    if window not in WINDOWS:
        raise ValueError(f"window must be 'all' (count the whole run after warmup) or 'zero_input' "
                         f"(count each sequence's zero-input phase after warmup), got {window!r}")
    if window == "zero_input" and zero_input_steps <= warmup:
        raise ValueError(f"window='zero_input' counts each sequence's zero-input phase after its "
                         f"first warmup={warmup} steps, and the longest drive is followed by only "
                         f"zero_input_steps={zero_input_steps}: pass zero_input_steps > warmup")


def _recurrent(models, template, checkpoint_axis: bool):
    """(recurrent modules, their embeddings) of one model or of each checkpoint: found once."""
    modules = cells.resolve_checkpoints(models, template) if checkpoint_axis else [models]
    found = [cells.find_recurrent(m) for m in modules]
    return [rnn for rnn, _ in found], [embedding for _, embedding in found]


def _counted_steps(window: str, T: int, zero_input_steps: int, warmup: int, lengths: torch.Tensor):
    """Counted steps of the window: one number, or one per sequence when a zero-input window's
    drives differ in length."""
    S = T + zero_input_steps
    if window == "all":
        return S - warmup
    counted = [S - length - warmup for length in lengths.cpu().tolist()]
    return counted[0] if len(set(counted)) == 1 else counted


def prepare(models, seq, *, k: int | None, lengths=None, zero_input_steps: int = LYAPUNOV_ZERO_INPUT_STEPS,
            warmup: int = WARMUP, qr_every: int | None = None, h0=None, c0=None, q0=None, seed: int = SEED,
            dtype: torch.dtype | None = None, template: nn.Module | None = None,
            checkpoint_axis: bool = False, kernel_options: dict | None = None,
            window: str = WINDOW) -> PreparedRun:
    """Validate a user's problem, once, and lay it out for the kernels.

    ``models`` is one model (``checkpoint_axis=False``) or a list of checkpoints (modules, or
    state dicts with ``template``).  ``k`` is the number of tangent vectors (None: all
    n = halves*H*L; 0: a forward run only, as the distance's twins need); ``qr_every`` None
    takes :func:`default_qr_every`; ``dtype`` None takes the model's parameter dtype.  Every
    other argument as in :func:`mdesc.lyapunov_spectrum`.
    """
    _check_k(k)
    zero_input_steps = nonneg_int(zero_input_steps, "zero_input_steps")
    warmup = nonneg_int(warmup, "warmup")
    _check_window(window, warmup, zero_input_steps)
    rnns, embeddings = _recurrent(models, template, checkpoint_axis)
    dtype_source = "model" if dtype is None else "explicit"
    dtype = _model_dtype(rnns[0]) if dtype is None else _check_dtype(dtype)
    shape = cells.recurrent_shape(rnns[0])
    device = next(rnns[0].parameters()).device
    n = shape.state_dim
    _check_k_fits(k, n)
    weights = cells.flatten(rnns, dtype, device)
    C = weights.checkpoints
    x = _inputs(embeddings, seq, dtype, device, shape)
    T, B = x.shape[1], x.shape[2]
    if k != 0 and window == "all" and warmup >= T + zero_input_steps:
        raise ValueError(f"warmup={warmup} leaves no counted steps in a run of "
                         f"{T + zero_input_steps} steps (T={T} + zero_input_steps={zero_input_steps})")
    frame = (torch.zeros(1, 1, n, 0, dtype=dtype, device=device) if k == 0
             else _frame(q0, n, k, B, C, seed, dtype, device))
    kk = frame.shape[-1]
    qr_every = nonneg_int(default_qr_every(kk) if qr_every is None else qr_every, "qr_every", minimum=1)
    lengths_given, lengths = lengths is not None, check_lengths(lengths, T, B, device)
    settings = dict(
        k=kk, steps=T + zero_input_steps, driven_steps=T, zero_input_steps=zero_input_steps,
        warmup=warmup, counted_steps=_counted_steps(window, T, zero_input_steps, warmup, lengths),
        qr_every=qr_every, seed=None if q0 is not None else seed, q0_given=q0 is not None,
        lengths_given=lengths_given, h0_given=h0 is not None, c0_given=c0 is not None,
        dtype=str(dtype).replace("torch.", ""), device=str(device), checkpoints=C, batch=B,
        input_size=shape.input_size, hidden_size=shape.hidden_size, num_layers=shape.num_layers,
        state_dim=n, dtype_source=dtype_source,
    )
    return PreparedRun(
        x=x, lengths=lengths, weights=weights,
        h0=_initial_state(h0, "h0", C, shape, B, dtype, device),
        c0=(_initial_state(c0, "c0", C, shape, B, dtype, device) if shape.c_size
            else cells.no_cell_state(c0, shape, B, dtype, device)),
        q0=frame, zero_input_steps=zero_input_steps, warmup=warmup, qr_every=qr_every,
        checkpoint_axis=checkpoint_axis, settings=settings, kernel_options=dict(kernel_options or {}),
        window=window,
    )


# --------------------------------------------------------------------------------------------
# the run and its result


def run_prepared(prep: PreparedRun, backend: str = BACKEND):
    """One run of a prepared problem over ``[0, prep.steps)``, counting ``[prep.warmup, steps)``:
    (block_logs [C, B, nblocks, k] float64, h_T [C, L, B, H], c_T [C, L, B, H or 0]) from the
    fused kernels (``torch.ops.mdesc.tangent_run``) or the reference backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'fused' or 'reference', got {backend!r}")
    if backend == "reference":
        return reference_backend.run_prepared(prep)
    # the compiled extension is optional (the reference backend runs without it): loaded here
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


def lyapunov_result(prep: PreparedRun, block_logs, h_T, c_T, backend: str) -> LyapunovResult:
    """The :class:`LyapunovResult` of one run (:func:`run_prepared`'s outputs) counting
    ``[prep.warmup, prep.steps)``; a run whose state or frame went non-finite gets NaN exponents,
    while -inf exponents (lost frame columns) are kept."""
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
