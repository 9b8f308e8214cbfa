"""Batched ensembles of training trajectories and the Lyapunov spectrum of the training map.

:func:`run_ensemble` trains M initialisations of a :class:`~mdesc.trajectories.model.BatchedProblem`
at once by full-batch gradient descent, each with

* a reference trajectory w_m(t) and its loss;
* ``n_pert`` perturbed copies for every perturbation size eps_e (the paper's replicas: every
  perturbed entry moved by an independent uniform draw in (-eps_e, eps_e); the problem's
  ``weight_mask`` says which entries — weights, not biases, for the MLP), followed without
  renormalisation; recorded as ln of their mean L1 distance to the reference;
* a renormalised twin (offset rescaled to Euclidean length ``twin_eps`` after every step):
  per-step log growth ln(|d|/twin_eps);
* a tangent vector pushed through the Jacobian of the GD step, J v = v - lr H(w) v, H v from
  :meth:`BatchedProblem.grad_and_hvp`, renormalised every step (Benettin): per-step ln|J v|.

All of it — references, twins, every replica of every initialisation — is one batched gradient
per step (the MLP's gradient is a handful of batched matrix products over the model axis), so
the cost per trajectory falls with the batch (see benchmarks/bench_trajectories.py).  The random
draws of initialisation m come from ``np.random.default_rng([seed, init_id_m, 1])``, so one
initialisation gives the same numbers (to rounding) whether it is trained alone or in a batch.

:func:`training_spectrum` gives the top-k (or full, k = P) Lyapunov spectrum of the training map
by QR over Hessian-vector products: Q <- qr((I - lr H) Q) every step, exponents = mean log|R_ii|.

Units: natural-log growth per GD step.  Everything is float64.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .model import BatchedProblem

__all__ = ["run_ensemble", "training_spectrum", "ensemble_draws"]


def ensemble_draws(problem: BatchedProblem, init_ids: Sequence[int], seed: int,
                   eps: Sequence[float], n_pert: int):
    """The random draws of each initialisation: ``(pert (M, E, n_pert, P), u (M, P))``.

    ``pert`` are the replicas' offsets (uniform in (-eps_e, eps_e) on the masked entries, 0
    elsewhere), ``u`` the unit starting direction of the twin and the tangent (Gaussian on the
    masked entries, normalised).  Initialisation m uses ``default_rng([seed, init_ids[m], 1])``.
    """
    mask = problem.weight_mask.numpy()
    P = problem.n_params
    eps = np.asarray(eps, dtype=np.float64)
    perts, us = [], []
    for i in init_ids:
        rng = np.random.default_rng([int(seed), int(i), 1])
        u = rng.standard_normal(P) * mask
        us.append(u / np.linalg.norm(u))
        p = rng.uniform(-1.0, 1.0, (eps.size, int(n_pert), P)) * mask
        perts.append(p * eps[:, None, None])
    M = len(us)
    pert = np.stack(perts) if M else np.zeros((0, eps.size, int(n_pert), P))
    u = np.stack(us) if M else np.zeros((0, P))
    return torch.from_numpy(pert), torch.from_numpy(u)


def run_ensemble(problem: BatchedProblem, w0: torch.Tensor, lr: float, steps: int, *,
                 eps: Sequence[float] = (1e-8,), n_pert: int = 5, twin_eps: float = 1e-8,
                 seed: int = 0, init_ids: Sequence[int] | None = None, tangent: bool = True,
                 twin: bool = True, progress: Callable[[int], None] | None = None) -> dict:
    """Train M initialisations (rows of ``w0``) with their replicas, twins and tangents.

    Returns numpy arrays: ``loss`` (T+1, M) reference loss; ``log_dist`` (T+1, M, E) ln of the
    mean over the ``n_pert`` replicas of the L1 distance to the reference (float32); ``twin_log``
    and ``tan_log`` (T, M): per-step log growth of the twin and the tangent (step t maps w(t) to
    w(t+1)); ``weight_l1`` (T+1, M) |w(t)|_1 of the reference (float32); ``w_final`` (M, P);
    plus the problem's held-out metrics of the final weights (``test_loss``, ``test_accuracy``
    and ``train_accuracy`` for the MLP).  Non-finite values (a diverged run) stay NaN/inf.
    """
    eps = _check_ensemble_settings(lr, steps, eps, twin_eps, n_pert)
    W = _weights(problem, w0)
    M, P = W.shape
    E = len(eps) if n_pert else 0
    init_ids = list(range(M)) if init_ids is None else [int(i) for i in init_ids]
    if len(init_ids) != M:
        raise ValueError(f"init_ids must have one id per row of w0 ({M}), got {len(init_ids)}.")
    pert, u = ensemble_draws(problem, init_ids, seed, eps if E else [], n_pert if E else 0)
    ref = W.clone()
    twin_w = ref + twin_eps * u
    reps = (ref[:, None, None, :] + pert).reshape(M * E * n_pert, P) if E else ref[:0]
    V = u.clone()

    loss = np.full((steps + 1, M), np.nan)
    log_dist = np.full((steps + 1, M, E), np.nan, dtype=np.float32)
    twin_log = np.full((steps, M), np.nan)
    tan_log = np.full((steps, M), np.nan)
    weight_l1 = np.full((steps + 1, M), np.nan, dtype=np.float32)
    n_twin = M if twin else 0

    def record(t: int, l_ref: torch.Tensor) -> None:
        loss[t] = l_ref.numpy()
        weight_l1[t] = ref.abs().sum(1).numpy()
        if E:
            d = (reps.view(M, E, n_pert, P) - ref[:, None, None, :]).abs().sum(-1).mean(-1)
            log_dist[t] = torch.log(d).numpy()

    for t in range(steps + 1):
        if tangent and t < steps:
            l_ref, g_ref, hv = problem.grad_and_hvp(ref, V)
            others = torch.cat([twin_w[:n_twin], reps], 0)
            g_o = problem.loss_and_grad(others)[1] if others.shape[0] else others
        else:
            l_all, g_all = problem.loss_and_grad(torch.cat([ref, twin_w[:n_twin], reps], 0))
            l_ref, g_ref, g_o = l_all[:M], g_all[:M], g_all[M:]
        record(t, l_ref)
        if t == steps:
            break
        ref = ref - lr * g_ref
        if n_twin:
            twin_w, twin_log[t] = _renormalised_twins(twin_w - lr * g_o[:M], ref, u, twin_eps)
        if E:
            reps = reps - lr * g_o[n_twin:]
        if tangent:
            V, tan_log[t] = _normalised_tangents(V - lr * hv, u)
        if progress is not None:
            progress(t + 1)
    out = {"loss": loss, "log_dist": log_dist, "twin_log": twin_log if twin else twin_log[:, :0],
           "tan_log": tan_log if tangent else tan_log[:, :0], "weight_l1": weight_l1,
           "w_final": ref.numpy().copy()}
    return out | _final_metrics(problem, ref)


def _check_ensemble_settings(lr: float, steps: int, eps: Sequence[float], twin_eps: float,
                             n_pert: int) -> list[float]:
    """Raise on settings :func:`run_ensemble` cannot use; returns ``eps`` as floats."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive finite number, got {lr}.")
    eps = [float(e) for e in eps]
    if any(not (e > 0) for e in eps) or not (twin_eps > 0):
        raise ValueError(f"perturbation sizes must be > 0, got eps={eps}, twin_eps={twin_eps}.")
    if n_pert < 0:
        raise ValueError(f"n_pert must be >= 0, got {n_pert}.")
    return eps


def _weights(problem: BatchedProblem, w0) -> torch.Tensor:
    """``w0`` as a float64 (M, P) tensor, checked against the problem."""
    W = torch.as_tensor(w0, dtype=torch.float64)
    if W.ndim != 2 or W.shape[1] != problem.n_params:
        raise ValueError(f"w0 must have shape (M, {problem.n_params}), got {tuple(W.shape)}.")
    return W


def _renormalised_twins(twin_w: torch.Tensor, ref: torch.Tensor, u: torch.Tensor,
                        twin_eps: float) -> tuple[torch.Tensor, np.ndarray]:
    """Twins moved back to distance ``twin_eps`` from ``ref``: ``(twins (M, P), ln(|d| /
    twin_eps) (M,))``; an offset that rounded to zero (or blew up) restarts along ``u``."""
    d = twin_w - ref
    nd = d.norm(dim=1)
    log_growth = torch.log(nd / twin_eps).numpy()
    bad = ~(torch.isfinite(nd) & (nd > 0))
    scale = torch.where(bad, torch.zeros_like(nd), twin_eps / nd)
    twin_w = ref + d * scale[:, None]
    if bool(bad.any()):
        twin_w[bad] = ref[bad] + twin_eps * u[bad]
    return twin_w, log_growth


def _normalised_tangents(V: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """Tangents divided by their norms: ``(V (M, P), ln|V| (M,))``; a zero or non-finite one
    restarts along ``u``."""
    nv = V.norm(dim=1)
    log_growth = torch.log(nv).numpy()
    bad = ~(torch.isfinite(nv) & (nv > 0))
    V = V / torch.where(bad, torch.ones_like(nv), nv)[:, None]
    if bool(bad.any()):
        V[bad] = u[bad]
    return V, log_growth


def _final_metrics(problem: BatchedProblem, ref: torch.Tensor) -> dict[str, np.ndarray]:
    """The problem's held-out metrics of the final weights (and its training accuracy)."""
    metrics = problem.test_metrics(ref)
    if hasattr(problem, "train_accuracy"):
        metrics["train_accuracy"] = problem.train_accuracy(ref)
    return {k: v.numpy() for k, v in metrics.items()}


def _random_frames(M: int, P: int, k: int, seed: int, init_ids: Sequence[int]) -> torch.Tensor:
    frames = []
    for i in init_ids:
        rng = np.random.default_rng([int(seed), int(i), 2])  # not the ensemble's stream
        q, r = np.linalg.qr(rng.standard_normal((P, k)))
        frames.append(q * np.sign(np.diag(r)))
    return torch.from_numpy(np.stack(frames)) if frames else torch.zeros(0, P, k,
                                                                         dtype=torch.float64)


def training_spectrum(problem: BatchedProblem, w0: torch.Tensor, lr: float, steps: int, *,
                      k: int | None = None, warmup: int = 0, seed: int = 0,
                      init_ids: Sequence[int] | None = None,
                      q0: torch.Tensor | None = None) -> dict:
    """Top-k Lyapunov spectrum of the GD map w -> w - lr grad L(w) along each row of ``w0``.

    The Jacobian of one step is J = I - lr H(w_t).  A frame Q (P x k, orthonormal; seeded random
    or ``q0`` (M, P, k)) is pushed through it with k Hessian-vector products, J Q = Q - lr H Q,
    and re-orthonormalised by QR every step with signs fixed so that diag R > 0; the exponents
    are the means of log R_ii over the steps after ``warmup`` (float64), in descending order.
    ``k = None`` is the full spectrum (k = P).  Returns ``exponents`` (M, k), ``log_r`` (T, M, k)
    per-step logs (before sorting), ``counted_steps`` and ``k``.
    """
    W = _weights(problem, w0)
    M, P = W.shape
    k = P if k is None else int(k)
    if not 1 <= k <= P:
        raise ValueError(f"k must be between 1 and the number of parameters ({P}), got {k}.")
    if not 0 <= warmup < steps:
        raise ValueError(f"warmup must be in [0, steps), got warmup={warmup}, steps={steps}.")
    init_ids = list(range(M)) if init_ids is None else list(init_ids)
    Q = _random_frames(M, P, k, seed, init_ids) if q0 is None else \
        torch.as_tensor(q0, dtype=torch.float64).clone()
    if tuple(Q.shape) != (M, P, k):
        raise ValueError(f"q0 must have shape (M, P, k) = ({M}, {P}, {k}), got {tuple(Q.shape)}.")
    log_r = np.zeros((steps, M, k))
    for t in range(steps):
        Wr = W.repeat_interleave(k, dim=0)                  # (M k, P)
        Vr = Q.transpose(1, 2).reshape(M * k, P)            # column j of frame m
        _, g, hq = problem.grad_and_hvp(Wr, Vr)
        JQ = Q - lr * hq.reshape(M, k, P).transpose(1, 2)
        Q, R = torch.linalg.qr(JQ)
        d = torch.diagonal(R, dim1=-2, dim2=-1)
        sign = torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))
        Q = Q * sign[:, None, :]
        log_r[t] = torch.log(d.abs()).numpy()
        W = W - lr * g.reshape(M, k, P)[:, 0]
    exps = log_r[warmup:].mean(0)
    order = np.argsort(-exps, axis=1)
    return {"exponents": np.take_along_axis(exps, order, 1), "log_r": log_r,
            "counted_steps": steps - warmup, "k": k}
