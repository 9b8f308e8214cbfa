"""The finite-perturbation twin run without cancellation (issue 11, part 1).

The plain twin of :func:`mdesc.asymptotic_distance` runs the perturbed trajectory as a second
state and subtracts: in float32 two runs that settle on the same fixed point still differ by
rounding (~1e-7 ~ e^-16, at the e^-15 floor of docs/conventions.md §5), and h' - h of two nearly
equal states keeps only the digits they do not share.  Here the kernel (csrc/cpu/run.cpp, TwinVariant;
math in csrc/common/twin_math.h) carries the difference delta = (h' - h, c' - c) itself beside the
state: delta_a = W delta_h (+ W_ih delta_x) exactly as a product, and the differences of the
nonlinearities in forms that never cancel, e.g.
tanh(a + d) - tanh(a) = (1 - tanh^2 a) tanh d / (1 + tanh a tanh d) with every factor computed
without cancellation.  This is the finite perturbation, not a linearisation, with *relative*
precision on delta down to the dtype's smallest normal number (1.2e-38 in float32, below which it
is flushed to 0), so D~ in float32 resolves distances far below the floor and an ordered model
gives D~ exactly on it.

* :func:`delta_twins`: what ``mdesc.asymptotic_distance(..., method="delta")`` runs (the
  default there for float32 LSTMs).
* :func:`stability_record`: one checkpoint sweep record, lambda_1 over the zero-input window
  (with the drive's exponent) *and* D~ of the drive-end twin, sharing one trajectory: the
  zero-input phase carries the state, the twin's delta and the tangent frame in the same fused
  run (one more column per sequence).

LSTM only; GRU and vanilla-RNN models keep the plain twin (``method="plain"``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mdesc.core import engine, windows
from mdesc.core.results import DistanceResult, LyapunovResult

METHODS = ("plain", "delta")


def check_perturbation(perturbation) -> float:
    """The twin's perturbation if it is a positive finite number, else a ValueError."""
    if not (isinstance(perturbation, (int, float)) and math.isfinite(perturbation) and perturbation > 0):
        raise ValueError(f"perturbation must be a positive finite number, got {perturbation!r}")
    return float(perturbation)


def check_lstm(prep: engine.PreparedRun) -> None:
    """Refuses a prepared run whose cell has no twin kernel (only the LSTM has one)."""
    if prep.weights.cell != "lstm":
        raise ValueError(f"method='delta' (the twin run without cancellation) supports LSTM models only, "
                         f"this one is {prep.weights.cell!r}: pass method='plain' (and dtype=torch.float64) for it")


def _run_twin(prep: engine.PreparedRun, dh0: torch.Tensor, dc0: torch.Tensor):
    """(block_logs, h_T, c_T, dh_T, dc_T) of the twin kernel for a prepared run and its initial
    delta [C|1, L, B, H]."""
    # the compiled extension is optional (the plain twin runs without it): loaded here
    from mdesc.core import _twin_ops

    device = prep.x.device.type
    if device != "cpu" and not _twin_ops.has_kernel(device):
        raise RuntimeError(f"this build of mdesc has no {device.upper()} kernel for the twin run without "
                           "cancellation; move the model and inputs to the CPU, or use method='plain'")
    w = prep.weights
    options = {key: value for key, value in prep.kernel_options.items() if key in _twin_ops.KERNEL_OPTIONS}
    return _twin_ops.lstm_twin_run(prep.x, prep.lengths, w.w_ih, w.w_hh, w.bias, prep.h0, prep.c0,
                                   dh0.contiguous(), dc0.contiguous(), prep.q0, prep.zero_input_steps,
                                   prep.warmup, prep.qr_every, **options)


def noise(prep: engine.PreparedRun, perturbation: float, seed: int) -> torch.Tensor:
    """The twin's perturbation of h, [L, B, H]: Gaussian, standard deviation ``perturbation``,
    the same draw for every checkpoint and for both methods."""
    g = torch.Generator().manual_seed(int(seed))
    draw = torch.randn(prep.h0.shape[1:], generator=g, dtype=torch.float64)
    return (perturbation * draw).to(device=prep.h0.device, dtype=prep.h0.dtype)


def distance_result(prep: engine.PreparedRun, difference: torch.Tensor, last: torch.Tensor,
                    collapsed: torch.Tensor, **settings) -> DistanceResult:
    """The :class:`DistanceResult` of twins whose last layers differ by ``difference`` [C, B, H]
    from the runs' last layers ``last`` [C, B, H] at the end (collapsed: bool [C, B]);
    ``settings`` (``floor`` among them) are added to the run's, those of the tangent frame
    dropped."""
    distance = difference.to(torch.float64).cpu().norm(dim=-1) + math.exp(settings["floor"])
    log_distance = distance.log().mean(dim=-1)
    last = last.to(torch.float64).cpu()
    reduced_sum = last.sum(dim=-1)
    h_final = last.to(device=prep.x.device, dtype=prep.x.dtype)
    if not prep.checkpoint_axis:
        distance, log_distance, reduced_sum, h_final = distance[0], log_distance[0], reduced_sum[0], h_final[0]
        collapsed = collapsed[0]
    settings = dict(prep.settings, **settings)
    for key in ("k", "warmup", "counted_steps", "qr_every", "q0_given"):
        settings.pop(key, None)
    return DistanceResult(distance, log_distance, reduced_sum, h_final, settings, collapsed)


def delta_twins(prep: engine.PreparedRun, nz: torch.Tensor, perturb_at: str):
    """The runs and their twins perturbed by ``nz`` [L, B, H], with the difference carried without
    cancellation: (the runs' last layers [C, B, H] float64, the twins' difference there [C, B, H],
    collapsed bool [C, B]), from a run prepared with k = 0 (the fused backend only)."""
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    last = delta = None
    collapsed = torch.zeros(C, B, dtype=torch.bool)

    def run_drive(d_prep, idx):
        nz_g = nz.index_select(1, idx.to(nz.device))[None]  # [1, L, G, H]
        if perturb_at == "start":  # the delta rides along through the drive
            logs, h_l, c_l, dh_l, dc_l = _run_twin(d_prep, nz_g, torch.zeros_like(nz_g))
            collapsed[:, idx] = ((dh_l == 0).all(dim=3).all(dim=1) & (dc_l == 0).all(dim=3).all(dim=1)).cpu()
        else:  # the run's drive alone, then the twin branches off where the zero input begins
            logs, h_l, c_l = engine.run_prepared(d_prep, "fused")
            dh_l = nz_g.expand(C, -1, -1, -1)
            dc_l = torch.zeros_like(dh_l)
        return d_prep, (logs, h_l, c_l, dh_l, dc_l)

    def run_zero_input(z_prep, idx, d_out):
        return _run_twin(z_prep, d_out[3], d_out[4])

    for g in windows.chain(prep, "fused", run_drive=run_drive, run_zero_input=run_zero_input):
        _, h_l, _, dh_l, _ = g.drive_out if g.zero_input_out is None else g.zero_input_out
        if last is None:
            last = torch.empty(C, B, h_l.shape[-1], dtype=torch.float64)
            delta = torch.empty(C, B, h_l.shape[-1], dtype=h_l.dtype)
        last[:, g.idx] = h_l[:, -1].to(torch.float64).cpu()
        delta[:, g.idx] = dh_l[:, -1].cpu()
    return last, delta, collapsed


def stability_record(model, seq, *, k: int = engine.CHECKPOINT_K, lengths=None,
                     zero_input_steps: int = engine.DISTANCE_ZERO_INPUT_STEPS, warmup: int = engine.WARMUP,
                     qr_every: int | None = None, perturbation: float = engine.PERTURBATION,
                     seed: int = engine.SEED, floor: float = engine.FLOOR, h0=None, c0=None,
                     dtype: torch.dtype | None = None, template=None,
                     kernel_options: dict | None = None) -> tuple[LyapunovResult, DistanceResult]:
    """lambda_1..k over the zero-input window and D~ of the drive-end twin, from one shared run.

    Equal to ``mdesc.lyapunov_spectrum(model, seq, k, window="zero_input", ...)`` (or
    ``lyapunov_checkpoints`` for a list of checkpoints) and to ``mdesc.asymptotic_distance(model,
    seq, perturb_at="drive_end", method="delta", ...)`` with the same settings, to rounding: the
    drive runs once (state + frame, the driven exponents), and each zero-input phase carries the
    state, the twin's delta and the restarted frame side by side in the twin kernel.

    ``zero_input_steps`` defaults to the distance's (engine.DISTANCE_ZERO_INPUT_STEPS = 1100: the
    distance test is defined by a long zero-input phase).  ``dtype`` follows the model
    (docs/conventions.md §6) unless given; the delta makes float32 accurate for D~ too.  ``seed``
    seeds both the tangent frame and the twin's perturbation, as in the two separate calls.
    ``kernel_options`` as in :func:`mdesc.lyapunov_spectrum` (the twin kernel takes
    ``cpu_tile_columns``, ``portable_gemm`` and ``cpu_path``; it ignores the CUDA ones).  Returns
    ``(LyapunovResult, DistanceResult)``.
    """
    perturbation = check_perturbation(perturbation)
    if k == 0:
        raise ValueError(engine.K_MESSAGE.format(k=k))
    prep = engine.prepare(model, seq, k=k, lengths=lengths, zero_input_steps=zero_input_steps, warmup=warmup,
                          qr_every=qr_every, h0=h0, c0=c0, seed=seed, dtype=dtype, template=template,
                          checkpoint_axis=not isinstance(model, nn.Module), kernel_options=kernel_options,
                          window="zero_input")
    check_lstm(prep)
    C, B = prep.weights.checkpoints, prep.x.shape[2]
    nz = noise(prep, perturbation, seed)
    delta = torch.empty(C, B, prep.h0.shape[-1], dtype=prep.x.dtype)

    def run_zero_input(z_prep, idx, d_out):
        nz_g = nz.index_select(1, idx.to(nz.device))[None].expand(C, -1, -1, -1)
        logs, h_T, c_T, dh_T, _ = _run_twin(z_prep, nz_g, torch.zeros_like(nz_g))
        delta[:, idx] = dh_T[:, -1].cpu()
        return logs, h_T, c_T

    lyap = windows.zero_input_window(prep, "fused", run_zero_input)
    h_T = lyap.h_T[..., -1, :, :]
    last = h_T if prep.checkpoint_axis else h_T[None]
    dist = distance_result(prep, delta, last, torch.zeros(C, B, dtype=torch.bool), perturbation=perturbation,
                           perturb_at="drive_end", dtype_source=prep.settings["dtype_source"],
                           method="delta", seed=seed, floor=floor, backend="fused")
    lyap.settings["shared_with"] = "asymptotic_distance(perturb_at='drive_end', method='delta')"
    return lyap, dist
