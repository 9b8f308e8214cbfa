"""The one sweep-and-analysis engine: every run's checkpoints -> records -> run table ->
phase analysis -> report.

    from mdesc import sweep
    settings = sweep.SweepSettings(zero_input_steps=1100)      # what is measured
    table = sweep.load_table("runs/x")                          # the run table (numpy arrays)
    analysis = sweep.analyse(table)                             # phases, transitions, claims
    sweep.write_report("runs/x")                                # figures, summary, HTML

Study 1 (:mod:`mdesc.descent`) runs it over a run folder's checkpoints with the test reviews as
the probe; :mod:`mdesc.anyrun` over any run's checkpoints, or one model at a time from inside a
training loop, with the user's probe.  Modules, bottom to top:

- settings  SweepSettings (the one settings class), RunDescription (the run in words), the
            recorded form of the settings and the upgrade of older settings files (torch-free)
- record    the one measurement of a chunk of checkpoints and the record each becomes, with
            the parameter change against the checkpoint before it (torch)
- table     the resumable store (one record per checkpoint) and the run table read from it
- engine    the one sweep loop: chunks of checkpoints -> records, skipping bad checkpoints
- phases    PhaseSettings, the one label per checkpoint (combined_label: lambda_1 and D~ with
            their margins) and the single-measure ones, transitions, critical stretches
- losscurve, events, claims   the test-loss curve, stability events, claims and their tests
- controls  what else could explain a claim: the curve's noise, placebo events (training-loss
            spikes, parameter jumps), conditional tests, the family of tests with Holm
- analysis  analyse(table): the one analysis entry -> PhaseAnalysis; phase_table
- figures, report   the only matplotlib users: write_report, write_pooled_report

Docs: docs/architecture.md (where each concern lives), docs/multiple_descent.md, docs/anyrun.md.
"""
from __future__ import annotations

from mdesc.sweep.analysis import PhaseAnalysis, analyse, phase_table
from mdesc.sweep.engine import Job, Probe, select_jobs, sweep_jobs
from mdesc.sweep.phases import PhaseSettings, sorted_table, uniform_grid
from mdesc.sweep.record import finite_mean_stderr, full_record, measure
from mdesc.sweep.report import write_pooled_report, write_report
from mdesc.sweep.settings import (LOG_DISTANCE_FLOOR, RunDescription, SweepSettings,
                                  SweepSettingsError, recorded_settings, select_samples,
                                  upgrade_recorded)
from mdesc.sweep.table import SAMPLE_KEYS, SCALAR_KEYS, SweepStore, load_table

__all__ = ["Job", "LOG_DISTANCE_FLOOR", "PhaseAnalysis", "PhaseSettings", "Probe",
           "RunDescription", "SAMPLE_KEYS", "SCALAR_KEYS", "SweepSettings", "SweepSettingsError",
           "SweepStore", "analyse", "finite_mean_stderr", "full_record", "load_table", "measure",
           "phase_table", "recorded_settings", "select_jobs", "select_samples", "sorted_table",
           "sweep_jobs", "uniform_grid", "upgrade_recorded", "write_pooled_report",
           "write_report"]
