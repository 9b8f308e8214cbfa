"""Figures of study 2 (the only glassy module that imports matplotlib).

Every function takes the records (:class:`~mdesc.glassy.sweep.NetRecord`) and/or the result of
:func:`~mdesc.glassy.summary.analyze_sweep`, and writes one PNG atomically.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mdesc.glassy.analysis import aging_collapse
from mdesc.glassy.summary import late_waiting_times
from mdesc.store import atomic_path

__all__ = ["plot_losses", "plot_learning_time", "plot_aging", "plot_spikes", "plot_lr_pilot",
           "write_figures"]


def _plt():
    # matplotlib is imported only when a figure is drawn: the analyses run without it
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    _plt().close(fig)


def _colors(n):
    cmap = _plt().get_cmap("viridis")
    return [cmap(i / max(n - 1, 1) * 0.92) for i in range(n)]


def _finish_row(fig, axes, ylabel: str, path) -> None:
    """A one-row figure of loss against SGD step: x label and grid on every panel, the y label
    on the first, the legend on the last; then saved."""
    for ax in axes[0]:
        ax.set_xlabel("SGD step t")
        ax.grid(True, which="both", alpha=0.2)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)


def plot_losses(path, nets, result) -> None:
    """Training loss against SGD step, log-log, one panel per depth: every seed thin, the
    power-law fit of seed 0 dashed; minibatch means dotted in the background."""
    plt = _plt()
    depths = sorted({n.depth for n in nets})
    widths = sorted({n.width for n in nets})
    col = dict(zip(widths, _colors(len(widths))))
    fits = {(r["depth"], r["width"], r["seed"]): r for r in result["nets"]}
    fig, axes = plt.subplots(1, len(depths), figsize=(5.0 * len(depths), 4.3), squeeze=False,
                             sharey=True)
    for ax, d in zip(axes[0], depths):
        first_seed = min(n.seed for n in nets if n.depth == d)
        for n in (n for n in nets if n.depth == d):
            ok = np.isfinite(n.train_loss) & (n.times > 0)
            ax.loglog(n.times[ok], n.train_loss[ok], "-", lw=0.9, color=col[n.width],
                      label=f"w={n.width}" if n.seed == first_seed else None)
            t_spike = fits.get((n.depth, n.width, n.seed), {}).get("spike_time")
            if t_spike is not None and np.isfinite(t_spike):
                k = int(np.searchsorted(n.times, t_spike))
                if k < len(n.times) and np.isfinite(n.train_loss[k]):
                    ax.plot(n.times[k], n.train_loss[k], "x", color="red", ms=6, mew=1.5)
            r = fits.get((n.depth, n.width, n.seed), {})
            if n.seed == first_seed and "l_inf" in r:
                tt = np.geomspace(r["fit_t_min"], n.times[ok].max(), 60)
                ax.loglog(tt, r["l_inf"] + r["amplitude"] * tt ** -r["alpha"], "--",
                          color=col[n.width], lw=0.8)
        for thr in result["thresholds"]:
            ax.axhline(thr, color="0.5", lw=0.6, ls=":")
        ax.set_title(f"depth {d}: training loss (dashed: L_inf + A t^-alpha fit; "
                     "x: first loss spike)", fontsize=8.5)
    _finish_row(fig, axes, "training cross-entropy (nats / voice / step)", path)


def plot_learning_time(path, result) -> None:
    """Per depth: t* against width for every threshold (seed mean with its 95% interval) with
    the pooled fit ``C / (w - w_c)``; last panel: w_c against depth per threshold (pooled fit
    with its error, and the interval over seeds), which answers whether w_c falls with depth."""
    plt = _plt()
    depths = sorted({c["depth"] for c in result["critical_width"]})
    thresholds = sorted({c["threshold"] for c in result["critical_width"]}, reverse=True)
    color = {thr: f"C{i % 10}" for i, thr in enumerate(thresholds)}
    fig, axes = plt.subplots(1, len(depths) + 1, figsize=(4.3 * (len(depths) + 1), 4.2),
                             squeeze=False)
    axes = axes[0]
    for ax, d in zip(axes, depths):
        rows = [r for r in result["widths"] if r["depth"] == d]
        ws = np.array([r["width"] for r in rows], dtype=float)
        plotted = False
        for thr in thresholds:
            c = next(c for c in result["critical_width"] if c["depth"] == d and c["threshold"] == thr)
            stats = [r[f"t_star@{thr:g}"] for r in rows]
            mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in stats], float)
            lo = np.array([np.nan if s["lo"] is None else s["lo"] for s in stats], float)
            hi = np.array([np.nan if s["hi"] is None else s["hi"] for s in stats], float)
            fin = np.isfinite(mean) & (mean > 0)
            if not fin.any():
                continue
            plotted = True
            yerr = np.vstack([np.where(np.isfinite(lo), mean - lo, 0),
                              np.where(np.isfinite(hi), hi - mean, 0)])
            pooled = c["pooled"]
            label = f"L*={thr:g}"
            if pooled.get("w_c") is not None and not pooled["at_bound"]:
                label += f": w_c={pooled['w_c']:.3g}±{pooled['w_c_err']:.2g}"
                wg = np.linspace(max(pooled["w_c"], 0) + 0.05 * (ws.max() - ws.min()) / 8,
                                 ws.max() * 1.05, 200)
                wg = wg[wg > pooled["w_c"]]
                ax.plot(wg, pooled["C"] / (wg - pooled["w_c"]), "-", color=color[thr], lw=0.9)
            ax.errorbar(ws[fin], mean[fin], yerr=yerr[:, fin], fmt="o", color=color[thr], ms=4,
                        capsize=2, label=label)
        if plotted:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("width w")
        ax.set_title(f"depth {d}: t* (mean over seeds, 95% interval); line C/(w − w_c)",
                     fontsize=8)
        ax.grid(True, which="both", alpha=0.25)
    axes[0].set_ylabel("learning time t* (SGD steps)")
    ax = axes[-1]
    for k, thr in enumerate(thresholds):
        xs, ys, es, los, his = [], [], [], [], []
        for d in depths:
            c = next(c for c in result["critical_width"] if c["depth"] == d and c["threshold"] == thr)
            p, s = c["pooled"], c["w_c_seeds"]
            if p.get("w_c") is None or p["at_bound"]:
                continue
            xs.append(d + 0.06 * (k - len(thresholds) / 2))
            ys.append(p["w_c"])
            es.append(p["w_c_err"] or 0.0)
            los.append(s["lo"] if s.get("lo") is not None else np.nan)
            his.append(s["hi"] if s.get("hi") is not None else np.nan)
        if xs:
            ax.errorbar(xs, ys, yerr=es, fmt="o-", color=color[thr], ms=4, capsize=3,
                        label=f"L*={thr:g} (pooled ± err)")
            ax.vlines(np.array(xs) + 0.025, los, his, color=color[thr], lw=3, alpha=0.35)
    ax.set_xticks(depths)
    ax.set_xlabel("depth d")
    ax.set_ylabel("critical width w_c")
    ax.set_title("w_c against depth (bars: 95% interval over seeds)", fontsize=8)
    ax.grid(True, alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def _pick_nets(nets, result):
    """Per depth: the narrowest and the widest width (seed 0), labelled by phase."""
    w_c = {a["depth"]: a["w_c"] for a in result["aging"]}
    out = []
    for d in sorted({n.depth for n in nets}):
        ws = sorted({n.width for n in nets if n.depth == d})
        seed = min(n.seed for n in nets if n.depth == d)
        for w in (ws[0], ws[-1]):
            net = next(n for n in nets if n.depth == d and n.width == w and n.seed == seed)
            wc = w_c.get(d, math.nan)
            phase = "" if not math.isfinite(wc) else ("under" if w < wc else "over")
            out.append((net, phase, wc))
    return out


def plot_aging(path, nets, result) -> None:
    """Delta(tau_w, tau) against tau (left) and tau/tau_w (right) for the narrowest and widest
    net of each depth; titles give the collapse ratio spread(tau/tau_w) / spread(tau)."""
    plt = _plt()
    shown = _pick_nets(nets, result)
    min_tw = result.get("aging_min_tw")
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 2.7 * len(shown)), squeeze=False)
    for row, (net, phase, wc) in enumerate(shown):
        cur = net.aging
        cols = _colors(len(cur.lags))
        late = late_waiting_times(cur, min_tw)
        col = aging_collapse(late) if len(late.lags) >= 2 else None
        for i, (tw, lag, delta) in enumerate(zip(cur.waiting_times, cur.lags, cur.delta)):
            ok = delta > 0
            used = min_tw is None or tw >= min_tw
            style = dict(lw=1.3 if used else 0.7, ls="-" if used else ":", color=cols[i])
            axes[row][0].loglog(lag[ok], delta[ok], label=f"τ_w={tw}", **style)
            axes[row][1].loglog(lag[ok] / tw, delta[ok], **style)
        tag = f" (w {'<' if phase == 'under' else '>'} w_c = {wc:.3g})" if phase else ""
        axes[row][0].set_title(f"d={net.depth}, w={net.width}{tag}: Δ vs τ", fontsize=8.5)
        used = "all τ_w" if min_tw is None else f"τ_w ≥ {min_tw:g} (solid)"
        ratio = math.nan if col is None else col.ratio
        axes[row][1].set_title(f"vs τ/τ_w: collapse ratio {ratio:.3g} over {used} "
                               "(< 1: aging)", fontsize=8.5)
        axes[row][0].set_ylabel("Δ(τ_w, τ)")
        for ax in axes[row]:
            ax.grid(True, which="both", alpha=0.2)
    axes[0][0].legend(fontsize=6, ncol=2)
    axes[-1][0].set_xlabel("lag τ (SGD steps)")
    axes[-1][1].set_xlabel("τ / τ_w")
    fig.tight_layout()
    _save(fig, path)


def plot_spikes(path, nets) -> None:
    """Minibatch loss per record bin: mean (line) and maximum (dots) — spikes would show as
    maxima far above the mean."""
    plt = _plt()
    depths = sorted({n.depth for n in nets})
    widths = sorted({n.width for n in nets})
    col = dict(zip(widths, _colors(len(widths))))
    fig, axes = plt.subplots(1, len(depths), figsize=(5.0 * len(depths), 3.8), squeeze=False,
                             sharey=True)
    for ax, d in zip(axes[0], depths):
        seed = min(n.seed for n in nets if n.depth == d)
        for n in (n for n in nets if n.depth == d and n.seed == seed):
            ok = np.isfinite(n.batch_mean) & (n.times > 0)
            ax.loglog(n.times[ok], n.batch_mean[ok], "-", lw=0.9, color=col[n.width],
                      label=f"w={n.width}")
            ax.loglog(n.times[ok], n.batch_max[ok], ".", ms=2.5, color=col[n.width])
        ax.set_title(f"depth {d}, seed {seed}: minibatch loss per bin (line mean, dots max)",
                     fontsize=8.5)
    _finish_row(fig, axes, "minibatch cross-entropy", path)


def plot_lr_pilot(path, groups) -> None:
    """Short learning-rate pilot: ``groups`` maps ``(depth, lr)`` to an
    :class:`~mdesc.glassy.ensemble.EnsembleResult` (one net per width). Full training loss per
    lr (one panel per depth, line style per width) and, in the legend, the largest ratio of a
    bin's maximum minibatch loss to its mean (a loss spike would make it large)."""
    plt = _plt()
    depths = sorted({d for d, _ in groups})
    lrs = sorted({lr for _, lr in groups})
    col = dict(zip(lrs, _colors(len(lrs))))
    styles = ["--", ":", "-", "-."]
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.2), squeeze=False,
                             sharey=True)
    for ax, d in zip(axes[0], depths):
        for lr in lrs:
            res = groups.get((d, lr))
            if res is None:
                continue
            ok = res.reached() & (res.times > 0)
            spike = np.nanmax((res.batch_max / res.batch_mean)[ok & (res.times >= 10)])
            for i, w in enumerate(res.config.widths):
                ax.loglog(res.times[ok], res.train_loss[ok, i], styles[i % len(styles)],
                          color=col[lr], lw=1,
                          label=f"lr={lr:g} (max spike ratio {spike:.2f})" if i == len(
                              res.config.widths) - 1 else None)
        ws = ", ".join(f"w={w} {styles[i % len(styles)]}" for i, w in
                       enumerate(next(r for (dd, _), r in groups.items() if dd == d).config.widths))
        ax.set_title(f"depth {d}: training loss ({ws})", fontsize=8.5)
        ax.set_xlabel("SGD step t")
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training cross-entropy (nats / voice / step)")
    fig.tight_layout()
    _save(fig, path)


def write_figures(out, nets, result, aging_nets=None) -> list[str]:
    """All figures of a sweep into folder ``out``; returns their file names. aging_nets: the
    nets as analysed for aging (e.g. censored at their first loss spike; default ``nets``)."""
    out = Path(out)
    names = ["loss_curves.png", "learning_time.png", "aging.png", "minibatch_loss.png"]
    plot_losses(out / names[0], nets, result)
    plot_learning_time(out / names[1], result)
    plot_aging(out / names[2], nets if aging_nets is None else aging_nets, result)
    plot_spikes(out / names[3], nets)
    return names
