"""The cell table, and models turned into the flat weights the kernels take.

Supported: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (tanh or relu) of any depth, ``batch_first``
either way, with or without bias, and any module that holds exactly one of them (plus,
optionally, exactly one ``nn.Embedding`` that maps integer token ids to its input).  Everything
else is refused with a message that says what is supported.

The tangent space of a stacked model is the state of every layer (docs/conventions.md):
``[h_1, c_1, ..., h_L, c_L]`` for an LSTM (n = 2*H*L), ``[h_1, ..., h_L]`` for a GRU or RNN
(n = H*L).

Adding a cell on the Python side is one row of :data:`TABLE` (its kernels' name, the torch
module and nonlinearity that select it, its gate blocks and state halves, PyTorch's own step
function for the reference backend, and its weights in the kernels' layout); the kernels add
one struct in csrc/common/cell_math.h.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

SUPPORTED = (
    "mdesc analyses nn.LSTM, nn.GRU and nn.RNN (tanh or relu), any depth, batch_first either way, "
    "with or without bias, not bidirectional, no LSTM proj_size; or a module holding exactly one "
    "such recurrent module, optionally fed by exactly one nn.Embedding when the sequence holds "
    "integer token ids"
)


def _summed_bias(w_ih, w_hh, b_ih, b_hh):
    """The kernels' layout of an LSTM or RNN layer: PyTorch's weights, bias = b_ih + b_hh."""
    return w_ih, w_hh, b_ih + b_hh


def _gru_layout(w_ih, w_hh, b_ih, b_hh):
    """The kernels' layout of a GRU layer: rows r, z, n_x, n_h (see :class:`FlatWeights`)."""
    H = w_hh.shape[1]
    zi = torch.zeros(H, w_ih.shape[1], dtype=w_ih.dtype, device=w_ih.device)
    zh = torch.zeros(H, H, dtype=w_hh.dtype, device=w_hh.device)
    w_ih4 = torch.cat([w_ih, zi])                                 # r, z, n_x, (n_h: 0)
    w_hh4 = torch.cat([w_hh[:2 * H], zh, w_hh[2 * H:]])           # r, z, (n_x: 0), n_h
    bias4 = torch.cat([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:], b_hh[2 * H:]])
    return w_ih4, w_hh4, bias4


def _lstm_step(x, state, w_ih, w_hh, b_ih, b_hh):
    return torch.lstm_cell(x, state, w_ih, w_hh, b_ih, b_hh)


def _gru_step(x, state, w_ih, w_hh, b_ih, b_hh):
    return (torch.gru_cell(x, state[0], w_ih, w_hh, b_ih, b_hh),)


def _rnn_tanh_step(x, state, w_ih, w_hh, b_ih, b_hh):
    return (torch.rnn_tanh_cell(x, state[0], w_ih, w_hh, b_ih, b_hh),)


def _rnn_relu_step(x, state, w_ih, w_hh, b_ih, b_hh):
    return (torch.rnn_relu_cell(x, state[0], w_ih, w_hh, b_ih, b_hh),)


@dataclass(frozen=True)
class Cell:
    """One row of the cell table.

    name          the kernels' name (``cell=`` of :func:`mdesc.core._ops.tangent_run`)
    module        the torch module class that holds this cell
    nonlinearity  ``nn.RNN``'s ``nonlinearity`` that selects it (None: any)
    gate_blocks   gate rows per layer in the kernels' layout, in units of H (cell_math.h)
    halves        state vectors per layer: 2 (h, c) for the LSTM, 1 (h) otherwise
    step          PyTorch's own step of one layer, ``step(x [B, I], state, w_ih, w_hh, b_ih,
                  b_hh) -> state``, state a tuple of ``halves`` tensors [B, H] (h first); the
                  reference backend's cell
    layout        one layer's PyTorch weights ``(w_ih, w_hh, b_ih, b_hh)`` (biases never None)
                  -> the kernels' ``(w_ih [G, I_l], w_hh [G, H], bias [G])``, G = gate_blocks*H
    """

    name: str
    module: type
    nonlinearity: str | None
    gate_blocks: int
    halves: int
    step: Callable
    layout: Callable

    @property
    def label(self) -> str:
        """The module's class name, for messages."""
        return self.module.__name__


#: One row per cell the kernels implement; the order is the kernels' cell ids' order.
TABLE = (
    Cell("lstm", nn.LSTM, None, 4, 2, _lstm_step, _summed_bias),
    Cell("gru", nn.GRU, None, 4, 1, _gru_step, _gru_layout),
    Cell("rnn_tanh", nn.RNN, "tanh", 1, 1, _rnn_tanh_step, _summed_bias),
    Cell("rnn_relu", nn.RNN, "relu", 1, 1, _rnn_relu_step, _summed_bias),
)

#: The kernels' cell names (``cell=`` of :func:`mdesc.core._ops.tangent_run`).
CELLS = tuple(cell.name for cell in TABLE)

_BY_NAME = {cell.name: cell for cell in TABLE}


def by_name(name: str) -> Cell:
    """The table row of a cell by its kernels' name."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; the cells are {', '.join(CELLS)}") from None


def cell_kind(module: nn.RNNBase) -> str:
    """The kernels' name of a recurrent module's cell ("lstm", "gru", "rnn_tanh", "rnn_relu")."""
    for row in TABLE:
        if isinstance(module, row.module) and row.nonlinearity in (None, getattr(module, "nonlinearity", None)):
            return row.name
    raise ValueError(f"{type(module).__name__} is not supported. {SUPPORTED}.")


@dataclass(frozen=True)
class RecurrentShape:
    """What fixes the size of the tangent space: ``n = halves * hidden_size * num_layers``."""

    input_size: int
    hidden_size: int
    num_layers: int
    batch_first: bool
    cell: str = "lstm"

    @property
    def halves(self) -> int:
        """State vectors per layer: 2 (h and c) for the LSTM, 1 (h) otherwise."""
        return by_name(self.cell).halves

    @property
    def state_dim(self) -> int:
        return self.halves * self.hidden_size * self.num_layers

    @property
    def c_size(self) -> int:
        """Width of the c state the kernels take (H for the LSTM, 0 for cells without one)."""
        return self.hidden_size if self.halves == 2 else 0

    @property
    def name(self) -> str:
        """The module's class name, for messages."""
        return by_name(self.cell).label


@dataclass
class FlatWeights:
    """Stacked weights of C checkpoints, in the layout of ``torch.ops.mdesc.tangent_run``.

    w_ih[l]: [C, G, I_l];  w_hh[l]: [C, G, H];  bias[l]: [C, G], with G = gate_blocks * H of the
    cell table (4H for the LSTM and the GRU, H for the RNN):

    - LSTM: gates i, f, g, o; bias = b_ih + b_hh (zeros if the module has no bias).
    - GRU: rows r, z, n_x, n_h: W_ih's n_h rows and W_hh's n_x rows are zero, so the kernels'
      sum W_ih x + W_hh h keeps W_in x (+ b_in) and W_hn h (+ b_hn) apart;
      bias = [b_ir + b_hr, b_iz + b_hz, b_in, b_hn].
    - RNN: one block; bias = b_ih + b_hh.

    ``modules`` are the recurrent modules themselves (one per checkpoint), which the autograd
    reference reads instead of this layout.
    """

    shape: RecurrentShape
    w_ih: list[torch.Tensor]
    w_hh: list[torch.Tensor]
    bias: list[torch.Tensor]
    modules: list[nn.RNNBase] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        return self.w_hh[0].shape[0]

    @property
    def cell(self) -> str:
        """The kernels' name of the cell (``cell=`` of :func:`mdesc.core._ops.tangent_run`)."""
        return self.shape.cell


def find_recurrent(model: nn.Module) -> tuple[nn.RNNBase, nn.Embedding | None]:
    """The single recurrent module of ``model`` and its single ``nn.Embedding`` (or None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}. {SUPPORTED}.")
    if isinstance(model, nn.RNNBase):
        rnn, embeddings = model, []
    else:
        recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
        if len(recurrent) != 1:
            kinds = sorted({type(m).__name__ for m in recurrent})
            counts = ", ".join(f"{sum(type(m).__name__ == t for m in recurrent)} nn.{t}" for t in kinds)
            raise ValueError(f"{type(model).__name__} holds {len(recurrent)} recurrent modules "
                             f"({counts or '0 nn.LSTM, nn.GRU or nn.RNN'}); mdesc needs exactly one. "
                             f"{SUPPORTED}. Pass the recurrent module you want analysed.")
        rnn = recurrent[0]
        embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if type(rnn) not in {row.module for row in TABLE}:
        raise ValueError(f"{type(rnn).__name__} is not supported. {SUPPORTED}.")
    if isinstance(rnn, nn.LSTM) and rnn.proj_size:
        raise ValueError(f"nn.LSTM with proj_size={rnn.proj_size} is not supported. {SUPPORTED}.")
    if rnn.bidirectional:
        raise ValueError(f"bidirectional nn.{type(rnn).__name__} is not supported (it has no "
                         f"forward-in-time dynamics to take exponents of). {SUPPORTED}.")
    if len(embeddings) > 1:
        raise ValueError(f"{type(model).__name__} holds {len(embeddings)} nn.Embedding modules; "
                         "mdesc needs at most one to map token ids to the recurrent module's input.")
    return rnn, (embeddings[0] if embeddings else None)


def recurrent_shape(rnn: nn.RNNBase) -> RecurrentShape:
    """The shape of a (supported) recurrent module."""
    return RecurrentShape(rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.batch_first, cell_kind(rnn))


def layer_parameters(rnn: nn.RNNBase, layer: int):
    """PyTorch's own (w_ih, w_hh, b_ih, b_hh) of one layer, detached; biases None without bias."""
    w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()
    w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()
    if not rnn.bias:
        return w_ih, w_hh, None, None
    return w_ih, w_hh, getattr(rnn, f"bias_ih_l{layer}").detach(), getattr(rnn, f"bias_hh_l{layer}").detach()


def kernel_layout(cell_name: str, w_ih, w_hh, b_ih, b_hh):
    """One layer's (w_ih [G, I_l], w_hh [G, H], bias [G]) in the kernels' layout (see FlatWeights);
    zero biases for a module without bias."""
    row = by_name(cell_name)
    if b_ih is None:
        b_ih = b_hh = torch.zeros(w_hh.shape[0], dtype=w_ih.dtype, device=w_ih.device)
    out = row.layout(w_ih, w_hh, b_ih, b_hh)
    # the table's gate count is the kernels' (csrc/common/cell_math.h): G = gate_blocks * H rows
    assert out[1].shape[0] == row.gate_blocks * w_hh.shape[1], (cell_name, tuple(out[1].shape))
    return out


def flatten(rnns: Sequence[nn.RNNBase], dtype: torch.dtype, device: torch.device) -> FlatWeights:
    """Stack the weights of recurrent modules of one shape into the kernels' layout (checkpoint
    axis first)."""
    shape = recurrent_shape(rnns[0])
    for i, m in enumerate(rnns[1:], start=1):
        if recurrent_shape(m) != shape or m.bias != rnns[0].bias:
            raise ValueError(f"checkpoint {i} has shape {recurrent_shape(m)} but checkpoint 0 has "
                             f"{shape}; all checkpoints must have the same architecture")
    w_ih, w_hh, bias = [], [], []
    for layer in range(shape.num_layers):
        params = [kernel_layout(shape.cell, *layer_parameters(m, layer)) for m in rnns]
        for out, j in ((w_ih, 0), (w_hh, 1), (bias, 2)):
            out.append(torch.stack([p[j] for p in params]).to(device=device, dtype=dtype).contiguous())
    for name, group in (("w_ih", w_ih), ("w_hh", w_hh), ("bias", bias)):
        for layer, t in enumerate(group):
            if not torch.isfinite(t).all():
                bad = [c for c in range(t.shape[0]) if not torch.isfinite(t[c]).all()]
                raise ValueError(f"non-finite values in {shape.name} {name} of layer {layer} "
                                 f"(checkpoints {bad[:10]}); the model's weights are NaN or inf")
    return FlatWeights(shape, w_ih, w_hh, bias, list(rnns))


def no_cell_state(c0, shape: RecurrentShape, B: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The kernels' empty c state [1, L, B, 0] of a cell without one; refuses a given c0."""
    if c0 is not None:
        raise ValueError(f"c0 was given, but nn.{shape.name} has no cell state (only nn.LSTM has one); "
                         f"pass h0 only")
    return torch.zeros(1, shape.num_layers, B, 0, dtype=dtype, device=device)


def resolve_checkpoints(checkpoints: Sequence[Any], template: nn.Module | None) -> list[nn.Module]:
    """Modules for a list of modules or state dicts (state dicts need ``template``).

    State dicts are loaded strictly into copies of ``template``, so a checkpoint of another shape
    fails with torch's own message naming the mismatched keys.
    """
    if isinstance(checkpoints, (nn.Module, Mapping)) or not isinstance(checkpoints, Sequence):
        raise TypeError("checkpoints must be a list of modules or of state dicts")
    if len(checkpoints) == 0:
        raise ValueError("checkpoints is empty; pass at least one model or state dict")
    modules = []
    for i, ck in enumerate(checkpoints):
        if isinstance(ck, nn.Module):
            modules.append(ck)
        elif isinstance(ck, Mapping):
            if template is None:
                raise ValueError("checkpoints are state dicts: pass template=<a module of the same "
                                 "architecture> so mdesc knows how to read them")
            m = copy.deepcopy(template)
            try:
                m.load_state_dict(ck, strict=True)
            except RuntimeError as e:
                raise ValueError(f"checkpoint {i} does not fit the template: {e}") from e
            modules.append(m)
        else:
            raise TypeError(f"checkpoint {i} is a {type(ck).__name__}; expected an nn.Module or a "
                            "state dict")
    return modules
