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

Everything public is re-exported here (``import mdesc`` alone imports neither torch nor this
package; matplotlib is imported only when a figure is drawn).
"""
from __future__ import annotations

from .analysis import (LOSS_CURVE_LABELS, REGIME_LABELS, LossCurveClass, bootstrap_median,
                       classify_loss_curve, distance_quantiles, exponent_per_run,
                       finite_time_exponents, fraction_beyond_error, laminar_phases, loss_regime,
                       near_zero_count, rate_regime, spectral_concentration)
from .ensemble import ensemble_draws, run_ensemble, training_spectrum
from .figures import plot_ensemble_sweep, plot_learning_rate_sweep, plot_rate_detail
from .model import (PAPER_SETTING, BatchedProblem, MLPEnsemble, TrainingProblem, dataset_problem,
                    iris_split, logistic_batched, module_problem, paper_problem,
                    quadratic_batched, quadratic_problem)
from .run import (DEFAULT_LEARNING_RATES, LearningRateSweep, ReplicaRun, SettingsMismatch,
                  learning_rate_sweep, run_filename, train_replicas, training_lyapunov)
from .sweep import PaperPreset, RateJob, ensemble_sweep, load_sweep, paper_jobs, summarise_rate

__all__ = [
    "BatchedProblem", "DEFAULT_LEARNING_RATES", "LOSS_CURVE_LABELS", "LearningRateSweep",
    "LossCurveClass", "MLPEnsemble", "PAPER_SETTING", "REGIME_LABELS", "RateJob", "ReplicaRun",
    "PaperPreset", "SettingsMismatch", "TrainingProblem", "bootstrap_median", "classify_loss_curve",
    "dataset_problem", "distance_quantiles", "ensemble_draws", "ensemble_sweep",
    "exponent_per_run", "finite_time_exponents", "fraction_beyond_error", "iris_split",
    "laminar_phases", "learning_rate_sweep", "load_sweep", "logistic_batched", "loss_regime",
    "module_problem", "near_zero_count", "paper_jobs", "paper_problem", "plot_ensemble_sweep",
    "plot_learning_rate_sweep", "plot_rate_detail", "quadratic_batched", "quadratic_problem",
    "rate_regime", "run_filename", "run_ensemble", "spectral_concentration", "summarise_rate",
    "train_replicas", "training_lyapunov", "training_spectrum",
]
