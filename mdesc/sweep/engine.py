"""The one sweep loop: checkpoints in chunks -> the core -> one record each, resumably.

Every run goes through :func:`sweep_jobs`: a study-1 run folder (:func:`mdesc.descent.sweep_run`),
any run's checkpoints (:func:`mdesc.anyrun.sweep_checkpoints`, sharded under torchrun) and, one
model at a time, the :class:`mdesc.anyrun.StabilityMonitor`.  The caller says what its
checkpoints are (:class:`Job`), how one is loaded and what to do with one that does not load;
the loop measures each chunk with :func:`mdesc.sweep.record.measure`, writes each record
atomically when it is done (a killed sweep loses at most the chunk in progress) and reports
warnings and skipped checkpoints in one readable line each.  A checkpoint whose weights hold
NaN or inf (a diverged run) is not measured but recorded as non-finite
(:func:`mdesc.sweep.record.nonfinite_record`: label "unknown" in the analysis), as the monitor
records such a model, and the sweep carries on.

Each record also carries the parameter change against the job's ``previous`` checkpoint (the
one before it on the analysed training axis, set by :func:`select_jobs`): the engine keeps the
weights of the checkpoint it loaded last and reads the predecessor itself when it was not that
one (the first job of a resumed sweep), so every record's change is against its predecessor.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mdesc.sweep.record import (finite_weights, full_record, measure, nonfinite_record,
                                 param_change, weights_of)
from mdesc.sweep.settings import SweepSettings
from mdesc.sweep.table import SweepStore


@dataclass
class Job:
    """One checkpoint to measure: its training-axis value, its file and what is recorded."""

    step: int
    path: Any                       # the file (shown in messages)
    checkpoint: str | None = None   # the name recorded in the record (default: str(path))
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)   # more record fields (e.g. "step")
    previous: "Job | None" = None   # the checkpoint before it on the training axis (select_jobs)


@dataclass
class Probe:
    """The probe inputs as the core takes them: ``x`` in the models' layout, on their device;
    ``lengths`` each sequence's drive length (None: the full length); ``index`` the analysed
    sequences' indices; ``zero_steps`` the zero-input steps after the drive."""

    x: Any
    lengths: Any
    index: Sequence[int]
    zero_steps: int


def sweep_jobs(jobs: list[Job], st: SweepStore, settings: SweepSettings, probe: Probe,
               load: Callable[[Job], tuple[Any, dict | None]], *,
               template=None, errors: tuple = (), on_bad: Callable[[Job, Exception], str] | None
               = None, notice: Callable[[str], None] = print, progress: bool = False,
               desc: str = "sweep checkpoints",
               on_record: Callable[[int, dict], None] | None = None) -> tuple[list[int], list]:
    """Measure ``jobs`` chunk by chunk (``settings.chunk``) into ``st``.

    ``load(job)`` returns ``(model or state dict, metrics or None)``; an exception of a type in
    ``errors`` is handed to ``on_bad(job, error)``, which re-raises to stop the sweep or returns
    the reason the checkpoint is skipped (recorded, and named in one line through ``notice``).
    ``template``: the module the state dicts fill (None: ``load`` returns modules).  Returns
    ``(steps computed, [(path, reason)] skipped)``.
    """
    from tqdm.auto import tqdm  # optional progress bar: imported only for a sweep

    bar = tqdm(total=len(jobs), desc=desc, unit="ckpt", disable=not progress,
               dynamic_ncols=True)
    say = bar.write if progress else notice
    computed, skipped = [], []
    last: dict[str, Any] = {}       # step and weights of the checkpoint loaded last
    try:
        for lo in range(0, len(jobs), settings.chunk):
            group, models, changes = [], [], []
            for job in jobs[lo: lo + settings.chunk]:
                try:
                    model, metrics = load(job)
                except errors as e:
                    reason = on_bad(job, e) if on_bad is not None else str(e)
                    say(f"skipping checkpoint {job.path}: {reason}")
                    st.skip(job.step, str(job.path), reason)
                    skipped.append((str(job.path), reason))
                    bar.update(1)
                    continue
                if metrics is not None:
                    job.metrics = {**job.metrics, **metrics}
                group.append(job)
                models.append(model)
                changes.append(_change(job, model, last, load, errors))
            if not group:
                continue
            measured = _measure_chunk(group, models, settings, probe, template, say)
            for job, rec, change in zip(group, measured, changes):
                rec.update(change)
                full = full_record(job.step, job.checkpoint if job.checkpoint is not None
                                   else str(job.path), job.metrics, rec, **job.extra)
                st.write(job.step, full)
                computed.append(job.step)
                bar.update(1)
                bar.set_postfix(step=job.step, lam=f"{rec['lyapunov_max'] or float('nan'):.4f}")
                if on_record is not None:
                    on_record(job.step, full)
    finally:
        bar.close()
    return computed, skipped


def _measure_chunk(group: list[Job], models: list, settings: SweepSettings, probe: Probe,
                   template, say: Callable[[str], None]) -> list[dict]:
    """One record per model: the core's measurement in one call, or, for a model whose weights
    hold NaN or inf (a diverged checkpoint: nothing to measure), the non-finite record
    (:func:`~mdesc.sweep.record.nonfinite_record`, label "unknown"); the sweep carries on."""
    finite = [finite_weights(m) for m in models]
    out = [None if ok else nonfinite_record(probe.index, settings) for ok in finite]
    for job, ok in zip(group, finite):
        if not ok:
            say(f"checkpoint {job.path}: its weights hold NaN or inf; recorded as non-finite "
                "(label unknown)")
    if any(finite):
        with warnings.catch_warnings(record=True) as seen:  # shown below, one line each
            warnings.simplefilter("always")
            measured = iter(measure([m for m, ok in zip(models, finite) if ok], probe.x,
                                    probe.lengths, settings, probe.zero_steps, probe.index,
                                    template=template))
        for w in dict.fromkeys(str(w.message).splitlines()[0] for w in seen):
            say(f"warning (epochs {group[0].step}-{group[-1].step}): {w}")
        out = [rec if rec is not None else next(measured) for rec in out]
    return out


def _change(job: Job, model, last: dict[str, Any], load, errors: tuple) -> dict[str, Any]:
    """The parameter change of ``job`` against its predecessor (empty without one); ``last``
    keeps the weights of the checkpoint loaded last (updated)."""
    weights = weights_of(model)
    prev, out = job.previous, {}
    if prev is not None:
        before = last.get("weights") if last.get("step") == prev.step else None
        if before is None:
            try:
                before = weights_of(load(prev)[0])
            except errors:      # an unreadable predecessor: no change for this record
                before = None
        if before is not None:
            out = {**param_change(before, weights), "previous_epoch": int(prev.step)}
    last.update(step=job.step, weights=weights)
    return out


def select_jobs(jobs: list[Job], st: SweepStore, sample_index, *, every: int = 1,
                steps: tuple[int, int] | None = None, limit: int | None = None
                ) -> tuple[list[Job], list[int]]:
    """The jobs still to do (no valid record; divisible by ``every``; within ``steps`` =
    (first, last); at most ``limit``) and the steps that already have a record.  Each job's
    ``previous`` is set to the job before it on that axis (``jobs`` in training order)."""
    todo, existing = [], []
    previous = None
    for job in jobs:
        if job.step % every or (steps is not None and not steps[0] <= job.step <= steps[1]):
            continue
        job.previous, previous = previous, job
        if st.has(job.step, sample_index):
            existing.append(job.step)
        else:
            todo.append(job)
    if limit is not None:
        todo = todo[:limit]
    return todo, existing
