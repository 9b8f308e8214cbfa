"""Any training run through the engine: sweep its checkpoints, monitor it while it trains,
shard sweeps with torchrun.

    from mdesc import anyrun
    anyrun.sweep_checkpoints("ckpts/", "analysis/", model="mypkg.models:make", probe="probe.npy")
    anyrun.sweep_checkpoints("ckpts/", "analysis/", model=None, probe="ids.pt")  # sizes read off
    monitor = anyrun.StabilityMonitor("analysis/", probe_ids)   # inside a plain training loop
    monitor.step(model, epoch)                                 # at the end of every epoch
    anyrun.load_table("analysis/")                             # the run table (numpy arrays)

Modules: sources (checkpoints, models, probe inputs), infer (the architecture of a plain stack
read off a checkpoint's shapes), metrics (metrics files), sweep (the
engine, :mod:`mdesc.sweep`, over any run's checkpoints), monitor (StabilityMonitor),
distributed (torchrun sharding), lightning (the optional PyTorch Lightning callback, imported
only when asked for), cli (``mdesc analyse-run``).  The settings, store, table, analysis and
report are the engine's.  Docs: docs/anyrun.md.
"""
from __future__ import annotations

from mdesc.anyrun.metrics import load_metrics
from mdesc.anyrun.monitor import StabilityMonitor
from mdesc.anyrun.sources import (Checkpoint, Probe, RecurrentStack, SourceError,
                                  discover_checkpoints, load_probe, read_state_dict)
from mdesc.anyrun.sweep import SweepResult, build_model, sweep_checkpoints
from mdesc.sweep import (RunDescription, SweepSettings, SweepStore, analyse, load_table, measure,
                         write_report)

__all__ = ["Checkpoint", "Probe", "RecurrentStack", "RunDescription", "SourceError",
           "StabilityMonitor", "SweepResult", "SweepSettings", "SweepStore", "analyse",
           "build_model", "discover_checkpoints", "load_metrics", "load_probe", "load_table",
           "measure", "read_state_dict", "sweep_checkpoints", "write_report"]
