"""E models of one study-1 architecture as stacked parameters, and their forward pass.

Each member is the single run's model (:class:`mdesc.descent.model.SentimentLSTM`: Embedding ->
stacked LSTM/GRU/tanh RNN -> Linear), built by the single run's constructor after
``torch.manual_seed(seed)``, so a member starts from exactly the weights a single run of that
seed starts from.  Its parameters are stacked along a new first dimension (E, ...), in the
single model's parameter order and under its state-dict names; :meth:`EnsembleNet.member_state`
hands a member's state dict back in the single run's format.

Forward, for ids (E, T, B) and lengths (E, B) (each member its own batch, padded with 0 to the
longest member batch; padding after a sequence's end changes nothing read):
embedding gather per member -> :func:`mdesc.ensemble.recurrent.ensemble_recurrent` per layer ->
the readout at each sequence's last real token -> logits (E, B) (two classes) or (E, B, C).
Dropout multipliers come from the caller (drawn from each member's own generator in the single
run's order, :meth:`EnsembleNet.draw_dropout`).
"""
from __future__ import annotations

from typing import Sequence

import torch

from mdesc.descent.model import CELL_ATTR, SentimentLSTM, build_model, dropout_scale
from mdesc.ensemble.recurrent import ensemble_recurrent

__all__ = ["EnsembleNet", "build_members"]

_LAYER_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def build_members(config: dict, seeds: Sequence[int]) -> list[SentimentLSTM]:
    """The single run's initial model of every seed (``torch.manual_seed(seed)``, then
    :func:`mdesc.descent.model.build_model`, as :func:`mdesc.descent.run.train_run` does)."""
    members = []
    for seed in seeds:
        torch.manual_seed(seed)
        members.append(build_model(config))
    return members


class EnsembleNet:
    """Stacked parameters of E members (leaf tensors (E, ...) that require grad).

    ``names``: the single model's parameter names in its ``parameters()`` order (so index i of
    a member's torch optimizer state is ``params[i]``); ``params``: the stacked tensors.
    """

    def __init__(self, members: Sequence[SentimentLSTM], device: torch.device | str = "cpu",
                 backend: str = "auto"):
        first = members[0]
        self.cell, self.classes = first.cell, first.classes
        self.num_layers = first.recurrent.num_layers
        self.embed_dropout, self.dropout = first.embed_dropout, first.dropout
        self.backend = backend
        self.names = [n for n, _ in first.named_parameters()]
        self.params = [torch.stack([dict(m.named_parameters())[n].detach() for m in members])
                       .to(device).requires_grad_(True) for n in self.names]
        self._by_name = dict(zip(self.names, self.params))
        self.training = True

    @property
    def size(self) -> int:
        return self.params[0].shape[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._by_name[name]

    # members <-> stacked -------------------------------------------------------------------
    def member_state(self, e: int) -> dict[str, torch.Tensor]:
        """Member ``e``'s state dict, exactly the single model's keys and shapes (CPU copies)."""
        return {n: p[e].detach().to("cpu", copy=True) for n, p in zip(self.names, self.params)}

    @torch.no_grad()
    def load_member(self, e: int, state: dict[str, torch.Tensor]) -> None:
        """Set member ``e`` from a single model's state dict (RuntimeError if it does not fit)."""
        if set(state) != set(self.names):
            raise RuntimeError(f"state dict keys {sorted(state)} are not the model's "
                               f"{sorted(self.names)}")
        for n, p in zip(self.names, self.params):
            if tuple(state[n].shape) != tuple(p.shape[1:]):
                raise RuntimeError(f"{n}: shape {tuple(state[n].shape)}, the model has "
                                   f"{tuple(p.shape[1:])}")
            p[e].copy_(state[n])

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def zero_padding_grad(self) -> None:
        """The padding id's embedding row gets no gradient (``nn.Embedding(padding_idx=0)``)."""
        grad = self["embedding.weight"].grad
        if grad is not None:
            grad[:, 0] = 0

    # forward -------------------------------------------------------------------------------
    def draw_dropout(self, gens: Sequence[torch.Generator], t_members: Sequence[int],
                     batch: int, t_max: int) -> dict[str, torch.Tensor] | None:
        """Every dropout multiplier of one training batch, member by member from its own
        generator in the single model's order (embedding (T_e, B, D), between layers
        (T_e, B, H) each, readout (B, H)); steps past a member's own T_e are padding (1).
        None when the model has no dropout."""
        if not (self.embed_dropout > 0 or self.dropout > 0):
            return None
        like = self.params[0]
        D = self["embedding.weight"].shape[-1]
        H = self[f"{CELL_ATTR[self.cell]}.weight_hh_l0"].shape[-1]
        between = self.num_layers - 1 if self.dropout > 0 else 0
        out = {"embed": [], "readout": [], **{f"layer{k}": [] for k in range(between)}}
        for gen, t in zip(gens, t_members):
            if self.embed_dropout > 0:
                out["embed"].append(_pad(dropout_scale(gen, (t, batch, D), self.embed_dropout,
                                                       like), t_max))
            for k in range(between):
                out[f"layer{k}"].append(_pad(dropout_scale(gen, (t, batch, H), self.dropout,
                                                           like), t_max))
            if self.dropout > 0:
                out["readout"].append(dropout_scale(gen, (batch, H), self.dropout, like))
        return {k: torch.stack(v) for k, v in out.items() if v}

    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor,
                 masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """ids (E, T, B) int64, lengths (E, B) -> logits (E, B) or (E, B, C)."""
        E = ids.shape[0]
        members = torch.arange(E, device=ids.device)
        x = self["embedding.weight"][members.view(E, 1, 1), ids]              # (E, T, B, D)
        masks = masks if self.training else None
        if masks and "embed" in masks:
            x = x * masks["embed"]
        attr = CELL_ATTR[self.cell]
        for layer in range(self.num_layers):
            w = [self[f"{attr}.{n}_l{layer}"] for n in _LAYER_PARAMS]
            x = ensemble_recurrent(x, *w, cell=self.cell, backend=self.backend)  # (E, T, B, H)
            if masks and f"layer{layer}" in masks:
                x = x * masks[f"layer{layer}"]
        B = ids.shape[2]
        last = x[members.view(E, 1), lengths - 1, torch.arange(B, device=ids.device)]  # (E,B,H)
        if masks and "readout" in masks:
            last = last * masks["readout"]
        logits = torch.baddbmm(self["readout.bias"].unsqueeze(1), last,
                               self["readout.weight"].transpose(1, 2))          # (E, B, C)
        return logits.squeeze(-1) if self.classes == 2 else logits


def _pad(scale: torch.Tensor, t_max: int) -> torch.Tensor:
    """A (T_e, ...) multiplier padded with ones to (t_max, ...)."""
    if scale.shape[0] == t_max:
        return scale
    pad = scale.new_ones((t_max - scale.shape[0], *scale.shape[1:]))
    return torch.cat([scale, pad])
