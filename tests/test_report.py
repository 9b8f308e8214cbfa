"""Report generation on synthetic run tables (no sweep, no torch)."""
from __future__ import annotations

import base64
import csv
import html
import json
import re

import numpy as np
import pytest

from mdesc.sweep import analyse
from mdesc.sweep.report import claims_rows, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_table(n_epochs=60, n_samples=12, seed=0):
    """A paper-like run: the test loss falls until the first order->chaos transition (epoch 20),
    then rises while chaotic and drops at the chaos->order transition (epoch 35)."""
    rng = np.random.default_rng(seed)
    epoch = np.arange(n_epochs)
    chaotic = (epoch >= 21) & (epoch < 35) | (epoch >= 45)
    ld = np.where(chaotic, -6.0 + 0.2 * rng.standard_normal(n_epochs), -15.0)
    ld[19:21] = [-14.8, -14.5]                      # critical checkpoints before the transition
    lam = np.where(chaotic, 0.02, -0.03) + 0.002 * rng.standard_normal(n_epochs)
    loss = np.empty(n_epochs)
    loss[:21] = np.linspace(0.69, 0.40, 21)
    for i in range(21, n_epochs):
        loss[i] = loss[i - 1] + (0.02 if chaotic[i] else -0.025)
    rs = np.where(chaotic[:, None], 4 * rng.standard_normal((n_epochs, n_samples)),
                  np.linspace(-2, 2, n_samples)[None, :])
    return {"epoch": epoch.astype(np.int64), "train_loss": 0.7 * np.exp(-epoch / 10),
            "test_loss": loss, "log_distance": ld, "lyapunov_max": lam,
            "lyapunov_stderr": np.full(n_epochs, 0.002), "reduced_sum": rs}


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_report_files_html_and_summary(tmp_path):
    table = synthetic_table()
    run = tmp_path / "run"
    (run / "sweep").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"hidden": 60, "embedding": 32, "lr": 1e-3}))
    (run / "sweep" / "settings.json").write_text(json.dumps({"total_steps": 1600}))
    page = write_report(run, table=table)
    out = run / "report"
    assert page == out / "report.html"
    for name in ("report.html", "descent.png", "bifurcation.png", "summary.json",
                 "phase_table.csv"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))                     # atomic writes leave no temp files
    for name in ("descent.png", "bifurcation.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC

    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    pngs = embedded_pngs(text)
    assert len(pngs) == 2 and all(p[:8] == PNG_MAGIC for p in pngs)
    assert pngs[0] == (out / "descent.png").read_bytes()
    assert not re.search(r"(src|href)=['\"](?!data:)", text)   # no external assets

    summary = json.loads((out / "summary.json").read_text())
    c = summary["claims"]
    # the planted answers: first order->chaos crossing between epochs 20 and 21, global min at 20
    assert 20 < c["first_order_to_chaos_epoch"] < 21
    assert c["global_min_epoch"] == 20 and summary["recommended_epoch"] == 20
    assert c["n_order_to_chaos"] == 2 and c["n_chaos_to_order"] == 1
    assert summary["run"]["training config"]["hidden"] == 60
    # the summary numbers appear in the page as printed by the claims table
    for what, value in claims_rows(analyse(table)):
        assert html.escape(value) in text, what
    assert "1600" in text and "hidden" in text                # run settings shown

    rows = list(csv.DictReader((out / "phase_table.csv").open()))
    assert len(rows) == 60 and rows[21]["label"] == "chaotic" and rows[20]["recommended"] == "1"


def test_report_with_given_analysis_nan_and_no_reduced_sum(tmp_path):
    table = synthetic_table()
    table.pop("reduced_sum")
    table["log_distance"][30] = np.nan
    table["test_loss"][5] = np.nan
    a = analyse(table, recommend="widest_stretch")
    page = write_report(tmp_path / "run", table=table, analysis=a, out_dir=tmp_path / "rep")
    text = page.read_text(encoding="utf-8")
    assert len(embedded_pngs(text)) == 1 and not (tmp_path / "rep" / "bifurcation.png").exists()
    assert "non-finite" in text                               # the NaNs are reported
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["recommendation_rule"] == "widest_stretch"
    assert s["analysis"]["nonfinite"]["log_distance"] == [30.0]
    assert s["analysis"]["labels"]["distance"][30] == "unknown"


def test_report_single_checkpoint_and_mismatch(tmp_path):
    table = {k: v[:1] for k, v in synthetic_table().items()}
    page = write_report(tmp_path, table=table)
    assert "No transitions." in page.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="different table"):
        write_report(tmp_path, table=synthetic_table(), analysis=analyse(table))
    with pytest.raises(TypeError, match="either"):
        write_report(tmp_path, table=table, analysis=analyse(table), smooth=3)


def test_report_reads_the_run_table_from_the_run_folder(tmp_path):
    sweep = pytest.importorskip("mdesc.descent.sweep")
    with pytest.raises(FileNotFoundError, match="sweep"):
        write_report(tmp_path / "empty")
    assert hasattr(sweep, "load_table")


def test_the_report_says_the_runs_held_out_loss_and_task(tmp_path):
    """A run whose metric is a validation loss: the claims, the header, the HTML and every text
    of the figures say "validation loss", never "test loss"; the header names the task, the
    loss and the probe."""
    from mdesc.sweep import RunDescription, figures
    d = RunDescription(task="next-token prediction", loss="cross-entropy",
                       metric="validation loss", probe="held-out sentences")
    table = synthetic_table()
    rows = claims_rows(analyse(table), d)
    assert not any("test loss" in x.lower() or "test-loss" in x.lower() for r in rows for x in r)
    assert any(what.startswith("global validation-loss minimum") for what, _ in rows)
    page = write_report(tmp_path, table=table, description=d).read_text(encoding="utf-8")
    assert "next-token prediction · loss: <b>cross-entropy</b> · held-out loss: <b>validation " \
        "loss</b> · probe: held-out sentences" in page
    assert "test loss" not in page.lower() and "test-loss" not in page.lower()
    fig = figures._figure()
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0], label="global test-loss minimum")
    ax.set_ylabel("test loss (nats)")
    ax.legend()
    figures._png(fig, d)
    assert ax.get_ylabel() == "validation loss (nats)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["global validation-loss minimum"]
