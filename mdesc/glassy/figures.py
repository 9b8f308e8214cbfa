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
           "plot_lr_check", "write_figures"]


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
        seeds = sorted({n.seed for n in nets if n.depth == d})
        ax.set_title(f"depth {d}, widths {widths[0]}–{widths[-1]}, {_seeds_text(seeds)} (thin);\n"
                     f"dashed: L_inf + A t^-alpha fit of seed {first_seed}; x: first loss spike",
                     fontsize=8)
    _finish_row(fig, axes, "training cross-entropy (nats / voice / step)", path)


def _seeds_text(seeds) -> str:
    return "seed " + str(seeds[0]) if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def _divergence(scaling, depth: int, thr: float) -> dict | None:
    if scaling is None:
        return None
    return next((d for d in scaling["divergence"] if d["depth"] == depth
                 and d["threshold"] == thr), None)


def _iv(pair) -> str:
    lo, hi = pair if pair is not None else (None, None)
    return "[" + ", ".join("open" if v is None else f"{v:.3g}" for v in (lo, hi)) + "]"


def _learning_panel(ax, result, scaling, d, thresholds, color) -> None:
    """One depth: per threshold the seeds' median t* (what is fitted) with the seeds' range as
    its bar, each seed a dot; the free-exponent fit (solid, unless refused) and the nu = 1 fit
    (dashed)."""
    rows = [r for r in result["nets"] if r["depth"] == d]
    seeds = sorted({r["seed"] for r in rows})
    plotted, ys = False, []
    for thr in thresholds:
        c = next(c for c in result["critical_width"] if c["depth"] == d and c["threshold"] == thr)
        ws = np.asarray(c["widths"], dtype=float)
        med = np.array([np.nan if m is None else m for m in c["median_t_star"]], dtype=float)
        per = np.array([[next((r[f"t_star@{thr:g}"] for r in rows if r["width"] == w
                               and r["seed"] == s), None) for w in c["widths"]] for s in seeds],
                       dtype=float)
        per[~np.isfinite(per)] = np.nan
        fin = np.isfinite(med) & (med > 0)
        if not fin.any():
            continue
        plotted = True
        lo = np.fmin(np.nanmin(np.where(np.isfinite(per), per, np.inf), axis=0), med)
        hi = np.fmax(np.nanmax(np.where(np.isfinite(per), per, -np.inf), axis=0), med)
        yerr = np.vstack([med[fin] - lo[fin], hi[fin] - med[fin]])  # >= 0: ends > 0 on log
        ys += [lo[fin].min(), hi[fin].max()]
        div = _divergence(scaling, d, thr)
        label = f"L*={thr:g}"
        if div is not None and not div.get("error") and not div.get("refused"):
            label += (f": w_c={div['w_c']:.3g} {_iv(div['w_c_interval'])}, "
                      f"ν={div['nu']:.2g} {_iv(div['nu_interval'])}")
            wg = div["w_c"] + np.geomspace(1e-3, 1.0, 200) * (ws.max() * 1.05 - div["w_c"])
            ax.plot(wg, div["amplitude"] * (wg - div["w_c"]) ** -div["nu"], "-",
                    color=color[thr], lw=1.0)
        elif div is not None:
            label += ": free-ν fit refused"
        pooled = c["pooled"]
        if pooled.get("w_c") is not None and not pooled["at_bound"]:
            wg = pooled["w_c"] + np.geomspace(1e-3, 1.0, 200) * (ws.max() * 1.05 - pooled["w_c"])
            ax.plot(wg, pooled["C"] / (wg - pooled["w_c"]), "--", color=color[thr], lw=0.7)
        for row in per:
            ax.plot(ws, row, ".", color=color[thr], ms=2.5, alpha=0.5)
        ax.errorbar(ws[fin], med[fin], yerr=yerr, fmt="o", color=color[thr], ms=4, capsize=2,
                    label=label)
    if plotted:
        ax.set_yscale("log")
        ax.set_ylim(min(ys) / 2, max(ys) * 4)   # the fitted curves run off towards w_c
        ax.legend(fontsize=6)
    ax.set_xlabel("width w")
    ax.set_title(f"depth {d}, widths {c['widths'][0]:g}–{c['widths'][-1]:g}, "
                 f"{_seeds_text(seeds)}:\nt* median over seeds (bar: seed range, dots: seeds); "
                 "solid C/(w−w_c)^ν, dashed ν = 1", fontsize=7.5)
    ax.grid(True, which="both", alpha=0.25)


def plot_learning_time(path, result, scaling=None) -> None:
    """Per depth: t* against width per threshold, as fitted (median over seeds, the seeds'
    range as its bar) with the free-exponent fit (``scaling``'s divergence, when not refused)
    and the ``nu = 1`` fit; last panel: w_c against depth (free fit with its profile interval;
    ``nu = 1`` fit with its error, when it has one)."""
    plt = _plt()
    depths = sorted({c["depth"] for c in result["critical_width"]})
    thresholds = sorted({c["threshold"] for c in result["critical_width"]}, reverse=True)
    color = {thr: f"C{i % 10}" for i, thr in enumerate(thresholds)}
    fig, axes = plt.subplots(1, len(depths) + 1, figsize=(4.6 * (len(depths) + 1), 4.6),
                             squeeze=False)
    axes = axes[0]
    for ax, d in zip(axes, depths):
        _learning_panel(ax, result, scaling, d, thresholds, color)
    axes[0].set_ylabel("learning time t* (SGD steps)")
    ax = axes[-1]
    for k, thr in enumerate(thresholds):
        off = 0.08 * (k - len(thresholds) / 2)
        free = [(d, _divergence(scaling, d, thr)) for d in depths]
        free = [(d, f) for d, f in free if f is not None and not f.get("error")
                and not f.get("refused")]
        if free:
            xs = np.array([d for d, _ in free], dtype=float) + off
            ys = np.array([f["w_c"] for _, f in free])
            lo = np.array([f["w_c_interval"][0] for _, f in free])
            hi = np.array([f["w_c_interval"][1] for _, f in free])
            ax.errorbar(xs, ys, yerr=np.vstack([ys - lo, hi - ys]), fmt="o-", color=color[thr],
                        ms=4, capsize=3, label=f"L*={thr:g}: free ν (profile 95%)")
        pts = []
        for d in depths:
            p = next(c for c in result["critical_width"]
                     if c["depth"] == d and c["threshold"] == thr)["pooled"]
            if p.get("w_c") is not None and not p["at_bound"]:
                err = p.get("w_c_err")
                pts.append((d + off + 0.03, p["w_c"], err if err is not None and
                            math.isfinite(err) else 0.0))
        if pts:
            x, y, e = (np.array(v, dtype=float) for v in zip(*pts))
            ax.errorbar(x, y, yerr=e, fmt="s", mfc="none", color=color[thr], ms=4, capsize=2,
                        lw=0.7, label=f"L*={thr:g}: ν = 1 (± err)")
    ax.set_xticks(depths)
    ax.set_xlabel("depth d")
    ax.set_ylabel("critical width w_c")
    ax.set_title("w_c against depth (refused free fits not shown)", fontsize=8)
    ax.grid(True, alpha=0.25)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)


def _pick_nets(nets, result, w_c=None):
    """Per depth: the narrowest and the widest width (the lowest seed), labelled by phase."""
    if w_c is None:
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


def _net_scaling(scaling, net) -> dict | None:
    """The net's fitted aging exponent over the late waiting times and all lags."""
    if scaling is None:
        return None
    return next((e for e in scaling["aging_nets"] if e["depth"] == net.depth
                 and e["width"] == net.width and e["seed"] == net.seed
                 and e["waiting_times"] == "late" and e["lag_window"] == "all"), None)


def plot_aging(path, nets, result, scaling=None) -> None:
    """Delta(tau_w, tau) against tau (left) and against tau / tau_w^mu (right, mu fitted by
    the collapse when ``scaling`` is given, else mu = 1) for the narrowest and widest net of
    each depth (its lowest seed, named in the titles)."""
    plt = _plt()
    w_c = None if scaling is None else {int(d): v["w_c"]
                                        for d, v in scaling["phase_w_c"].items()}
    shown = _pick_nets(nets, result, w_c)
    min_tw = result.get("aging_min_tw")
    fig, axes = plt.subplots(len(shown), 2, figsize=(10.5, 2.9 * len(shown)), squeeze=False)
    for row, (net, phase, wc) in enumerate(shown):
        cur = net.aging
        cols = _colors(len(cur.lags))
        fit = _net_scaling(scaling, net)
        mu = 1.0 if fit is None or fit.get("mu") is None else fit["mu"]
        for i, (tw, lag, delta) in enumerate(zip(cur.waiting_times, cur.lags, cur.delta)):
            ok = delta > 0
            used = min_tw is None or tw >= min_tw
            style = dict(lw=1.3 if used else 0.7, ls="-" if used else ":", color=cols[i])
            axes[row][0].loglog(lag[ok], delta[ok], label=f"τ_w={tw}", **style)
            axes[row][1].loglog(lag[ok] / float(tw) ** mu, delta[ok], **style)
        tag = f", w {'<' if phase == 'under' else '>'} w_c = {wc:.3g}" if phase else ""
        axes[row][0].set_title(f"depth {net.depth}, width {net.width}, seed {net.seed}{tag}: "
                               "Δ vs τ", fontsize=8.5)
        used = "all τ_w" if min_tw is None else f"τ_w ≥ {min_tw:g} (solid)"
        if fit is not None and fit.get("mu") is not None:
            text = (f"vs τ/τ_w^μ, μ = {mu:.2f} fitted ({used}): residual fraction "
                    f"{fit['residual_fraction']:.2g},\ncollapse cost / cost against τ: "
                    f"{fit['ratio_mu']:.2g} at μ, {fit['ratio_1']:.2g} at μ = 1")
        else:
            late = late_waiting_times(cur, min_tw)
            col = aging_collapse(late) if len(late.lags) >= 2 else None
            text = (f"vs τ/τ_w: spread ratio to τ "
                    f"{'n/a' if col is None else format(col.ratio, '.3g')} over {used}")
        axes[row][1].set_title(text, fontsize=7.5)
        axes[row][0].set_ylabel("Δ(τ_w, τ)")
        for ax in axes[row]:
            ax.grid(True, which="both", alpha=0.2)
    axes[0][0].legend(fontsize=6, ncol=2)
    axes[-1][0].set_xlabel("lag τ (SGD steps)")
    axes[-1][1].set_xlabel("τ / τ_w^μ")
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
        cfg = next(r for (dd, _), r in groups.items() if dd == d).config
        ws = ", ".join(f"w={w} {styles[i % len(styles)]}" for i, w in enumerate(cfg.widths))
        ax.set_title(f"depth {d}, {_seeds_text(sorted(set(cfg.seeds)))}: training loss ({ws})",
                     fontsize=8.5)
        ax.set_xlabel("SGD step t")
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training cross-entropy (nats / voice / step)")
    fig.tight_layout()
    _save(fig, path)


def plot_lr_check(path, groups, check) -> None:
    """The learning-rate check: training loss per rate (colour) and width (line style), one
    panel per depth, every net named; a red x at each net's first spike; the verdict per rate
    in the legend."""
    plt = _plt()
    rates = sorted(groups)
    depths = sorted({n.depth for lr in rates for n in groups[lr]})
    col = dict(zip(rates, _colors(len(rates))))
    styles = ["-", "--", ":", "-."]
    verdict = {e["lr"]: e for e in check["per_lr"]}
    fig, axes = plt.subplots(1, len(depths), figsize=(5.2 * len(depths), 4.2), squeeze=False,
                             sharey=True)
    for ax, d in zip(axes[0], depths):
        nets = [n for n in groups[rates[0]] if n.depth == d]
        keys = sorted({(n.width, n.seed) for n in nets})
        for lr in rates:
            for k, n in enumerate(sorted((n for n in groups[lr] if n.depth == d),
                                         key=lambda n: (n.width, n.seed))):
                ok = np.isfinite(n.train_loss) & (n.times > 0)
                e = verdict[lr]
                ax.loglog(n.times[ok], n.train_loss[ok], styles[k % len(styles)], color=col[lr],
                          lw=1, label=(f"lr={lr:g}: {'stable' if e['stable'] else 'unstable'}"
                                       if k == 0 else None))
                spike = next(j["first_spike"] for j in e["nets"] if j["depth"] == d
                             and j["width"] == n.width and j["seed"] == n.seed)
                if math.isfinite(spike):
                    i = min(int(np.searchsorted(n.times, spike)), n.times.size - 1)
                    ax.plot(n.times[i], n.train_loss[i], "x", color="red", ms=6)
        names = ", ".join(f"w={w} s={s} {styles[i % len(styles)]}" for i, (w, s) in
                          enumerate(keys))
        ax.set_title(f"depth {d}: {names}", fontsize=7.5)
        ax.set_xlabel("SGD step t")
        ax.grid(True, which="both", alpha=0.2)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("training cross-entropy (nats / voice / step)")
    fig.suptitle(f"largest stable lr: {check['largest_stable_lr']} (x: first spike)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def write_figures(out, nets, result, aging_nets=None, scaling=None) -> list[str]:
    """All figures of a sweep into folder ``out``; returns their file names. aging_nets: the
    nets as analysed for aging (e.g. censored at their first loss spike; default ``nets``);
    scaling: :func:`~mdesc.glassy.claims.scaling_analysis` (free-exponent fits, aging mu)."""
    out = Path(out)
    names = ["loss_curves.png", "learning_time.png", "aging.png", "minibatch_loss.png"]
    plot_losses(out / names[0], nets, result)
    plot_learning_time(out / names[1], result, scaling)
    plot_aging(out / names[2], nets if aging_nets is None else aging_nets, result, scaling)
    plot_spikes(out / names[3], nets)
    return names
