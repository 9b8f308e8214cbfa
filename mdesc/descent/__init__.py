"""Study 1: multiple descents as order-chaos transitions (LSTM sentiment classifier).

    from mdesc import descent
    descent.train_run("runs/x", ...)      # train, saving every epoch (resumable)
    descent.sweep_run("runs/x", ...)      # the engine over every checkpoint (resumable)
    table = descent.load_table("runs/x")  # the run table (numpy arrays)
    descent.analyse(table)                # phases, transitions, events, claims
    descent.write_report("runs/x")        # figures + HTML

Modules: model (what is trained), run (training loop), folder (every path of a run folder),
sweep (the engine, :mod:`mdesc.sweep`, over the run's checkpoints with the test reviews as the
probe, and study 1's description and settings), cli (the command line).  The analysis and the
report are the engine's (:func:`mdesc.sweep.analyse`, :func:`mdesc.sweep.write_report`).
"""
from __future__ import annotations

from mdesc.descent.folder import DescentRun, load_checkpoint
from mdesc.descent.model import ModelSettings, SentimentLSTM, TrainSettings, build_model
from mdesc.descent.run import list_checkpoints, load_run_data, read_config, read_history, train_run
from mdesc.descent.sweep import (SweepSettings, load_table, sweep_run, write_pooled_report,
                                 write_report)
from mdesc.sweep import PhaseSettings, analyse, phase_table

__all__ = ["DescentRun", "ModelSettings", "PhaseSettings", "SentimentLSTM", "SweepSettings",
           "TrainSettings", "analyse", "build_model", "list_checkpoints", "load_checkpoint",
           "load_run_data", "load_table", "phase_table", "read_config", "read_history",
           "sweep_run", "train_run", "write_pooled_report", "write_report"]
