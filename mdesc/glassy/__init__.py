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
  :mod:`.scaling` -- the tests of the curve shapes (``t* ~ C/(w - w_c)^nu`` with profile
  intervals and the test of ``nu = 1``; power law against stretched exponential by AICc;
  ``L_inf`` intervals); :mod:`.collapse` -- aging as a collapse with a fitted exponent ``mu``;
  :mod:`.claims` -- all of them on a sweep; :mod:`.lrcheck` -- the largest stable learning rate;
  :mod:`.summary` -- a whole sweep analysed, with intervals over seeds;
* :mod:`.figures` -- the plots (the only module importing matplotlib); :mod:`.cli` -- the
  ``mdesc glassy`` command.

Importing the package imports torch (the models and runners); ``import mdesc`` alone does not.
"""
from __future__ import annotations

from mdesc.glassy.analysis import (AgingCollapse, AgingCurves, CriticalWidthFit, PowerLawFit,
                                   aging_collapse, aging_correlation, aging_schedule,
                                   fit_critical_width, fit_power_law, learning_time,
                                   log_spaced_times)
from mdesc.glassy.claims import ScalingSettings, scaling_analysis
from mdesc.glassy.collapse import AgingScaling, fit_aging_exponent, scaling_over_seeds
from mdesc.glassy.ensemble import EnsembleConfig, EnsembleResult, load_ensemble, train_ensemble
from mdesc.glassy.model import EnsembleRNN, TanhRecurrence, VoiceRNN, voice_offsets
from mdesc.glassy.run import (RUN_FILE, SNAPSHOT_FILE, STATE_FILE, GlassyConfig, GlassyRun,
                              batch_indices, data_fingerprint, default_waiting_times,
                              load_glassy_run, train_glassy_run)
from mdesc.glassy.lrcheck import lr_stability, run_lr_check
from mdesc.glassy.scaling import (DecayComparison, DivergenceFit, compare_decays, fit_divergence,
                                  l_inf_interval)
from mdesc.glassy.summary import (analyze_sweep, critical_width_over_seeds, depth_trend,
                                  phase_aging, seed_interval, summarize_net)
from mdesc.glassy.sweep import (NetRecord, SweepSettings, collect, load_data,
                                records_from_results, run_sweep)

__all__ = [
    "AgingScaling", "DecayComparison", "DivergenceFit", "ScalingSettings", "compare_decays",
    "fit_aging_exponent", "fit_divergence", "l_inf_interval", "lr_stability",
    "records_from_results", "run_lr_check", "scaling_analysis", "scaling_over_seeds",
    "AgingCollapse", "AgingCurves", "CriticalWidthFit", "EnsembleConfig", "EnsembleRNN",
    "EnsembleResult", "GlassyConfig", "GlassyRun", "NetRecord", "PowerLawFit", "RUN_FILE",
    "SNAPSHOT_FILE", "STATE_FILE", "SweepSettings", "TanhRecurrence", "VoiceRNN",
    "aging_collapse", "aging_correlation", "aging_schedule", "analyze_sweep", "batch_indices",
    "collect", "critical_width_over_seeds", "data_fingerprint", "default_waiting_times",
    "depth_trend", "fit_critical_width", "fit_power_law", "learning_time", "load_data",
    "load_ensemble", "load_glassy_run", "log_spaced_times", "phase_aging", "run_sweep",
    "seed_interval", "summarize_net", "train_ensemble", "train_glassy_run", "voice_offsets",
]
