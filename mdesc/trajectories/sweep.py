"""The paper's preset as a resumable sweep of batched ensembles (persistence: mdesc.store only).

One :class:`RateJob` per learning rate: ``n_init`` initialisations, each with ``n_pert``
replicas per perturbation size, a renormalised twin and a tangent vector
(:func:`mdesc.trajectories.ensemble.run_ensemble`), plus the Lyapunov spectrum of the training
map for the first ``spectrum_inits`` initialisations.  :func:`ensemble_sweep` runs the jobs into
a :class:`mdesc.store.RunFolder`:

    <out>/settings.json                 problem and seed (checked on every resume)
    <out>/job/<key>.json                each rate's job settings (checked on resume)
    <out>/chunks/<key>/c<i>.safetensors raw per-initialisation arrays of one chunk (large)
    <out>/spectrum/<key>.safetensors    spectrum exponents
    <out>/rate/<key>.json               the rate's summary (:func:`summarise_rate`)
    <out>/rate/<key>.safetensors        small arrays for the figures

A chunk (a block of initialisations trained as one batch) is written atomically when it is
done; a killed sweep resumes at the first missing chunk.  Keys are ``lr=<lr>`` plus ``+<tag>``
for variants (e.g. ``lr=1+reversed``: the same job with the samples summed in reverse order).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mdesc.options import option
from mdesc.store import RunFolder, StoreError, check_settings, to_json

from . import analysis as an
from .ensemble import run_ensemble, training_spectrum
from .model import paper_problem

__all__ = ["RateJob", "PaperPreset", "ensemble_sweep", "paper_jobs", "summarise_rate",
           "load_sweep", "rate_key"]

#: Rows of one batch (trajectories trained together) and trajectory-steps per chunk.
MAX_ROWS = 4000
MAX_TRAJECTORY_STEPS = 2_000_000


@dataclass
class RateJob:
    """One learning rate of an ensemble sweep (every field is recorded and checked)."""

    lr: float
    steps: int
    n_init: int
    eps: list = field(default_factory=lambda: [1e-8])
    n_pert: int = 5
    warmup: int = 0
    spectrum_inits: int = 4
    spectrum_steps: int = 0  # 0: min(steps, 2000)
    keep_loss: int = 8
    sample_order: str = "identity"  # or "reversed": the same sum in another order
    tag: str = ""
    init_start: int = 0  # initialisations init_start .. init_start + n_init - 1

    def __post_init__(self):
        self.lr, self.steps, self.n_init = float(self.lr), int(self.steps), int(self.n_init)
        self.init_start = int(self.init_start)
        if self.init_start < 0:
            raise ValueError(f"init_start must be >= 0, got {self.init_start}.")
        self.eps = [float(e) for e in self.eps]
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive finite number, got {self.lr}.")
        if self.steps < 32 or self.n_init < 1:
            raise ValueError(f"a rate needs steps >= 32 and n_init >= 1, got steps={self.steps}, "
                             f"n_init={self.n_init}.")
        if self.sample_order not in ("identity", "reversed"):
            raise ValueError(f"sample_order must be 'identity' or 'reversed', got "
                             f"{self.sample_order!r}.")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must be in [0, steps), got {self.warmup}.")

    @property
    def key(self) -> str:
        return rate_key(self.lr, self.tag)

    @property
    def spectrum_T(self) -> int:
        return self.spectrum_steps or min(self.steps, 2000)


def job_settings(job: RateJob) -> dict:
    """The recorded settings of a job (``init_start`` only when not 0, as before it existed)."""
    settings = to_json(dataclasses.asdict(job))
    if settings.get("init_start") == 0:
        settings.pop("init_start")
    return settings


def rate_key(lr: float, tag: str = "") -> str:
    return f"lr={lr:.6g}" + (f"+{tag}" if tag else "")


@dataclass(frozen=True)
class PaperPreset:
    """The recorded run's jobs (:meth:`jobs`): the paper's three rates, then the sweep between.

    * η = 1: 200 epochs, ``n_init_1`` initialisations x 5 perturbations x the 14 sizes
      1e-14 .. 1e-1 (the authors' run_iris_eos_epsilons.py);
    * with ``reversed_check``: η = 1 again with the samples summed in reverse order (twin and
      tangent only): ensemble statistics must agree, single trajectories need not;
    * η = 5: 10,000 epochs, ``n_init_5`` initialisations (run_iris_chaotic.py, which records
      only the loss; mdesc adds 5 replicas at each of ``eps_5``, a twin and a tangent);
    * η = 0.01 (the authors' default rate): ``steps_001`` epochs, ``n_init_001``
      initialisations, 5 perturbations x the 14 sizes;
    * with ``n_init_5_more`` (0: none): η = 5 again on ``n_init_5_more`` further
      initialisations (``n_init_5`` onwards; key ``lr=5+more``): an independent replicate;
    * with ``long_001_steps`` (0: none): η = 0.01 for that many epochs, ``n_init_001``
      initialisations, sizes 1e-12, 1e-8, 1e-4 (key ``lr=0.01+long``);
    * ``sweep_rates`` (default 13 rates log-spaced strictly between 0.01 and 5), each
      ``sweep_steps`` epochs, ``sweep_inits`` initialisations, 5 perturbations x ``sweep_eps``.

    Each rate also gets the full Lyapunov spectrum of its first ``spectrum_inits``
    initialisations over min(steps, ``spectrum_steps``) steps (``sweep_spectrum_inits`` and
    ``sweep_spectrum_steps`` for the sweep).  The fields marked as options are the
    ``[paper]`` options of ``mdesc trajectories``.
    """

    n_init_1: int = option(500, "[paper] initialisations at eta=1")
    n_init_5: int = option(20, "[paper] initialisations at eta=5")
    n_init_001: int = option(20, "[paper] initialisations at eta=0.01")
    steps_001: int = option(1000, "[paper] epochs at eta=0.01")
    sweep_rates: tuple[float, ...] | None = option(None, cli=False)
    sweep_inits: int = option(20, "[paper] initialisations per rate of the sweep")
    sweep_steps: int = option(500, "[paper] epochs per sweep rate")
    sweep_eps: tuple[float, ...] = option((1e-8,), cli=False)
    eps_5: tuple[float, ...] = option((1e-8,), cli=False)
    spectrum_inits: int = option(2, cli=False)
    spectrum_steps: int = option(500, cli=False)
    sweep_spectrum_inits: int = option(1, cli=False)
    sweep_spectrum_steps: int = option(200, cli=False)
    reversed_check: bool = option(True, "[paper] the eta=1 ensemble again with the samples "
                                  "summed in reverse (--no-reversed-check: skip it)")
    long_001_steps: int = option(5000, "[paper] epochs of the long eta=0.01 run (0: skip it)")
    n_init_5_more: int = option(40, "[paper] further initialisations at eta=5, a replicate "
                                "(0: skip)")

    def jobs(self) -> list[RateJob]:
        eps14 = [float(x) for x in np.logspace(-14, -1, 14)]
        k = int(self.spectrum_inits)
        jobs = [RateJob(1.0, 200, self.n_init_1, eps14, 5, spectrum_inits=k)]  # spectrum: all 200
        if self.reversed_check:
            jobs.append(RateJob(1.0, 200, self.n_init_1, [1e-8], 0, spectrum_inits=0,
                                sample_order="reversed", tag="reversed"))
        jobs += [RateJob(5.0, 10_000, self.n_init_5, list(self.eps_5), 5, spectrum_inits=k,
                         spectrum_steps=self.spectrum_steps),
                 RateJob(0.01, self.steps_001, self.n_init_001, eps14, 5, spectrum_inits=k,
                         spectrum_steps=min(self.steps_001, self.spectrum_steps))]
        sweep_rates = self.sweep_rates
        if sweep_rates is None:
            sweep_rates = [float(f"{x:.4g}") for x in np.geomspace(0.01, 5.0, 15)[1:-1]]
        if self.n_init_5_more:
            jobs.append(RateJob(5.0, 10_000, self.n_init_5_more, list(self.eps_5), 5,
                                spectrum_inits=0, init_start=self.n_init_5, tag="more"))
        if self.long_001_steps:
            jobs.append(RateJob(0.01, self.long_001_steps, self.n_init_001, [1e-12, 1e-8, 1e-4],
                                5, spectrum_inits=k,
                                spectrum_steps=min(self.long_001_steps, 2000), tag="long"))
        # every other rate first, so that a sweep stopped early still spans the whole range
        order = list(range(0, len(sweep_rates), 2)) + list(range(1, len(sweep_rates), 2))
        jobs += [RateJob(sweep_rates[i], self.sweep_steps, self.sweep_inits,
                         list(self.sweep_eps), 5, spectrum_inits=self.sweep_spectrum_inits,
                         spectrum_steps=min(self.sweep_steps, self.sweep_spectrum_steps))
                 for i in order]
        return jobs


def paper_jobs(**settings) -> list[RateJob]:
    """The recorded run's jobs: ``PaperPreset(**settings).jobs()`` (see :class:`PaperPreset`)."""
    return PaperPreset(**settings).jobs()


def _chunks(job: RateJob) -> list[tuple[int, int]]:
    rows = 2 + len(job.eps) * job.n_pert
    size = max(1, min(job.n_init, MAX_ROWS // rows, MAX_TRAJECTORY_STEPS // (rows * job.steps)))
    return [(a, min(a + size, job.n_init)) for a in range(0, job.n_init, size)]


def _problem(problem_factory: Callable, job: RateJob):
    base = problem_factory(None)
    if job.sample_order == "identity":
        return base
    return problem_factory(np.arange(base.x.shape[0])[::-1].copy())


def ensemble_sweep(out, jobs: Sequence[RateJob], *, problem_factory: Callable | None = None,
                   problem_settings: dict | None = None, seed: int = 0,
                   twin_eps: float = 1e-8, log: Callable[[str], None] = print) -> list[dict]:
    """Run every job into the run folder ``out`` (resumable) and return the rate summaries.

    ``problem_factory(sample_order) -> BatchedProblem`` builds the problem (default: the
    paper's, :func:`mdesc.trajectories.model.paper_problem`); ``problem_settings`` is recorded
    and checked (default: the problem's own settings).  Initialisation i of every rate is the
    same network (seeded by ``seed`` and i), so rates are compared on the same networks.
    """
    if problem_factory is None:
        def problem_factory(order):
            return paper_problem(sample_order=order)
    base = problem_factory(None)
    run = RunFolder(out)
    run.open({"kind": "trajectories ensemble sweep", "problem": base.name,
              "problem_settings": problem_settings or base.settings,
              "n_params": base.n_params, "seed": int(seed), "twin_eps": float(twin_eps)})
    summaries = []
    for job in jobs:
        settings = job_settings(job)
        if run.has_record("job", job.key):
            check_settings(run.path("job", job.key + ".json"), run.read_record("job", job.key),
                           settings)
        else:
            run.write_record("job", job.key, settings)
        if run.has_record("rate", job.key):
            summaries.append(run.read_record("rate", job.key))
            continue
        problem = _problem(problem_factory, job)
        for c, (a, b) in enumerate(_chunks(job)):
            path = run.path("chunks", job.key, f"c{c:03d}.safetensors")
            if path.exists():
                continue
            t0 = time.perf_counter()
            first = job.init_start + a
            w0 = problem.init(b - a, seed, start=first)
            res = run_ensemble(problem, w0, job.lr, job.steps, eps=job.eps if job.n_pert else [],
                               n_pert=job.n_pert, twin_eps=twin_eps, seed=seed,
                               init_ids=range(first, job.init_start + b))
            res.pop("w_final")
            sec = time.perf_counter() - t0
            run.save_tensors(f"chunks/{job.key}/c{c:03d}.safetensors", res,
                             {"job": settings, "inits": [a, b], "seconds": sec})
            log(f"{job.key}: initialisations {first}-{job.init_start + b - 1} of "
                f"{job.init_start}-{job.init_start + job.n_init - 1} in {sec:.1f} s")
        spec_path = run.path("spectrum", job.key + ".safetensors")
        if job.spectrum_inits and not spec_path.exists():
            t0 = time.perf_counter()
            k = min(job.spectrum_inits, job.n_init)
            spec = training_spectrum(problem, problem.init(k, seed, start=job.init_start),
                                     job.lr, job.spectrum_T, seed=seed,
                                     init_ids=range(job.init_start, job.init_start + k))
            sec = time.perf_counter() - t0
            run.save_tensors(f"spectrum/{job.key}.safetensors",
                             {"exponents": spec["exponents"]},
                             {"job": settings, "steps": job.spectrum_T, "seconds": sec})
            log(f"{job.key}: spectrum of {k} initialisations ({base.n_params} exponents, "
                f"{job.spectrum_T} steps) in {sec:.1f} s")
        summary, arrays = summarise_rate(run, job)
        run.save_tensors(f"rate/{job.key}.safetensors", arrays, {"key": job.key})
        run.write_record("rate", job.key, summary)
        summaries.append(summary)
        log(f"{job.key}: λ_tangent median {summary['tangent']['median']:+.4g} "
            f"[{summary['tangent']['low']:+.4g}, {summary['tangent']['high']:+.4g}], "
            f"positive {summary['tangent']['fraction']['positive']:.2f}, regime "
            f"{summary['regime']}")
    return summaries


def _load_chunks(run: RunFolder, job: RateJob) -> dict:
    parts: dict[str, list] = {}
    seconds = 0.0
    for c in range(len(_chunks(job))):
        tensors, meta = run.load_tensors(f"chunks/{job.key}/c{c:03d}.safetensors")
        seconds += float(meta.get("seconds", 0.0))
        for k, v in tensors.items():
            parts.setdefault(k, []).append(v.numpy())
    axis = {"loss": 1, "log_dist": 1, "twin_log": 1, "tan_log": 1, "weight_l1": 1}
    out = {k: np.concatenate(v, axis=axis.get(k, 0)) for k, v in parts.items()}
    out["seconds"] = seconds
    return out


def _stride(n: int, cap: int = 1001) -> np.ndarray:
    return np.unique(np.r_[np.arange(0, n, max(1, -(-n // cap))), n - 1])


def _replica_estimates(d: dict, job: RateJob, n_boot: int, windowed: an.WindowedFit | None
                       ) -> tuple[list[dict], dict]:
    """Per perturbation size: the endpoint slope (median, bootstrap interval, saturation) and,
    with ``windowed``, the authors' windowed max-R² summary; and their per-run arrays."""
    ft, ts = an.finite_time_exponents(d["log_dist"], d["weight_l1"])
    arrays = {"lam_finite_time": ft, "saturation_step": ts}
    if windowed is not None:
        arrays["lam_windowed"], arrays["r2_windowed"], _ = an.windowed_exponents(d["log_dist"],
                                                                                 windowed)
    rows = []
    for e, eps in enumerate(job.eps):
        med, lo, hi = an.bootstrap_median(ft[:, e], n_boot)
        rows.append({"eps": eps, "median": med, "low": lo, "high": hi,
                     "median_saturation_step": float(np.median(ts[:, e])),
                     "median_final_log10_distance":
                     float(np.nanmedian(d["log_dist"][-1, :, e]) / math.log(10))})
        if windowed is not None:
            rows[-1]["windowed"] = an.windowed_summary(arrays["lam_windowed"][:, e],
                                                       arrays["r2_windowed"][:, e], windowed,
                                                       n_boot)
    return rows, arrays


def summarise_rate(run: RunFolder, job: RateJob, n_boot: int = 2000,
                   near_zero_tols: Sequence[float] = (1e-3, 1e-5),
                   windowed: an.WindowedFit | None = an.WindowedFit()) -> tuple[dict, dict]:
    """The statistics of one finished rate from its chunks: (summary JSON, small arrays).

    Three estimators of each initialisation's exponent: the tangent (and twin) exponent over
    every step (``summary["tangent"]``), the endpoint slope of the replica distance per size
    (``summary["finite_time"][e]``) and, with ``windowed`` (the authors' estimator, None to
    skip it), the windowed max-R² slope (``summary["finite_time"][e]["windowed"]``)."""
    d = _load_chunks(run, job)
    summary: dict = {"key": job.key, "job": to_json(dataclasses.asdict(job)),
                     "seconds": d["seconds"], "n_init": job.n_init}
    arrays: dict = {}
    for name, series in (("twin", "twin_log"), ("tangent", "tan_log")):
        lam, se = an.exponent_per_run(d[series], warmup=job.warmup)
        med, lo, hi = an.bootstrap_median(lam, n_boot)
        summary[name] = {"median": med, "low": lo, "high": hi,
                         "mean": float(np.nanmean(lam)), "std": float(np.nanstd(lam)),
                         "quartiles": np.nanquantile(lam, [0.25, 0.75]).tolist(),
                         "fraction": an.fraction_beyond_error(lam, se),
                         "median_se": float(np.nanmedian(se))}
        arrays[f"lam_{name}"], arrays[f"se_{name}"] = lam, se
    if job.n_pert:
        summary["finite_time"], replica_arrays = _replica_estimates(d, job, n_boot, windowed)
        arrays.update(replica_arrays)
        idx = _stride(job.steps + 1)
        arrays["dist_t"] = idx
        arrays["dist_quantiles"] = an.distance_quantiles(d["log_dist"][idx]).astype(np.float32)
        arrays["eps"] = np.asarray(job.eps)
    labels, stats = [], []
    for m in range(job.n_init):
        c = an.loss_regime(d["loss"][:, m])
        labels.append(c.label)
        stats.append({k: v for k, v in c.stats.items() if k != "window"})
    counts = {lab: labels.count(lab) / job.n_init for lab in an.REGIME_LABELS if lab in labels}
    summary["loss_labels"] = labels
    summary["label_fractions"] = counts
    keys = sorted({k for s in stats for k in s})
    summary["loss_stats_median"] = {k: float(np.nanmedian([s.get(k, np.nan) for s in stats]))
                                    for k in keys}
    arrays["loss_kept"] = d["loss"][:, :job.keep_loss].astype(np.float32)
    arrays["loss_median"] = np.nanmedian(d["loss"], axis=1)
    arrays["loss_final"] = d["loss"][-1]
    for k in ("test_accuracy", "train_accuracy", "test_loss"):
        if k in d:
            summary[f"median_{k}"] = float(np.nanmedian(d[k]))
            arrays[k] = d[k]
    summary["median_final_loss"] = float(np.nanmedian(d["loss"][-1]))
    tan = summary["tangent"]
    summary["regime"] = an.rate_regime(tan["median"], (tan["low"], tan["high"]),
                                       tan["fraction"]["positive"], counts)
    if run.path("spectrum", job.key + ".safetensors").exists():
        tensors, meta = run.load_tensors(f"spectrum/{job.key}.safetensors")
        ex = tensors["exponents"].numpy()
        arrays["spectrum"] = ex
        summary["spectrum"] = {
            "n_inits": int(ex.shape[0]), "n_params": int(ex.shape[1]),
            "steps": int(meta["steps"]), "seconds": float(meta["seconds"]),
            "largest_median": float(np.median(ex[:, 0])),
            "n_positive_median": float(np.median(np.sum(ex > 1e-3, 1))),
            "sum_median": float(np.median(ex.sum(1))),
            "near_zero": {f"{tol:g}": an.near_zero_count(ex, tol).tolist()
                          for tol in near_zero_tols}}
    return summary, arrays


def load_sweep(out) -> list[tuple[dict, dict]]:
    """Every finished rate of a sweep folder: [(summary, arrays as numpy)], by learning rate."""
    run = RunFolder(out)
    if not run.exists():
        raise StoreError(f"{out} holds no ensemble sweep (no settings.json); run "
                         "`mdesc trajectories --preset paper --out {out}` first")
    result = []
    for key, summary in run.records("rate").items():
        tensors, _ = run.load_tensors(f"rate/{key}.safetensors")
        result.append((summary, {k: v.numpy() for k, v in tensors.items()}))
    result.sort(key=lambda sa: (sa[0]["job"]["lr"], sa[0]["job"]["tag"]))
    return result
