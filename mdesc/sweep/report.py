"""Figures, summary and a self-contained HTML page for one run, and several seeds pooled.

The engine's one report writer, for study 1 and any run alike: its words come from the run's
:class:`~mdesc.sweep.RunDescription` (the loss, the probe, the task, the run's name).
:func:`write_report` turns a sweep's folder (its run table, :func:`mdesc.sweep.load_table`) and
its phase analysis (:func:`mdesc.sweep.analyse`) into::

    out_dir/                      (default: run_dir/report)
      report.html     one page, images embedded as base64 PNG, no external assets
      descent.png     test/train loss with D~ (top) and lambda_1 (bottom) on twin axes,
                      ordered/chaotic phases shaded, transitions, critical stretches,
                      local/global minima and the recommended checkpoint marked
      bifurcation.png per-sequence reduced sums sum_j h_T,j against epoch
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

from mdesc.store import atomic_write_bytes, to_json
from mdesc.sweep import claims as _cl
from mdesc.sweep.controls import family_rows, holm_of
from mdesc.sweep import figures
from mdesc.sweep.analysis import analyse, phase_table
from mdesc.sweep.figures import _fmt
from mdesc.sweep.phases import sorted_table, uniform_grid
from mdesc.sweep.settings import RunDescription
from mdesc.sweep.table import load_table, table_description
from mdesc.sweep.wording import _perm, _short, _twins_row, claims_rows, header

__all__ = ["write_report", "claims_rows"]

def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}


_PER_CHECKPOINT = ("epoch", "train_loss", "test_loss", "log_distance", "lyapunov_max",
                   "lyapunov_stderr", "reduced_sum")


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
          run_info: dict[str, Any], d: RunDescription) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>mdesc report — {e(d.name or run_dir.name)}</title><style>{_CSS}</style>"
             f"</head><body>",
             f"<h1>{e(d.title)}</h1>",
             f"<p class='sub'>run <code>{e(str(run_dir))}</code> · {analysis.claims['n_checkpoints']}"
             f" checkpoints · phases from <b>{e(analysis.measure)}</b></p>", header(d)]
    if analysis.warnings:
        parts.append("<ul class='warn'>" + "".join(f"<li>{e(w)}</li>" for w in analysis.warnings)
                     + "</ul>")
    words = d.words
    parts.append("<h2>Claims, measured on this run</h2>")
    parts.append(_html_table(["", "measured"], [list(r) for r in claims_rows(analysis, d)], "claims"))
    parts.append(
        "<p class='note'>Transitions are label changes between consecutive checkpoints, dated by "
        "linear interpolation of the chaos measure across its threshold. A critical stretch runs "
        "from the last clearly ordered to the first clearly chaotic checkpoint around a transition "
        "(mirrored for chaos→order); open ends are lower bounds. The chance rate is the fraction "
        "of interior checkpoints within the same window of a transition. The recommendation uses "
        + words("stability only; its test loss is shown for evaluation.</p>"))
    parts.append("<h2>Every test of this report, raw and Holm-adjusted</h2>")
    parts.append(_html_table(["test", "effect (95 % interval)", "p", "p (Holm)"],
                             [[words(r[0]), *r[1:]] for r in family_rows(analysis.claims)],
                             "claims"))
    parts.append(
        "<p class='note'>Holm's step-down adjustment over the family of tests printed here "
        "(refused tests are not in the family). Stratified: events re-drawn within strata of "
        "parameter-change size and placebo events; logistic: a likelihood-ratio test of the "
        "event beyond log parameter change and training-loss spikes. Placebo rows test the "
        "training-loss spikes and parameter jumps as if they were the events.</p>")
    captions = {
        "descent": "Top: test and train loss with D̃ (right axis; dotted: floor −15, dash-dot: "
                   "chaos threshold); ticks: stability events (bottom), placebo events, sharp "
                   "drops (top); purple bars: critical stretches. Middle: accuracies. Bottom: "
                   "λ₁ ± k standard errors (symlog: linear near 0) with the test loss. Every "
                   "panel is shaded by the one label of the table (ordered, chaotic, marginal, "
                   "disagree).",
        "bifurcation": "Reduced sums Σⱼ h_T,j at the end of the zero-input run, for every "
                       f"analysed {d.sample} at every checkpoint (colour: the checkpoint's "
                       "label). Ordered dynamics settle on one or a few fixed points (a few thin "
                       "branches); chaotic or oscillating dynamics spread into clouds.",
    }
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{e(name.capitalize())}</h2><figure><img alt='{e(name)}' "
                     f"src='data:image/png;base64,{b64}'><figcaption class='note'>"
                     f"{e(words(captions.get(name, '')))}</figcaption></figure>")

    parts += _transitions_html(analysis)
    parts += _events_html(analysis, run_info, d)
    parts += _tables_html(analysis, ptable, run_info, d)
    return "".join(parts)


def _transitions_html(analysis) -> list[str]:
    e = html.escape
    parts = []
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

    return parts


def _events_html(analysis, run_info: dict[str, Any], d: RunDescription) -> list[str]:
    e = html.escape
    parts = []
    parts.append("<h2>Stability events</h2>")
    rows = [[ev.kind, ev.epoch_before, ev.epoch_after, ev.size, ev.significance]
            for ev in analysis.events]
    parts.append(_html_table(["event", "from epoch", "to epoch", "size", "size / error"], rows)
                 if rows else "<p>No stability events.</p>")
    parts.append(
        "<p class='note'>A λ₁ event is a change of the zero-input λ₁ between neighbouring "
        "checkpoints beyond the given number of combined standard errors and a multiple of the "
        "run's median change; a structure event is a rearrangement of the zero-input end "
        f"states (mean |Δ reduced sum| over {d.probe} beyond a multiple of its median). The "
        + d.words("permutation test compares how many test-loss minima (or sharp drops) sit "
                  "at events with the same count for events placed at random among the gaps.</p>"))
    skipped = run_info.get("skipped checkpoints") or []
    if skipped:
        parts.append("<h2>Checkpoints skipped as unreadable</h2><ul class='warn'>"
                     + "".join(f"<li><code>{e(str(x))}</code></li>" for x in skipped) + "</ul>")
    disagree = [(ep, v, r) for ep, v, r in zip(analysis.epochs, analysis.verdicts,
                                                 analysis.verdict_reasons) if v == "disagree"]
    if disagree:
        parts.append("<details><summary>Checkpoints where λ₁ and D̃ disagree "
                     f"({len(disagree)})</summary>"
                     + _html_table(["epoch", "verdict", "why"], [list(d) for d in disagree])
                     + "</details>")

    return parts


def _tables_html(analysis, ptable: dict[str, np.ndarray], run_info: dict[str, Any],
                 d: RunDescription) -> list[str]:
    e = html.escape
    parts = []
    parts.append(d.words("<h2>Test-loss minima and descent cycles</h2>"))
    rows = [[m.epoch, m.test_loss, m.prominence, m.nearest_transition_epoch,
             m.distance_to_transition] for m in analysis.minima]
    parts.append(_html_table(["local minimum (epoch)", d.metric, "prominence",
                              "nearest transition", "distance (epochs)"], rows)
                 if rows else d.words("<p>No test-loss local minima.</p>"))
    rows = [[cy.start_epoch, cy.peak_epoch, cy.end_epoch, cy.rise, cy.drop, cy.rise_epochs,
             cy.drop_epochs, cy.asymmetry, cy.chaotic_fraction_rise, cy.transition_in_drop]
            for cy in analysis.cycles]
    if rows:
        parts.append(_html_table(["start", "peak", "end", "rise", "drop", "rise epochs",
                                  "drop epochs", "rise/drop time", "chaotic during rise",
                                  "transition in drop"], rows))

    # per-checkpoint table, collapsed
    keys = ["epoch", "test_loss", "train_loss", "log_distance", "log_distance_start",
            "n_collapsed_start", "lyapunov_max", "lyapunov_stderr", "lyapunov_max_driven",
            "label_distance", "label_lyapunov", "verdict", "regime", "transition", "event",
            "local_min", "recommended"]
    keys = [k for k in keys if k in ptable]
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
        if d and isinstance(d, dict):
            parts.append(_html_table([f"{name}", "value"],
                                     [[k, v] for k, v in _flat_items(d)]))
    parts.append("</details><p class='note'>Generated by mdesc.sweep.report; data files: summary.json, "
                 "phase_table.csv.</p></body></html>")
    return parts

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
                 description: RunDescription | None = None, **phase_settings: Any) -> Path:
    """Write the figures, summary and HTML page of one run; returns the path of ``report.html``.

    Args:
        run_dir: the sweep's folder (its run table, ``config.json`` and ``sweep/settings.json``
            are shown; the default output location).
        table: the run table; default :func:`mdesc.sweep.load_table` of ``run_dir``.
        analysis: a :class:`mdesc.sweep.PhaseAnalysis`; default
            :func:`mdesc.sweep.analyse` ``(table, **phase_settings)``.
        out_dir: where to write (created if needed); default ``run_dir/report``.
        description: the run in words; default the one recorded with the sweep
            (:func:`mdesc.sweep.table.table_description`), else a generic one named after the
            folder.
        **phase_settings: settings for :func:`mdesc.sweep.analyse` when ``analysis`` is None.
    """
    run_dir = Path(run_dir)
    table = load_table(run_dir) if table is None else table
    if analysis is None:
        analysis = analyse(table, **phase_settings)
    elif phase_settings:
        raise TypeError("write_report: pass either an analysis or phase settings, not both")
    d = description or table_description(table) or RunDescription()
    d = RunDescription(**{**d.to_dict(), "name": d.name or run_dir.name})
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    t = sorted_table(table)
    if t["epoch"].size != analysis.epochs.size or not np.array_equal(t["epoch"], analysis.epochs):
        raise ValueError("write_report: the analysis was made from a different table "
                         f"({analysis.epochs.size} checkpoints vs {t['epoch'].size}); "
                         "re-run mdesc.sweep.analyse on this table")
    ptable = phase_table(table, analysis)
    run_info = {"training config (config.json)": _read_json(run_dir / "config.json"),
                "sweep settings (sweep/settings.json)":
                    _read_json(run_dir / "sweep" / "settings.json"),
                "skipped checkpoints": list(table.get("skipped", []) or [])}
    images: dict[str, bytes] = {"descent": figures.descent_figure(t, analysis, d)}
    bif = figures.bifurcation_figure(t, analysis, d)
    if bif is not None:
        images["bifurcation"] = bif
    for name, png in images.items():
        atomic_write_bytes(out / f"{name}.png", png)
    summary = {"run_dir": str(run_dir), "claims": analysis.claims,
               "recommended_epoch": analysis.recommended_epoch,
               "recommendation_rule": analysis.recommendation_rule,
               "recommendation_reason": analysis.recommendation_reason,
               "analysis": analysis.to_dict(),
               "skipped_checkpoints": run_info["skipped checkpoints"],
               "run": {k.split(" (")[0]: v for k, v in run_info.items()},
               "description": d.to_dict(),
               "files": sorted([f"{n}.png" for n in images]
                               + ["report.html", "summary.json", "phase_table.csv"])}
    atomic_write_bytes(out / "summary.json",
                       json.dumps(to_json(summary), indent=1, allow_nan=False).encode("utf-8"))
    atomic_write_bytes(out / "phase_table.csv", _csv_bytes(ptable))
    page = out / "report.html"
    atomic_write_bytes(page, _html(run_dir, analysis, images, ptable, run_info, d).encode("utf-8"))
    return page


# ----------------------------------------------------------------------------- seeds pooled

def seed_row(name: str, analysis, table, grid=None,
             description: RunDescription | None = None) -> dict[str, Any]:
    """The README numbers of one run: best epoch and accuracy, transitions, stretches, where
    the minima sit, whether the optimum is at the first order->chaos transition, p-values."""
    c = analysis.claims
    epoch = analysis.epochs
    t = sorted_table(table)
    acc = np.asarray(t.get("test_acc", np.full(epoch.size, np.nan)), dtype=float)
    g = analysis.global_minimum
    m_ev, d_ev = c.get("minima_at_events") or {}, c.get("drops_at_events") or {}
    return {
        "run": name, "checkpoints": int(epoch.size),
        "epochs": f"{_fmt(epoch.min())}–{_fmt(epoch.max())}",
        "best_epoch": g["epoch"] if g else None,
        "best_test_loss": g["test_loss"] if g else None,
        "test_acc_at_best": float(acc[g["index"]]) if g and np.isfinite(acc[g["index"]]) else None,
        "max_test_acc": float(np.nanmax(acc)) if np.any(np.isfinite(acc)) else None,
        "transitions": [f"{tr.kind.replace('_to_', '→')} @ "
                        f"{_fmt(tr.epoch)}" for tr in analysis.transitions],
        "stretch_widths": [st.width for st in analysis.stretches],
        "verdicts": c.get("verdict_counts"),
        "minima": [m.epoch for m in analysis.minima],
        "minima_near_transition": f"{c['n_minima_near_transition']} of {c['n_local_minima']}",
        "optimum_at_first_order_to_chaos": c.get("first_transition_within_window_of_global_min"),
        "n_events": c.get("n_events", 0), "event_epochs": c.get("event_epochs", []),
        "drop_epochs": c.get("drop_epochs", []),
        "minima_at_events": _perm(m_ev), "minima_at_events_p": m_ev.get("p_value"),
        "drops_at_events": _perm(d_ev), "drops_at_events_p": d_ev.get("p_value"),
        **{f"{k}_{t}_holm": holm_of(c, k, t) for k in ("minima_at_events", "drops_at_events")
           for t in ("uniform", "stratified", "logistic")},
        "drops_at_spikes_p": (c.get("drops_at_spikes") or {}).get("p_value"),
        "drops_at_spikes_holm": holm_of(c, "drops_at_spikes", None),
        "param_change_available": not c.get("controls_note"),
        "twins": _twins_row(c.get("twins") or {}, description or RunDescription()),
        **_grid_cells(grid),
    }


def _grid_cells(grid) -> dict[str, Any]:
    """The permutation tests on the uniform grid of epochs (see analysis.uniform_grid)."""
    if grid is None:
        return {}
    k, a = grid
    c = a.claims
    return {"grid_every": k, "grid_checkpoints": int(a.epochs.size),
            "grid_minima_at_events_p": (c.get("minima_at_events") or {}).get("p_value"),
            "grid_drops_at_events_p": (c.get("drops_at_events") or {}).get("p_value"),
            "grid_minima_at_events": _perm(c.get("minima_at_events")),
            "grid_drops_at_events": _perm(c.get("drops_at_events"))}


def markdown_table(rows: list[dict[str, Any]], d: RunDescription | None = None) -> str:
    """A README table (one row per seed) of :func:`seed_row` results, in the run's words."""
    words = (d or RunDescription()).words
    head = [words(h) for h in ["run", "checkpoints", "best epoch (test loss; acc)", "max test acc",
            "order↔chaos transitions", "critical stretch widths", "verdicts",
            "test-loss minima (near a transition)", "optimum at 1st order→chaos",
            "events", "minima at events: p (Holm); beyond controls: Holm p strat./logit",
            "drops at events: p (Holm); beyond controls: Holm p strat./logit",
            "placebo: drops at train-loss spikes: p (Holm)",
            "uniform grid: every k (checkpoints); minima p; drops p"]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        v = r["verdicts"] or {}
        cells = [r["run"], f"{r['checkpoints']} ({r['epochs']})",
                 f"{_fmt(r['best_epoch'])} ({_fmt(r['best_test_loss'], 4)}; "
                 f"{_fmt(r['test_acc_at_best'], 3)})", _fmt(r["max_test_acc"], 3),
                 ", ".join(r["transitions"]) or "none",
                 ", ".join(_fmt(w) for w in r["stretch_widths"]) or "—",
                 ", ".join(f"{k} {n}" for k, n in v.items() if n) or "—",
                 f"{len(r['minima'])} ({r['minima_near_transition']})",
                 _fmt(r["optimum_at_first_order_to_chaos"]), str(r["n_events"]),
                 _tests_cell(r, "minima_at_events"), _tests_cell(r, "drops_at_events"),
                 f"{_fmt(r.get('drops_at_spikes_p'), 3)} ({_fmt(r.get('drops_at_spikes_holm'), 3)})",
                 (f"{r['grid_every']} ({r['grid_checkpoints']}); "
                  f"{_fmt(r['grid_minima_at_events_p'], 3)}; {_fmt(r['grid_drops_at_events_p'], 3)}"
                  if r.get("grid_every") else "—")]
        out.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(out) + "\n"


def _tests_cell(r: dict[str, Any], key: str) -> str:
    return (f"{_fmt(r[f'{key}_p'], 3)} ({_fmt(r.get(f'{key}_uniform_holm'), 3)}); "
            f"{_fmt(r.get(f'{key}_stratified_holm'), 3)} / {_fmt(r.get(f'{key}_logistic_holm'), 3)}")


def write_pooled_report(run_dirs, out_dir: str | os.PathLike, names=None,
                        description: RunDescription | None = None, **phase_settings: Any) -> Path:
    """Several seeds of one setting side by side: per-seed claims, the fraction of seeds for
    which each holds (:func:`mdesc.sweep.claims.pool`), a figure of every seed's test loss
    and lambda_1 with its events, ``pooled.json`` and ``pooled.md`` (the README table).
    Returns the path of ``pooled.html``."""
    run_dirs = [Path(r) for r in run_dirs]
    names = list(names) if names else [r.name for r in run_dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must differ (got {names}); pass names=")
    tables, analyses = [], []
    for r in run_dirs:
        tables.append(load_table(r))
        analyses.append(analyse(tables[-1], **phase_settings))
    d = description or table_description(tables[0]) or RunDescription()
    grids = []
    for t in tables:
        gt, k = uniform_grid(t)
        grids.append((k, analyse(gt, **phase_settings)) if k else None)
    rows = [seed_row(n, a, t, g, d) for n, a, t, g in zip(names, analyses, tables, grids)]
    pooled = _cl.pool(names, [a.claims for a in analyses])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = figures.pooled_figure(names, [sorted_table(t) for t in tables], analyses, d)
    atomic_write_bytes(out / "pooled.png", png)
    md = markdown_table(rows, d)
    frac_rows = [[d.words(v["claim"]), f"{v['holds']} of {v['defined']} seeds with a defined answer "
                  f"({v['seeds']} seeds)", _fmt(v["fraction"], 3) + (
                      f" [{_fmt(v['interval'][0], 2)}, {_fmt(v['interval'][1], 2)}]"
                      if v.get("interval") else "")]
                 for v in pooled["pooled"].values()]
    md += "\n| claim | holds in | fraction [95 % Wilson] |\n|---|---|---|\n" + "".join(
        f"| {a} | {b} | {c} |\n" for a, b, c in frac_rows)
    atomic_write_bytes(out / "pooled.md", md.encode("utf-8"))
    summary = {"runs": [str(r) for r in run_dirs], "names": names, "per_seed": rows,
               "pooled": pooled, "claims": {n: a.claims for n, a in zip(names, analyses)}}
    atomic_write_bytes(out / "pooled.json",
                       json.dumps(to_json(summary), indent=1, allow_nan=False).encode("utf-8"))
    e = html.escape
    b64 = base64.b64encode(png).decode("ascii")
    keys = list(rows[0]) if rows else []
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mdesc: "
            f"seeds pooled</title><style>{_CSS}</style></head><body>"
            f"<h1>{e(d.title)}: seeds side by side</h1>{header(d)}"
            + _html_table(["claim", "holds in", "fraction"], frac_rows, "claims")
            + f"<figure><img alt='pooled' src='data:image/png;base64,{b64}'></figure>"
            + "<h2>Per seed</h2>" + _html_table(keys, [[r[k] if not isinstance(r[k], list)
                                                        else _short(r[k], 12) for k in keys]
                                                       for r in rows])
            + "<p class='note'>A claim's fraction counts the seeds where it could be tested "
              "(refused tests, e.g. no events, are left out and counted apart), with a 95 % "
              "Wilson interval; each seed's p-values are Holm-adjusted over its own report's "
              "family. Sweeps of the same checkpoints with different probes (e.g. 100 and 500 "
              f"{d.probe}) are one seed measured twice, not independent evidence.</p>"
            + "</body></html>")
    path = out / "pooled.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
