"""The extension's ensemble recurrence behind one autograd Function (issue 24).

``torch.ops.mdesc.ensemble_rnn_forward`` / ``ensemble_rnn_backward`` (schemas and shapes:
csrc/mdesc.cpp; per-unit math: csrc/common/ensemble_math.h; CPU: csrc/cpu/ensemble.cpp) run the
recurrence and its backpropagation through time; this module adds the weight gradients, which
are batched GEMMs over all steps at once:

    dW_hh[e] = sum_{t >= 1, b} dhproj[e, t, b]^T h_all[e, t - 1, b]      db_hh[e] = sum_{t, b} dhproj

and returns dxproj, so autograd carries on through ``input_projection``.  Importing this module
tries to load the compiled extension; without it (or without the op for a device) ``available``
is False and ``ensemble_recurrent(backend="auto")`` uses the torch loop.
"""
from __future__ import annotations

import torch

try:  # the extension is optional (docs/architecture.md, "Imports")
    from mdesc.core import _ops  # noqa: F401  (loads mdesc._C, registers torch.ops.mdesc.*)

    _LOADED = hasattr(torch.ops.mdesc, "ensemble_rnn_forward")
except ImportError:  # pragma: no cover - a checkout without a built extension
    _LOADED = False

__all__ = ["available", "recurrence", "SAVED_SLOTS"]

#: slots per hidden unit of the op's ``saved`` tensor (csrc/common/ensemble_math.h: kSaved)
SAVED_SLOTS = {"lstm": 6, "gru": 4, "rnn_tanh": 0, "rnn_relu": 0}


def has_kernel(device_type: str) -> bool:
    """Whether the ensemble op has an implementation for this device type ("cpu", "cuda")."""
    return _LOADED and all(
        torch._C._dispatch_has_kernel_for_dispatch_key(f"mdesc::{name}", device_type.upper())
        for name in ("ensemble_rnn_forward", "ensemble_rnn_backward"))


def available(xproj: torch.Tensor) -> bool:
    """Whether the extension has the ensemble op for ``xproj``'s device and dtype."""
    return xproj.dtype in (torch.float32, torch.float64) and has_kernel(xproj.device.type)


class _Recurrence(torch.autograd.Function):
    """h_all = recurrence(xproj, w_hh, b_hh); gradients for xproj, w_hh and b_hh."""

    @staticmethod
    def forward(ctx, xproj, w_hh, b_hh, cell):
        h_all, saved = torch.ops.mdesc.ensemble_rnn_forward(xproj, w_hh, b_hh, cell)
        ctx.save_for_backward(h_all, saved, w_hh)
        ctx.cell = cell
        return h_all

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh_all):
        h_all, saved, w_hh = ctx.saved_tensors
        dxproj, dhproj = torch.ops.mdesc.ensemble_rnn_backward(dh_all, h_all, saved, w_hh, ctx.cell)
        E, T, B, GH = dhproj.shape
        H = h_all.shape[-1]
        dw_hh = db_hh = None
        if ctx.needs_input_grad[1]:
            # views, no copies: within a model, steps 1.. of dhproj and 0..T-2 of h_all are contiguous
            dw_hh = torch.bmm(dhproj[:, 1:].reshape(E, (T - 1) * B, GH).transpose(1, 2),
                              h_all[:, :-1].reshape(E, (T - 1) * B, H))
        if ctx.needs_input_grad[2]:
            db_hh = dhproj.sum(dim=(1, 2))
        return dxproj, dw_hh, db_hh, None


def recurrence(xproj: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, cell: str) -> torch.Tensor:
    """The recurrence given the input projections, through the extension's op: (E, T, B, G*H) -> (E, T, B, H)."""
    if not _LOADED:
        raise RuntimeError("this build of mdesc has no ensemble_rnn op; rebuild the extension "
                           "(python setup.py build_ext --inplace) or use backend='torch'")
    return _Recurrence.apply(xproj, w_hh, b_hh, cell)


if _LOADED:
    @torch.library.register_fake("mdesc::ensemble_rnn_forward")
    def _forward_fake(xproj, w_hh, b_hh, cell):
        E, T, B, _ = xproj.shape
        H = w_hh.shape[-1]
        return xproj.new_empty((E, T, B, H)), xproj.new_empty((E, T, B, SAVED_SLOTS[cell] * H))

    @torch.library.register_fake("mdesc::ensemble_rnn_backward")
    def _backward_fake(dh_all, h_all, saved, w_hh, cell):
        E, T, B, _ = h_all.shape
        GH = w_hh.shape[1]
        return h_all.new_empty((E, T, B, GH)), h_all.new_empty((E, T, B, GH))
