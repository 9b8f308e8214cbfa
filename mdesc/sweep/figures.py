"""Figures of a run's sweep (PNG bytes; matplotlib on the Agg backend, imported only when a
figure is drawn, so the engine works without it until a report is asked for).

With :mod:`mdesc.sweep.report` the only modules that import matplotlib.  Every figure takes
the epoch-sorted run table (:func:`mdesc.sweep.analysis.sorted_table`) and its analysis.

- :func:`descent_figure`: losses with D~ (top) and lambda_1 (bottom), phases shaded,
  transitions, critical stretches, minima, stability events (ticks at the bottom of each
  panel) and sharp test-loss drops marked; the t = 0 twin's D~ and the drive's exponent beside.
- :func:`bifurcation_figure`: reduced sums per review against epoch, events marked.
- :func:`pooled_figure`: the test loss and lambda_1 of several seeds side by side.
"""
from __future__ import annotations

import io
import math
from typing import Any, Mapping

import numpy as np

from mdesc.sweep.settings import RunDescription

EVENT_COLOR = "#e08214"
DROP_COLOR = "black"
ORDER_COLOR = "#dbe9f6"      # background of ordered stretches
CHAOS_COLOR = "#fbe0cf"      # background of chaotic stretches
UNKNOWN_COLOR = "#e6e6e6"
STRETCH_COLOR = "#7b3294"
REC_COLOR = "#1a9641"
#: label value -> (shading colour, label name as in the table, legend text)
LABEL_COLORS = {0: (ORDER_COLOR, "ordered", "ordered"), 1: (CHAOS_COLOR, "chaotic", "chaotic"),
                2: ("#f4f0c8", "marginal", "marginal (within the margins)"),
                3: ("#e2d4ec", "disagree", "λ₁ and D̃ disagree"),
                -1: (UNKNOWN_COLOR, "unknown", "unknown (non-finite)")}
LABELLING_WORDS = {"combined": "λ₁ ± 2 s.e. and D̃ together", "distance": "D̃ alone",
                   "lyapunov": "λ₁ alone"}


# ----------------------------------------------------------------------------- small helpers

def _fmt(v: Any, digits: int = 4) -> str:
    """A number for people: None/NaN -> an em dash, floats to ``digits`` significant digits."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return "—"
        return f"{float(v):.{digits}g}"
    return str(v)


def _spans(epoch: np.ndarray, label: np.ndarray) -> list[tuple[float, float, int]]:
    """Contiguous runs of equal label as (left, right, label); edges halfway between checkpoints."""
    n = epoch.size
    if n == 1:
        return [(epoch[0] - 0.5, epoch[0] + 0.5, int(label[0]))]
    mid = 0.5 * (epoch[1:] + epoch[:-1])
    left = np.concatenate([[epoch[0]], mid])
    right = np.concatenate([mid, [epoch[-1]]])
    out: list[tuple[float, float, int]] = []
    for i in range(n):
        if out and out[-1][2] == label[i]:
            out[-1] = (out[-1][0], right[i], out[-1][2])
        else:
            out.append((left[i], right[i], int(label[i])))
    return out


def _shade(ax, epoch, label) -> None:
    for lo, hi, lab in _spans(epoch, label):
        ax.axvspan(lo, hi, color=LABEL_COLORS[lab][0], lw=0, zorder=0)


def _phase_handles(label=None):
    from matplotlib.patches import Patch

    present = set(np.asarray(label).tolist()) if label is not None else {0, 1}
    return [Patch(color=LABEL_COLORS[v][0], label=LABEL_COLORS[v][2])
            for v in (0, 1, 2, 3, -1) if v in present or v in (0, 1)]


def _xlim(ax, epoch) -> None:
    span = float(np.ptp(epoch))
    pad = 0.01 * span if span > 0 else 0.5
    ax.set_xlim(epoch[0] - pad, epoch[-1] + pad)


def _figure(**kw):
    """A matplotlib Figure on the Agg canvas, independent of pyplot's global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, d: RunDescription | None = None) -> bytes:
    """The figure as PNG bytes; with ``d``, every text in it (labels, legends, titles) in the
    run's words first (its held-out loss: :meth:`RunDescription.words`)."""
    if d is not None:
        from matplotlib.text import Text

        for text in fig.findobj(Text):
            text.set_text(d.words(text.get_text()))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _col(t: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    n = t["epoch"].size
    return t[key] if key in t and t[key].shape[:1] == (n,) else np.full(n, np.nan)


# ----------------------------------------------------------------------------- figures

def _mark_events(ax, analysis, with_labels: bool) -> list:
    """Transitions (dashed), critical stretches (bar at the top), recommended checkpoint."""
    handles = []
    for k, t in enumerate(analysis.transitions):
        style = "--" if t.kind == "order_to_chaos" else ":"
        h = ax.axvline(t.epoch, color="0.25", ls=style, lw=1.1, zorder=2,
                       label=("order→chaos" if t.kind == "order_to_chaos" else "chaos→order")
                       + " transition")
        if with_labels and h.get_label() not in [x.get_label() for x in handles]:
            handles.append(h)
    for st in analysis.stretches:
        h = ax.axvspan(st.start_epoch, st.end_epoch, ymin=0.965, ymax=1.0, color=STRETCH_COLOR,
                       alpha=0.75, lw=0, zorder=3, label="critical stretch (edge of chaos)")
        if with_labels and h.get_label() not in [x.get_label() for x in handles]:
            handles.append(h)
    if analysis.recommended_epoch is not None:
        h = ax.axvline(analysis.recommended_epoch, color=REC_COLOR, lw=2.0, zorder=4,
                       label="recommended (stability only)")
        if with_labels:
            handles.append(h)
    epochs = analysis.epochs
    for kind, style, name in (("lyapunov", "-", "λ₁ event"), ("structure", "--",
                                                               "attractor-structure event")):
        xs = [0.5 * (ev.epoch_before + ev.epoch_after) for ev in analysis.events
              if ev.kind == kind]
        for x in xs:
            h = ax.axvline(x, ymin=0.0, ymax=0.07, color=EVENT_COLOR, lw=1.6, ls=style,
                           zorder=4, label=name)
        if xs and with_labels:
            handles.append(h)
    if analysis.drops:
        xs = [0.5 * (epochs[g] + epochs[g + 1]) for g in analysis.drops]
        for x in xs:
            h = ax.axvline(x, ymin=0.93, ymax=1.0, color=DROP_COLOR, lw=1.6, zorder=4,
                           label="sharp test-loss drop")
        if with_labels:
            handles.append(h)
    return handles


def shading_labels(analysis) -> list[str]:
    """The label each checkpoint is shaded with in every figure: the analysis's one label
    (``analysis.label``, the table's ``label`` column)."""
    return [LABEL_COLORS[int(v)][1] for v in analysis.label]


def descent_figure(t: Mapping[str, np.ndarray], analysis, d: RunDescription | None = None
                   ) -> bytes:
    """Losses with D~ (top), accuracies (middle), lambda_1 on a symlog axis with its error band
    (bottom); every panel shaded by the one label; the run named in the title."""
    d = d or RunDescription()
    epoch = t["epoch"]
    fig = _figure(figsize=(11, 10))
    ax1, ax_acc, ax3 = fig.subplots(3, 1, sharex=True, gridspec_kw={
        "height_ratios": [3, 1.4, 2], "hspace": 0.08})
    ms = 3 if epoch.size <= 200 else 0
    _loss_panel(ax1, t, analysis, d, ms)
    _accuracy_panel(ax_acc, t, analysis)
    _lyapunov_panel(ax3, t, analysis, d, ms)
    ax1.set_title(title_of(analysis, d.name), fontsize=10.5, loc="left")
    _xlim(ax3, epoch)
    return _png(fig, d)


def _loss_panel(ax1, t, analysis, d: RunDescription, ms: int) -> None:
    """Losses (left, on top) and D~ (right twin): the D~ floor raised off the bottom so it
    never hides under a training loss near 0."""
    epoch, s = t["epoch"], analysis.settings
    test, train, ld = _col(t, "test_loss"), _col(t, "train_loss"), _col(t, "log_distance")
    ax2 = ax1.twinx()
    _shade(ax2, epoch, analysis.label)
    ax1.set_zorder(ax2.get_zorder() + 1)
    ax1.patch.set_visible(False)
    h_test, = ax1.plot(epoch, test, color="black", lw=1.6, marker="o", ms=ms, label="test loss",
                       zorder=5)
    h_train, = ax1.plot(epoch, train, color="0.55", lw=1.2, label="train loss", zorder=5)
    hs = [h_test, h_train]
    if analysis.minima:
        mi = [m.index for m in analysis.minima]
        hs.append(ax1.plot(epoch[mi], test[mi], "v", color="#2c7bb6", ms=7, zorder=6,
                           label="test-loss local minimum")[0])
    if analysis.global_minimum is not None:
        g = analysis.global_minimum["index"]
        hs.append(ax1.plot(epoch[g], test[g], "*", color="#d7191c", ms=15, mec="black", mew=0.6,
                           zorder=7, label="global test-loss minimum")[0])
    hs += _mark_events(ax1, analysis, with_labels=True)
    placebo = [(analysis.claims.get("spike_epochs") or [], "0.3", "training-loss spike (placebo)"),
               (analysis.claims.get("param_jump_epochs") or [], "#2b8cbe",
                "parameter jump (placebo)")]
    for xs, color, name in placebo:
        for x in xs:
            h = ax1.axvline(x, ymin=0.07, ymax=0.13, color=color, lw=1.6, zorder=4, label=name)
        if xs:
            hs.append(h)
    ax1.set_ylabel(f"loss ({d.loss}, nats)")
    hs.append(ax2.plot(epoch, ld, color="#c0392b", lw=1.3, marker="s", ms=max(ms - 1, 2),
                       alpha=0.9, label="D̃ = mean ln Dᵢ (right axis)")[0])
    ld0 = _col(t, "log_distance_start")
    if np.any(np.isfinite(ld0)) and not np.allclose(ld0, ld, equal_nan=True):
        hs.append(ax2.plot(epoch, ld0, color="#e6550d", lw=0.9, ls="--", alpha=0.8,
                           label="D̃ of the t = 0 twin (right axis)")[0])
    ax2.axhline(s["floor"], color="#c0392b", lw=0.8, ls=":", alpha=0.8)
    ax2.axhline(s["floor"] + s["distance_margin"], color="#c0392b", lw=0.8, ls="-.", alpha=0.6)
    ax2.set_ylabel("D̃ = mean ln Dᵢ   (dotted: floor −15 = order)", color="#c0392b")
    ax2.tick_params(axis="y", colors="#c0392b")
    finite = ld[np.isfinite(ld)]
    top = max(float(finite.max()) if finite.size else s["floor"] + 1, s["floor"] + 2)
    span = top - s["floor"]
    ax2.set_ylim(s["floor"] - 0.3 * span, top + 0.12 * span)
    ax1.legend(handles=hs + _phase_handles(analysis.label), loc="upper left",
               bbox_to_anchor=(1.08, 1.0), fontsize=8.5, frameon=False,
               title=f"phases: {LABELLING_WORDS.get(analysis.measure, analysis.measure)}",
               title_fontsize=8.5)


def _accuracy_panel(ax, t, analysis) -> None:
    """Training and test accuracy beside the losses (or a note that the run has none)."""
    epoch = t["epoch"]
    _shade(ax, epoch, analysis.label)
    tr, te = _col(t, "train_acc"), _col(t, "test_acc")
    if not (np.any(np.isfinite(tr)) or np.any(np.isfinite(te))):
        ax.text(0.5, 0.5, "no accuracy recorded", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
        ax.set_yticks([])
        return
    hs = [ax.plot(epoch, te, color="black", lw=1.4, label="test accuracy")[0],
          ax.plot(epoch, tr, color="0.55", lw=1.1, label="train accuracy")[0]]
    _mark_events(ax, analysis, with_labels=False)
    ax.set_ylabel("accuracy")
    ax.legend(handles=hs, loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8.5,
              frameon=False)


def _lyapunov_panel(ax3, t, analysis, d: RunDescription, ms: int) -> None:
    """lambda_1 +- k s.e. on a symlog axis (linear within the typical error of 0, so -0.002
    is visibly not 0), the test loss on the right twin."""
    epoch, s = t["epoch"], analysis.settings
    lam, se = _col(t, "lyapunov_max"), _col(t, "lyapunov_stderr")
    test = _col(t, "test_loss")
    ax4 = ax3.twinx()
    _shade(ax4, epoch, analysis.label)
    ax3.set_zorder(ax4.get_zorder() + 1)
    ax3.patch.set_visible(False)
    k = s["lyapunov_sigmas"]
    band = np.nan_to_num(se, nan=0.0) * k
    ax3.fill_between(epoch, lam - band, lam + band, color="#8e44ad", alpha=0.25, lw=0)
    h_l, = ax3.plot(epoch, lam, color="#8e44ad", lw=1.3, marker="o", ms=max(ms - 1, 0),
                    label=f"λ₁ (mean over {d.probe})")
    ax3.axhline(s["lyapunov_threshold"], color="#8e44ad", ls=":", lw=0.9)
    fin = se[np.isfinite(se) & (se > 0)]
    lin = float(k * np.median(fin)) if fin.size else 1e-3
    ax3.set_yscale("symlog", linthresh=max(lin, 1e-6))
    lam_d = _col(t, "lyapunov_max_driven")
    h_ld = []
    if np.any(np.isfinite(lam_d)):
        h_ld = [ax3.plot(epoch, lam_d, color="#8e44ad", lw=0.9, ls="--", alpha=0.6,
                         label="λ₁ of the drive (beside)")[0]]
    _mark_events(ax3, analysis, with_labels=False)
    ax3.set_ylabel(f"λ₁ per step (symlog; linear within ±{lin:.2g})", color="#8e44ad")
    ax3.tick_params(axis="y", colors="#8e44ad")
    ax3.set_xlabel(d.axis)
    h_t2, = ax4.plot(epoch, test, color="black", lw=1.0, alpha=0.45,
                     label="test loss (right axis)")
    ax4.set_ylabel("test loss (nats)", color="0.35")
    ax3.legend(handles=[h_l] + h_ld + [_band_handle(k), h_t2], loc="upper left",
               bbox_to_anchor=(1.08, 1.0), fontsize=8.5, frameon=False)


def _band_handle(k):
    from matplotlib.patches import Patch

    return Patch(color="#8e44ad", alpha=0.25, label=f"λ₁ ± {k:g} standard errors")


def title_of(analysis, name: str = "") -> str:
    """The figure title: the run's name, then the optimum, the first order->chaos transition
    of the one label and the recommendation."""
    c = analysis.claims
    parts = []
    if analysis.global_minimum is not None:
        parts.append(f"global test-loss minimum at epoch {_fmt(c['global_min_epoch'])}")
    if math.isfinite(c["first_order_to_chaos_epoch"]):
        parts.append(f"first order→chaos transition at {_fmt(c['first_order_to_chaos_epoch'])}")
    else:
        parts.append("no order→chaos transition")
    if analysis.recommended_epoch is not None:
        parts.append(f"recommended epoch {_fmt(analysis.recommended_epoch)}")
    text = ";  ".join(parts) or "no transitions, no test-loss minimum"
    return f"{name}: {text}" if name else text


def bifurcation_figure(t: Mapping[str, np.ndarray], analysis, d: RunDescription | None = None
                       ) -> bytes | None:
    d = d or RunDescription()
    if "reduced_sum" not in t or t["reduced_sum"].ndim != 2:
        return None
    epoch, rs = t["epoch"], t["reduced_sum"]
    lab = analysis.label
    fig = _figure(figsize=(11, 4.6))
    ax = fig.subplots()
    _shade(ax, epoch, lab)
    x = np.repeat(epoch, rs.shape[1])
    y = rs.reshape(-1)
    c = np.repeat(lab, rs.shape[1])
    ok = np.isfinite(y)
    size = float(np.clip(30000.0 / max(rs.size, 1), 1.5, 10.0))   # points^2
    for value, color, name in ((0, "#2166ac", "ordered checkpoint"),
                               (1, "#b2182b", "chaotic checkpoint"),
                               (2, "#8c6d00", "marginal checkpoint"),
                               (3, "#6a3d9a", "checkpoint where λ₁ and D̃ disagree"),
                               (-1, "0.5", "unknown")):
        m = ok & (c == value)
        if m.any():
            ax.scatter(x[m], y[m], s=size, color=color, alpha=0.55, lw=0, rasterized=True,
                       label=name, zorder=3)
    handles, _ = ax.get_legend_handles_labels()
    handles += _mark_events(ax, analysis, with_labels=True)
    _xlim(ax, epoch)
    ax.set_xlabel(d.axis)
    ax.set_ylabel(f"reduced sum  Σⱼ h_T,j  (per {d.sample})")
    ax.set_title(f"{d.name + ': ' if d.name else ''}bifurcation diagram: {rs.shape[1]} "
                 f"{d.probe} per checkpoint, "
                 f"{epoch.size} checkpoints", fontsize=10.5, loc="left")
    leg = ax.legend(handles=handles + _phase_handles(lab), loc="upper left",
                    bbox_to_anchor=(1.01, 1.0), fontsize=8.5, frameon=False, markerscale=2)
    for h in leg.legend_handles:
        if hasattr(h, "set_alpha"):
            h.set_alpha(1)
    nbad = int((~ok).sum())
    if nbad:
        ax.text(0.99, 0.01, f"{nbad} non-finite values not shown", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="0.3")
    return _png(fig, d)




def pooled_figure(names, tables, analyses, d: RunDescription | None = None) -> bytes:
    """Test loss (top) and zero-input lambda_1 (bottom) of several seeds, events marked."""
    fig = _figure(figsize=(11, 6.5))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, gridspec_kw={"hspace": 0.08})
    from matplotlib import colormaps
    # one distinct colour per run up to 20 (Dark2 for a few, then tab10, tab20)
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = (["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
              if len(names) <= 6 else [cmap(i) for i in range(cmap.N)])
    for k, (name, t, a) in enumerate(zip(names, tables, analyses)):
        col = colors[k % len(colors)]
        ep = t["epoch"]
        ax1.plot(ep, _col(t, "test_loss"), color=col, lw=1.2, label=f"{name} test loss")
        ax2.plot(ep, _col(t, "lyapunov_max"), color=col, lw=1.2, label=f"{name} λ₁")
        for ev in a.events:
            x = 0.5 * (ev.epoch_before + ev.epoch_after)
            ax2.axvline(x, ymin=0.0, ymax=0.06, color=col, lw=1.2,
                        ls="-" if ev.kind == "lyapunov" else "--")
        if a.global_minimum is not None:
            g = a.global_minimum
            ax1.plot(g["epoch"], g["test_loss"], "*", color=col, ms=12, mec="black", mew=0.5)
    ax1.set_ylabel("test loss (nats)")
    ax2.set_ylabel("λ₁ (zero-input, per step)")
    ax2.axhline(0.0, color="0.3", lw=0.8, ls=":")
    ax2.set_xlabel("epoch (ticks at the bottom: stability events; ★ global optimum)")
    ax1.legend(fontsize=8.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.legend(fontsize=8.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax1.set_title(f"{len(names)} runs side by side: {', '.join(names)}", fontsize=10.5,
                  loc="left")
    return _png(fig, d)
