"""Study 1: multiple descents as order-chaos transitions (LSTM sentiment classifier).

    from mdesc import descent
    descent.train_run("runs/x", ...)      # train, saving every epoch (resumable)
    descent.sweep_run("runs/x", ...)      # stability of every checkpoint (resumable)
    table = descent.load_table("runs/x")  # the run table (numpy arrays)
    descent.analyse(table)                # phases, transitions, events, claims
    descent.write_report("runs/x")        # figures + HTML

Modules: model (what is trained), run (training loop), sweep (the stability sweep loop),
folder (every path of a run folder), analysis / events / claims (pure analysis on arrays),
figures / report (the only matplotlib importers), cli (the command line).
Everything is imported lazily: ``import mdesc.descent`` loads neither torch nor the extension.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "train_run": "run", "read_history": "run", "read_config": "run", "load_run_data": "run",
    "list_checkpoints": "run", "load_checkpoint": "folder", "DescentRun": "folder",
    "SentimentLSTM": "model", "ModelSettings": "model", "TrainSettings": "model",
    "build_model": "model",
    "sweep_run": "sweep", "SweepSettings": "sweep", "load_table": "sweep",
    "analyse": "analysis", "PhaseSettings": "analysis", "phase_table": "analysis",
    "find_events": "events", "event_permutation_test": "events",
    "pool_runs": "claims",
    "write_report": "report", "write_pooled_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mdesc.descent.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mdesc.descent' has no attribute {name!r}")


def __dir__():
    return __all__
