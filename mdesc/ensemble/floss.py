"""Gradient flossing (``--floss TARGET,WEIGHT``) in the ensemble trainer (issue 28).

Member e gets exactly the term its single run adds to its loss
(:func:`mdesc.descent.run.flossing_penalty`: the first ``floss_probe`` training reviews of its
own split as the probe, its own seed for the tangent frame, the same target, weight and
``floss_every``), on the same global steps (``(epoch - 1) * n_batches + b``), and records the
same ``floss_lambda`` / ``floss_terms`` per epoch (:func:`mdesc.descent.run.floss_metrics`).

How: one scratch single model (:class:`mdesc.descent.model.SentimentLSTM`, the single run's
module) receives member e's current weights, :class:`mdesc.FlossingPenalty` computes the term on
it (:func:`mdesc.core.floss.differentiable_exponents`, autograd through the re-orthonormalised
tangent run), and the term's gradient (embedding and recurrent weights) is written into slot e of
the stacked gradients before the task loss's backward pass adds the rest, so clipping and the
optimizer see the single run's gradient of ``task loss + term`` (equal to rounding: the two parts
are summed in another order).  Members are flossed one after the other: one flossing graph is
alive at a time and is freed before the ensemble's forward pass.

Cost: a flossing step costs E single-run flossing terms (E differentiable Lyapunov runs of
``floss_probe`` sequences over the probe's drive plus 100 zero-input steps, one Python iteration
per step) plus E weight copies; the ensemble's batching does not reach them.
"""
from __future__ import annotations

from typing import Sequence

import torch

from mdesc.core.floss import ZERO_INPUT_STEPS, FlossingPenalty
from mdesc.data.sentiment import EncodedSplit, TextSettings
from mdesc.descent.model import ModelSettings, SentimentLSTM, TrainSettings
from mdesc.descent.run import floss_metrics, flossing_penalty
from mdesc.ensemble.recurrent import CELL_GATES

__all__ = ["DRIVE_VALUES", "EnsembleFloss", "TANGENT_VALUES", "floss_memory"]


#: values autograd keeps per probe sequence, layer and hidden unit for one step of the drive
#: (the state run) and of the zero-input phase (state, tangent vector and what the double
#: backward needs), by cell: least-squares fits of the reference gradient's saved tensors
#: (1 to 3 layers, H 5 to 64, 2 to 32 sequences, 10 to 200 drive steps; tanh RNN drive 2.2,
#: zero input 5.3; LSTM 6.1, 23; GRU 6.4, 23), rounded up by about 20%
DRIVE_VALUES = {"lstm": 8, "gru": 8, "rnn_tanh": 3}
TANGENT_VALUES = {"lstm": 28, "gru": 28, "rnn_tanh": 7}


def floss_memory(data: TextSettings, model: ModelSettings, train: TrainSettings,
                 itemsize: int = 4) -> int:
    """Bytes of one member's flossing graph, about (0 when ``--floss`` is off), an upper bound
    for any review lengths: the probe's drive (at most ``max_len`` = T steps) for every
    sequence, and for a sequence of length l the zero-input phase of T + 100 - l steps (at most
    T + 100), per step :data:`DRIVE_VALUES` or :data:`TANGENT_VALUES` values per sequence,
    layer and hidden unit, plus about one copy of the recurrent weights per zero-input step of
    each group of equal-length probe reviews (at most min(P, T) groups; probes of reviews all
    truncated to max_len form one group, and their graph is then several times smaller)."""
    if train.floss_target_weight() is None:
        return 0
    H, D, L = model.hidden_size, model.embed_dim, model.num_layers
    T, Z, P = data.max_len, ZERO_INPUT_STEPS, train.floss_probe
    recurrent = sum(CELL_GATES[model.cell] * H * ((D if k == 0 else H) + H) for k in range(L))
    drive = T * P * L * H * DRIVE_VALUES[model.cell]
    zero_input = (T + Z) * (P * L * H * TANGENT_VALUES[model.cell] + min(P, T) * recurrent)
    return (drive + zero_input) * itemsize


class EnsembleFloss:
    """Every member's :class:`mdesc.FlossingPenalty` and the scratch module it is computed on.

    ``splits``: each member's training split; ``trains``: each member's settings (seed, floss);
    ``scratch``: a single model of the members' architecture, dtype and device (its weights are
    overwritten; the trainer passes one of the members' initial models).
    """

    def __init__(self, splits: Sequence[EncodedSplit], trains: Sequence[TrainSettings],
                 scratch: SentimentLSTM, device: torch.device):
        self.penalties: list[FlossingPenalty] = [flossing_penalty(t, sp, device)
                                                 for sp, t in zip(splits, trains)]
        if any(p is None for p in self.penalties):
            raise ValueError("EnsembleFloss needs --floss set for every member")
        self.scratch = scratch.to(device)
        self.params = list(self.scratch.parameters())
        self.every = self.penalties[0].every
        self._seen = [0] * len(self.penalties)

    def add_gradients(self, net, step: int) -> None:
        """On a flossing step (``step % floss_every == 0``), add every member's term gradient to
        ``net``'s stacked gradients (created as zeros where None); nothing on the others.  A
        member whose term is not finite gets none (the single run adds an exact zero)."""
        if step % self.every:
            return
        for e, penalty in enumerate(self.penalties):
            with torch.no_grad():
                for mine, stacked in zip(self.params, net.params):
                    mine.copy_(stacked[e])
            term = penalty(self.scratch, step=step)
            if not term.requires_grad:  # not finite: recorded, contributes zero
                continue
            grads = torch.autograd.grad(term, self.params, allow_unused=True)
            with torch.no_grad():
                for g, stacked in zip(grads, net.params):
                    if g is None:
                        continue
                    if stacked.grad is None:
                        stacked.grad = torch.zeros_like(stacked)
                    stacked.grad[e] += g

    def epoch_metrics(self) -> list[dict]:
        """Each member's ``floss_lambda`` and ``floss_terms`` over the terms computed since the
        last call (one epoch's, as the single run records them)."""
        out = []
        for e, penalty in enumerate(self.penalties):
            out.append(floss_metrics(penalty.history[self._seen[e]:]))
            self._seen[e] = len(penalty.history)
        return out
