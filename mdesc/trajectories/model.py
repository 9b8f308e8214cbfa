"""What is trained: training problems for the gradient-descent map (study 3).

Two kinds of problem:

* :class:`TrainingProblem` — any loss of one flat float64 weight vector (with
  :func:`module_problem` for an ``nn.Module``, :func:`dataset_problem` for a small MLP on a
  scikit-learn data set, :func:`quadratic_problem` for the known-answer quadratic).  Trained one
  trajectory at a time by :func:`mdesc.trajectories.run.train_replicas`.
* :class:`BatchedProblem` — a loss of many weight vectors at once, rows of a (M, P) matrix, with
  its batched gradient and Hessian-vector product.  :class:`MLPEnsemble` is the paper's network
  (:func:`paper_problem`): every row is one MLP, and a forward/backward pass of M networks is a
  few batched matrix products (``torch.matmul`` over a model axis), so hundreds of
  initialisations and their perturbed replicas train as one computation
  (:mod:`mdesc.trajectories.ensemble`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from sklearn import datasets as skd

__all__ = [
    "TrainingProblem", "module_problem", "dataset_problem", "quadratic_problem",
    "BatchedProblem", "MLPEnsemble", "paper_problem", "iris_split", "PAPER_SETTING",
    "quadratic_batched", "logistic_batched",
]

#: The paper's setting (Danovski, Soriano & Lacasa 2024; the authors' code GitKalo/ann_dynamics,
#: src/iris_train.py and src/run_iris_*.py), as mdesc's preset.  ``eps`` is the perturbation
#: size: every *weight* (not bias) of a perturbed copy gets an independent uniform draw in
#: (-eps, +eps) (their ``pert_uniform``), for each of the 14 sizes ``np.logspace(-14, -1, 14)``.
PAPER_SETTING: dict = {
    "dataset": "iris", "sizes": [4, 10, 3], "activation": "sigmoid", "output": "softmax",
    "loss": "sparse cross-entropy (mean over samples)", "dtype": "float64",
    "init": "weights N(0, 1), biases 0", "init_scale": 1.0, "n_train": 120,
    "features": "raw (cm)", "batch": "full (120 samples), no shuffling",
    "optimizer": "plain gradient descent w <- w - lr * grad",
    "eps": [float(x) for x in np.logspace(-14, -1, 14)], "perturbation": "uniform(-eps, eps) "
    "on every weight, biases unperturbed", "distance": "L1 over all parameters",
    "n_pert": 5,
    "rates": {"0.01": {"epochs": "default rate of iris_train.train"},
              "1": {"epochs": 200, "n_init": 500, "n_pert": 5},
              "5": {"epochs": 10000, "n_init": 20}},
}


def iris_split(n_train: int = 120, order_seed: int = 0):
    """Iris (scikit-learn's copy, 150 flowers, raw features in cm) in a seeded order.

    The authors took TFDS's ``iris`` "train" split (a fixed shuffled order of the 150 rows,
    which is not shipped offline) and trained on its first 120 rows, holding out 30.  mdesc
    cannot reproduce TFDS's order; it uses ``np.random.default_rng(order_seed).permutation(150)``
    of scikit-learn's rows (which are sorted by class, so taking the first 120 unpermuted would
    hold out only one class).  Returns ``(x_train, y_train, x_test, y_test, order)``; ``order``
    is the row permutation (recorded with every run).
    """
    if not 1 <= int(n_train) <= 150:
        raise ValueError(f"n_train must be between 1 and 150 (Iris has 150 flowers), got {n_train}.")
    data = skd.load_iris()
    order = np.random.default_rng(int(order_seed)).permutation(150)
    x = np.asarray(data.data, dtype=np.float64)[order]
    y = np.asarray(data.target, dtype=np.int64)[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], order


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
# Batched problems: many weight vectors (rows of W, shape (M, P)) at once
# --------------------------------------------------------------------------------------------

class BatchedProblem:
    """A loss of M weight vectors at once: ``losses(W)`` for W of shape (M, P) returns (M,).

    Rows are independent problems of the same form.  :meth:`loss_and_grad` defaults to one
    backward pass of the summed loss (each row's gradient is its own); :meth:`grad_and_hvp`
    to ``torch.func.jvp`` of :meth:`loss_and_grad` (forward over the gradient: J v of the
    gradient map is H v).  Subclasses override them with closed forms.  ``weight_mask`` (P,)
    marks the entries the paper perturbs (weights, not biases); all True by default.
    """

    name = "batched problem"

    def __init__(self, n_params: int, settings: dict | None = None,
                 weight_mask: torch.Tensor | None = None):
        self.n_params = int(n_params)
        self.settings = dict(settings or {})
        self.weight_mask = (torch.ones(self.n_params, dtype=torch.bool) if weight_mask is None
                            else weight_mask.to(torch.bool))

    def losses(self, W: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss_and_grad(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses (M,), gradients (M, P))."""
        with torch.enable_grad():
            w = W.detach().requires_grad_(True)
            losses = self.losses(w)
            (g,) = torch.autograd.grad(losses.sum(), w)
        return losses.detach(), g

    def grad_and_hvp(self, W: torch.Tensor, V: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(losses (M,), gradients (M, P), Hessian-vector products H(W_m) V_m (M, P))."""
        (losses, g), (_, hv) = torch.func.jvp(self.loss_and_grad, (W,), (V,))
        return losses, g, hv

    def test_metrics(self, W: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row metrics on held-out data (none by default)."""
        return {}


class _FunctionBatched(BatchedProblem):
    def __init__(self, losses_fn, n_params, name, settings, grad_fn=None, hvp_fn=None):
        super().__init__(n_params, settings)
        self._losses, self._grad, self._hvp, self.name = losses_fn, grad_fn, hvp_fn, name

    def losses(self, W):
        return self._losses(W)

    def loss_and_grad(self, W):
        if self._grad is None:
            return super().loss_and_grad(W)
        return self._losses(W), self._grad(W)

    def grad_and_hvp(self, W, V):
        if self._hvp is None:
            return super().grad_and_hvp(W, V)
        return self._losses(W), self._grad(W), self._hvp(W, V)


def quadratic_batched(curvatures: Sequence[float]) -> BatchedProblem:
    """L(w) = 1/2 sum_i a_i w_i^2 per row: GD is w -> (1 - lr a) w, exponents ln|1 - lr a_i|."""
    a = torch.as_tensor(np.asarray(curvatures, dtype=np.float64)).reshape(-1)
    return _FunctionBatched(lambda W: 0.5 * (a * W * W).sum(1), a.numel(),
                            f"quadratic a={a.tolist()}", {"kind": "quadratic",
                                                          "curvatures": a.tolist()},
                            grad_fn=lambda W: a * W, hvp_fn=lambda W, V: a * V)


def logistic_batched(r: float = 4.0) -> BatchedProblem:
    """A loss whose GD map at lr = 1 is the logistic map w -> r w (1 - w) (one parameter):
    L(w) = r/3 w^3 - (r - 1)/2 w^2, grad = r w^2 - (r - 1) w, so w - grad = r w (1 - w).
    At r = 4 the exponent is ln 2."""
    r = float(r)
    return _FunctionBatched(lambda W: (r / 3 * W ** 3 - (r - 1) / 2 * W ** 2).sum(1), 1,
                            f"logistic r={r}", {"kind": "logistic", "r": r},
                            grad_fn=lambda W: r * W * W - (r - 1) * W,
                            hvp_fn=lambda W, V: (2 * r * W - (r - 1)) * V)


_ACT = {
    "sigmoid": (torch.sigmoid, lambda a: torch.addcmul(a, a, a, value=-1.0)),  # a - a^2
    "tanh": (torch.tanh, lambda a: 1 - a * a),
    "relu": (torch.relu, lambda a: (a > 0).to(a.dtype)),
}


class MLPEnsemble(BatchedProblem):
    """M multilayer perceptrons of one architecture trained full-batch on the same data.

    Row m of W (M, P) holds network m's parameters in the authors' (Keras) order:
    ``[W_1 (d x h_1, row-major), b_1, W_2, b_2, ...]`` with ``x @ W_l + b_l``; hidden layers use
    ``activation``, the output a softmax, the loss is the mean cross-entropy over the N samples
    (Keras' SparseCategoricalCrossentropy on a softmax output, which Keras evaluates from the
    logits).  The forward and backward passes are written out (no autograd): for M networks
    they are batched matrix products over the model axis, and every row's result equals that
    network trained alone up to rounding (tests check against autograd and against M = 1).

    ``sample_order`` permutes the samples (the same loss, a different summation order):
    used to show which results survive rounding differences.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, hidden: Sequence[int] = (10,),
                 activation: str = "sigmoid", init_scale: float = 1.0,
                 x_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
                 sample_order: np.ndarray | None = None, name: str | None = None,
                 settings: dict | None = None):
        if activation not in _ACT:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{', '.join(_ACT)}.")
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be a positive number, got {init_scale}.")
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if x.ndim != 2 or y.shape != (x.shape[0],):
            raise ValueError(f"x must be (N, d) and y (N,), got {x.shape} and {y.shape}.")
        if sample_order is not None:
            order = np.asarray(sample_order)
            if sorted(order.tolist()) != list(range(x.shape[0])):
                raise ValueError("sample_order must be a permutation of range(N).")
            x, y = x[order], y[order]
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(y)
        n_classes = int(max(y.max(), -1 if y_test is None or len(y_test) == 0
                            else np.max(y_test))) + 1
        self.sizes = [x.shape[1], *[int(h) for h in hidden], n_classes]
        if min(self.sizes) < 1:
            raise ValueError(f"layer sizes must be >= 1, got {self.sizes}.")
        self.activation, self.init_scale = activation, float(init_scale)
        self._act, self._dact = _ACT[activation]
        self._onehot = torch.nn.functional.one_hot(self.y, n_classes).to(torch.float64)
        self._neg_onehot_over_n = -self._onehot / x.shape[0]
        self.x_test = None if x_test is None else torch.from_numpy(np.asarray(x_test, np.float64))
        self.y_test = None if y_test is None else torch.from_numpy(np.asarray(y_test, np.int64))
        shapes, mask = [], []
        for a, b in zip(self.sizes[:-1], self.sizes[1:]):
            shapes += [(a, b), (b,)]
            mask += [torch.ones(a * b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]
        self.shapes = shapes
        self.numels = [math.prod(s) for s in shapes]
        arch = "-".join(map(str, self.sizes))
        info = {"kind": "mlp_ensemble", "sizes": self.sizes, "activation": activation,
                "init_scale": self.init_scale, "n_train": int(x.shape[0]),
                "n_test": 0 if x_test is None else int(len(x_test)),
                "sample_order": "given" if sample_order is not None else "as passed"}
        info.update(settings or {})
        super().__init__(sum(self.numels), info, torch.cat(mask))
        self.name = name or f"MLP {arch} {activation}, softmax cross-entropy, full batch"

    # parameters ---------------------------------------------------------------------------
    def unflatten(self, W: torch.Tensor) -> list[torch.Tensor]:
        """[W_1 (M, d, h_1), b_1 (M, h_1), ...] views of the rows of W (M, P)."""
        M = W.shape[0]
        return [c.reshape(M, *s) for c, s in zip(torch.split(W, self.numels, dim=1),
                                                  self.shapes)]

    def init(self, n: int, seed: int = 0, start: int = 0) -> torch.Tensor:
        """Initial parameter rows of initialisations ``start .. start+n-1``: weights
        N(0, init_scale^2), biases 0 (the authors' ``get_random_init``).  Initialisation i is
        drawn layer by layer from ``np.random.default_rng([seed, i, 0])``, so it is the same
        network whichever chunk or batch it is trained in."""
        rows = []
        for i in range(int(start), int(start) + int(n)):
            rng = np.random.default_rng([int(seed), i, 0])
            rows.append(np.concatenate([rng.normal(0.0, self.init_scale, s).reshape(-1)
                                        if len(s) == 2 else np.zeros(s) for s in self.shapes]))
        if not rows:
            return torch.zeros(0, self.n_params, dtype=torch.float64)
        return torch.from_numpy(np.stack(rows))

    # forward / backward -------------------------------------------------------------------
    def _forward(self, W: torch.Tensor, x: torch.Tensor):
        params = self.unflatten(W)
        M = W.shape[0]
        a = x.expand(M, *x.shape)
        acts = [a]
        n_layers = len(self.sizes) - 1
        for l in range(n_layers):
            # z = a @ W_l + b_l as one fused batched product over the model axis
            z = torch.baddbmm(params[2 * l + 1][:, None, :], a, params[2 * l])
            a = self._act(z) if l < n_layers - 1 else z
            acts.append(a)
        return params, acts  # acts[-1] = logits (M, N, C)

    def losses(self, W: torch.Tensor) -> torch.Tensor:
        _, acts = self._forward(W, self.x)
        logp = torch.log_softmax(acts[-1], dim=-1)
        return -(logp * self._onehot).sum(-1).mean(-1)

    def loss_and_grad(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        params, acts = self._forward(W, self.x)
        logp = torch.log_softmax(acts[-1], dim=-1)
        losses = -(logp * self._onehot).sum(-1).mean(-1)
        n = self.x.shape[0]
        # dL/dlogits = (softmax - onehot) / N, as one fused pass
        delta = torch.add(self._neg_onehot_over_n, torch.exp(logp), alpha=1.0 / n)
        grads = []
        n_layers = len(self.sizes) - 1
        for l in range(n_layers - 1, -1, -1):
            a_in = acts[l]
            grads.append(delta.sum(-2))  # gb (M, out)
            grads.append(torch.bmm(a_in.transpose(-1, -2), delta))  # gW (M, in, out)
            if l > 0:
                delta = torch.bmm(delta, params[2 * l].transpose(-1, -2)) * self._dact(a_in)
        grads.reverse()  # [gW_1, gb_1, gW_2, gb_2, ...]
        M = W.shape[0]
        return losses, torch.cat([g.reshape(M, -1) for g in grads], dim=1)

    def test_metrics(self, W: torch.Tensor) -> dict[str, torch.Tensor]:
        """Held-out cross-entropy and accuracy per row (empty without test data)."""
        if self.x_test is None or len(self.x_test) == 0:
            return {}
        _, acts = self._forward(W, self.x_test)
        logp = torch.log_softmax(acts[-1], dim=-1)
        loss = -logp.gather(-1, self.y_test.expand(W.shape[0], -1)[..., None])[..., 0].mean(-1)
        acc = (logp.argmax(-1) == self.y_test).to(torch.float64).mean(-1)
        return {"test_loss": loss, "test_accuracy": acc}

    def train_accuracy(self, W: torch.Tensor) -> torch.Tensor:
        _, acts = self._forward(W, self.x)
        return (acts[-1].argmax(-1) == self.y).to(torch.float64).mean(-1)

    def as_problem(self, w: torch.Tensor) -> TrainingProblem:
        """Network ``w`` (P,) as a one-trajectory :class:`TrainingProblem` (autograd loss)."""
        w = torch.as_tensor(w, dtype=torch.float64).reshape(-1)

        def loss_fn(v: torch.Tensor) -> torch.Tensor:
            return self.losses(v[None])[0]

        return TrainingProblem(loss_fn=loss_fn, w0=w.clone(), name=self.name,
                               settings=dict(self.settings),
                               batched_loss_fn=self.losses)


def paper_problem(n_train: int = 120, order_seed: int = 0, hidden: Sequence[int] = (10,),
                  activation: str = "sigmoid", init_scale: float = 1.0,
                  sample_order: np.ndarray | None = None) -> MLPEnsemble:
    """The paper's network and data: an MLP 4-10-3 (sigmoid hidden layer, softmax output,
    sparse cross-entropy) on ``n_train`` = 120 Iris flowers with raw features, the other 30
    held out (:func:`iris_split` says how the order is chosen); initialise with
    :meth:`MLPEnsemble.init` (weights N(0, 1), biases 0).  The arguments change the preset
    (width, activation, initialisation scale, sample subset)."""
    x, y, xt, yt, order = iris_split(n_train, order_seed)
    settings = {"dataset": "iris", "order_seed": int(order_seed),
                "order_first_10": order[:10].tolist(),
                "sample_order": "identity" if sample_order is None else
                [int(i) for i in np.asarray(sample_order)[:10]] + ["..."]}
    return MLPEnsemble(x, y, hidden, activation, init_scale, x_test=xt, y_test=yt,
                       sample_order=sample_order, settings=settings,
                       name=f"Iris ({n_train} train): MLP "
                       f"{'-'.join(map(str, [4, *hidden, 3]))} {activation}, softmax CE, "
                       f"N(0, {init_scale:g}^2) weights")
