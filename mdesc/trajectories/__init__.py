"""Chaos in training trajectories (study 3): the gradient-descent map and its Lyapunov exponents.

Training by full-batch gradient descent (GD) is a deterministic map on weight space,
w_{t+1} = F(w_t) = w_t - lr * grad L(w_t), studied like any dynamical system (Danovski, Soriano
& Lacasa, "Dynamical stability and chaos in artificial neural network trajectories along
training", Front. Complex Syst. 2:1367957, 2024; arXiv:2404.05782).  See docs/trajectories.md.

Modules (the study's seams):

* :mod:`.model` — what is trained: :func:`dataset_problem`, :func:`module_problem`,
  :func:`quadratic_problem` (one trajectory at a time) and the batched problems,
  :func:`paper_problem` (the paper's MLP 4-10-3 on Iris, :class:`MLPEnsemble`);
* :mod:`.run` — :func:`train_replicas`, :func:`training_lyapunov`, :func:`learning_rate_sweep`;
* :mod:`.ensemble` — batched ensembles (:func:`run_ensemble`) and the Lyapunov spectrum of the
  training map (:func:`training_spectrum`);
* :mod:`.sweep` — the paper's preset as a resumable, chunked sweep (:func:`ensemble_sweep`);
* :mod:`.analysis` — pure statistics (exponents with errors, bootstrap medians, regimes);
* :mod:`.figures` — the figures; :mod:`.cli` — ``mdesc trajectories``.

Everything public is re-exported here lazily, so ``import mdesc.trajectories`` imports neither
torch nor matplotlib and needs no compiled extension.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "model": ("TrainingProblem", "module_problem", "dataset_problem", "quadratic_problem",
              "BatchedProblem", "MLPEnsemble", "paper_problem", "iris_split", "PAPER_SETTING",
              "quadratic_batched", "logistic_batched"),
    "run": ("ReplicaRun", "train_replicas", "training_lyapunov", "LearningRateSweep",
            "learning_rate_sweep", "run_filename", "DEFAULT_LEARNING_RATES", "SettingsMismatch"),
    "ensemble": ("run_ensemble", "training_spectrum", "ensemble_draws"),
    "sweep": ("RateJob", "ensemble_sweep", "paper_jobs", "summarise_rate", "load_sweep"),
    "analysis": ("LossCurveClass", "LOSS_CURVE_LABELS", "classify_loss_curve", "REGIME_LABELS",
                 "laminar_phases", "spectral_concentration", "loss_regime", "exponent_per_run",
                 "bootstrap_median", "fraction_beyond_error", "finite_time_exponents",
                 "distance_quantiles", "near_zero_count", "rate_regime"),
    "figures": ("plot_learning_rate_sweep", "plot_ensemble_sweep", "plot_rate_detail"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        if name in _EXPORTS:  # a submodule: mdesc.trajectories.run etc.
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
