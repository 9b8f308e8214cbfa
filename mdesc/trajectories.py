"""Chaos in training trajectories: the gradient-descent map and its Lyapunov exponent.

Training by full-batch gradient descent (GD) is a deterministic map on weight space,

    w_{t+1} = F(w_t) = w_t - lr * grad L(w_t),

so it can be studied like any dynamical system (Danovski, Soriano & Lacasa, "Dynamical
stability and chaos in artificial neural network trajectories along training", Front. Complex
Syst. 2:1367957, 2024; arXiv:2404.05782).  This module trains a reference network together
with replicas whose initial weights are moved by a distance ``eps`` and measures, per
learning rate:

* the Euclidean distance |w_r(t) - w(t)| between each replica and the reference, per step;
* the largest Lyapunov exponent of the training map F (natural-log growth per GD step),
  estimated twice:

  - **twin** (finite perturbation): a twin trajectory starts at w_0 + eps*u; after every
    ``renorm_every`` steps its offset d from the reference is measured, log(|d|/eps) is
    accumulated and the offset is rescaled back to length eps along d.  Because the offset never
    grows past eps * exp(lambda * renorm_every) the estimate is not capped by saturation (the
    raw replica distance saturates at the size of the weights).
  - **jvp** (Benettin method on the tangent map): a tangent vector v is pushed through the
    Jacobian of one GD step, J v = v - lr * H(w_t) v with H the Hessian of L, renormalised
    every step, log|J v| accumulated.  H v is the Jacobian-vector product of grad L; it is
    computed by double backward (equal to ``torch.func.jvp`` of ``torch.func.grad`` because H
    is symmetric, and faster here).  No finite-difference error; costs about two gradients.

  Both start from the same unit direction u, so they differ only by the finite size of eps.
  Units: nats per step; lambda < 0 means nearby trajectories converge, lambda > 0 chaos.
  For a quadratic L = 1/2 sum_i a_i w_i^2 the exact answer is max_i ln|1 - lr * a_i|.
* a finite-time exponent from the raw replicas (the slope of their mean log distance up to the
  step where it saturates), i.e. what the divergence curves show before they flatten;
* a label for the reference loss curve (:func:`classify_loss_curve`): ``monotone``,
  ``oscillating`` (periodic or quasi-periodic), ``intermittent``, ``irregular`` or ``diverged``.

Everything runs in float64 (eps = 1e-8 is far below float32 resolution of weights of order 1).
The public names are :class:`TrainingProblem`, :func:`module_problem`, :func:`dataset_problem`,
:func:`quadratic_problem`, :func:`train_replicas`, :class:`ReplicaRun`,
:func:`training_lyapunov`, :class:`LossCurveClass`, :func:`classify_loss_curve`,
:func:`learning_rate_sweep`, :class:`LearningRateSweep`, :func:`plot_learning_rate_sweep` and
:data:`LOSS_CURVE_LABELS`.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from mdesc.store import atomic_path, atomic_write, atomic_write_text

__all__ = [
    "TrainingProblem",
    "module_problem",
    "dataset_problem",
    "quadratic_problem",
    "ReplicaRun",
    "train_replicas",
    "training_lyapunov",
    "LossCurveClass",
    "LOSS_CURVE_LABELS",
    "classify_loss_curve",
    "LearningRateSweep",
    "learning_rate_sweep",
    "plot_learning_rate_sweep",
    "DEFAULT_LEARNING_RATES",
    "SettingsMismatch",
    "run_filename",
]

#: Default learning-rate sweep: 16 values log-spaced from 0.01 to 10.
DEFAULT_LEARNING_RATES: tuple[float, ...] = tuple(float(f"{x:.4g}") for x in np.logspace(-2, 1, 16))

#: Labels returned by :func:`classify_loss_curve`, in the order they are tested.
LOSS_CURVE_LABELS: tuple[str, ...] = ("diverged", "monotone", "intermittent", "oscillating",
                                      "irregular")


# --------------------------------------------------------------------------------------------
# Problems: a loss on a flat float64 weight vector plus the initial weights
# --------------------------------------------------------------------------------------------

@dataclass
class TrainingProblem:
    """A loss on flat weight vectors and the initial weights it is trained from.

    Attributes:
        loss_fn: ``loss_fn(w) -> scalar tensor`` for a float64 vector ``w`` of shape (P,).  It
            must be a pure function of ``w`` that autograd can differentiate twice and
            ``torch.func.vmap`` can batch (no in-place updates of ``w``, no ``.item()``).
        w0: float64 tensor (P,), the reference network's initial weights.
        name: short description recorded in every result.
        settings: how the problem was built (data set, architecture, seed ...), recorded in
            results and compared when a sweep resumes.
        batched_loss_fn: optional ``f(W) -> losses`` for W of shape (B, P), losses (B,), equal
            to ``loss_fn`` row by row; default ``torch.func.vmap(loss_fn)``.
    """

    loss_fn: Callable[[torch.Tensor], torch.Tensor]
    w0: torch.Tensor
    name: str = "problem"
    settings: dict = field(default_factory=dict)
    batched_loss_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def n_params(self) -> int:
        return int(self.w0.numel())


def module_problem(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   loss: str | Callable = "cross_entropy", name: str = "module",
                   settings: dict | None = None) -> TrainingProblem:
    """Full-batch training problem for any ``nn.Module``: L(w) = loss(model_w(inputs), targets).

    The module's parameters are flattened (in ``named_parameters`` order) into one float64
    vector; the model and the inputs are converted to float64.  ``loss`` is
    ``"cross_entropy"`` (``targets`` integer class ids, shape (N,)), ``"mse"`` (``targets``
    shaped like the output) or a callable ``loss(output, targets) -> scalar``.  Buffers (e.g.
    batch-norm statistics) are held fixed; use modules whose forward pass is a pure function
    of their parameters.
    """
    model = copy.deepcopy(model).to(torch.float64)  # the caller's module is left as it was
    names, shapes, numels = [], [], []
    for n, p in model.named_parameters():
        names.append(n)
        shapes.append(tuple(p.shape))
        numels.append(p.numel())
    if not names:
        raise ValueError("module_problem: the model has no parameters to train; pass a module "
                         "with at least one nn.Parameter.")
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    x = inputs.to(torch.float64) if inputs.is_floating_point() else inputs
    if loss == "cross_entropy":
        if targets.is_floating_point():
            raise ValueError("module_problem: loss='cross_entropy' needs integer class ids as "
                             "targets; use loss='mse' for real-valued targets.")
        y = targets.long()
        loss_of = torch.nn.functional.cross_entropy
    elif loss == "mse":
        y = targets.to(torch.float64)
        loss_of = torch.nn.functional.mse_loss
    elif callable(loss):
        y = targets.to(torch.float64) if targets.is_floating_point() else targets
        loss_of = loss
    else:
        raise ValueError(f"module_problem: unknown loss {loss!r}; use 'cross_entropy', 'mse' or "
                         "a callable loss(output, targets).")

    def loss_fn(w: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(w, numels)
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return loss_of(torch.func.functional_call(model, params, (x,)), y)

    info = {"kind": "module", "model": type(model).__name__, "n_params": int(w0.numel()),
            "n_samples": int(inputs.shape[0]),
            "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable")}
    info.update(settings or {})
    return TrainingProblem(loss_fn=loss_fn, w0=w0, name=name, settings=info)


_DATASETS = ("iris", "wine", "breast_cancer", "digits")
_ACTIVATIONS = ("tanh", "sigmoid", "relu")


def dataset_problem(dataset: str = "iris", hidden: int | Sequence[int] = 16,
                    activation: str = "tanh", seed: int = 0, loss: str = "cross_entropy",
                    standardize: bool = False,
                    model_factory: Callable[[int, int], torch.nn.Module] | None = None
                    ) -> TrainingProblem:
    """The study's setting: a small MLP classifier trained full-batch on a scikit-learn data set.

    The data set (``"iris"`` by default; also ``"wine"``, ``"breast_cancer"``, ``"digits"``,
    all shipped with scikit-learn, no download) is used whole as the training set, with its
    raw features (Iris: lengths in cm, 0.1 to 7.9) or, with ``standardize``, each feature
    scaled to zero mean and unit variance (which lowers the curvature and moves every regime
    to larger learning rates).  The model is
    ``Linear(d, h1) -> act -> ... -> Linear(h_k, n_classes)`` with PyTorch's default
    initialisation drawn after ``torch.manual_seed(seed)``.  ``loss`` is ``"cross_entropy"``
    (mean over samples) or ``"mse"`` (mean squared error of the raw outputs against one-hot
    targets).  ``model_factory(n_features, n_classes) -> nn.Module`` replaces the MLP.
    """
    from sklearn import datasets as skd

    loaders = {"iris": skd.load_iris, "wine": skd.load_wine,
               "breast_cancer": skd.load_breast_cancer, "digits": skd.load_digits}
    if dataset not in loaders:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {', '.join(_DATASETS)}.")
    if loss not in ("cross_entropy", "mse"):
        raise ValueError(f"unknown loss {loss!r}; choose 'cross_entropy' or 'mse'.")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of "
                         f"{', '.join(_ACTIVATIONS)}.")
    data = loaders[dataset]()
    x = np.asarray(data.data, dtype=np.float64)
    if standardize:
        std = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    y = np.asarray(data.target, dtype=np.int64)
    n_features, n_classes = x.shape[1], int(y.max()) + 1
    hidden_sizes = [int(hidden)] if np.isscalar(hidden) else [int(h) for h in hidden]
    if any(h < 1 for h in hidden_sizes):
        raise ValueError(f"hidden layer sizes must be >= 1, got {hidden_sizes}.")
    torch.manual_seed(seed)
    if model_factory is None:
        act = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
               "relu": torch.nn.ReLU}[activation]
        layers: list[torch.nn.Module] = []
        width = n_features
        for h in hidden_sizes:
            layers += [torch.nn.Linear(width, h), act()]
            width = h
        layers.append(torch.nn.Linear(width, n_classes))
        model = torch.nn.Sequential(*layers)
        sizes = "-".join(map(str, [n_features, *hidden_sizes, n_classes]))
        arch = f"MLP {sizes} {activation}"
    else:
        model = model_factory(n_features, n_classes)
        arch = getattr(model_factory, "__name__", "model_factory")
    settings = {"dataset": dataset, "hidden": hidden_sizes, "activation": activation,
                "model_seed": seed, "architecture": arch, "loss": loss,
                "standardize": bool(standardize)}
    targets = torch.from_numpy(y)
    if loss == "mse":
        targets = torch.nn.functional.one_hot(targets, n_classes).to(torch.float64)
    loss_name = {"cross_entropy": "cross-entropy", "mse": "MSE (one-hot)"}[loss]
    return module_problem(model, torch.from_numpy(x), targets, loss,
                          name=f"{dataset}: {arch}, full-batch {loss_name}", settings=settings)


def quadratic_problem(curvatures: Sequence[float] | float, w0: Sequence[float] | float | None = None
                      ) -> TrainingProblem:
    """L(w) = 1/2 sum_i a_i w_i^2 with curvatures a_i: the known-answer test problem.

    GD on it is linear, w_{t+1} = (1 - lr*a) * w_t, so the training map's Lyapunov exponent is
    exactly max_i ln|1 - lr*a_i| and a perturbation along e_i scales by |1 - lr*a_i| per step.
    ``w0`` defaults to all ones.
    """
    a = torch.as_tensor(np.atleast_1d(np.asarray(curvatures, dtype=np.float64)))
    w = torch.ones_like(a) if w0 is None else torch.as_tensor(
        np.broadcast_to(np.asarray(w0, dtype=np.float64), a.shape).copy())

    def loss_fn(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.sum(a * v * v)

    return TrainingProblem(loss_fn=loss_fn, w0=w, name=f"quadratic a={a.tolist()}",
                           settings={"kind": "quadratic", "curvatures": a.tolist(),
                                     "w0": w.tolist()})


# --------------------------------------------------------------------------------------------
# Loss-curve classification
# --------------------------------------------------------------------------------------------

@dataclass
class LossCurveClass:
    """The label of one loss curve and the statistics it was decided from (see
    :func:`classify_loss_curve`)."""

    label: str
    stats: dict

    def __str__(self) -> str:
        return self.label


def _runs(mask: np.ndarray, merge_gap: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) runs of True in ``mask``, merging runs separated by fewer than
    ``merge_gap`` False entries."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    runs = []
    start = prev = int(idx[0])
    for i in idx[1:]:
        i = int(i)
        if i - prev > merge_gap:
            runs.append((start, prev + 1))
            start = i
        prev = i
    runs.append((start, prev + 1))
    return runs


def classify_loss_curve(loss: Sequence[float] | np.ndarray, *, tail: float = 0.5,
                        diverge_factor: float = 1e3, increase_rtol: float = 1e-9,
                        monotone_max_increasing: float = 0.02, burst_factor: float = 10.0,
                        burst_max_fraction: float = 0.25, min_bursts: int = 2,
                        burst_merge_gap: int = 3, spectral_peaks: int = 3,
                        spectral_min_concentration: float = 0.5) -> LossCurveClass:
    """Label a loss series L_0 .. L_T by the kind of dynamics it shows late in training.

    Only the last ``tail`` fraction of the series is judged (the asymptotic behaviour; an
    early transient such as a catapult does not decide the label), except for divergence.
    With y_t = ln L_t (or L_t itself if some L_t <= 0) on that window and its increments
    dy_t = y_{t+1} - y_t, the tests are applied in this order and the first that holds wins:

    1. ``diverged``: some L_t is not finite (NaN/inf, or the run stopped), or
       max_t L_t > ``diverge_factor`` * L_0 anywhere in the series.
    2. ``monotone``: the fraction of increasing steps, ``frac_increasing`` = fraction of t with
       L_{t+1} - L_t > ``increase_rtol`` * |L_t|, is at most ``monotone_max_increasing``.
       (The relative tolerance keeps float rounding at a converged loss from counting.)
    3. ``intermittent``: calm stretches interrupted by bursts.  The activity a_t = |dy_t| is a
       burst where it exceeds ``burst_factor`` times its median (the calm level); bursts are
       contiguous runs of such steps (runs fewer than ``burst_merge_gap`` steps apart are one
       burst).  Intermittent if there are at least ``min_bursts`` bursts and burst steps make up
       at most ``burst_max_fraction`` of the window (bursts are rare and large).
    4. ``oscillating`` (periodic or quasi-periodic): the power spectrum of the increments dy
       (mean removed, Hann window; differencing removes the slow trend and whitens a random
       walk) is concentrated in a few lines: ``spectral_concentration`` = share of the power
       (zero frequency excluded) in the ``spectral_peaks`` highest local maxima, each counted
       with its two neighbouring bins, is at least ``spectral_min_concentration``.  White noise
       gives about 3 * spectral_peaks / (window/2); a period-2 oscillation gives ~1.
    5. ``irregular``: none of the above (broadband, non-bursty, random-looking).

    Args:
        loss: the loss series, shape (T+1,).  At least 16 points must fall in the window.
    Returns:
        :class:`LossCurveClass` with ``label`` and ``stats`` = {``frac_increasing``,
        ``spectral_concentration``, ``dominant_period`` (steps), ``n_bursts``,
        ``burst_fraction``, ``max_over_initial``, ``tail_over_initial`` (median loss of the
        window / |L_0|: above 1 means training made the loss worse), ``window`` (start, stop),
        ``finite``}.  Statistics that were not reached are NaN.
    """
    loss = np.asarray(loss, dtype=np.float64).reshape(-1)
    n = loss.size
    start = int(math.floor(n * (1.0 - tail)))
    window = loss[start:]
    if window.size < 16:
        raise ValueError(f"classify_loss_curve: the analysed window has {window.size} points "
                         f"(series of {n}, tail={tail}); pass a longer series or a larger tail.")
    finite = bool(np.all(np.isfinite(loss)))
    stats: dict = {"window": [start, n], "finite": finite}
    l0 = abs(loss[0]) if np.isfinite(loss[0]) and loss[0] != 0 else 1.0
    any_finite = bool(np.any(np.isfinite(loss)))
    max_over_initial = float(np.nanmax(np.abs(loss)) / l0) if any_finite else math.inf
    stats["max_over_initial"] = max_over_initial
    nan_stats = {"frac_increasing": math.nan, "tail_over_initial": math.nan,
                 "spectral_concentration": math.nan,
                 "dominant_period": math.nan, "n_bursts": 0, "burst_fraction": math.nan}
    if not finite or max_over_initial > diverge_factor:
        stats.update(nan_stats)
        return LossCurveClass("diverged", stats)

    dl = np.diff(window)
    frac_up = float(np.mean(dl > increase_rtol * np.abs(window[:-1])))
    stats["frac_increasing"] = frac_up
    stats["tail_over_initial"] = float(np.median(window) / l0)

    y = np.log(window) if np.all(window > 0) else window
    dy = np.diff(y)
    activity = np.abs(dy)
    calm = float(np.median(activity))
    bursts = _runs(activity > burst_factor * calm, burst_merge_gap) if calm > 0 else []
    burst_steps = sum(b - a for a, b in bursts)
    stats["n_bursts"] = len(bursts)
    stats["burst_fraction"] = burst_steps / activity.size

    x = (dy - dy.mean()) * np.hanning(dy.size)
    power = np.abs(np.fft.rfft(x)) ** 2
    power[0] = 0.0
    total = power.sum()
    if total > 0:
        interior = np.r_[False, (power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:]), False]
        if power[-1] >= power[-2]:
            interior[-1] = True  # a line at the Nyquist frequency (period 2) is a peak too
        peaks = np.flatnonzero(interior)
        top = peaks[np.argsort(power[peaks])[::-1][:spectral_peaks]]
        counted = np.zeros(power.size, dtype=bool)
        for k in top:
            counted[max(k - 1, 1):k + 2] = True
        concentration = float(power[counted].sum() / total)
        k_max = int(np.argmax(power))
        dominant_period = float(dy.size / k_max) if k_max > 0 else math.inf
    else:
        concentration, dominant_period = 0.0, math.inf
    stats["spectral_concentration"] = concentration
    stats["dominant_period"] = dominant_period

    if frac_up <= monotone_max_increasing:
        return LossCurveClass("monotone", stats)
    if len(bursts) >= min_bursts and stats["burst_fraction"] <= burst_max_fraction:
        return LossCurveClass("intermittent", stats)
    if concentration >= spectral_min_concentration:
        return LossCurveClass("oscillating", stats)
    return LossCurveClass("irregular", stats)


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
        """Write the run to ``path`` (.npz arrays plus JSON metadata), atomically."""
        path = Path(path)
        meta = {"settings": self.settings(), "summary": self.summary(),
                "loss_class": {"label": self.loss_class.label, "stats": self.loss_class.stats}}
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        atomic_write(path, lambda f: np.savez_compressed(
            f, meta=np.array(json.dumps(meta, default=_json_default)), **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReplicaRun":
        """Read a run written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: np.array(z[k]) for k in cls._ARRAYS}
        s, summ = meta["settings"], meta["summary"]
        lc = LossCurveClass(meta["loss_class"]["label"], meta["loss_class"]["stats"])
        return cls(**s, **arrays, lyapunov_twin=summ["lyapunov_twin"],
                   lyapunov_jvp=summ["lyapunov_jvp"], lyapunov_replicas=summ["lyapunov_replicas"],
                   saturation_step=summ["saturation_step"], diverged_step=summ["diverged_step"],
                   loss_class=lc, seconds=summ["seconds"])


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


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
    t_start = time.perf_counter()
    loss_fn = problem.loss_fn
    w = problem.w0.detach().to(torch.float64).reshape(-1).clone()
    p = w.numel()
    gen = torch.Generator().manual_seed(int(seed))
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
    # others[:R] = replicas, others[R] = twin
    others = torch.cat([w + eps * u, (w + eps * v)[None]], dim=0)

    batched_loss = problem.batched_loss_fn or torch.func.vmap(loss_fn)

    nan = math.nan
    loss = np.full(steps + 1, nan)
    replica_loss = np.full((n_replicas, steps + 1), nan)
    distance = np.full((n_replicas, steps + 1), nan)
    weight_norm = np.full(steps + 1, nan)
    n_blocks = -(-steps // renorm_every)
    twin_log = np.full(n_blocks, nan)
    twin_block_steps = np.array([min(renorm_every, steps - b * renorm_every)
                                 for b in range(n_blocks)], dtype=np.int64)
    jvp_log = np.full(steps if jvp else 0, nan)
    diverged_step = -1

    t = 0
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
        loss[t] = l_ref_f
        weight_norm[t] = float(w.norm())
        if n_replicas:
            replica_loss[:, t] = l_o[:n_replicas].numpy()
            distance[:, t] = (others[:n_replicas] - w).norm(dim=1).numpy()
        if not (math.isfinite(l_ref_f) and math.isfinite(weight_norm[t])):
            diverged_step = t
            loss[t] = nan
            break
        if t == steps:
            break
        # one GD step for everything
        w = w - lr * g
        others = others - lr * g_o
        if jvp:
            v = v - lr * hv
            nv = float(v.norm())
            if nv > 0 and math.isfinite(nv):
                jvp_log[t] = math.log(nv)
                v = v / nv
            else:
                jvp_log[t] = -math.inf if nv == 0 else math.inf
                v = _unit_vectors(1, p, gen)[0]
        if (t + 1) % renorm_every == 0 or t + 1 == steps:
            b = t // renorm_every
            d = others[n_replicas] - w
            nd = float(d.norm())
            if nd > 0 and math.isfinite(nd):
                twin_log[b] = math.log(nd / eps)
                others[n_replicas] = w + d * (eps / nd)
            else:
                twin_log[b] = -math.inf if nd == 0 else math.inf
                others[n_replicas] = w + eps * _unit_vectors(1, p, gen)[0]

    completed = steps if diverged_step < 0 else diverged_step  # GD steps fully done
    # twin: blocks that start at or after warmup and were completed
    block_start = np.arange(n_blocks) * renorm_every
    counted = (block_start >= warmup) & (block_start + twin_block_steps <= completed)
    if counted.any():
        lyap_twin = float(np.sum(twin_log[counted]) / np.sum(twin_block_steps[counted]))
    else:
        lyap_twin = nan
    if jvp and completed > warmup:
        lyap_jvp = float(np.mean(jvp_log[warmup:completed]))
    else:
        lyap_jvp = nan

    lyap_rep, sat_step = nan, -1
    if n_replicas:
        with np.errstate(divide="ignore", invalid="ignore"):
            log_d = np.mean(np.log(distance), axis=0)  # ln of the geometric mean distance
        valid = np.isfinite(log_d)
        over = np.flatnonzero(valid & (log_d > math.log(saturation)))
        last = np.flatnonzero(valid)[-1] if valid.any() else 0
        sat_step = int(over[0] - 1) if over.size else int(last)
        if sat_step >= 1:
            lyap_rep = float((log_d[sat_step] - math.log(eps)) / sat_step)

    run = ReplicaRun(
        lr=float(lr), steps=int(steps), n_replicas=int(n_replicas), eps=float(eps),
        renorm_every=int(renorm_every), warmup=int(warmup), seed=int(seed), jvp=bool(jvp),
        tangent_mode=tangent_mode,
        saturation=float(saturation), problem=problem.name,
        problem_settings=dict(problem.settings), n_params=p, loss=loss,
        replica_loss=replica_loss, distance=distance, weight_norm=weight_norm,
        twin_log_growth=twin_log, twin_block_steps=twin_block_steps, jvp_log_growth=jvp_log,
        lyapunov_twin=lyap_twin, lyapunov_jvp=lyap_jvp, lyapunov_replicas=lyap_rep,
        saturation_step=sat_step, diverged_step=int(diverged_step),
        loss_class=_classify_run_loss(loss), seconds=time.perf_counter() - t_start)
    return run


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
        import csv
        import io

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
        atomic_write_text(json_path, json.dumps(_finite_or_none({"settings": settings,
                                                                   "rows": rows}),
                                                 indent=1, default=_json_default,
                                                 allow_nan=False) + "\n")
        return csv_path, json_path


def _finite_or_none(o):
    """Replace NaN and infinities by None (null) so the JSON is standard."""
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_none(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def run_filename(lr: float) -> str:
    """File name of one learning rate's run inside a sweep folder."""
    return f"lr_{lr:.6g}.npz"


class SettingsMismatch(ValueError):
    """A stored run was made with different settings than the sweep asks for."""


def learning_rate_sweep(problem: TrainingProblem, lrs: Iterable[float] = DEFAULT_LEARNING_RATES,
                        steps: int = 1000, *, n_replicas: int = 4, eps: float = 1e-8,
                        renorm_every: int = 1, warmup: int = 0, jvp: bool = True, seed: int = 0,
                        saturation: float = 1e-2, tangent_mode: str = "double_backward",
                        out: str | os.PathLike | None = None,
                        progress: bool = True) -> LearningRateSweep:
    """Run :func:`train_replicas` for every learning rate, all from the same initial weights and
    the same perturbation directions (same ``seed``).

    With ``out`` (a folder), each learning rate's run is saved to ``out/lr_<lr>.npz`` as soon
    as it finishes, and a learning rate whose file exists is loaded instead of recomputed, so
    an interrupted sweep continues where it stopped.  A stored run made with other settings
    raises :class:`SettingsMismatch` (choose another folder or delete the file).
    """
    lrs = sorted(float(x) for x in lrs)
    if not lrs:
        raise ValueError("learning_rate_sweep: no learning rates given.")
    folder = Path(out) if out is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    kwargs = dict(n_replicas=n_replicas, eps=eps, renorm_every=renorm_every, warmup=warmup,
                  jvp=jvp, seed=seed, saturation=saturation, tangent_mode=tangent_mode)
    runs: list[ReplicaRun] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(lrs), desc="learning rates", unit="lr")
    for lr in lrs:
        path = folder / run_filename(lr) if folder is not None else None
        run = None
        if path is not None and path.exists():
            run = ReplicaRun.load(path)
            want = {"lr": lr, "steps": steps, "n_replicas": n_replicas, "eps": eps,
                    "renorm_every": renorm_every, "warmup": warmup, "seed": seed, "jvp": jvp,
                    "tangent_mode": tangent_mode, "saturation": saturation, "problem": problem.name,
                    "problem_settings": json.loads(json.dumps(problem.settings,
                                                              default=_json_default)),
                    "n_params": problem.n_params}
            have = run.settings()
            diff = [k for k in want if have.get(k) != want[k]]
            if diff:
                raise SettingsMismatch(
                    f"{path} was made with different settings ({', '.join(diff)}: stored "
                    f"{[have.get(k) for k in diff]}, asked {[want[k] for k in diff]}); use another "
                    "output folder or delete that file.")
        if run is None:
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


_REGIME_COLOURS = {"monotone": "#4c9be8", "oscillating": "#6cc06c", "intermittent": "#f0a030",
                   "irregular": "#d04848", "diverged": "#888888"}


def _default_show(runs: list[ReplicaRun], n: int = 6) -> list[int]:
    """Indices of up to ``n`` learning rates worth showing: both ends, the largest exponent,
    the first learning rate of each new regime, then evenly spaced fill-ins."""
    lam = np.array([r.lyapunov_twin for r in runs], dtype=float)
    chosen = [0, len(runs) - 1]
    if np.isfinite(lam).any():
        chosen.append(int(np.nanargmax(np.where(np.isfinite(lam), lam, np.nan))))
    chosen += [i for i in range(1, len(runs)) if runs[i].regime != runs[i - 1].regime]
    chosen = list(dict.fromkeys(chosen))[:n]
    for i in np.linspace(0, len(runs) - 1, n).round().astype(int):
        if len(chosen) >= min(n, len(runs)):
            break
        if int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen)


def plot_learning_rate_sweep(sweep: LearningRateSweep, path: str | os.PathLike, *,
               show_lrs: Sequence[float] | None = None, title: str | None = None) -> Path:
    """Save the sweep's figure (PNG, matplotlib Agg) to ``path`` and return the path.

    Top row: (a) the training map's largest Lyapunov exponent against the learning rate (log
    x axis, symmetric-log y axis, linear within +-1e-3): twin, JVP and raw-replica finite-time
    estimates, the background at each learning rate coloured by the loss-curve regime;
    (b) divergence curves, log10 of the geometric-mean replica distance against the step.
    Bottom row: the reference loss series of each shown learning rate, with an inset of its
    last 40 steps (the late-time pattern that decided the regime).  ``show_lrs`` picks the
    learning rates of (b) and the bottom row (nearest in the sweep); default up to 6 chosen by
    :func:`_default_show`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    runs = sweep.runs
    lrs = sweep.lrs
    if show_lrs is None:
        idx = _default_show(runs)
    else:
        idx = sorted({int(np.argmin(np.abs(np.log(lrs) - math.log(x)))) for x in show_lrs})
    ncols = max(len(idx), 2)
    fig = plt.figure(figsize=(3.0 * max(ncols, 5), 8.6))
    grid = fig.add_gridspec(2, ncols, height_ratios=[1.25, 1.0], hspace=0.42, wspace=0.38)
    half = ncols // 2
    ax = fig.add_subplot(grid[0, :half])
    ax_d = fig.add_subplot(grid[0, half:])

    # (a) exponent vs learning rate, regime bands between geometric midpoints
    if len(lrs) > 1:
        edges = np.sqrt(lrs[:-1] * lrs[1:])
        lo = np.r_[lrs[0] ** 2 / edges[0], edges]
        hi = np.r_[edges, lrs[-1] ** 2 / edges[-1]]
    else:
        lo, hi = lrs / 1.2, lrs * 1.2
    for r, a, b in zip(runs, lo, hi):
        ax.axvspan(a, b, color=_REGIME_COLOURS.get(r.regime, "white"), alpha=0.25, lw=0)
    ax.plot(lrs, [r.lyapunov_twin for r in runs], "o-", color="k", label="twin (renormalised)")
    if any(r.jvp for r in runs):
        ax.plot(lrs, [r.lyapunov_jvp for r in runs], "x--", color="C3", ms=8,
                label="JVP (Benettin, tangent map)")
    if any(r.n_replicas for r in runs):
        ax.plot(lrs, [r.lyapunov_replicas for r in runs], "s:", color="C0", ms=4, mfc="none",
                label="raw replicas, finite-time (to saturation)")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    shown = np.array([[r.lyapunov_twin, r.lyapunov_jvp, r.lyapunov_replicas] for r in runs])
    shown = shown[np.isfinite(shown)]
    if shown.size and shown.min() >= 0:
        ax.set_ylim(bottom=-2e-4)  # nothing negative to show: keep the axis on the data
    ax.set_xlim(lo[0], hi[-1])
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("largest Lyapunov exponent λ (nats / GD step)")
    ax.set_title("(a) training-map exponent vs learning rate")
    regimes = [k for k in _REGIME_COLOURS if any(r.regime == k for r in runs)]
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=_REGIME_COLOURS[k], alpha=0.4, label=f"late loss: {k}")
                for k in regimes]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left")

    # (b) divergence curves
    cmap = plt.get_cmap("viridis")
    colours = [cmap(0.9 * i / max(1, len(idx) - 1)) for i in range(len(idx))]
    for c, i in zip(colours, idx):
        r = runs[i]
        if r.n_replicas:
            with np.errstate(divide="ignore", invalid="ignore"):
                logd = np.mean(np.log10(r.distance), axis=0)
            ax_d.plot(np.arange(logd.size), logd, color=c, lw=1.2,
                      label=f"η = {r.lr:.3g} (λ = {r.lyapunov_twin:+.3g})")
    ax_d.set_xlabel("GD step t")
    ax_d.set_ylabel("log10 |w_r(t) − w(t)| (geometric mean over replicas)")
    ax_d.set_title(f"(b) divergence of replicas started ε = {runs[0].eps:.0e} apart")
    ax_d.legend(fontsize=7.5)

    # bottom row: loss series, one panel per shown learning rate
    for col, (c, i) in enumerate(zip(colours, idx)):
        r = runs[i]
        axl = fig.add_subplot(grid[1, col])
        t = np.arange(r.loss.size)
        axl.plot(t, r.loss, color=c, lw=0.6)
        axl.set_yscale("log")
        axl.set_title(f"η = {r.lr:.3g}: {r.regime}", fontsize=9,
                      color=_REGIME_COLOURS.get(r.regime, "k"))
        axl.set_xlabel("GD step t", fontsize=8)
        axl.tick_params(labelsize=7)
        if col == 0:
            axl.set_ylabel("training loss")
        finite = np.flatnonzero(np.isfinite(r.loss))
        if finite.size >= 40:
            last = finite[-40:]
            ins = axl.inset_axes([0.5, 0.55, 0.46, 0.4])
            ins.plot(last, r.loss[last], ".-", color=c, lw=0.6, ms=2)
            ins.tick_params(labelsize=5)
            ins.ticklabel_format(axis="y", style="plain", useOffset=False)
            ins.set_title("last 40 steps", fontsize=6, pad=2)
    fig.suptitle(title or runs[0].problem, fontsize=11)
    path = Path(path)
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
