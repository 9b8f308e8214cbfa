"""Resumable runs of the training map, one trajectory at a time (any :class:`TrainingProblem`).

:func:`train_replicas` trains a reference network with replicas perturbed by ``eps``, a
renormalised twin and a tangent vector at one learning rate (see the package docstring for the
estimators); :func:`learning_rate_sweep` repeats it over learning rates into a resumable run
folder (:class:`mdesc.store.RunFolder`: settings checked on resume, one safetensors file per
learning rate, written atomically).  The batched ensembles of the paper's preset are in
:mod:`mdesc.trajectories.ensemble` and :mod:`mdesc.trajectories.sweep`.
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from mdesc.store import (RunFolder, SettingsMismatch, atomic_write_text, load_tensors,
                         save_tensors, write_json)

from .analysis import LossCurveClass, classify_loss_curve
from .model import TrainingProblem

__all__ = ["ReplicaRun", "train_replicas", "training_lyapunov", "LearningRateSweep",
           "learning_rate_sweep", "run_filename", "DEFAULT_LEARNING_RATES", "SettingsMismatch"]

#: Default learning-rate sweep: 16 values log-spaced from 0.01 to 10.
DEFAULT_LEARNING_RATES: tuple[float, ...] = tuple(float(f"{x:.4g}") for x in np.logspace(-2, 1, 16))

# --------------------------------------------------------------------------------------------
# Replicas, twin and tangent: one GD run per learning rate
# --------------------------------------------------------------------------------------------

@dataclass
class ReplicaRun:
    """Everything measured for one learning rate.

    Arrays are numpy float64; t indexes GD steps, t = 0 is the initial weights.  After a
    divergence (reference weights or loss non-finite at step ``diverged_step``) the series hold
    NaN and the exponents average only the completed steps.

    Attributes:
        lr, steps, n_replicas, eps, renorm_every, warmup, seed, jvp, tangent_mode, saturation:
            the settings (see :func:`train_replicas`).
        problem, problem_settings, n_params: what was trained.
        loss: (steps+1,) reference loss L(w_t).
        replica_loss: (R, steps+1) loss of each replica.
        distance: (R, steps+1) Euclidean distance |w_r(t) - w(t)|; distance[:, 0] ≈ eps.
        weight_norm: (steps+1,) |w(t)|.
        twin_log_growth: (n_blocks,) log(|offset| / eps) of the renormalised twin, one per
            block of ``renorm_every`` steps (the last block may be shorter).
        twin_block_steps: (n_blocks,) steps in each block.
        jvp_log_growth: (steps,) log|J_t v_t| per step of the unit tangent (empty if not jvp).
        lyapunov_twin, lyapunov_jvp: the estimates (nats/step) over steps >= warmup
            (``lyapunov_jvp`` is NaN when jvp=False).
        lyapunov_replicas: finite-time exponent of the raw replicas, (ln D(t_s) - ln eps) / t_s
            with D the geometric mean of the replica distances and t_s the last step before D
            first exceeds ``saturation`` (or the last step); NaN without replicas.
        saturation_step: that t_s.
        diverged_step: first step with non-finite reference weights or loss, -1 if none.
        loss_class: :class:`LossCurveClass` of ``loss`` (label ``"n/a"`` when the run is too
            short to classify, fewer than 31 steps).
        seconds: wall time of the run.
    """

    lr: float
    steps: int
    n_replicas: int
    eps: float
    renorm_every: int
    warmup: int
    seed: int
    jvp: bool
    tangent_mode: str
    saturation: float
    problem: str
    problem_settings: dict
    n_params: int
    loss: np.ndarray
    replica_loss: np.ndarray
    distance: np.ndarray
    weight_norm: np.ndarray
    twin_log_growth: np.ndarray
    twin_block_steps: np.ndarray
    jvp_log_growth: np.ndarray
    lyapunov_twin: float
    lyapunov_jvp: float
    lyapunov_replicas: float
    saturation_step: int
    diverged_step: int
    loss_class: LossCurveClass
    seconds: float

    _ARRAYS = ("loss", "replica_loss", "distance", "weight_norm", "twin_log_growth",
               "twin_block_steps", "jvp_log_growth")

    @property
    def regime(self) -> str:
        """The loss-curve label (``loss_class.label``)."""
        return self.loss_class.label

    def settings(self) -> dict:
        """The settings that determine this run (compared when a sweep resumes)."""
        return {"lr": self.lr, "steps": self.steps, "n_replicas": self.n_replicas,
                "eps": self.eps, "renorm_every": self.renorm_every, "warmup": self.warmup,
                "seed": self.seed, "jvp": self.jvp, "tangent_mode": self.tangent_mode,
                "saturation": self.saturation,
                "problem": self.problem, "problem_settings": self.problem_settings,
                "n_params": self.n_params}

    def summary(self) -> dict:
        """Scalars of this run: settings, exponents, label and the label's statistics."""
        finite_loss = self.loss[np.isfinite(self.loss)]
        out = {"lr": self.lr, "lyapunov_twin": self.lyapunov_twin,
               "lyapunov_jvp": self.lyapunov_jvp, "lyapunov_replicas": self.lyapunov_replicas,
               "regime": self.regime, "final_loss": float(self.loss[-1]),
               "min_loss": float(finite_loss.min()) if finite_loss.size else math.nan,
               "final_log10_distance": float(np.mean(np.log10(self.distance[:, -1])))
               if self.n_replicas else math.nan,
               "saturation_step": self.saturation_step, "diverged_step": self.diverged_step,
               "seconds": self.seconds}
        out["early_regime"] = self.early_regime
        out.update({f"stat_{k}": v for k, v in self.loss_class.stats.items() if k != "window"})
        return out

    @property
    def early_regime(self) -> str:
        """Label of the first half of the loss series (the transient), by the same rules as
        ``regime`` (:func:`classify_loss_curve` with ``tail=1`` on ``loss[:steps//2 + 1]``);
        ``"n/a"`` when that half is shorter than 16 points."""
        half = self.loss[: self.steps // 2 + 1]
        if half.size < 16:
            return "n/a"
        return classify_loss_curve(half, tail=1.0).label

    def save(self, path: str | os.PathLike) -> None:
        """Write the run to ``path`` (safetensors arrays plus JSON metadata), atomically."""
        meta = {"settings": self.settings(), "summary": self.summary(),
                "loss_class": {"label": self.loss_class.label, "stats": self.loss_class.stats}}
        save_tensors(path, {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReplicaRun":
        """Read a run written by :meth:`save` (safetensors only: nothing is unpickled)."""
        tensors, meta = load_tensors(path)
        arrays = {k: tensors[k].numpy() for k in cls._ARRAYS}
        s, summ = meta["settings"], meta["summary"]
        nan = math.nan
        lc = LossCurveClass(meta["loss_class"]["label"], meta["loss_class"]["stats"])
        return cls(**s, **arrays,
                   lyapunov_twin=nan if summ["lyapunov_twin"] is None else summ["lyapunov_twin"],
                   lyapunov_jvp=nan if summ["lyapunov_jvp"] is None else summ["lyapunov_jvp"],
                   lyapunov_replicas=nan if summ["lyapunov_replicas"] is None
                   else summ["lyapunov_replicas"],
                   saturation_step=summ["saturation_step"], diverged_step=summ["diverged_step"],
                   loss_class=lc, seconds=summ["seconds"])


def _unit_vectors(n: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    v = torch.randn(n, dim, dtype=torch.float64, generator=generator)
    return v / v.norm(dim=1, keepdim=True)


def _batched_grad(batched_loss: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (B, P) and losses (B,) of B weight vectors ``ws`` (B, P) in one backward pass
    (the rows are independent, so the gradient of the summed loss is each row's gradient)."""
    with torch.enable_grad():
        wr = ws.detach().requires_grad_(True)
        losses = batched_loss(wr)
        (g,) = torch.autograd.grad(losses.sum(), wr)
    return g, losses.detach()


def _grad_hvp(loss_fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor, v: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad L(w), L(w) and the Hessian-vector product H(w) v, the last by differentiating
    grad L(w) . v once more (reverse over reverse).  H is symmetric, so H v is exactly the
    Jacobian-vector product ``torch.func.jvp(grad L, (w,), (v,))`` (a test checks this); this
    route is about 3x faster here than forward-over-reverse for small networks."""
    with torch.enable_grad():
        wr = w.detach().requires_grad_(True)
        loss = loss_fn(wr)
        (g,) = torch.autograd.grad(loss, wr, create_graph=True)
        (hv,) = torch.autograd.grad(g, wr, grad_outputs=v)
    return g.detach(), loss.detach(), hv.detach()


def _classify_run_loss(loss: np.ndarray) -> LossCurveClass:
    """:func:`classify_loss_curve` with default settings, or label ``"n/a"`` for a series too
    short to judge."""
    try:
        return classify_loss_curve(loss)
    except ValueError:
        return LossCurveClass("n/a", {"window": [0, int(loss.size)], "finite": bool(
            np.all(np.isfinite(loss)))})


def _check_replica_settings(lr: float, steps: int, eps: float, renorm_every: int, warmup: int,
                            tangent_mode: str) -> None:
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be a positive finite number, got {lr}.")
    if not (eps > 0):
        raise ValueError(f"eps must be > 0, got {eps}.")
    if tangent_mode not in ("double_backward", "forward"):
        raise ValueError(f"tangent_mode must be 'double_backward' or 'forward', got "
                         f"{tangent_mode!r}.")
    if renorm_every < 1:
        raise ValueError(f"renorm_every must be >= 1, got {renorm_every}.")
    if not 0 <= warmup < steps:
        raise ValueError(f"warmup must be in [0, steps), got warmup={warmup}, steps={steps}.")


def _start_directions(p: int, n_replicas: int, gen: torch.Generator, directions, tangent
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions of the replicas (R, P) and of the twin and tangent (P,)."""
    if directions is None:
        u = _unit_vectors(n_replicas, p, gen)
    else:
        u = torch.as_tensor(directions, dtype=torch.float64)
        if tuple(u.shape) != (n_replicas, p):
            raise ValueError(f"directions must have shape (n_replicas, n_params) = "
                             f"({n_replicas}, {p}), got {tuple(u.shape)}.")
        u = u / u.norm(dim=1, keepdim=True)
    if tangent is None:
        v = _unit_vectors(1, p, gen)[0]
    else:
        v = torch.as_tensor(tangent, dtype=torch.float64).reshape(p)
        v = v / v.norm()
    return u, v


def _empty_series(steps: int, n_replicas: int, renorm_every: int, jvp: bool
                  ) -> dict[str, np.ndarray]:
    """The series one :func:`train_replicas` call records (``ReplicaRun._ARRAYS``), all NaN."""
    nan = math.nan
    n_blocks = -(-steps // renorm_every)
    return {"loss": np.full(steps + 1, nan), "replica_loss": np.full((n_replicas, steps + 1), nan),
            "distance": np.full((n_replicas, steps + 1), nan),
            "weight_norm": np.full(steps + 1, nan), "twin_log_growth": np.full(n_blocks, nan),
            "twin_block_steps": np.array([min(renorm_every, steps - b * renorm_every)
                                          for b in range(n_blocks)], dtype=np.int64),
            "jvp_log_growth": np.full(steps if jvp else 0, nan)}


def _renormalised(offset: torch.Tensor, size: float | None, p: int, gen: torch.Generator
                  ) -> tuple[torch.Tensor, float]:
    """``(offset rescaled to norm size, ln(|offset| / size))``, ``size=None`` for a unit vector
    (divided by its norm); an offset that is zero or not finite is re-drawn along a random unit
    direction and logged as -inf or +inf."""
    n = float(offset.norm())
    if n > 0 and math.isfinite(n):
        if size is None:
            return offset / n, math.log(n)
        return offset * (size / n), math.log(n / size)
    unit = _unit_vectors(1, p, gen)[0]
    return unit if size is None else size * unit, -math.inf if n == 0 else math.inf


def _gd_steps(problem: TrainingProblem, lr: float, steps: int, w: torch.Tensor,
              others: torch.Tensor, v: torch.Tensor, gen: torch.Generator,
              series: dict[str, np.ndarray], *, n_replicas: int, eps: float, renorm_every: int,
              jvp: bool, tangent_mode: str) -> int:
    """Run the GD map on the reference ``w``, the replicas and twin (``others[:R]``,
    ``others[R]``) and the tangent ``v``, filling ``series``; returns the divergence step or -1."""
    loss_fn = problem.loss_fn
    batched_loss = problem.batched_loss_fn or torch.func.vmap(loss_fn)
    p = w.numel()
    for t in range(steps + 1):
        if jvp and t < steps:
            if tangent_mode == "forward":
                (g, l_ref), (hv, _) = torch.func.jvp(torch.func.grad_and_value(loss_fn),
                                                     (w,), (v,))
            else:
                g, l_ref, hv = _grad_hvp(loss_fn, w, v)
            g_o, l_o = _batched_grad(batched_loss, others)
        else:  # the reference rides along in the batch
            g_all, l_all = _batched_grad(batched_loss, torch.cat([w[None], others], dim=0))
            g, l_ref, g_o, l_o = g_all[0], l_all[0], g_all[1:], l_all[1:]
        l_ref_f = float(l_ref)
        series["loss"][t] = l_ref_f
        series["weight_norm"][t] = float(w.norm())
        if n_replicas:
            series["replica_loss"][:, t] = l_o[:n_replicas].numpy()
            series["distance"][:, t] = (others[:n_replicas] - w).norm(dim=1).numpy()
        if not (math.isfinite(l_ref_f) and math.isfinite(series["weight_norm"][t])):
            series["loss"][t] = math.nan
            return t
        if t == steps:
            break
        # one GD step for everything
        w = w - lr * g
        others = others - lr * g_o
        if jvp:
            v, series["jvp_log_growth"][t] = _renormalised(v - lr * hv, None, p, gen)
        if (t + 1) % renorm_every == 0 or t + 1 == steps:
            d, series["twin_log_growth"][t // renorm_every] = \
                _renormalised(others[n_replicas] - w, eps, p, gen)
            others[n_replicas] = w + d
    return -1


def _replica_exponent(distance: np.ndarray, eps: float, saturation: float) -> tuple[float, int]:
    """Finite-time exponent of the raw replicas and its saturation step (see
    :class:`ReplicaRun`); ``(nan, -1)`` without replicas."""
    if not distance.shape[0]:
        return math.nan, -1
    with np.errstate(divide="ignore", invalid="ignore"):
        log_d = np.mean(np.log(distance), axis=0)  # ln of the geometric mean distance
    valid = np.isfinite(log_d)
    over = np.flatnonzero(valid & (log_d > math.log(saturation)))
    last = np.flatnonzero(valid)[-1] if valid.any() else 0
    sat_step = int(over[0] - 1) if over.size else int(last)
    if sat_step >= 1:
        return float((log_d[sat_step] - math.log(eps)) / sat_step), sat_step
    return math.nan, sat_step


def _exponents(series: dict[str, np.ndarray], completed: int, warmup: int, renorm_every: int,
               jvp: bool) -> tuple[float, float]:
    """(twin, jvp) exponents over the completed steps from ``warmup`` on."""
    # twin: blocks that start at or after warmup and were completed
    blocks = series["twin_block_steps"]
    block_start = np.arange(blocks.size) * renorm_every
    counted = (block_start >= warmup) & (block_start + blocks <= completed)
    lyap_twin = math.nan
    if counted.any():
        lyap_twin = float(np.sum(series["twin_log_growth"][counted]) / np.sum(blocks[counted]))
    lyap_jvp = math.nan
    if jvp and completed > warmup:
        lyap_jvp = float(np.mean(series["jvp_log_growth"][warmup:completed]))
    return lyap_twin, lyap_jvp


def train_replicas(problem: TrainingProblem, lr: float, steps: int = 1000, *,
                   n_replicas: int = 4, eps: float = 1e-8, renorm_every: int = 1,
                   warmup: int = 0, jvp: bool = True, seed: int = 0,
                   saturation: float = 1e-2, directions: torch.Tensor | None = None,
                   tangent: torch.Tensor | None = None,
                   tangent_mode: str = "double_backward") -> ReplicaRun:
    """Train the reference, ``n_replicas`` perturbed replicas, a renormalised twin and (with
    ``jvp``) a tangent vector by full-batch GD at learning rate ``lr`` for ``steps`` steps.

    Replica r starts at w_0 + eps * u_r with u_r a random unit vector (seeded by ``seed``, or
    the rows of ``directions`` (R, P), normalised); the twin and the tangent start along one
    more random unit vector u (or ``tangent``, shape (P,)).  Each step updates all of them with
    the same map w -> w - lr * grad L(w): the replicas and the twin in one batched backward pass,
    the reference together with the tangent's Hessian-vector product (J v = v - lr * H v),
    computed by double backward (``tangent_mode="double_backward"``, default) or as
    ``torch.func.jvp`` of ``torch.func.grad_and_value`` (``tangent_mode="forward"``: forward
    over reverse, the same numbers up to rounding, about 3x slower here; for losses whose
    double backward is not implemented).  See the module docstring for the two exponent
    estimators.  All arithmetic is float64.

    Notes: the twin's offset is absolute, so when |w| grows beyond about eps / 1e-16 the twin
    loses resolution (the jvp estimate does not); a twin offset that rounds to exactly zero is
    recorded as log growth -inf and re-drawn.  ``renorm_every`` = 1 (default) keeps the twin
    linear even for exponents of several nats per step.
    """
    _check_replica_settings(lr, steps, eps, renorm_every, warmup, tangent_mode)
    t_start = time.perf_counter()
    w = problem.w0.detach().to(torch.float64).reshape(-1).clone()
    gen = torch.Generator().manual_seed(int(seed))
    u, v = _start_directions(w.numel(), n_replicas, gen, directions, tangent)
    others = torch.cat([w + eps * u, (w + eps * v)[None]], dim=0)  # replicas, then the twin
    series = _empty_series(steps, n_replicas, renorm_every, jvp)
    diverged_step = _gd_steps(problem, lr, steps, w, others, v, gen, series,
                              n_replicas=n_replicas, eps=eps, renorm_every=renorm_every,
                              jvp=jvp, tangent_mode=tangent_mode)
    completed = steps if diverged_step < 0 else diverged_step  # GD steps fully done
    lyap_twin, lyap_jvp = _exponents(series, completed, warmup, renorm_every, jvp)
    lyap_rep, sat_step = _replica_exponent(series["distance"], eps, saturation)
    return ReplicaRun(
        lr=float(lr), steps=int(steps), n_replicas=int(n_replicas), eps=float(eps),
        renorm_every=int(renorm_every), warmup=int(warmup), seed=int(seed), jvp=bool(jvp),
        tangent_mode=tangent_mode, saturation=float(saturation), problem=problem.name,
        problem_settings=dict(problem.settings), n_params=w.numel(),
        **series, lyapunov_twin=lyap_twin, lyapunov_jvp=lyap_jvp,
        lyapunov_replicas=lyap_rep, saturation_step=sat_step, diverged_step=int(diverged_step),
        loss_class=_classify_run_loss(series["loss"]), seconds=time.perf_counter() - t_start)


def training_lyapunov(problem: TrainingProblem, lr: float, steps: int = 1000, *,
                      method: str = "both", eps: float = 1e-8, renorm_every: int = 1,
                      warmup: int = 0, seed: int = 0) -> dict[str, float]:
    """Largest Lyapunov exponent (nats per GD step) of the training map at learning rate ``lr``.

    ``method``: ``"twin"`` (renormalised finite perturbation), ``"jvp"`` (Benettin method on
    the Jacobian of the GD step) or ``"both"``.  Returns {"twin": ..., "jvp": ...} with the
    requested entries.  This is :func:`train_replicas` without replicas; see it for details.
    """
    if method not in ("twin", "jvp", "both"):
        raise ValueError(f"method must be 'twin', 'jvp' or 'both', got {method!r}.")
    run = train_replicas(problem, lr, steps, n_replicas=0, eps=eps, renorm_every=renorm_every,
                         warmup=warmup, jvp=method != "twin", seed=seed)
    out = {}
    if method in ("twin", "both"):
        out["twin"] = run.lyapunov_twin
    if method in ("jvp", "both"):
        out["jvp"] = run.lyapunov_jvp
    return out


# --------------------------------------------------------------------------------------------
# Learning-rate sweep (resumable) and its figure
# --------------------------------------------------------------------------------------------

@dataclass
class LearningRateSweep:
    """One :class:`ReplicaRun` per learning rate, in increasing learning rate."""

    runs: list[ReplicaRun]

    @property
    def lrs(self) -> np.ndarray:
        return np.array([r.lr for r in self.runs])

    def table(self) -> list[dict]:
        """One row of scalars per learning rate (see :meth:`ReplicaRun.summary`)."""
        return [r.summary() for r in self.runs]

    def write_table(self, folder: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``summary.csv`` and ``summary.json`` into ``folder`` (atomically)."""
        folder = Path(folder)
        rows = self.table()
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})
        csv_path, json_path = folder / "summary.csv", folder / "summary.json"
        atomic_write_text(csv_path, buf.getvalue())
        settings = self.runs[0].settings() if self.runs else {}
        settings = {k: v for k, v in settings.items() if k != "lr"}
        write_json(json_path, {"settings": settings, "rows": rows})
        return csv_path, json_path


def run_filename(lr: float) -> str:
    """File name of one learning rate's run inside a sweep folder."""
    return f"lr_{lr:.6g}.safetensors"


def learning_rate_sweep(problem: TrainingProblem, lrs: Iterable[float] = DEFAULT_LEARNING_RATES,
                        steps: int = 1000, *, n_replicas: int = 4, eps: float = 1e-8,
                        renorm_every: int = 1, warmup: int = 0, jvp: bool = True, seed: int = 0,
                        saturation: float = 1e-2, tangent_mode: str = "double_backward",
                        out: str | os.PathLike | None = None,
                        progress: bool = True) -> LearningRateSweep:
    """Run :func:`train_replicas` for every learning rate, all from the same initial weights and
    the same perturbation directions (same ``seed``).

    With ``out`` (a folder, a :class:`mdesc.store.RunFolder`), the sweep's settings are recorded
    in ``out/settings.json`` and each learning rate's run is saved to
    ``out/lr_<lr>.safetensors`` as soon as it finishes; a learning rate whose file exists is
    loaded instead of recomputed, so an interrupted sweep continues where it stopped, and more
    learning rates can be added later.  A folder holding a run made with other settings raises
    :class:`mdesc.store.SettingsMismatch` naming every differing setting.
    """
    lrs = sorted(float(x) for x in lrs)
    if not lrs:
        raise ValueError("learning_rate_sweep: no learning rates given.")
    kwargs = dict(n_replicas=n_replicas, eps=eps, renorm_every=renorm_every, warmup=warmup,
                  jvp=jvp, seed=seed, saturation=saturation, tangent_mode=tangent_mode)
    folder = None
    if out is not None:
        folder = RunFolder(out)
        folder.open({"kind": "trajectories learning-rate sweep", "steps": steps, **kwargs,
                     "problem": problem.name, "problem_settings": problem.settings,
                     "n_params": problem.n_params})
    runs: list[ReplicaRun] = []
    bar = None
    if progress:  # tqdm only when a progress bar is asked for
        from tqdm.auto import tqdm
        bar = tqdm(total=len(lrs), desc="learning rates", unit="lr")
    for lr in lrs:
        path = folder.path(run_filename(lr)) if folder is not None else None
        if path is not None and path.exists():
            run = ReplicaRun.load(path)
        else:
            run = train_replicas(problem, lr, steps, **kwargs)
            if path is not None:
                run.save(path)
        runs.append(run)
        if bar is not None:
            bar.set_postfix(lr=f"{lr:.3g}", regime=run.regime)
            bar.update(1)
    if bar is not None:
        bar.close()
    return LearningRateSweep(runs)
