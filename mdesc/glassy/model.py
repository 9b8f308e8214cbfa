"""What study 2 trains: deep tanh RNNs predicting the next step of the four chorale voices.

* :class:`VoiceRNN` -- one net (PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` core, linear
  readout to one logit vector per voice): the one-at-a-time reference.
* :class:`EnsembleRNN` -- many tanh-RNN nets of one depth and any widths trained as ONE batched
  computation. Every parameter of every net lives in a stacked tensor with a leading model axis;
  narrower nets are zero-padded to the widest width of the ensemble. The padded rows and columns
  start at zero and stay exactly zero (their gradients are exactly zero, and are masked anyway),
  so each net computes exactly what it would alone, up to the rounding of sums of a different
  length. Each net has its own loss; the ensemble's objective is the sum of them, so the
  gradient with respect to net m's parameters is that of net m's own loss.
  :meth:`EnsembleRNN.from_seeds` initialises net m exactly as ``VoiceRNN`` would be under
  ``torch.manual_seed(seed_m)``.

The time loop of the recurrence is one autograd node (:class:`TanhRecurrence`): its forward runs
``h_t = tanh(u_t + h_{t-1} W_hh^T)`` for all nets at once (one batched product per step), its
backward is hand-written back-propagation through time (one batched product per step), and the
gradient of ``W_hh`` is one product over all steps.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["VoiceRNN", "EnsembleRNN", "TanhRecurrence", "voice_offsets"]


def voice_offsets(vocab_sizes: Sequence[int]) -> list[int]:
    """Start of each voice's block in the concatenated one-hot input / logit vector."""
    return [int(x) for x in np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])]


class VoiceRNN(nn.Module):
    """Deep recurrent net over several categorical voices (e.g. S, A, T, B).

    Input at step t: the concatenated one-hot codes of every voice's token, shape
    ``(sum(vocab_sizes),)``; a stacked recurrent core (``cell`` = ``"rnn"`` (tanh),
    ``"lstm"`` or ``"gru"``; ``depth`` layers of ``width`` units, PyTorch's modules); a linear
    readout to one logit vector per voice. Holds exactly one recurrent module (``.core``), so
    an LSTM variant can be passed to mdesc's Lyapunov functions with one-hot float input.
    """

    def __init__(self, vocab_sizes: Sequence[int], width: int, depth: int,
                 cell: str = "rnn"):
        super().__init__()
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        n_in = sum(self.vocab_sizes)
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}.get(cell)
        if cls is None:
            raise ValueError(f"cell must be 'rnn', 'lstm' or 'gru', got {cell!r}")
        kwargs = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        self.cell = cell
        self.core = cls(n_in, width, num_layers=depth, **kwargs)
        self.readout = nn.Linear(width, n_in)

    def one_hot(self, tokens):
        """(T, B, V) int64 tokens -> (T, B, sum(vocab_sizes)) float one-hot input."""
        parts = [torch.nn.functional.one_hot(tokens[..., v], n)
                 for v, n in enumerate(self.vocab_sizes)]
        return torch.cat(parts, dim=-1).to(self.readout.weight.dtype)

    def forward(self, tokens):
        """(T, B, V) tokens -> list of V logit tensors (T, B, vocab_sizes[v])."""
        out, _ = self.core(self.one_hot(tokens))
        logits = self.readout(out)
        return list(torch.split(logits, self.vocab_sizes, dim=-1))

    def loss(self, tokens, lengths, reduction: str = "mean"):
        """Next-step cross-entropy in nats per voice and step.

        tokens: (T, B, V) int64; lengths: (B,) valid steps per sequence (padding after).
        Predicts tokens[1:] from tokens[:-1]. ``reduction="sum"`` returns the summed
        per-voice cross-entropy and the number of (step, sequence) pairs, for averaging
        over chunks.
        """
        inp, target = tokens[:-1], tokens[1:]
        logits = self.forward(inp)
        steps = torch.arange(target.shape[0], device=tokens.device)[:, None]
        valid = steps < (lengths.to(tokens.device)[None, :] - 1)  # (T-1, B)
        total = tokens.new_zeros((), dtype=logits[0].dtype)
        for v, lg in enumerate(logits):
            ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]),
                                                   target[..., v].reshape(-1),
                                                   reduction="none")
            total = total + (ce * valid.reshape(-1)).sum()
        count = valid.sum()
        if reduction == "sum":
            return total / len(logits), count
        return total / (len(logits) * count.clamp(min=1))

    def flat_weights(self):
        """All parameters concatenated into one 1-D tensor (core, then readout)."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])


class TanhRecurrence(torch.autograd.Function):
    """``h_t = tanh(u_t + h_{t-1} W^T)`` from ``h_{-1} = 0`` for a stack of nets, as one node.

    u: (T, M, N, W) input pre-activations (input projection plus both biases);
    w: (M, W, W) recurrent weights. Returns h: (T, M, N, W).
    """

    @staticmethod
    def forward(ctx, u, w):
        u = u.contiguous()
        h = torch.empty_like(u)
        wt = w.transpose(1, 2)
        torch.tanh(u[0], out=h[0])
        for t in range(1, u.shape[0]):
            torch.tanh(torch.baddbmm(u[t], h[t - 1], wt), out=h[t])
        ctx.save_for_backward(h, w)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        h, w = ctx.saved_tensors
        d = 1.0 - h * h                       # tanh'
        p = (grad_h * d).contiguous()         # direct part of dL/da_t
        da = torch.empty_like(h)
        n_t = h.shape[0]
        da[n_t - 1] = p[n_t - 1]
        for t in range(n_t - 1, 0, -1):       # dL/da_{t-1} = p_{t-1} + tanh'_{t-1} (da_t W)
            torch.addcmul(p[t - 1], d[t - 1], torch.bmm(da[t], w), out=da[t - 1])
        m, width = w.shape[0], w.shape[1]
        if n_t > 1:
            a = da[1:].permute(1, 3, 0, 2).reshape(m, width, -1)       # (M, W, (T-1) N)
            b = h[:-1].permute(1, 0, 2, 3).reshape(m, -1, width)       # (M, (T-1) N, W)
            grad_w = torch.bmm(a, b)
        else:
            grad_w = torch.zeros_like(w)
        return da, grad_w


class EnsembleRNN:
    """M deep tanh RNNs of one depth (widths may differ), stored stacked and zero-padded.

    vocab_sizes: classes per voice; widths: (M,) width of each net; depth: layers.
    Parameters (all with a leading model axis M, padded width W = max(widths)):
    ``w_ih[l]`` (M, W, n_in or W), ``w_hh[l]`` (M, W, W), ``b_ih[l]``, ``b_hh[l]`` (M, W),
    ``w_out`` (M, n_out, W), ``b_out`` (M, n_out), in :attr:`params` (that order), with 0/1
    masks of the real entries in :attr:`masks`. Build with :meth:`from_seeds` or
    :meth:`from_models`.
    """

    def __init__(self, vocab_sizes: Sequence[int], widths: Sequence[int], depth: int,
                 dtype=torch.float64, device="cpu"):
        self.vocab_sizes = tuple(int(v) for v in vocab_sizes)
        self.widths = tuple(int(w) for w in widths)
        self.depth = int(depth)
        if not self.widths or min(self.widths) < 1 or self.depth < 1:
            raise ValueError(f"need >= 1 net with widths >= 1 and depth >= 1, got widths "
                             f"{self.widths}, depth {self.depth}")
        self.offsets = voice_offsets(self.vocab_sizes)
        n_in = sum(self.vocab_sizes)
        self.n_in = n_in
        m, wmax = len(self.widths), max(self.widths)
        self.width = wmax
        kw = dict(dtype=dtype, device=device)
        shapes = []
        for layer in range(self.depth):
            shapes += [("w_ih", layer, (m, wmax, n_in if layer == 0 else wmax)),
                       ("w_hh", layer, (m, wmax, wmax)), ("b_ih", layer, (m, wmax)),
                       ("b_hh", layer, (m, wmax))]
        shapes += [("w_out", None, (m, n_in, wmax)), ("b_out", None, (m, n_in))]
        self.names = [n if layer is None else f"{n}{layer}" for n, layer, _ in shapes]
        self.params = [torch.zeros(s, **kw) for _, _, s in shapes]
        w = torch.tensor(self.widths, device=device)
        unit = (torch.arange(wmax, device=device)[None, :] < w[:, None]).to(dtype)  # (M, W)
        masks = []
        for (name, layer, s) in shapes:
            if name == "w_ih":
                masks.append(unit[:, :, None] * (torch.ones(n_in, **kw)[None, None, :]
                                                 if layer == 0 else unit[:, None, :]))
            elif name == "w_hh":
                masks.append(unit[:, :, None] * unit[:, None, :])
            elif name in ("b_ih", "b_hh"):
                masks.append(unit.clone())
            elif name == "w_out":
                masks.append(torch.ones(m, n_in, 1, **kw) * unit[:, None, :])
            else:
                masks.append(torch.ones(s, **kw))
        self.masks = masks
        for p in self.params:
            p.requires_grad_(True)

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_models(cls, models: Sequence[VoiceRNN], dtype=torch.float64, device="cpu"):
        """Stack tanh :class:`VoiceRNN` nets of one depth (copies their weights)."""
        if not models:
            raise ValueError("no models to stack")
        depth = models[0].core.num_layers
        for mdl in models:
            if mdl.cell != "rnn" or mdl.core.num_layers != depth:
                raise ValueError("EnsembleRNN stacks tanh RNNs ('rnn' cell) of one depth; got "
                                 f"cell {mdl.cell!r}, depth {mdl.core.num_layers}")
        ens = cls(models[0].vocab_sizes, [mdl.core.hidden_size for mdl in models], depth,
                  dtype=dtype, device=device)
        with torch.no_grad():
            for i, mdl in enumerate(models):
                ens.set_model(i, mdl)
        return ens

    @classmethod
    def from_seeds(cls, vocab_sizes, widths, depth, seeds, dtype=torch.float64, device="cpu"):
        """Net m initialised as ``VoiceRNN(vocab_sizes, widths[m], depth)`` under
        ``torch.manual_seed(seeds[m])`` (the global RNG state is left untouched)."""
        if len(seeds) != len(widths):
            raise ValueError(f"{len(widths)} widths but {len(seeds)} seeds")
        models = []
        for w, s in zip(widths, seeds):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(s))
                models.append(VoiceRNN(vocab_sizes, int(w), depth))
        return cls.from_models(models, dtype=dtype, device=device)

    def _model_tensors(self, mdl: VoiceRNN) -> list[torch.Tensor]:
        out = []
        for layer in range(self.depth):
            out += [getattr(mdl.core, f"weight_ih_l{layer}"), getattr(mdl.core, f"weight_hh_l{layer}"),
                    getattr(mdl.core, f"bias_ih_l{layer}"), getattr(mdl.core, f"bias_hh_l{layer}")]
        return out + [mdl.readout.weight, mdl.readout.bias]

    def set_model(self, i: int, mdl: VoiceRNN) -> None:
        """Copy a net's weights into slot i (its width must be ``widths[i]``)."""
        if mdl.core.hidden_size != self.widths[i]:
            raise ValueError(f"slot {i} has width {self.widths[i]}, model {mdl.core.hidden_size}")
        with torch.no_grad():
            for p, src in zip(self.params, self._model_tensors(mdl)):
                idx = (i,) + tuple(slice(0, n) for n in src.shape)
                p[i].zero_()
                p[idx] = src.detach().to(p.dtype)

    def to_model(self, i: int) -> VoiceRNN:
        """Net i as a standalone float64 :class:`VoiceRNN` (a copy)."""
        mdl = VoiceRNN(self.vocab_sizes, self.widths[i], self.depth).double()
        with torch.no_grad():
            for p, dst in zip(self.params, self._model_tensors(mdl)):
                dst.copy_(p[(i,) + tuple(slice(0, n) for n in dst.shape)])
        return mdl

    def flat_weights(self, i: int) -> torch.Tensor:
        """Net i's parameters as one vector, in :meth:`VoiceRNN.flat_weights` order."""
        return self.to_model(i).flat_weights()

    @property
    def n_parameters(self) -> list[int]:
        """Real (unpadded) parameter count of each net."""
        return [int(sum(float(mk[i].sum()) for mk in self.masks)) for i in range(len(self.widths))]

    @property
    def buckets(self) -> list[tuple[int, int, int]]:
        """``(start, stop, width)``: runs of consecutive nets whose widths stay within a factor 2
        of the run's narrowest; the dense products (inter-layer input, readout) of a run use
        only its own widest width instead of the ensemble's (same result: padding is zero)."""
        out, start = [], 0
        for i in range(1, len(self.widths) + 1):
            if i == len(self.widths) or not (
                    min(self.widths[start:i + 1]) * 2 >= max(self.widths[start:i + 1])):
                out.append((start, i, max(self.widths[start:i])))
                start = i
        return out

    # computation ----------------------------------------------------------------------------
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (T, M, N, V) int64 (net m reads ``tokens[:, m]``) -> one logit tensor per voice,
        (M, T, N, vocab_sizes[v])."""
        n_t, m, n, n_v = tokens.shape
        if m != len(self.widths) or n_v != len(self.vocab_sizes):
            raise ValueError(f"tokens must be (T, M={len(self.widths)}, N, "
                             f"V={len(self.vocab_sizes)}), got {tuple(tokens.shape)}")
        p = iter(self.params)
        h = None
        buckets = self.buckets
        for layer in range(self.depth):
            w_ih, w_hh, b_ih, b_hh = next(p), next(p), next(p), next(p)
            bias = (b_ih + b_hh)[None, :, None, :]
            if layer == 0:
                # one-hot input: the projection is a sum of one column of W_ih per voice
                emb = w_ih.transpose(1, 2).reshape(m * self.n_in, self.width)
                base = (torch.arange(m, device=tokens.device) * self.n_in)[None, :, None]
                u = bias
                for v, off in enumerate(self.offsets):
                    u = u + emb[tokens[..., v] + (base + off)]
            else:
                flat = h.transpose(0, 1).reshape(m, n_t * n, self.width)          # (M, T N, W)
                parts = [torch.nn.functional.pad(
                    torch.bmm(flat[a:b, :, :wb], w_ih[a:b, :wb, :wb].transpose(1, 2)),
                    (0, self.width - wb)) for a, b, wb in buckets]
                u = torch.cat(parts).reshape(m, n_t, n, self.width).transpose(0, 1) + bias
            h = TanhRecurrence.apply(u, w_hh)
        w_out, b_out = next(p), next(p)
        flat = h.transpose(0, 1).reshape(m, n_t * n, self.width)
        out = []
        for off, size in zip(self.offsets, self.vocab_sizes):
            parts = [torch.baddbmm(b_out[a:b, None, off:off + size], flat[a:b, :, :wb],
                                   w_out[a:b, off:off + size, :wb].transpose(1, 2))
                     for a, b, wb in buckets]
            out.append(torch.cat(parts).reshape(m, n_t, n, size))
        return out

    def loss_sums(self, tokens: torch.Tensor, lengths: torch.Tensor):
        """Per-net summed next-step cross-entropy (mean over voices) and count of predictions.

        tokens: (T+1, M, N, V) int64 windows (net m reads ``tokens[:, m]``); lengths: (M, N)
        valid tokens per window (targets exist for steps ``t < length - 1``).
        Returns ``(sums (M,), counts (M,))`` in nats.
        """
        inp, target = tokens[:-1], tokens[1:].transpose(0, 1)        # target (M, T, N, V)
        logits = self.logits(inp)
        steps = torch.arange(target.shape[1], device=tokens.device)[None, :, None]
        valid = (steps < (lengths[:, None, :] - 1)).to(logits[0].dtype)  # (M, T, N)
        nll = 0.0
        for v, lg in enumerate(logits):
            nll = nll + torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.shape[-1]), target[..., v].reshape(-1),
                reduction="none").reshape(valid.shape)
        sums = (nll * valid).sum(dim=(1, 2)) / len(self.vocab_sizes)
        return sums, valid.sum(dim=(1, 2))

    def losses(self, tokens, lengths) -> torch.Tensor:
        """Per-net mean next-step cross-entropy (M,) in nats per voice and step."""
        s, c = self.loss_sums(tokens, lengths)
        return s / c.clamp(min=1)
