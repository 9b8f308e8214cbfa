"""Turn models into the flat weights the kernels take.

Supported: ``nn.LSTM`` of any depth, ``batch_first`` either way, with or without bias, and any
module that holds exactly one ``nn.LSTM`` (plus, optionally, exactly one ``nn.Embedding`` that
maps integer token ids to the LSTM's input).  Everything else is refused with a message that
says what is supported.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

SUPPORTED = (
    "mdesc analyses nn.LSTM (any depth, batch_first either way, with or without bias; no "
    "proj_size, not bidirectional) or a module holding exactly one such nn.LSTM, optionally fed "
    "by exactly one nn.Embedding when the sequence holds integer token ids"
)


@dataclass(frozen=True)
class LSTMShape:
    """What fixes the size of the tangent space: ``n = 2 * hidden_size * num_layers``."""

    input_size: int
    hidden_size: int
    num_layers: int
    batch_first: bool

    @property
    def state_dim(self) -> int:
        return 2 * self.hidden_size * self.num_layers


@dataclass
class FlatWeights:
    """Stacked weights of C checkpoints, in the layout of ``torch.ops.mdesc.tangent_run``.

    w_ih[l]: [C, 4H, I_l];  w_hh[l]: [C, 4H, H];  bias[l]: [C, 4H] (= b_ih + b_hh, zeros if the
    LSTM has no bias).  Gates in PyTorch's order i, f, g, o.
    """

    shape: LSTMShape
    w_ih: list[torch.Tensor]
    w_hh: list[torch.Tensor]
    bias: list[torch.Tensor]

    @property
    def checkpoints(self) -> int:
        return self.w_hh[0].shape[0]

    @property
    def cell(self) -> str:
        """The kernels' name of the cell (``cell=`` of :func:`mdesc.core._ops.tangent_run`)."""
        return "lstm"


def find_lstm(model: nn.Module) -> tuple[nn.LSTM, nn.Embedding | None]:
    """The single ``nn.LSTM`` of ``model`` and its single ``nn.Embedding`` (or None)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}. {SUPPORTED}.")
    if isinstance(model, nn.LSTM):
        lstm, embeddings = model, []
    else:
        recurrent = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
        lstms = [m for m in recurrent if isinstance(m, nn.LSTM)]
        others = [type(m).__name__ for m in recurrent if not isinstance(m, nn.LSTM)]
        if others:
            raise ValueError(f"{type(model).__name__} holds {', '.join(others)}, which mdesc "
                             f"cannot analyse yet. {SUPPORTED}.")
        if len(lstms) != 1:
            raise ValueError(f"{type(model).__name__} holds {len(lstms)} nn.LSTM modules; "
                             f"{SUPPORTED}. Pass the LSTM you want analysed.")
        lstm = lstms[0]
        embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if lstm.proj_size:
        raise ValueError(f"nn.LSTM with proj_size={lstm.proj_size} is not supported. {SUPPORTED}.")
    if lstm.bidirectional:
        raise ValueError(f"bidirectional nn.LSTM is not supported (it has no forward-in-time "
                         f"dynamics to take exponents of). {SUPPORTED}.")
    if len(embeddings) > 1:
        raise ValueError(f"{type(model).__name__} holds {len(embeddings)} nn.Embedding modules; "
                         "mdesc needs at most one to map token ids to the LSTM's input.")
    return lstm, (embeddings[0] if embeddings else None)


def lstm_shape(lstm: nn.LSTM) -> LSTMShape:
    return LSTMShape(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.batch_first)


def _layer_params(lstm: nn.LSTM, layer: int):
    w_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
    w_hh = getattr(lstm, f"weight_hh_l{layer}").detach()
    if lstm.bias:
        b = getattr(lstm, f"bias_ih_l{layer}").detach() + getattr(lstm, f"bias_hh_l{layer}").detach()
    else:
        b = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
    return w_ih, w_hh, b


def flatten(lstms: Sequence[nn.LSTM], dtype: torch.dtype, device: torch.device) -> FlatWeights:
    """Stack the weights of LSTMs of one shape into the kernels' layout (checkpoint axis first)."""
    shape = lstm_shape(lstms[0])
    for i, m in enumerate(lstms[1:], start=1):
        if lstm_shape(m) != shape or m.bias != lstms[0].bias:
            raise ValueError(f"checkpoint {i} has LSTM shape {lstm_shape(m)} but checkpoint 0 has "
                             f"{shape}; all checkpoints must have the same architecture")
    w_ih, w_hh, bias = [], [], []
    for layer in range(shape.num_layers):
        params = [_layer_params(m, layer) for m in lstms]
        for out, j in ((w_ih, 0), (w_hh, 1), (bias, 2)):
            out.append(torch.stack([p[j] for p in params]).to(device=device, dtype=dtype).contiguous())
    for name, group in (("w_ih", w_ih), ("w_hh", w_hh), ("bias", bias)):
        for layer, t in enumerate(group):
            if not torch.isfinite(t).all():
                bad = [c for c in range(t.shape[0]) if not torch.isfinite(t[c]).all()]
                raise ValueError(f"non-finite values in LSTM {name} of layer {layer} "
                                 f"(checkpoints {bad[:10]}); the model's weights are NaN or inf")
    return FlatWeights(shape, w_ih, w_hh, bias)


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
