"""Figures of study 3 (the only module of mdesc.trajectories that imports matplotlib).

:func:`plot_learning_rate_sweep` draws a one-trajectory learning-rate sweep
(:class:`~mdesc.trajectories.run.LearningRateSweep`); :func:`plot_ensemble_sweep` and
:func:`plot_rate_detail` draw the batched-ensemble sweep of the paper's preset
(:mod:`mdesc.trajectories.sweep`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mdesc.store import atomic_path

__all__ = ["plot_learning_rate_sweep", "plot_ensemble_sweep", "plot_rate_detail"]


def _plt():
    # matplotlib is imported only when a figure is drawn, so the analyses run without it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    plt = _plt()
    path = Path(path)
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


_REGIME_COLOURS = {"monotone": "#4c9be8", "oscillating": "#6cc06c", "intermittent": "#f0a030",
                   "irregular": "#d04848", "diverged": "#888888"}


def _default_show(runs: list, n: int = 6) -> list[int]:
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


def _bands(lrs: np.ndarray, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Edges of each learning rate's background band: the geometric midpoints between rates,
    mirrored at both ends (a lone rate gets ``[lr / pad, lr * pad]``)."""
    if len(lrs) > 1:
        edges = np.sqrt(lrs[:-1] * lrs[1:])
        return np.r_[lrs[0] ** 2 / edges[0], edges], np.r_[edges, lrs[-1] ** 2 / edges[-1]]
    return lrs / pad, lrs * pad


def plot_learning_rate_sweep(sweep, path: str | os.PathLike, *,
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
    plt = _plt()
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

    _panel_exponent(ax, runs, lrs)
    cmap = plt.get_cmap("viridis")
    colours = [cmap(0.9 * i / max(1, len(idx) - 1)) for i in range(len(idx))]
    _panel_divergence(ax_d, [runs[i] for i in idx], colours, runs[0].eps)
    _panel_losses(fig, grid, [runs[i] for i in idx], colours)
    fig.suptitle(title or runs[0].problem, fontsize=11)
    return _save(fig, path)


def _panel_exponent(ax, runs: list, lrs: np.ndarray) -> None:
    """(a) exponent vs learning rate, regime bands between geometric midpoints."""
    from matplotlib.patches import Patch

    lo, hi = _bands(lrs, 1.2)
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


def _panel_divergence(ax_d, shown: list, colours: list, eps: float) -> None:
    """(b) divergence curves of the shown runs (replicas started ``eps`` apart)."""
    for c, r in zip(colours, shown):
        if r.n_replicas:
            with np.errstate(divide="ignore", invalid="ignore"):
                logd = np.mean(np.log10(r.distance), axis=0)
            ax_d.plot(np.arange(logd.size), logd, color=c, lw=1.2,
                      label=f"η = {r.lr:.3g} (λ = {r.lyapunov_twin:+.3g})")
    ax_d.set_xlabel("GD step t")
    ax_d.set_ylabel("log10 |w_r(t) − w(t)| (geometric mean over replicas)")
    ax_d.set_title(f"(b) divergence of replicas started ε = {eps:.0e} apart")
    ax_d.legend(fontsize=7.5)


def _panel_losses(fig, grid, shown: list, colours: list) -> None:
    """Bottom row: the loss series of each shown run, with an inset of its last 40 steps."""
    for col, (c, r) in enumerate(zip(colours, shown)):
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


# --------------------------------------------------------------------------------------------
# Ensemble sweep (the paper's preset)
# --------------------------------------------------------------------------------------------

_ENSEMBLE_COLOURS = {"marginal": "#4c9be8", "contracting": "#9ad0f5", "chaotic": "#d04848",
                     "intermittent": "#f0a030", "diverged": "#888888"}
_LABEL_COLOURS = {"stalled": "#7a7a7a", "converging": "#4c9be8", "periodic": "#6cc06c", "quasi-periodic": "#2e8b57",
                  "intermittent": "#f0a030", "chaotic": "#d04848", "diverged": "#888888"}


def plot_ensemble_sweep(results: Sequence[tuple[dict, dict]], folder,
                        detail_keys: Sequence[str] = ("lr=0.01", "lr=0.01+long", "lr=1", "lr=5")
                        ) -> list[Path]:
    """``sweep.png`` (exponent statistics vs learning rate) and ``rate_<key>.png`` for the
    rates in ``detail_keys`` (:func:`plot_rate_detail`) into ``folder``; returns the paths."""
    plt = _plt()
    folder = Path(folder)
    main = [(s, a) for s, a in results if not s["job"]["tag"]]  # one point per rate
    if not main:
        return []
    lrs = np.array([s["job"]["lr"] for s, _ in main])
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1.6, 1, 1]})
    ax, ax_f, ax_n = axes
    lo, hi = _bands(lrs, 1.3)
    for (s, _), a, b in zip(main, lo, hi):
        for axis in axes:
            axis.axvspan(a, b, color=_ENSEMBLE_COLOURS.get(s["regime"], "white"), alpha=0.22,
                         lw=0)
    _ensemble_exponents(ax, main, lrs, lo, hi)
    _ensemble_fractions(ax_f, main, lrs)
    _ensemble_neutral_directions(ax_n, main)
    fig.suptitle("Iris MLP 4-10-3 sigmoid (the paper's setting): ensemble statistics per learning "
                 "rate", fontsize=11)
    fig.tight_layout()
    paths = [_save(fig, folder / "sweep.png")]
    by_key = {s["key"]: (s, a) for s, a in results}
    for key in detail_keys:
        if key in by_key:
            name = key.replace('=', '').replace('+', '_')
            paths.append(plot_rate_detail(*by_key[key], folder / f"rate_{name}.png"))
    return paths


def _ensemble_exponents(ax, main: list, lrs: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """(a) median tangent and twin exponents with intervals, and the replicas' endpoint slope."""
    from matplotlib.patches import Patch

    for name, style, colour in (("tangent", "o-", "k"), ("twin", "x--", "C3")):
        med = np.array([s[name]["median"] for s, _ in main])
        err = np.array([[s[name]["median"] - s[name]["low"], s[name]["high"] - s[name]["median"]]
                        for s, _ in main]).T
        ax.errorbar(lrs, med, yerr=err, fmt=style, color=colour, ms=5, capsize=3,
                    label=f"{name} exponent: median over initialisations, 95 % bootstrap CI")
    ft = []
    for s, _ in main:
        rows = {r["eps"]: r["median"] for r in s.get("finite_time", [])}
        ft.append(rows.get(1e-8, np.nan))
    ax.plot(lrs, ft, "s:", color="C0", mfc="none", ms=5,
            label="endpoint slope of the replica distance (ε = 1e-8, t = 0 to saturation)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlim(lo[0], hi[-1])
    ax.set_xlabel("learning rate η")
    ax.set_ylabel("largest Lyapunov exponent (nats / GD step)")
    ax.set_title("(a) training-map exponent vs learning rate")
    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, alpha=0.4, label=f"regime: {k}")
                for k, c in _ENSEMBLE_COLOURS.items() if any(s["regime"] == k for s, _ in main)]
    ax.legend(handles=handles, fontsize=7, loc="upper left")


def _ensemble_fractions(ax_f, main: list, lrs: np.ndarray) -> None:
    """(b) fractions of initialisations chaotic (beyond their error) and intermittent."""
    fpos = np.array([s["tangent"]["fraction"]["positive"] for s, _ in main])
    fint = np.array([s["tangent"]["fraction"]["positive_interval"] for s, _ in main]).T
    ax_f.errorbar(lrs, fpos, yerr=[fpos - fint[0], fint[1] - fpos], fmt="o-", color="k",
                  capsize=3, label="λ_tangent > 2 se (95 % Wilson CI)")
    inter = [s["label_fractions"].get("intermittent", 0.0) for s, _ in main]
    ax_f.plot(lrs, inter, "d--", color="#f0a030", label="loss labelled intermittent")
    ax_f.set_xscale("log")
    ax_f.set_ylim(-0.03, 1.03)
    ax_f.set_xlabel("learning rate η")
    ax_f.set_ylabel("fraction of initialisations")
    ax_f.set_title("(b) chaotic and intermittent fractions")
    ax_f.legend(fontsize=7)


def _ensemble_neutral_directions(ax_n, main: list) -> None:
    """(c) near-zero exponents of the full spectrum against the learning rate."""
    for tol, style in (("0.001", "o-"), ("1e-05", "x--")):
        pts = [(s["job"]["lr"], np.median(s["spectrum"]["near_zero"][tol]))
               for s, _ in main if "spectrum" in s]
        if pts:
            x, y = np.array(pts).T
            ax_n.plot(x, y, style, label=f"|λ_i| ≤ {float(tol):g}")
    n_params = next((s["spectrum"]["n_params"] for s, _ in main if "spectrum" in s), None)
    if n_params:
        ax_n.axhline(n_params, color="k", lw=0.8, ls=":", label=f"P = {n_params} parameters")
        ax_n.axhline(11, color="C2", lw=0.8, ls="--",
                     label="11 exact symmetry directions (softmax shifts)")
    ax_n.set_xscale("log")
    ax_n.set_xlabel("learning rate η")
    ax_n.set_ylabel("near-zero exponents of the training map (median)")
    ax_n.set_title("(c) neutral directions of the full spectrum")
    ax_n.legend(fontsize=7)


def plot_rate_detail(summary: dict, arrays: dict, path) -> Path:
    """One rate: (a) distributions of the twin and tangent exponents; (b) replica L1 distance
    vs epoch for each perturbation size (median and interquartile band over initialisations);
    (c) loss series of the first kept initialisations, titled with the regime label that
    :func:`~mdesc.trajectories.analysis.loss_regime` gave each; (d) the Lyapunov spectrum."""
    plt = _plt()

    job = summary["job"]
    n_loss = min(4, arrays["loss_kept"].shape[1]) if "loss_kept" in arrays else 0
    fig = plt.figure(figsize=(16, 8.5))
    grid = fig.add_gridspec(2, 4, hspace=0.45, wspace=0.32)
    ax_h = fig.add_subplot(grid[0, 0])
    for name, colour in (("tangent", "k"), ("twin", "C3")):
        lam = arrays[f"lam_{name}"]
        lam = lam[np.isfinite(lam)]
        if lam.size:
            ax_h.hist(lam, bins=min(40, max(8, lam.size // 8)), histtype="step", color=colour,
                      lw=1.3, label=f"{name}: median {summary[name]['median']:+.3g} "
                      f"[{summary[name]['low']:+.3g}, {summary[name]['high']:+.3g}]")
    ax_h.axvline(0, color="k", lw=0.8)
    ax_h.set_xlabel("λ per initialisation (nats / epoch)")
    ax_h.set_ylabel("initialisations")
    ax_h.set_title(f"(a) exponents of {job['n_init']} initialisations", fontsize=9)
    ax_h.legend(fontsize=6.5, loc="best")
    ax_d = fig.add_subplot(grid[0, 1:3])
    if "dist_quantiles" in arrays:
        t = arrays["dist_t"]
        q = arrays["dist_quantiles"] / math.log(10)  # (T', E, 5) log10
        cmap = plt.get_cmap("viridis")
        for e, eps in enumerate(arrays["eps"]):
            c = cmap(e / max(1, len(arrays["eps"]) - 1))
            ax_d.fill_between(t, q[:, e, 1], q[:, e, 3], color=c, alpha=0.18, lw=0)
            ax_d.plot(t, q[:, e, 2], color=c, lw=1.1, label=f"ε = {eps:.0e}")
        ax_d.legend(fontsize=6, ncol=2, loc="lower right")
    ax_d.set_xlabel("epoch (full-batch GD step)")
    ax_d.set_ylabel("log10 mean L1 distance of 5 replicas")
    ax_d.set_title("(b) replica distance vs time: median and quartiles over initialisations",
                   fontsize=9)
    ax_s = fig.add_subplot(grid[0, 3])
    if "spectrum" in arrays:
        ex = arrays["spectrum"]
        for m in range(ex.shape[0]):
            ax_s.plot(np.arange(1, ex.shape[1] + 1), ex[m], ".-", lw=0.6, ms=2)
        ax_s.axhline(0, color="k", lw=0.8)
        ax_s.set_yscale("symlog", linthresh=1e-4)
        sp = summary["spectrum"]
        ax_s.set_title(f"(d) full spectrum, {sp['n_inits']} inits, {sp['steps']} steps\n"
                       f"near-zero (|λ|≤1e-3): {sp['near_zero']['0.001']}", fontsize=8)
    ax_s.set_xlabel("index i")
    ax_s.set_ylabel("λ_i (nats / epoch)")
    labels = summary["loss_labels"]
    for m in range(n_loss):
        axl = fig.add_subplot(grid[1, m])
        loss = arrays["loss_kept"][:, m]
        colour = _LABEL_COLOURS.get(labels[m], "k")
        axl.plot(np.arange(loss.size), loss, color=colour, lw=0.5)
        axl.set_yscale("log")
        axl.set_title(f"init {m}: {labels[m]}", fontsize=9, color=colour)
        axl.set_xlabel("epoch", fontsize=8)
        if m == 0:
            axl.set_ylabel("training loss")
        show = min(60, loss.size // 4)
        ins = axl.inset_axes([0.55, 0.58, 0.42, 0.38])
        ins.plot(np.arange(loss.size - show, loss.size), loss[-show:], ".-", color=colour,
                 lw=0.5, ms=1.5)
        ins.tick_params(labelsize=5)
        ins.set_title(f"last {show}", fontsize=6, pad=2)
    fracs = ", ".join(f"{k} {v:.0%}" if v >= 0.005 else f"{k} <1%"
                      for k, v in sorted(summary["label_fractions"].items(), key=lambda kv: -kv[1]))
    fig.suptitle(f"η = {job['lr']:g}, {job['steps']} epochs: regime {summary['regime']} "
                 f"(loss labels over all initialisations: {fracs})", fontsize=11)
    return _save(fig, path)
