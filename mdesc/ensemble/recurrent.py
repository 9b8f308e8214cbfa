"""The recurrent layer of E models at once: ``h_all = ensemble_recurrent(x, w_ih, w_hh, b_ih, b_hh, cell)``.

Shapes (E models, T steps, B sequences per model, I inputs, H hidden units, G gates):
  x     (E, T, B, I)     each model's own inputs (its own batch)
  w_ih  (E, G*H, I)      PyTorch's layout of ``weight_ih_l{k}`` (rows gate-major: LSTM i, f, g, o;
  w_hh  (E, G*H, H)      GRU r, z, n; RNN one gate), stacked over models
  b_ih, b_hh (E, G*H)
  -> h_all (E, T, B, H): the hidden state after every step; the state starts at zero.

The math is PyTorch's (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) for every model: with
``xp = W_ih x + b_ih`` and ``hp = W_hh h + b_hh``
  lstm:     i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (xp + hp); c' = f c + i g; h' = o tanh(c')
  gru:      r = sigmoid(xp_r + hp_r), z = sigmoid(xp_z + hp_z), n = tanh(xp_n + r hp_n),
            h' = (1 - z) n + z h
  rnn_tanh: h' = tanh(xp + hp);   rnn_relu: h' = relu(xp + hp)

The input projection of all steps is one batched GEMM here; only the recurrence runs step by
step.  Backends: ``"torch"`` -- the autograd loop below (the reference the tests compare the
extension against, and the fallback); ``"extension"`` -- ``torch.ops.mdesc.ensemble_rnn_forward``
/ ``ensemble_rnn_backward`` (C++ on the CPU, CUDA on the GPU) behind one autograd Function;
``"auto"`` -- the extension when it has the op for the tensors' device, else torch.
"""
from __future__ import annotations

import torch

__all__ = ["CELL_GATES", "ensemble_recurrent", "recurrence_torch", "input_projection"]

#: gate blocks per cell in PyTorch's weight layout
CELL_GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def input_projection(x: torch.Tensor, w_ih: torch.Tensor, b_ih: torch.Tensor) -> torch.Tensor:
    """``W_ih x + b_ih`` for every model, step and sequence: (E, T, B, I) -> (E, T, B, G*H)."""
    E, T, B, I = x.shape
    GH = w_ih.shape[1]
    return torch.baddbmm(b_ih.unsqueeze(1), x.reshape(E, T * B, I),
                         w_ih.transpose(1, 2)).view(E, T, B, GH)


def recurrence_torch(xproj: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
                     cell: str) -> torch.Tensor:
    """The recurrence given the input projections, as a plain autograd loop (the reference)."""
    E, _, B, _ = xproj.shape
    H = w_hh.shape[-1]
    h = xproj.new_zeros(E, B, H)
    c = xproj.new_zeros(E, B, H) if cell == "lstm" else None
    w_t = w_hh.transpose(1, 2)
    bias = b_hh.unsqueeze(1)
    out = []
    # unbind once: indexing xproj[:, t] per step made autograd's backward scatter into a full
    # (E, T, B, G*H) zero tensor T times (8 s instead of 0.5 s at T = 500)
    for xp in xproj.unbind(1):
        hp = torch.baddbmm(bias, h, w_t)
        if cell == "lstm":
            i, f, g, o = (xp + hp).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell == "gru":
            xr, xz, xn = xp.chunk(3, -1)
            hr, hz, hn = hp.chunk(3, -1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
        elif cell == "rnn_tanh":
            h = torch.tanh(xp + hp)
        else:
            h = torch.relu(xp + hp)
        out.append(h)
    return torch.stack(out, 1)


def _check(x, w_ih, w_hh, b_ih, b_hh, cell) -> None:
    if cell not in CELL_GATES:
        raise ValueError(f"cell must be one of {', '.join(CELL_GATES)}, got {cell!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be (E, T, B, I), got shape {tuple(x.shape)}")
    E, _, _, I = x.shape
    H = w_hh.shape[-1]
    GH = CELL_GATES[cell] * H
    want = {"w_ih": (E, GH, I), "w_hh": (E, GH, H), "b_ih": (E, GH), "b_hh": (E, GH)}
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)):
        if tuple(t.shape) != want[name]:
            raise ValueError(f"{name} must have shape {want[name]} for {E} {cell} models of "
                             f"{I} inputs and {H} units, got {tuple(t.shape)}")


def ensemble_recurrent(x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
                       b_ih: torch.Tensor, b_hh: torch.Tensor, cell: str,
                       backend: str = "auto") -> torch.Tensor:
    """One recurrent layer of E models: (E, T, B, I) -> (E, T, B, H); differentiable in every
    argument.  ``backend``: "auto", "torch" or "extension" (module docstring)."""
    _check(x, w_ih, w_hh, b_ih, b_hh, cell)
    if backend not in ("auto", "torch", "extension"):
        raise ValueError(f"backend must be auto, torch or extension, got {backend!r}")
    xproj = input_projection(x, w_ih, b_ih)
    if backend == "torch":
        return recurrence_torch(xproj, w_hh, b_hh, cell)
    from mdesc.ensemble import _op  # the extension's autograd Function (issue 24)

    if backend == "auto" and not _op.available(xproj):
        return recurrence_torch(xproj, w_hh, b_hh, cell)
    return _op.recurrence(xproj, w_hh, b_hh, cell)
