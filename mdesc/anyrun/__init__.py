"""Any training run: sweep its checkpoints, monitor it while it trains, shard sweeps with torchrun.

    from mdesc import anyrun
    anyrun.sweep_checkpoints("ckpts/", "analysis/", model="mypkg.models:make", probe="probe.npy")
    monitor = anyrun.StabilityMonitor("analysis/", probe_ids)   # inside a plain training loop
    monitor.step(model, epoch)                                 # at the end of every epoch
    anyrun.load_table("analysis/")                             # the run table (numpy arrays)

Modules: sources (checkpoints, models, probe inputs, metrics files), measure (the one
measurement), sweep (the resumable checkpoint sweep), monitor (StabilityMonitor), distributed
(torchrun sharding), table (the store, its table, the study-1 analysis and report), lightning
(the optional PyTorch Lightning callback), cli (``mdesc analyse-run``).  Docs: docs/anyrun.md.
Imported lazily: ``import mdesc.anyrun`` loads neither torch nor the extension.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "sweep_checkpoints": "sweep", "SweepResult": "sweep", "build_model": "sweep",
    "StabilityMonitor": "monitor",
    "AnalysisSettings": "measure", "measure": "measure",
    "load_table": "table", "write_report": "table", "analyse": "table", "AnyrunStore": "table",
    "discover_checkpoints": "sources", "load_probe": "sources", "load_metrics": "metrics",
    "read_state_dict": "sources", "RecurrentStack": "sources", "Checkpoint": "sources",
    "SourceError": "sources", "Probe": "sources",
    "StabilityCallback": "lightning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"mdesc.anyrun.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mdesc.anyrun' has no attribute {name!r}")


def __dir__():
    return __all__
