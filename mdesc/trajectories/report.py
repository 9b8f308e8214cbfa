"""Tables (and, through :mod:`.figures`, figures) of a finished or partial ensemble sweep.

:func:`write_report` re-derives every rate's summary from its stored chunks (so a change of an
analysis threshold needs no retraining), then writes ``summary.json``, ``summary.csv`` and
``summary.md`` (one row per rate) and the figures into the run folder.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mdesc.store import RunFolder, StoreError, atomic_write_text

from . import figures as fg
from .sweep import RateJob, load_sweep, summarise_rate

__all__ = ["write_report", "table_rows", "markdown_table"]


def _fmt(x, spec="+.3g"):
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def table_rows(summaries: list[dict]) -> list[dict]:
    """One flat row per rate: the numbers of the README table."""
    rows = []
    for s in summaries:
        job = s["job"]
        tan, twin = s["tangent"], s["twin"]
        spec = s.get("spectrum", {})
        nz = spec.get("near_zero", {})
        ft = {r["eps"]: r for r in s.get("finite_time", [])}
        ft8 = ft.get(1e-8) or (next(iter(ft.values())) if ft else {})
        labels = s["label_fractions"]
        rows.append({
            "key": s["key"], "lr": job["lr"], "steps": job["steps"], "n_init": job["n_init"],
            "sample_order": job["sample_order"],
            "lam_tangent_median": tan["median"], "lam_tangent_low": tan["low"],
            "lam_tangent_high": tan["high"], "lam_twin_median": twin["median"],
            "lam_twin_low": twin["low"], "lam_twin_high": twin["high"],
            "fraction_positive": tan["fraction"]["positive"],
            "fraction_negative": tan["fraction"]["negative"],
            "lam_finite_time_median": ft8.get("median", math.nan),
            "finite_time_eps": ft8.get("eps", math.nan),
            "regime": s["regime"],
            "loss_labels": "; ".join(f"{k} {v:.0%}" if v >= 0.005 else f"{k} <1%"
                                     for k, v in sorted(labels.items(), key=lambda kv: -kv[1])),
            "near_zero_1e-3": (sorted(nz["0.001"])[len(nz["0.001"]) // 2]
                               if nz.get("0.001") else math.nan),
            "near_zero_1e-5": (sorted(nz["1e-05"])[len(nz["1e-05"]) // 2]
                               if nz.get("1e-05") else math.nan),
            "n_params": spec.get("n_params", math.nan),
            "spectrum_largest": spec.get("largest_median", math.nan),
            "median_final_loss": s.get("median_final_loss", math.nan),
            "median_test_accuracy": s.get("median_test_accuracy", math.nan),
            "seconds": s["seconds"] + spec.get("seconds", 0.0),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| η | epochs | inits | λ tangent median [95 % CI] | λ twin median | fraction λ > 0 "
            "(beyond 2 se) | λ endpoint slope (replicas, ε=1e-8) | regime | loss labels | near-zero "
            "exponents (|λ|≤1e-3) / P | final loss | test acc. |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = []
    for r in rows:
        eta = f"{r['lr']:.4g}" + (" (reversed sum)" if r["sample_order"] != "identity" else "")
        nz = (f"{r['near_zero_1e-3']:.0f} / {r['n_params']:.0f}"
              if isinstance(r["n_params"], int) or math.isfinite(r["n_params"]) else "n/a")
        body.append(
            f"| {eta} | {r['steps']} | {r['n_init']} | {_fmt(r['lam_tangent_median'])} "
            f"[{_fmt(r['lam_tangent_low'])}, {_fmt(r['lam_tangent_high'])}] | "
            f"{_fmt(r['lam_twin_median'])} | {_fmt(r['fraction_positive'], '.2f')} | "
            f"{_fmt(r['lam_finite_time_median'])} | {r['regime']} | {r['loss_labels']} | {nz} | "
            f"{_fmt(r['median_final_loss'], '.3g')} | {_fmt(r['median_test_accuracy'], '.2f')} |")
    return head + "\n".join(body) + "\n"


def write_report(out, figures: bool = True, resummarise: bool = True) -> list[Path]:
    """Write the tables and figures of the sweep in ``out``; returns the paths written."""
    run = RunFolder(out)
    if not run.exists():
        raise StoreError(f"{out} holds no ensemble sweep (no settings.json)")
    if resummarise:
        for key, settings in run.records("job").items():
            job = RateJob(**settings)
            if run.has_record("rate", key):
                summary, arrays = summarise_rate(run, job)
                run.save_tensors(f"rate/{key}.safetensors", arrays, {"key": key})
                run.write_record("rate", key, summary)
    results = load_sweep(out)
    summaries = [s for s, _ in results]
    rows = table_rows(summaries)
    written = [run.write_json("summary.json", {"settings": run.settings(), "rows": rows,
                                               "rates": summaries})]
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(run.path("summary.csv"), buf.getvalue())
    atomic_write_text(run.path("summary.md"), markdown_table(rows))
    written += [run.path("summary.csv"), run.path("summary.md")]
    if figures and results:
        written += fg.plot_ensemble_sweep(results, run.root)
    return written
