"""The store of an any-run sweep or monitor, its run table, and the study-1 analysis and report.

Store layout (the multiple-descent study's, so ``mdesc descent report --run-dir OUT`` and
:func:`mdesc.descent.load_table` read it too)::

    OUT/config.json              where the checkpoints, model and probe came from
    OUT/metrics.json             the metrics overlay last given (reused by later runs)
    OUT/sweep/settings.json      the measurement settings (mdesc.store.RunFolder settings)
    OUT/sweep/epoch_NNNN.json    one record per checkpoint / monitored epoch (NNNN = step)
    OUT/sweep/skipped.json       checkpoints left out by --skip-bad (listed by the report)
    OUT/skipped/epoch_NNNN.json  one such checkpoint, with the reason (rank-safe: one file each)
    OUT/report/                  report.html, descent.png, bifurcation.png, summary.json,
                                 phase_table.csv (mdesc.descent.write_report)

Everything goes through :mod:`mdesc.store` (atomic JSON; no pickle).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from mdesc import store

RECORDS = "sweep"
SKIPPED = "skipped"
KEY_RE = re.compile(r"^epoch_(\d+)$")
METRICS = ("train_loss", "test_loss", "train_acc", "test_acc")


def key(step: int) -> str:
    return f"epoch_{int(step):04d}"


class AnyrunStore:
    """The folder of one any-run analysis (see the module doc)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.run = store.RunFolder(self.root)
        self.sweep = store.RunFolder(self.root / RECORDS)   # settings: OUT/sweep/settings.json

    def open(self, settings: Mapping[str, Any], config: Mapping[str, Any] | None = None,
             mutable=("chunk",)) -> dict:
        stored = self.sweep.open(settings, mutable=mutable)
        if config is not None:
            self.run.write_json("config.json", config)
        return stored

    def records(self) -> dict[int, dict]:
        """``{step: record}`` of every stored record, sorted by step."""
        out = {}
        for k, rec in self.run.records(RECORDS).items():
            m = KEY_RE.match(k)
            if m:
                out[int(m.group(1))] = rec
        return dict(sorted(out.items()))

    def has(self, step: int) -> bool:
        return self.run.has_record(RECORDS, key(step))

    def write(self, step: int, record: Mapping[str, Any]) -> None:
        self.run.write_record(RECORDS, key(step), dict(record))
        bad = self.run.path(SKIPPED, key(step) + ".json")
        if bad.is_file():  # it reads now: no longer skipped
            bad.unlink()

    def read(self, step: int) -> dict:
        return self.run.read_record(RECORDS, key(step))

    def skip(self, step: int, path: str, reason: str) -> None:
        self.run.write_record(SKIPPED, key(step), {"step": step, "checkpoint": path, "reason": reason})

    def write_skipped_list(self) -> None:
        """``OUT/sweep/skipped.json``: the skipped checkpoints, as the study's report lists them."""
        store.write_json(self.root / RECORDS / "skipped.json",
                         [f"{r['checkpoint']} ({r['reason']})" for r in self.skipped()])

    def skipped(self) -> list[dict]:
        return [r for k, r in self.run.records(SKIPPED).items() if KEY_RE.match(k)
                and not self.has(int(KEY_RE.match(k).group(1)))]


def load_table(root: str | os.PathLike) -> dict:
    """The run table of a store: :func:`mdesc.descent.load_table` (one row per record, sorted
    by step; ``epoch`` is the training-axis value), so every column is the study's own."""
    from mdesc import descent

    root = Path(root)
    if not AnyrunStore(root).records():
        raise FileNotFoundError(f"{root} holds no records ({root / RECORDS}/epoch_NNNN.json); "
                                "run `mdesc analyse-run` or a StabilityMonitor into it first")
    return descent.load_table(root)


def write_report(root: str | os.PathLike, table: Mapping[str, np.ndarray] | None = None,
                 **phase_settings: Any) -> Path:
    """The multiple-descent study's phase analysis and report of a store (``OUT/report``)."""
    from mdesc import descent

    root = Path(root)
    table = load_table(root) if table is None else table
    page = descent.write_report(root, table=table, out_dir=root / "report", **phase_settings)
    return Path(page)


def analyse(root_or_table, **phase_settings: Any):
    """:func:`mdesc.descent.analyse` of a store's table (or of a table)."""
    from mdesc import descent

    table = root_or_table if isinstance(root_or_table, Mapping) else load_table(root_or_table)
    return descent.analyse(table, **phase_settings)
