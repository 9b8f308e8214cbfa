"""Lyapunov exponents of recurrent models (LSTM, GRU, RNN) driven by input sequences: the fronts.

Algorithm (Benettin et al. 1980; Shimada & Nagashima 1979): propagate the state of every layer
together with k tangent vectors through the exact Jacobian of each step, re-orthonormalise the
tangent frame by QR every ``qr_every`` steps and accumulate log|R_ii| in float64.  After
``warmup`` uncounted steps, the i-th exponent is the mean over counted steps of that log growth,
in natural-log units per step.  The tangent space is the full state of every layer: for an
LSTM (h, c), ordered ``[h_1, c_1, ..., h_L, c_L]`` (n = 2*H*L); for a GRU or RNN h, ordered
``[h_1, ..., h_L]`` (n = H*L).  Conventions: docs/conventions.md.

Each function is a thin front over the engine: :func:`mdesc.core.engine.prepare` validates the
problem once, and :func:`mdesc.core.windows.run` runs it over its window, in one call of
``torch.ops.mdesc.tangent_run`` (csrc/) batched over sequences and checkpoints (two per drive
length for ``window="zero_input"``); ``backend="reference"`` runs the same prepared problem in
plain PyTorch autograd instead.  Every default is one of :mod:`mdesc.core.engine`'s.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mdesc.core import engine, windows
from mdesc.core.results import LyapunovResult


def _spectrum(models, seq, k, **kwargs) -> LyapunovResult:
    if k == 0:  # a forward run without exponents is the engine's, not a front's
        raise ValueError(engine.K_MESSAGE.format(k=k))
    backend = kwargs.pop("backend")
    return windows.run(engine.prepare(models, seq, k=k, **kwargs), backend)


def lyapunov_spectrum(model: nn.Module, seq: torch.Tensor, k: int | None = None, *, lengths=None,
                      zero_input_steps: int = engine.LYAPUNOV_ZERO_INPUT_STEPS, warmup: int = engine.WARMUP,
                      qr_every: int | None = None, h0=None, c0=None, q0=None, seed: int = engine.SEED,
                      dtype: torch.dtype | None = None, kernel_options: dict | None = None,
                      window: str = engine.WINDOW, backend: str = engine.BACKEND) -> LyapunovResult:
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
        zero_input_steps: steps of zero input appended to every sequence (run length T + this);
            default 0 (engine.LYAPUNOV_ZERO_INPUT_STEPS): the exponents of the run as driven.
            (:func:`mdesc.asymptotic_distance` defaults to 1100: its test is defined by a long
            zero-input phase.)
        warmup: leading steps of the counted window that move state and frame but are not
            counted (default 0).
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
    """The largest Lyapunov exponent (k = 1) of a recurrent model for each sequence; see
    :func:`lyapunov_spectrum` for the arguments.  ``float(result)`` is its batch mean."""
    if "k" in kwargs:
        raise TypeError("max_lyapunov computes k = 1; use lyapunov_spectrum(..., k=...) for more")
    return lyapunov_spectrum(model, seq, 1, **kwargs)


def lyapunov_checkpoints(checkpoints: Sequence[nn.Module | dict], seq: torch.Tensor,
                         k: int | None = engine.CHECKPOINT_K, *, template: nn.Module | None = None,
                         lengths=None, zero_input_steps: int = engine.LYAPUNOV_ZERO_INPUT_STEPS,
                         warmup: int = engine.WARMUP, qr_every: int | None = None, h0=None, c0=None,
                         q0=None, seed: int = engine.SEED, kernel_options: dict | None = None,
                         dtype: torch.dtype | None = None, window: str = engine.WINDOW,
                         backend: str = engine.BACKEND) -> LyapunovResult:
    """Exponents of many checkpoints of one architecture on the same inputs, in one kernel call.

    ``checkpoints`` is a list of modules, or of state dicts together with ``template`` (a module
    of the same architecture, e.g. the freshly built model).  Token ids are embedded with each
    checkpoint's own embedding.  ``exponents`` has shape ``(C, B, k)``; other arguments as in
    :func:`lyapunov_spectrum` (h0/c0/q0 may carry a leading C axis; ``window="zero_input"``
    counts each sequence's zero-input phase only).
    """
    return _spectrum(checkpoints, seq, k, checkpoint_axis=True, backend=backend, window=window,
                     template=template, lengths=lengths, zero_input_steps=zero_input_steps, warmup=warmup,
                     qr_every=qr_every, h0=h0, c0=c0, q0=q0, seed=seed, dtype=dtype,
                     kernel_options=kernel_options)
