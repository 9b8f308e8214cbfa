"""Figures, summary and a self-contained HTML page for one multiple-descent run.

:func:`write_report` turns a run folder (its sweep's run table, see
:func:`mdesc.sweep.load_table`) and its phase analysis (:func:`mdesc.phases.analyse`) into::

    out_dir/                      (default: run_dir/report)
      report.html     one page, images embedded as base64 PNG, no external assets
      descent.png     test/train loss with D~ (top) and lambda_1 (bottom) on twin axes,
                      ordered/chaotic phases shaded, transitions, critical stretches,
                      local/global minima and the recommended checkpoint marked
      bifurcation.png per-review reduced sums sum_j h_T,j against epoch
      summary.json    the claims, transitions, stretches, minima, cycles, settings, run info
      phase_table.csv one row per checkpoint (labels, regimes, minima, recommendation)

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so
an interrupted report never leaves a half-written file behind.  Matplotlib runs on the Agg
backend (no display needed).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mdesc.store import atomic_write_bytes

__all__ = ["write_report", "claims_rows"]

ORDER_COLOR = "#dbe9f6"      # background of ordered stretches
CHAOS_COLOR = "#fbe0cf"      # background of chaotic stretches
UNKNOWN_COLOR = "#e6e6e6"
STRETCH_COLOR = "#7b3294"
REC_COLOR = "#1a9641"


# ----------------------------------------------------------------------------- small helpers

def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


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
    colors = {0: ORDER_COLOR, 1: CHAOS_COLOR, -1: UNKNOWN_COLOR}
    for lo, hi, lab in _spans(epoch, label):
        ax.axvspan(lo, hi, color=colors[lab], lw=0, zorder=0)


def _phase_handles(label=None):
    from matplotlib.patches import Patch

    out = [Patch(color=ORDER_COLOR, label="ordered"), Patch(color=CHAOS_COLOR, label="chaotic")]
    if label is not None and np.any(label < 0):
        out.append(Patch(color=UNKNOWN_COLOR, label="unknown (non-finite)"))
    return out


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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


_PER_CHECKPOINT = ("epoch", "train_loss", "test_loss", "log_distance", "lyapunov_max",
                   "lyapunov_stderr", "reduced_sum")


def _sorted_table(table: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The table's per-checkpoint arrays in epoch order (the order phases.analyse uses)."""
    epoch = np.asarray(table["epoch"], dtype=np.float64).reshape(-1)
    order = np.argsort(epoch, kind="stable")
    out = {}
    for k, v in table.items():
        if k not in _PER_CHECKPOINT:
            continue
        a = np.asarray(v, dtype=np.float64)
        if a.ndim >= 1 and a.shape[0] == epoch.size:
            out[k] = a[order]
    return out


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
    return handles


def _descent_figure(t: Mapping[str, np.ndarray], analysis) -> bytes:
    epoch = t["epoch"]
    test, train = _col(t, "test_loss"), _col(t, "train_loss")
    ld, lam, se = _col(t, "log_distance"), _col(t, "lyapunov_max"), _col(t, "lyapunov_stderr")
    s = analysis.settings
    fig = _figure(figsize=(11, 7.8))
    ax1, ax3 = fig.subplots(2, 1, sharex=True,
                            gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08})
    ms = 3 if epoch.size <= 200 else 0

    # top: losses (left, drawn on top) and D~ (right twin, drawn below with the shading)
    ax2 = ax1.twinx()
    _shade(ax2, epoch, analysis.labels[analysis.measure])
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
    ax1.set_ylabel("loss (binary cross-entropy, nats)")
    h_d, = ax2.plot(epoch, ld, color="#c0392b", lw=1.3, marker="s", ms=max(ms - 1, 0),
                    alpha=0.9, label="D̃ = mean ln Dᵢ (right axis)")
    ax2.axhline(s["floor"], color="#c0392b", lw=0.8, ls=":", alpha=0.8)
    ax2.axhline(s["floor"] + s["distance_margin"], color="#c0392b", lw=0.8, ls="-.", alpha=0.6)
    ax2.set_ylabel("D̃ = mean ln Dᵢ   (floor −15 = order)", color="#c0392b")
    ax2.tick_params(axis="y", colors="#c0392b")
    finite = ld[np.isfinite(ld)]
    top = max(float(finite.max()) if finite.size else s["floor"] + 1, s["floor"] + 2)
    ax2.set_ylim(s["floor"] - 0.05 * (top - s["floor"]), top + 0.12 * (top - s["floor"]))
    ax1.legend(handles=hs + [h_d] + _phase_handles(analysis.labels[analysis.measure]),
               loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8.5, frameon=False,
               title=f"phases by {'D̃' if analysis.measure == 'distance' else 'λ₁'}",
               title_fontsize=8.5)
    ax1.set_title(_title(analysis), fontsize=10.5, loc="left")

    # bottom: lambda_1 +- k stderr (left, on top), test loss (right twin, below with shading)
    ax4 = ax3.twinx()
    _shade(ax4, epoch, analysis.labels["lyapunov"])
    ax3.set_zorder(ax4.get_zorder() + 1)
    ax3.patch.set_visible(False)
    k = s["lyapunov_sigmas"]
    band = np.nan_to_num(se, nan=0.0) * k
    ax3.fill_between(epoch, lam - band, lam + band, color="#8e44ad", alpha=0.25, lw=0)
    h_l, = ax3.plot(epoch, lam, color="#8e44ad", lw=1.3, marker="o", ms=max(ms - 1, 0),
                    label="λ₁ (mean over reviews)")
    ax3.axhline(s["lyapunov_threshold"], color="#8e44ad", ls=":", lw=0.9)
    _mark_events(ax3, analysis, with_labels=False)
    ax3.set_ylabel("λ₁  (natural log per step)", color="#8e44ad")
    ax3.tick_params(axis="y", colors="#8e44ad")
    ax3.set_xlabel("epoch")
    h_t2, = ax4.plot(epoch, test, color="black", lw=1.0, alpha=0.45,
                     label="test loss (right axis)")
    ax4.set_ylabel("test loss (nats)", color="0.35")
    ax3.legend(handles=[h_l, _band_handle(k), h_t2] + _phase_handles(analysis.labels["lyapunov"]),
               loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=8.5, frameon=False,
               title="phases by sign of λ₁", title_fontsize=8.5)
    _xlim(ax3, epoch)
    return _png(fig)


def _band_handle(k):
    from matplotlib.patches import Patch

    return Patch(color="#8e44ad", alpha=0.25, label=f"λ₁ ± {k:g} standard errors")


def _title(analysis) -> str:
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
    return ";  ".join(parts) or "no transitions, no test-loss minimum"


def _bifurcation_figure(t: Mapping[str, np.ndarray], analysis) -> bytes | None:
    if "reduced_sum" not in t or t["reduced_sum"].ndim != 2:
        return None
    epoch, rs = t["epoch"], t["reduced_sum"]
    lab = analysis.labels[analysis.measure]
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
                               (-1, "0.5", "unknown")):
        m = ok & (c == value)
        if m.any():
            ax.scatter(x[m], y[m], s=size, color=color, alpha=0.55, lw=0, rasterized=True,
                       label=name, zorder=3)
    handles, _ = ax.get_legend_handles_labels()
    handles += _mark_events(ax, analysis, with_labels=True)
    _xlim(ax, epoch)
    ax.set_xlabel("epoch")
    ax.set_ylabel("reduced sum  Σⱼ h_T,j  (per review)")
    ax.set_title(f"Bifurcation diagram: {rs.shape[1]} test reviews per checkpoint, "
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
    return _png(fig)


# ----------------------------------------------------------------------------- summary

def claims_rows(analysis) -> list[tuple[str, str]]:
    """The paper's claims as (what, measured value) rows, formatted for people."""
    c = analysis.claims
    w = c["window_epochs"]
    rows = [
        ("checkpoints analysed", _fmt(c["n_checkpoints"])),
        ("chaos measure for transitions", analysis.measure),
        ("transitions (order→chaos / chaos→order)",
         f"{c['n_order_to_chaos']} / {c['n_chaos_to_order']}"),
        ("first order→chaos transition (epoch)", _fmt(c["first_order_to_chaos_epoch"])),
        ("global test-loss minimum (epoch; loss)",
         f"{_fmt(c['global_min_epoch'])}; {_fmt(c['global_min_test_loss'])}"),
        ("first transition − global minimum (epochs)",
         _fmt(c["first_transition_minus_global_min"])),
        (f"test-loss local minima within ±{_fmt(w)} epochs of a transition",
         f"{c['n_minima_near_transition']} of {c['n_local_minima']} "
         f"(fraction {_fmt(c['minima_near_transition_fraction'], 3)}; by chance "
         f"{_fmt(c['minima_near_transition_chance'], 3)})"),
    ]
    n_after = c.get("overtrained_n", 0)
    for m, name in (("distance", "D̃"), ("lyapunov", "λ₁")):
        if f"overtrained_spearman_{m}" in c:
            rows.append((f"overtrained phase (after the global minimum, n = {n_after}): "
                         f"test loss vs {name}",
                         f"Spearman {_fmt(c[f'overtrained_spearman_{m}'], 3)} "
                         f"(p = {_fmt(c[f'overtrained_spearman_p_{m}'], 2)}); Pearson "
                         f"{_fmt(c[f'overtrained_pearson_{m}'], 3)} "
                         f"(p = {_fmt(c[f'overtrained_pearson_p_{m}'], 2)})"))
    rows += [
        ("widest critical stretch (width in epochs; centre)",
         f"{_fmt(c['widest_stretch_width'])}; {_fmt(c['widest_stretch_centre_epoch'])}"),
        ("first order→chaos stretch width (epochs); is it the widest?",
         f"{_fmt(c['first_transition_stretch_width'])}; "
         f"{_fmt(c['first_transition_stretch_is_widest'])}"),
        ("descent cycles (all / after the global minimum)",
         f"{c['n_cycles']} / {c['n_overtrained_cycles']}"),
        ("cycles whose drop is faster than their rise",
         _of(c["fraction_cycles_sharp_drop"], c["n_cycles"])),
        ("cycles with a transition during the drop",
         _of(c["fraction_cycles_transition_in_drop"], c["n_cycles"])),
        ("mean chaotic fraction of checkpoints during rises",
         _fmt(c["mean_chaotic_fraction_rise"], 3)),
        ("agreement of D̃ and λ₁ labels", _fmt(c["label_agreement"], 3)),
        (f"recommended checkpoint (rule: {analysis.recommendation_rule})",
         (f"epoch {_fmt(analysis.recommended_epoch)}: " if analysis.recommended_epoch is not None
          else "none: ") + analysis.recommendation_reason),
        ("recommended checkpoint: test loss; excess over the global minimum",
         f"{_fmt(c['recommended_test_loss'])}; {_fmt(c['recommended_regret'])}"),
    ]
    return rows


def _of(fraction: float, n: int) -> str:
    """'k of n' for a fraction of n items (an em dash when n == 0)."""
    return f"{round(fraction * n)} of {n}" if n else "—"


def _html_table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    h = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(x))}</td>" for x in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _flat_items(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            out += _flat_items(v, f"{prefix}{k}.")
        elif isinstance(v, (list, tuple)) and len(v) > 12:
            out.append((f"{prefix}{k}", f"[{len(v)} values]"))
        else:
            out.append((f"{prefix}{k}", v if not isinstance(v, (list, tuple)) else
                        ", ".join(_fmt(x) for x in v)))
    return out


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1180px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}table{border-collapse:collapse;font-size:.88em;margin:.4em 0 1em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}table.claims td:first-child{width:48%}
tr.ordered td{background:#eef5fb}tr.chaotic td{background:#fdf1e8}
img{max-width:100%;border:1px solid #eee}.warn{color:#a04000}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
.note{color:#555;font-size:.88em}
"""


def _html(run_dir: Path, analysis, images: dict[str, bytes], ptable: dict[str, np.ndarray],
          run_info: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>mdesc descent report — {e(run_dir.name)}</title><style>{_CSS}</style>"
             f"</head><body>",
             "<h1>Multiple descents and order–chaos transitions</h1>",
             f"<p class='sub'>run <code>{e(str(run_dir))}</code> · {analysis.claims['n_checkpoints']}"
             f" checkpoints · phases from <b>{e(analysis.measure)}</b></p>"]
    if analysis.warnings:
        parts.append("<ul class='warn'>" + "".join(f"<li>{e(w)}</li>" for w in analysis.warnings)
                     + "</ul>")
    parts.append("<h2>Claims, measured on this run</h2>")
    parts.append(_html_table(["", "measured"], [list(r) for r in claims_rows(analysis)], "claims"))
    parts.append(
        "<p class='note'>Transitions are label changes between consecutive checkpoints, dated by "
        "linear interpolation of the chaos measure across its threshold. A critical stretch runs "
        "from the last clearly ordered to the first clearly chaotic checkpoint around a transition "
        "(mirrored for chaos→order); open ends are lower bounds. The chance rate is the fraction "
        "of interior checkpoints within the same window of a transition. The recommendation uses "
        "stability only; its test loss is shown for evaluation.</p>")
    captions = {
        "descent": "Top: test and train loss with D̃ (right axis; dotted: floor −15, dash-dot: "
                   "chaos threshold); background: ordered (blue) / chaotic (orange) by the "
                   "primary measure; purple bars: critical stretches. Bottom: λ₁ ± k standard "
                   "errors with the test loss, background by the sign of λ₁.",
        "bifurcation": "Reduced sums Σⱼ h_T,j at the end of the zero-input run, for every "
                       "analysed test review at every checkpoint (colour: the checkpoint's "
                       "label). Ordered dynamics settle on one or a few fixed points (a few thin "
                       "branches); chaotic or oscillating dynamics spread into clouds.",
    }
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{e(name.capitalize())}</h2><figure><img alt='{e(name)}' "
                     f"src='data:image/png;base64,{b64}'><figcaption class='note'>"
                     f"{e(captions.get(name, ''))}</figcaption></figure>")

    parts.append("<h2>Transitions and critical stretches</h2>")
    rows = []
    for t, st in zip(analysis.transitions, analysis.stretches):
        rows.append([t.kind.replace("_", " "), t.epoch, t.epoch_before, t.epoch_after,
                     st.start_epoch, st.end_epoch, st.width, st.n_critical,
                     ("start " if st.open_start else "") + ("end" if st.open_end else "") or "—"])
    parts.append(_html_table(["transition", "epoch", "last before", "first after",
                              "stretch from", "stretch to", "width (epochs)", "critical ckpts",
                              "open"], rows) if rows else "<p>No transitions.</p>")
    if analysis.secondary_transitions:
        other = analysis.secondary_transitions[0].measure
        parts.append(f"<p class='note'>By {e(other)} instead: " + ", ".join(
            f"{t.kind.replace('_', ' ')} at {_fmt(t.epoch)}"
            for t in analysis.secondary_transitions) + ".</p>")

    parts.append("<h2>Test-loss minima and descent cycles</h2>")
    rows = [[m.epoch, m.test_loss, m.prominence, m.nearest_transition_epoch,
             m.distance_to_transition] for m in analysis.minima]
    parts.append(_html_table(["local minimum (epoch)", "test loss", "prominence",
                              "nearest transition", "distance (epochs)"], rows)
                 if rows else "<p>No test-loss local minima.</p>")
    rows = [[cy.start_epoch, cy.peak_epoch, cy.end_epoch, cy.rise, cy.drop, cy.rise_epochs,
             cy.drop_epochs, cy.asymmetry, cy.chaotic_fraction_rise, cy.transition_in_drop]
            for cy in analysis.cycles]
    if rows:
        parts.append(_html_table(["start", "peak", "end", "rise", "drop", "rise epochs",
                                  "drop epochs", "rise/drop time", "chaotic during rise",
                                  "transition in drop"], rows))

    # per-checkpoint table, collapsed
    keys = ["epoch", "test_loss", "train_loss", "log_distance", "lyapunov_max",
            "lyapunov_stderr", "label_distance", "label_lyapunov", "regime",
            "transition", "local_min", "recommended"]
    body = []
    for i in range(ptable["epoch"].size):
        cls = ptable["label"][i]
        cells = "".join(f"<td>{e(_fmt(_py(ptable[k][i])))}</td>" for k in keys)
        body.append(f"<tr class='{e(cls)}'>{cells}</tr>")
    parts.append("<details><summary>Per-checkpoint table</summary><table><thead><tr>"
                 + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr></thead><tbody>"
                 + "".join(body) + "</tbody></table></details>")

    parts.append("<details><summary>Settings</summary>")
    parts.append(_html_table(["phase analysis setting", "value"],
                             [[k, v] for k, v in analysis.settings.items()]))
    for name, d in run_info.items():
        if d:
            parts.append(_html_table([f"{name}", "value"],
                                     [[k, v] for k, v in _flat_items(d)]))
    parts.append("</details><p class='note'>Generated by mdesc.report; data files: summary.json, "
                 "phase_table.csv.</p></body></html>")
    return "".join(parts)


def _py(v):
    return v.item() if isinstance(v, np.generic) else v


def _csv_bytes(ptable: dict[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = list(ptable)
    w.writerow(keys)
    for i in range(ptable["epoch"].size):
        row = []
        for k in keys:
            v = _py(ptable[k][i])
            if isinstance(v, float):
                row.append("" if not math.isfinite(v) else repr(v))
            elif isinstance(v, bool):
                row.append(int(v))
            else:
                row.append(v)
        w.writerow(row)
    return buf.getvalue().encode("utf-8")


# ----------------------------------------------------------------------------- entry point

def write_report(run_dir: str | os.PathLike, table: Mapping[str, Any] | None = None,
                 analysis=None, out_dir: str | os.PathLike | None = None,
                 **phase_settings: Any) -> Path:
    """Write the figures, summary and HTML page of one run; returns the path of ``report.html``.

    Args:
        run_dir: the run folder (used for the run table, the training ``config.json`` and the
            sweep's ``sweep/settings.json``, and as the default output location).
        table: the run table; default ``mdesc.sweep.load_table(run_dir)``.
        analysis: a :class:`mdesc.phases.PhaseAnalysis`; default
            ``mdesc.phases.analyse(table, **phase_settings)``.
        out_dir: where to write (created if needed); default ``run_dir/report``.
        **phase_settings: settings for :func:`mdesc.phases.analyse` when ``analysis`` is None.
    """
    from mdesc.descent.analysis import _jsonable, analyse, phase_table

    run_dir = Path(run_dir)
    if table is None:
        from mdesc.descent.sweep import load_table

        table = load_table(run_dir)
    if analysis is None:
        analysis = analyse(table, **phase_settings)
    elif phase_settings:
        raise TypeError("write_report: pass either an analysis or phase settings, not both")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    t = _sorted_table(table)
    if t["epoch"].size != analysis.epochs.size or not np.array_equal(t["epoch"], analysis.epochs):
        raise ValueError("write_report: the analysis was made from a different table "
                         f"({analysis.epochs.size} checkpoints vs {t['epoch'].size}); "
                         "re-run mdesc.phases.analyse on this table")
    ptable = phase_table(table, analysis)
    run_info = {"training config (config.json)": _read_json(run_dir / "config.json"),
                "sweep settings (sweep/settings.json)":
                    _read_json(run_dir / "sweep" / "settings.json")}

    images: dict[str, bytes] = {"descent": _descent_figure(t, analysis)}
    bif = _bifurcation_figure(t, analysis)
    if bif is not None:
        images["bifurcation"] = bif
    for name, png in images.items():
        atomic_write_bytes(out / f"{name}.png", png)

    summary = {"run_dir": str(run_dir), "claims": analysis.claims,
               "recommended_epoch": analysis.recommended_epoch,
               "recommendation_rule": analysis.recommendation_rule,
               "recommendation_reason": analysis.recommendation_reason,
               "analysis": analysis.to_dict(),
               "run": {k.split(" (")[0]: v for k, v in run_info.items()},
               "files": sorted([f"{n}.png" for n in images]
                               + ["report.html", "summary.json", "phase_table.csv"])}
    atomic_write_bytes(out / "summary.json",
                  json.dumps(_jsonable(summary), indent=1, allow_nan=False).encode("utf-8"))
    atomic_write_bytes(out / "phase_table.csv", _csv_bytes(ptable))
    page = out / "report.html"
    atomic_write_bytes(page, _html(run_dir, analysis, images, ptable, run_info).encode("utf-8"))
    return page
