"""The finite-perturbation twin run without cancellation (issue 11, part 1).

The plain twin of :func:`mdesc.asymptotic_distance` runs the perturbed trajectory as a second
state and subtracts: in float32 two runs that settle on the same fixed point still differ by
rounding (~1e-7 ~ e^-16, at the e^-15 floor of docs/conventions.md §5), and h' - h of two nearly
equal states keeps only the digits they do not share.  Here the kernel (csrc/cpu/twin_run.cpp,
math in csrc/common/twin_math.h) carries the difference delta = (h' - h, c' - c) itself beside the
state: delta_a = W delta_h (+ W_ih delta_x) exactly as a product, and the differences of the
nonlinearities in forms that never cancel, e.g.
tanh(a + d) - tanh(a) = (1 - tanh^2 a) tanh d / (1 + tanh a tanh d) with every factor computed
without cancellation.  This is the finite perturbation, not a linearisation, with *relative*
precision on delta down to the dtype's smallest normal number (1.2e-38 in float32, below which it
is flushed to 0), so D~ in float32 resolves distances far below the floor and an ordered model
gives D~ exactly on it.

* :func:`asymptotic_distance_delta`: what ``mdesc.asymptotic_distance(..., method="delta")``
  runs (the default there for float32).
* :func:`stability_record`: one checkpoint sweep record, lambda_1 over the zero-input window
  (with the drive's exponent) *and* D~ of the drive-end twin, sharing one trajectory: the
  zero-input phase carries the state, the twin's delta and the tangent frame in the same fused
  run (one more column per sequence).

LSTM only; GRU and vanilla-RNN models keep the plain twin (``method="plain"``).
"""
from __future__ import annotations

import math

import torch

from mdesc.core import lyapunov as _lyapunov

METHODS = ("plain", "delta")


def _check_lstm(prep) -> None:
    cell = getattr(prep.weights, "cell", "lstm")
    if cell != "lstm":
        raise ValueError(f"method='delta' (the twin run without cancellation) supports LSTM models only, "
                         f"this one is {cell!r}: pass method='plain' (and dtype=torch.float64) for it")


def _run_twin(prep, dh0: torch.Tensor, dc0: torch.Tensor):
    """(block_logs, h_T, c_T, dh_T, dc_T) of the twin kernel for a prepared run and its initial delta."""
    from mdesc.core import _twin_ops

    device = prep.x.device.type
    if device != "cpu" and not _twin_ops.has_kernel(device):
        raise RuntimeError(f"this build of mdesc has no {device.upper()} kernel for the twin run without "
                           "cancellation; move the model and inputs to the CPU, or use method='plain'")
    w = prep.weights
    options = {key: value for key, value in getattr(prep, "kernel_options", {}).items()
               if key in _twin_ops.KERNEL_OPTIONS}
    return _twin_ops.lstm_twin_run(prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0,
                                   dh0.contiguous(), dc0.contiguous(), prep.q0, prep.zero_input_steps,
                                   prep.warmup, prep.qr_every, **options)


def _noise(prep, perturbation: float, seed: int) -> torch.Tensor:
    """The twin's perturbation of h, [L, B, H]: the same draw as the plain twin's."""
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(prep.h0.shape[1:], generator=g, dtype=torch.float64)
    return (perturbation * noise).to(device=prep.h0.device, dtype=prep.h0.dtype)


def _distance(dh_last: torch.Tensor, floor: float):
    """D_i = |dh_T| + e^floor and D~ = mean_i ln D_i, in float64, from the last layer's delta [C, B, H]."""
    distance = dh_last.to(torch.float64).cpu().norm(dim=-1) + math.exp(floor)
    return distance, distance.log().mean(dim=-1)


def asymptotic_distance_delta(model, seq, *, lengths=None, zero_input_steps: int = 1100,
                              perturbation: float = 1e-6, perturb_at: str = "drive_end", seed: int = 0,
                              floor: float = -15.0, h0=None, c0=None, dtype: torch.dtype | None = None,
                              template=None, backend: str = "fused", dtype_source: str | None = None,
                              kernel_options: dict | None = None, lstm_only: bool = False):
    """:func:`mdesc.asymptotic_distance` with ``method="delta"`` (arguments and result as there).

    ``dtype`` defaults to float32 here: the delta keeps relative precision, so float32 resolves
    D~ far below the floor.  ``collapsed`` (``perturb_at="start"``) marks twins whose delta the
    drive shrank below the dtype's smallest normal number (flushed to exactly 0).  A model whose
    cell has no delta kernel (GRU, RNN) is refused, or with ``lstm_only`` returns None (the
    caller then runs the plain twin).
    """
    from mdesc.core import windows
    from mdesc.core.stability import DistanceResult

    if backend != "fused":
        raise ValueError(f"method='delta' runs in the fused kernels only (backend='fused'), got backend={backend!r}; "
                         "the reference backend has the plain twin (method='plain')")
    checkpoint_axis = not isinstance(model, torch.nn.Module)
    prep = _lyapunov.prepare(model, seq, k=0, lengths=lengths, zero_input_steps=zero_input_steps, h0=h0, c0=c0,
                             dtype=torch.float32 if dtype is None else dtype, template=template,
                             checkpoint_axis=checkpoint_axis, kernel_options=kernel_options)
    if lstm_only and getattr(prep.weights, "cell", "lstm") != "lstm":
        return None
    _check_lstm(prep)
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    noise = _noise(prep, perturbation, seed)
    last = delta = None
    collapsed = torch.zeros(C, B, dtype=torch.bool)
    for idx, length in windows.length_groups(prep.lengths.cpu()):
        G, dev_idx = idx.numel(), idx.to(prep.x.device)
        nz = noise.index_select(1, dev_idx)[None]  # [1, L, G, H]
        d_prep = windows.drive(prep, idx, length)
        if perturb_at == "start":  # the delta rides along through the drive
            _, h_l, c_l, dh_l, dc_l = _run_twin(d_prep, nz, torch.zeros_like(nz))
            collapsed[:, idx] = ((dh_l == 0).all(dim=3).all(dim=1) & (dc_l == 0).all(dim=3).all(dim=1)).cpu()
        else:  # the run's drive alone, then the twin branches off where the zero input begins
            _, h_l, c_l = _lyapunov.run_prepared(d_prep, backend)
            dh_l = nz.expand(C, -1, -1, -1)
            dc_l = torch.zeros_like(dh_l)
        rest = prep.steps - length
        if rest > 0:
            z_prep = windows.zero_input(d_prep, torch.arange(G), h_l, c_l, rest, 0)
            _, h_l, _, dh_l, _ = _run_twin(z_prep, dh_l, dc_l)
        if last is None:
            H = h_l.shape[-1]
            last = torch.empty(C, B, H, dtype=torch.float64)
            delta = torch.empty(C, B, H, dtype=h_l.dtype)
        last[:, idx] = h_l[:, -1].to(torch.float64).cpu()
        delta[:, idx] = dh_l[:, -1].cpu()
    distance, log_distance = _distance(delta, floor)
    reduced_sum = last.sum(dim=-1)
    h_final = last.to(device=prep.x.device, dtype=prep.x.dtype)
    if not checkpoint_axis:
        distance, log_distance, reduced_sum, h_final = distance[0], log_distance[0], reduced_sum[0], h_final[0]
        collapsed = collapsed[0]
    settings = dict(prep.settings, perturbation=float(perturbation), perturb_at=perturb_at,
                    dtype_source=dtype_source or ("default" if dtype is None else "explicit"), method="delta",
                    seed=seed, floor=floor, backend=backend)
    for key in ("k", "warmup", "counted_steps", "qr_every", "q0_given"):
        settings.pop(key, None)
    return DistanceResult(distance, log_distance, reduced_sum, h_final, settings, collapsed)


def stability_record(model, seq, *, k: int = 1, lengths=None, zero_input_steps: int = 1100, warmup: int = 0,
                     qr_every: int | None = None, perturbation: float = 1e-6, seed: int = 0,
                     floor: float = -15.0, h0=None, c0=None, dtype: torch.dtype | None = None, template=None,
                     kernel_options: dict | None = None):
    """lambda_1..k over the zero-input window and D~ of the drive-end twin, from one shared run.

    Equal to ``mdesc.lyapunov_spectrum(model, seq, k, window="zero_input", ...)`` (or
    ``lyapunov_checkpoints`` for a list of checkpoints) and to ``mdesc.asymptotic_distance(model,
    seq, perturb_at="drive_end", method="delta", ...)`` with the same settings, to rounding: the
    drive runs once (state + frame, the driven exponents), and each zero-input phase carries the
    state, the twin's delta and the restarted frame side by side in the twin kernel.

    ``dtype`` follows the model (docs/conventions.md §6) unless given; the delta makes float32
    accurate for D~ too.  ``seed`` seeds both the tangent frame and the twin's perturbation, as in
    the two separate calls.  ``kernel_options`` as in :func:`mdesc.lyapunov_spectrum` (the twin
    kernel takes ``cpu_tile_columns`` and ``portable_gemm``; it ignores the CUDA ones).  Returns
    ``(LyapunovResult, DistanceResult)``.
    """
    from mdesc.core import windows
    from mdesc.core.stability import DistanceResult

    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation > 0):
        raise ValueError(f"perturbation must be a positive finite number, got {perturbation!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    warmup = _lyapunov._nonneg_int(warmup, "warmup")
    zero = _lyapunov._nonneg_int(zero_input_steps, "zero_input_steps")
    if zero <= warmup:
        raise ValueError(f"the zero-input window counts each sequence's zero-input phase after its first "
                         f"warmup={warmup} steps, and the longest drive is followed by only "
                         f"zero_input_steps={zero}: pass zero_input_steps > warmup")
    checkpoint_axis = not isinstance(model, torch.nn.Module)
    prep = _lyapunov.prepare(model, seq, k=k, lengths=lengths, zero_input_steps=zero, warmup=0,
                             qr_every=qr_every, h0=h0, c0=c0, seed=seed, dtype=dtype, template=template,
                             checkpoint_axis=checkpoint_axis, kernel_options=kernel_options)
    _check_lstm(prep)
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    noise = _noise(prep, perturbation, seed)
    delta = torch.empty(C, B, prep.h0.shape[-1], dtype=prep.x.dtype)

    def zero_input_run(z_prep, idx):
        nz = noise.index_select(1, idx.to(noise.device))[None].expand(C, -1, -1, -1)
        logs, h_T, c_T, dh_T, _ = _run_twin(z_prep, nz, torch.zeros_like(nz))
        delta[:, idx] = dh_T[:, -1].cpu()
        return logs, h_T, c_T

    lyap = windows.spectrum(prep, "fused", warmup, zero_input_run=zero_input_run)
    distance, log_distance = _distance(delta, floor)
    h_T = lyap.h_T[..., -1, :, :]
    last = h_T.to(torch.float64).cpu()
    reduced_sum = last.sum(dim=-1)
    if not checkpoint_axis:
        distance, log_distance = distance[0], log_distance[0]
    settings = dict(prep.settings, perturbation=float(perturbation), perturb_at="drive_end",
                    dtype_source=prep.settings.get("dtype_source", "model"), method="delta", seed=seed,
                    floor=floor, backend="fused")
    for key in ("k", "warmup", "counted_steps", "qr_every", "q0_given"):
        settings.pop(key, None)
    collapsed = torch.zeros(distance.shape, dtype=torch.bool)
    lyap.settings["shared_with"] = "asymptotic_distance(perturb_at='drive_end', method='delta')"
    return lyap, DistanceResult(distance, log_distance, reduced_sum, h_T, settings, collapsed)
