"""Study 2: glassy dynamics of deep RNNs trained by SGD near the learnability transition.

Hertz & Tyrcha (arXiv 2412.10094, Phys. Rev. E 111, 055307) train deep recurrent nets on the
four-part Bach chorales and report power-law loss decay (to a positive asymptote when the net is
too small), a learning time diverging as ``1/(w - w_c)`` with ``w_c`` falling with depth, and
aging of the weight fluctuations. The package is split along mdesc's seams:

* :mod:`.model` -- :class:`VoiceRNN` (one net) and :class:`EnsembleRNN` (many nets, batched);
* :mod:`.run` -- :func:`train_glassy_run` (one net, resumable); :mod:`.ensemble` --
  :func:`train_ensemble` (a batched group, resumable); :mod:`.sweep` -- the (depth, width, seed)
  sweep of the command line;
* :mod:`.analysis` -- fits, learning times, critical widths, aging curves and their collapse;
  :mod:`.summary` -- a whole sweep analysed, with intervals over seeds;
* :mod:`.figures` -- the plots (the only module importing matplotlib); :mod:`.cli` -- the
  ``mdesc glassy`` command.

Names are imported on first use (``from mdesc import glassy; glassy.fit_power_law``), so
``import mdesc.glassy`` is cheap and needs neither torch nor the compiled extension.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "mdesc.glassy.analysis": (
        "PowerLawFit", "fit_power_law", "learning_time", "CriticalWidthFit",
        "fit_critical_width", "log_spaced_times", "aging_schedule", "AgingCurves",
        "aging_correlation", "AgingCollapse", "aging_collapse"),
    "mdesc.glassy.summary": ("analyze_sweep", "seed_interval", "critical_width_over_seeds",
                             "summarize_net", "phase_aging", "depth_trend"),
    "mdesc.glassy.sweep": ("SweepSettings", "NetRecord", "run_sweep", "collect", "load_data"),
    "mdesc.glassy.model": ("VoiceRNN", "EnsembleRNN", "TanhRecurrence", "voice_offsets"),
    "mdesc.glassy.run": ("GlassyConfig", "GlassyRun", "train_glassy_run", "load_glassy_run",
                         "data_fingerprint", "batch_indices", "default_waiting_times",
                         "STATE_FILE", "RUN_FILE", "SNAPSHOT_FILE"),
    "mdesc.glassy.ensemble": ("EnsembleConfig", "EnsembleResult", "train_ensemble",
                              "load_ensemble"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'mdesc.glassy' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
