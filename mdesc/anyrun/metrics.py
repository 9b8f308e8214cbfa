"""Metrics files of any training run: test loss (and train loss, accuracies) per checkpoint.

A CSV/TSV file with a header, or JSON (a list of rows; columns as lists; ``{"12": 0.41}``; or
``{"epoch_12.pt": {"test_loss": 0.41}}``), matched to checkpoints by their training-axis value or
by file name.  The values are overlaid on the run table and report; they never decide a label.
"""
from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

from mdesc import store
from mdesc.anyrun.sources import Checkpoint, SourceError, step_from_name

METRIC_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc")
# Accepted spellings of each metric column (first match wins), and of the key column.
METRIC_ALIASES = {
    "test_loss": ("test_loss", "val_loss", "valid_loss", "validation_loss", "eval_loss"),
    "train_loss": ("train_loss", "training_loss", "loss"),
    "test_acc": ("test_acc", "test_accuracy", "val_acc", "val_accuracy", "valid_acc"),
    "train_acc": ("train_acc", "train_accuracy", "acc", "accuracy"),
}
KEY_COLUMNS = ("epoch", "step", "global_step", "iteration", "checkpoint", "file", "name")


def _num(v) -> float:
    if v is None or v == "":
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _rows_from_json(obj, path: Path) -> list[dict]:
    if isinstance(obj, list):
        if not all(isinstance(r, Mapping) for r in obj):
            raise SourceError(f"{path}: a JSON list of metrics must hold objects ({{'epoch': .., 'test_loss': ..}})")
        return [dict(r) for r in obj]
    if isinstance(obj, Mapping):
        columns = [k for k, v in obj.items() if isinstance(v, list)]
        if columns and len(columns) == len(obj):  # {"epoch": [...], "test_loss": [...]}
            n = {len(obj[k]) for k in columns}
            if len(n) != 1:
                raise SourceError(f"{path}: the metric columns have different lengths")
            return [{k: obj[k][i] for k in columns} for i in range(n.pop())]
        rows = []
        for k, v in obj.items():  # {"12": 0.41} or {"epoch_12.pt": {"test_loss": 0.41}}
            row = dict(v) if isinstance(v, Mapping) else {"test_loss": v}
            row["_key"] = k
            rows.append(row)
        return rows
    raise SourceError(f"{path}: metrics JSON must be a list of objects or an object")


def _read_rows(path: Path) -> list[dict]:
    """The rows of a CSV/TSV/JSON metrics file (SourceError if it is missing or of no such kind)."""
    if not path.is_file():
        raise SourceError(f"metrics file {path} does not exist")
    if path.suffix.lower() == ".json":
        return _rows_from_json(store.read_json(path), path)
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))
    raise SourceError(f"metrics file {path}: use .csv, .tsv or .json")


# what the held-out loss is called, by the column it was read from (the report says it)
METRIC_NAMES = {"val_loss": "validation loss", "valid_loss": "validation loss",
                "validation_loss": "validation loss", "eval_loss": "evaluation loss"}


def metric_name(path: str | os.PathLike) -> str | None:
    """What a metrics file's held-out loss is ("validation loss" for a ``val_loss`` column,
    "test loss" for ``test_loss``), or None when it has none."""
    for row in _read_rows(Path(path)):
        lower = {str(k).strip().lower() for k in row if k is not None}
        for alias in METRIC_ALIASES["test_loss"]:
            if alias in lower:
                return METRIC_NAMES.get(alias, "test loss")
    return None


def load_metrics(path: str | os.PathLike, checkpoints: Iterable[Checkpoint] = ()) -> dict[int, dict]:
    """``{step: {"test_loss": .., ...}}`` from a CSV or JSON metrics file.

    Each row is matched to a checkpoint by its key column (``epoch``, ``step``, ...: the
    training-axis value, or ``checkpoint``/``file``/``name``: a file name, its stem, or any name
    whose last integer is the step).  Recognised columns: ``test_loss`` (also ``val_loss``...),
    ``train_loss`` (also ``loss``), ``test_acc``, ``train_acc``; others are ignored.
    """
    path = Path(path)
    rows = _read_rows(path)
    by_name = {}
    for c in checkpoints:
        by_name[c.path.name] = c.step
        by_name[c.path.stem] = c.step
    out: dict[int, dict] = {}
    for i, row in enumerate(rows):
        lower = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        key = lower.pop("_key", None)
        for name in KEY_COLUMNS:
            if key is None and lower.get(name) not in (None, ""):
                key = lower[name]
        if key is None:
            raise SourceError(f"{path}: row {i + 1} has no key column (one of {', '.join(KEY_COLUMNS)})")
        key = str(key).strip()
        if re.fullmatch(r"\d+(\.0+)?", key):
            step = int(float(key))
        elif key in by_name or Path(key).name in by_name:
            step = by_name.get(key, by_name.get(Path(key).name))
        else:
            step = step_from_name(key)
            if step is None:
                raise SourceError(f"{path}: cannot match row {i + 1} ({key!r}) to a checkpoint")
        values = {}
        for column, aliases in METRIC_ALIASES.items():
            for a in aliases:
                if a in lower:
                    values[column] = _num(lower[a])
                    break
        if not values:
            raise SourceError(f"{path}: row {i + 1} has none of the metric columns "
                              f"{', '.join(METRIC_COLUMNS)} (or their aliases, e.g. val_loss)")
        out.setdefault(step, {}).update(values)
    return out
