"""Adam, AdamW and SGD (with momentum) over stacked parameters (E, ...): each member its own
optimizer, with torch.optim's exact formulas (the single-tensor path, ``foreach=False``, that
torch takes on the CPU), and a state that converts to and from each member's torch optimizer
``state_dict`` (so a member's folder holds the single run's optimizer file).

Hyperparameters are read from torch's own ``param_groups`` of each member (built by the single
run's :func:`mdesc.descent.model.make_optimizer`), so defaults such as Adam's betas are torch's.
Members may differ in learning rate only.  Per step and parameter tensor, with g its gradient:

  adam:   g += wd p;  m = lerp(m, g, 1 - b1);  v = b2 v + (1 - b2) g^2;
          p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  adamw:  p *= 1 - lr wd; then adam's update with g unchanged
  sgd:    g += wd p;  buf = g (first step) or momentum buf + g;  p -= lr buf  (no momentum: g)
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["EnsembleOptimizer", "KINDS", "clip_grad_norms"]

KINDS = ("adam", "adamw", "sgd")


def _scalar_dtype() -> torch.dtype:
    """The dtype of torch Adam's ``step`` tensor (torch.optim.optimizer._get_scalar_dtype)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


@torch.no_grad()
def clip_grad_norms(params: Sequence[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for every member at once: member e's gradients (the
    e-th slice of every tensor) are scaled by min(1, max_norm / (|g_e| + 1e-6)), |g_e| the L2
    norm over all its tensors.  Returns the norms before clipping, (E,)."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), 2, dim=1) for g in grads])
    total = torch.linalg.vector_norm(norms, 2, dim=0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return total


class EnsembleOptimizer:
    """One optimizer per member over stacked parameters; ``groups[e]``: member e's torch
    ``param_groups`` (one group over all parameters, as the single run has)."""

    def __init__(self, params: Sequence[torch.Tensor], kind: str, groups: Sequence[list[dict]]):
        if kind not in KINDS:
            raise ValueError(f"the ensemble's optimizer must be one of {', '.join(KINDS)}, "
                             f"got {kind!r}")
        self.params, self.kind = list(params), kind
        self.groups = [[dict(g) for g in member] for member in groups]
        first = self.groups[0][0]
        for member in self.groups:
            if len(member) != 1 or {k: v for k, v in member[0].items() if k != "lr"} != \
                    {k: v for k, v in first.items() if k != "lr"}:
                raise ValueError("ensemble members may differ in learning rate only")
        self.hyper = first
        self.lrs = [member[0]["lr"] for member in self.groups]
        self.steps = 0
        zeros = [torch.zeros_like(p) for p in self.params]
        if kind == "sgd":
            self.buffers: list[torch.Tensor | None] = [None] * len(self.params)
        else:
            self.exp_avg = zeros
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def _per_member(self, fn) -> None:
        """``fn(slice, lr)`` once with every member (one lr), or per member (lrs differ)."""
        if len(set(self.lrs)) == 1:
            fn(slice(None), self.lrs[0])
        else:
            for e, lr in enumerate(self.lrs):
                fn(e, lr)

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if self.kind == "sgd":
                self._sgd(i, p)
            else:
                self._adam(i, p)

    def _adam(self, i: int, p: torch.Tensor) -> None:
        h = self.hyper
        beta1, beta2 = h["betas"]
        wd, grad = h["weight_decay"], p.grad
        if wd != 0:
            if h.get("decoupled_weight_decay", self.kind == "adamw"):
                self._per_member(lambda s, lr: p[s].mul_(1 - lr * wd))
            else:
                grad = grad.add(p, alpha=wd)
        m, v = self.exp_avg[i], self.exp_avg_sq[i]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** float(self.steps)
        bias_correction2 = 1 - beta2 ** float(self.steps)
        denom = (v.sqrt() / bias_correction2 ** 0.5).add_(h["eps"])
        self._per_member(lambda s, lr: p[s].addcdiv_(m[s], denom[s],
                                                     value=-(lr / bias_correction1)))

    def _sgd(self, i: int, p: torch.Tensor) -> None:
        h = self.hyper
        grad = p.grad
        if h["weight_decay"] != 0:
            grad = grad.add(p, alpha=h["weight_decay"])
        if h["momentum"] != 0:
            buf = self.buffers[i]
            if buf is None:
                buf = self.buffers[i] = grad.detach().clone()
            else:
                buf.mul_(h["momentum"]).add_(grad, alpha=1 - h["dampening"])
            grad = buf
        self._per_member(lambda s, lr: p[s].add_(grad[s], alpha=-lr))

    # members' torch state dicts -------------------------------------------------------------
    def member_state_dict(self, e: int) -> dict:
        """Member ``e``'s state as its torch optimizer's ``state_dict()`` (CPU tensors)."""
        state: dict[int, dict] = {}
        if self.kind == "sgd":
            if self.hyper["momentum"] != 0 and self.buffers[0] is not None:
                state = {i: {"momentum_buffer": b[e].detach().to("cpu", copy=True)}
                         for i, b in enumerate(self.buffers)}
        elif self.steps:
            step = torch.tensor(float(self.steps), dtype=_scalar_dtype())
            state = {i: {"step": step.clone(), "exp_avg": m[e].to("cpu", copy=True),
                         "exp_avg_sq": v[e].to("cpu", copy=True)}
                     for i, (m, v) in enumerate(zip(self.exp_avg, self.exp_avg_sq))}
        groups = [dict(g, params=list(range(len(self.params)))) for g in self.groups[e]]
        return {"state": state, "param_groups": groups}

    @torch.no_grad()
    def load_member_state_dict(self, e: int, sd: dict) -> None:
        """Set member ``e`` from a torch optimizer ``state_dict`` of the single run (ValueError
        if it does not fit; every member must be at the same step)."""
        state = {int(k): v for k, v in sd["state"].items()}
        if state and set(state) != set(range(len(self.params))):
            raise ValueError(f"optimizer state for parameters {sorted(state)}, the model has "
                             f"{len(self.params)}")
        if self.kind == "sgd":
            steps = None
            for i, st in state.items():
                if st.get("momentum_buffer") is not None:
                    if self.buffers[i] is None:
                        self.buffers[i] = torch.zeros_like(self.params[i])
                    self.buffers[i][e].copy_(st["momentum_buffer"])
        else:
            steps = int(state[0]["step"]) if state else 0
            for i, st in state.items():
                if int(st["step"]) != steps:
                    raise ValueError("optimizer state: parameters at different steps")
                self.exp_avg[i][e].copy_(st["exp_avg"])
                self.exp_avg_sq[i][e].copy_(st["exp_avg_sq"])
        if steps is not None:
            if e > 0 and steps != self.steps:
                raise ValueError(f"member {e} is at optimizer step {steps}, member 0 at "
                                 f"{self.steps}")
            self.steps = steps
