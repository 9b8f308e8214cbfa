"""Sweep the checkpoints of any training run: :func:`sweep_checkpoints`.

Give it checkpoint files from anywhere (a folder, a glob or a list), a way to build the model
and fixed probe inputs; it measures every checkpoint's asymptotic stability
(:mod:`mdesc.anyrun.measure`: lambda_1 over the zero-input window, D~ of twins perturbed at the
drive end and at t = 0, reduced sums) into a store laid out as the multiple-descent study's
(:mod:`mdesc.anyrun.table`), and writes that study's phase analysis and report.

- **Resumable, crash-safe**: one record per checkpoint, written atomically when it is done
  (``RunFolder.write_record``); a re-run skips the checkpoints that have one, so a killed sweep
  loses at most the chunk in progress, and a folder still being written by a training run is
  picked up where the last sweep stopped.  The settings are checked on every re-run.
- **No pickle**: safetensors, or PyTorch files with ``torch.load(weights_only=True)``.
- **Bad checkpoints**: one whose keys or shapes do not fit the model (or that does not read) is
  named in a :class:`~mdesc.anyrun.sources.SourceError`; with ``skip_bad=True`` it is left out
  with a warning, listed in ``result.skipped`` and ``OUT/report/skipped.json``.
- **Sharded** under ``torchrun`` (:mod:`mdesc.anyrun.distributed`): checkpoints are split over
  the ranks, each record is written once, rank 0 writes the report.
"""
from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mdesc import store
from mdesc.anyrun import sources
from mdesc.anyrun.measure import AnalysisSettings, measure
from mdesc.anyrun.table import METRICS, AnyrunStore, load_table, write_report


METRICS_FILE = "metrics.json"  # the metrics overlay last given, {step: {"test_loss": ...}}


@dataclass
class SweepResult:
    """What a sweep did: steps computed here (this rank), steps already stored, checkpoints
    skipped (``[(path, reason)]``), the run table (every rank, after the sweep) and the report."""

    computed: list[int] = field(default_factory=list)
    existing: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    table: dict | None = None
    report: Path | None = None
    rank: int = 0
    world: int = 1


def build_model(model: Any, factory_kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A template module from an ``nn.Module``, a ``"package.module:factory"`` string, a
    zero-argument callable, or a dict of :class:`~mdesc.anyrun.sources.RecurrentStack` flags."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, str):
        return sources.model_from_factory(model, factory_kwargs)
    if isinstance(model, Mapping):
        return sources.RecurrentStack(**dict(model))
    if callable(model):
        built = model(**dict(factory_kwargs or {}))
        if not isinstance(built, nn.Module):
            raise sources.SourceError(f"the model factory returned a {type(built).__name__}, "
                                      "not an nn.Module")
        return built
    raise sources.SourceError("model must be an nn.Module, 'package.module:factory', a callable "
                              "or a dict of architecture flags")


def describe_model(template: nn.Module, model: Any) -> dict:
    """Where the model came from (recorded in ``config.json``)."""
    spec = model if isinstance(model, str) else (dict(model) if isinstance(model, Mapping) else
                                                 type(template).__qualname__)
    return {"spec": spec, "class": f"{type(template).__module__}.{type(template).__qualname__}"}


def store_settings(settings: AnalysisSettings, template: nn.Module, pr: sources.Probe) -> dict:
    """The settings a store is opened with, the same for sweeps and monitors (so a post-hoc
    sweep can fill in a monitored run): the measurement, the architecture (its sorted parameter
    shapes, whatever the modules are called) and the probe (checksummed)."""
    return {**settings.to_dict(),
            "parameter_shapes": sorted(list(v.shape) for v in template.state_dict().values()),
            "probe": probe_fingerprint(pr), "sample_index": pr.index,
            "drive_steps": pr.drive_steps, "zero_input_steps": settings.zero_input_steps,
            "window": "zero_input", "lyapunov_warmup": settings.warmup}


def _probe(probe, lengths, probe_key, time_major, samples, seed) -> sources.Probe:
    if isinstance(probe, sources.Probe):
        return probe
    if isinstance(probe, (str, os.PathLike)):
        return sources.load_probe(probe, probe_key, lengths=lengths, time_major=time_major,
                                  samples=samples, seed=seed)
    seq = torch.as_tensor(probe)
    if not time_major:
        seq = seq.transpose(0, 1)
    if not seq.is_floating_point():
        seq = seq.to(torch.int64)
    lens = None if lengths is None else torch.as_tensor(lengths).to(torch.int64)
    return sources.Probe(seq.contiguous(), lens, list(range(int(seq.shape[1]))))


def probe_fingerprint(p: sources.Probe) -> dict:
    """Shape, dtype and a checksum of the probe (recorded so a resume uses the same inputs)."""
    import hashlib

    h = hashlib.sha256(p.seq.detach().cpu().contiguous().numpy().tobytes())
    if p.lengths is not None:
        h.update(p.lengths.detach().cpu().contiguous().numpy().tobytes())
    return {"shape_time_major": list(p.seq.shape), "dtype": str(p.seq.dtype).replace("torch.", ""),
            "lengths": p.lengths is not None, "sha256": h.hexdigest()[:16]}


def load_module(template: nn.Module, ck: sources.Checkpoint, device: torch.device,
                state_key: str | None = None, strip_prefix: str | None = None) -> nn.Module:
    """A copy of ``template`` holding the weights of ``ck`` (raises SourceError / StoreError)."""
    state = sources.read_state_dict(ck.path, state_key, strip_prefix)
    state = sources.fit_state_dict(state, template, where=str(ck.path))
    m = copy.deepcopy(template)
    m.load_state_dict(state, strict=True)
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise sources.SourceError(f"{ck.path}: {name} holds NaN or inf")
    return m.to(device).eval()


def _metrics_of(metrics, step: int) -> dict:
    if metrics is None:
        return {}
    if callable(metrics):
        got = metrics(step) or {}
    else:
        got = metrics.get(step, {})
    return {k: (float(got[k]) if got.get(k) is not None and math.isfinite(float(got[k])) else None)
            for k in METRICS if k in got}


def sweep_checkpoints(checkpoints, out_dir: str | os.PathLike, model: Any, probe: Any, *,
                      lengths=None, probe_key: str | None = None, time_major: bool = False,
                      samples: int | None = None, metrics=None, order_file=None,
                      step_pattern: str | None = None,
                      settings: AnalysisSettings | None = None, factory_kwargs=None,
                      state_key: str | None = None, strip_prefix: str | None = None,
                      skip_bad: bool = False, chunk: int = 4, device: str | None = None,
                      distributed: str | bool = "auto", report: bool = True,
                      phase_settings: Mapping[str, Any] | None = None, progress: bool = False,
                      on_record: Callable[[int, dict], None] | None = None,
                      say: Callable[[str], None] | None = None) -> SweepResult:
    """Measure every checkpoint that has no record yet in ``out_dir`` (see the module doc).

    Args:
        checkpoints: a folder, a glob, a file or a list of files (``None`` with ``order_file``:
            the files it lists, relative to it), or a list of
            :class:`~mdesc.anyrun.sources.Checkpoint`.
        out_dir: the store (created; a re-run resumes it).
        model: an ``nn.Module`` of the checkpoints' architecture, ``"package.module:factory"``
            (called with ``factory_kwargs``), a callable, or a dict of
            :class:`~mdesc.anyrun.sources.RecurrentStack` flags (``{"cell": "lstm",
            "vocab_size": 100, "embed_dim": 8, "hidden_size": 16}``).
        probe: a tensor file path, a :class:`~mdesc.anyrun.sources.Probe`, or a tensor of token
            ids ``(B, T)`` / features ``(B, T, I)`` (``time_major=True``: ``(T, B, ...)``).
        lengths: per-sequence drive lengths (tensor or tensor file); default: a ``lengths``
            tensor in the probe file, else the full length.
        samples: analyse a seeded subset of that many probe sequences.
        metrics: a CSV/JSON metrics file, ``{step: {"test_loss": ...}}`` or ``fn(step) -> dict``,
            overlaid on the table (train/test loss and accuracy).
        order_file: training order (see :func:`~mdesc.anyrun.sources.read_order_file`); default:
            the last integer in each file name, or the group of the regex ``step_pattern``.
        settings: :class:`~mdesc.anyrun.measure.AnalysisSettings` (defaults: 1100 zero-input
            steps, both twins).
        state_key, strip_prefix: see :func:`~mdesc.anyrun.sources.read_state_dict`.
        skip_bad: leave out (with a warning) checkpoints that do not read or fit the model,
            instead of stopping at the first with an error that names it.
        chunk: checkpoints measured per core call (memory vs speed).
        device: None/"auto": each rank's GPU if there are any, else the CPU.
        distributed: "auto" (shard under torchrun), True (require it) or False.
        report: write the phase analysis and report (``OUT/report``) at the end (rank 0).
        phase_settings: keyword overrides of :class:`mdesc.descent.PhaseSettings`.
        on_record: called as ``on_record(step, record)`` after each record is stored.
    """
    from mdesc.anyrun.distributed import shard as _shard

    say_given = say is not None
    say = say or (lambda msg: None)
    settings = (settings or AnalysisSettings()).check()
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if isinstance(checkpoints, (list, tuple)) and checkpoints and \
            all(isinstance(c, sources.Checkpoint) for c in checkpoints):
        cks = sorted(checkpoints, key=lambda c: c.step)
    else:
        cks = sources.discover_checkpoints(checkpoints, order_file, step_pattern)
    if isinstance(metrics, (str, os.PathLike)):
        from mdesc.anyrun.metrics import load_metrics

        metrics = load_metrics(metrics, cks)
    template = build_model(model, factory_kwargs).cpu().eval()
    pr = _probe(probe, lengths, probe_key, time_major, samples, settings.seed)
    sh = _shard(device, distributed)
    result = SweepResult(rank=sh.rank, world=sh.world)
    try:
        _sweep(cks, AnyrunStore(out_dir), template, model, pr, settings, metrics, state_key,
               strip_prefix, skip_bad, chunk, sh, progress, on_record, say, say_given, result)
        sh.barrier()  # every rank's records are in
        if sh.is_main:
            AnyrunStore(out_dir).write_skipped_list()
        sh.barrier()
        result.table = load_table(out_dir)
        if report and sh.is_main:
            result.report = write_report(out_dir, result.table, **dict(phase_settings or {}))
        sh.barrier()
    finally:
        sh.close()
    return result


def _sweep(cks, st: AnyrunStore, template, model, pr, settings, metrics, state_key, strip_prefix,
           skip_bad, chunk, sh, progress, on_record, say, say_given, result) -> None:
    wanted = {**store_settings(settings, template, pr), "chunk": chunk}
    config = {"source": "mdesc analyse-run (checkpoints of any training run)",
              "checkpoints": sorted({str(c.path.parent) for c in cks}),
              "model": describe_model(template, model), "probe": wanted["probe"],
              "state_key": state_key, "strip_prefix": strip_prefix}
    if sh.is_main:
        st.open(wanted, config)
        if isinstance(metrics, Mapping):  # kept: a later run without --metrics still overlays it
            st.run.write_json(METRICS_FILE, {str(k): v for k, v in metrics.items()})
    sh.barrier()
    if not sh.is_main:
        st.open(wanted)
    if metrics is None and st.run.path(METRICS_FILE).is_file():
        metrics = {int(k): v for k, v in st.run.read_json(METRICS_FILE).items()}
    # rank 0's view decides: the steps it sees, and which of them have no record yet
    steps = sh.broadcast_ints([c.step for c in cks])
    todo_steps = set(sh.broadcast_ints([c.step for c in cks if not st.has(c.step)]))
    by_step = {c.step: c for c in cks}
    lacking = [s for s in steps if s not in by_step]
    if lacking:
        raise sources.SourceError(f"rank {sh.rank} does not see the checkpoints of steps "
                                  f"{lacking[:5]} that rank 0 sees: give every rank the same files")
    cks = [by_step[s] for s in steps]
    todo_flags = [c.step in todo_steps for c in cks]
    todo = [c for c, t in zip(cks, todo_flags) if t]
    result.existing = [c.step for c, t in zip(cks, todo_flags) if not t]
    if sh.is_main:
        say(f"{len(cks)} checkpoints: {len(result.existing)} already measured, {len(todo)} to do"
            + (f" over {sh.world} ranks" if sh.active else ""))
    # metrics given now overlay the records that exist (each by its owner rank)
    if metrics is not None:
        for c in sh.mine([c for c, t in zip(cks, todo_flags) if not t]):
            rec = st.read(c.step)
            new = _metrics_of(metrics, c.step)
            if any(rec.get(k) != v for k, v in new.items()):
                st.write(c.step, {**rec, **new})
    mine = sh.mine(todo)
    x = pr.seq.to(sh.device)
    lens = None if pr.lengths is None else pr.lengths.to(sh.device)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), desc=f"analyse-run{f' rank {sh.rank}' if sh.active else ''}",
               unit="ckpt", disable=not progress, dynamic_ncols=True)
    try:
        for lo in range(0, len(mine), chunk):
            group, modules = [], []
            for c in mine[lo: lo + chunk]:
                try:
                    modules.append(load_module(template, c, sh.device, state_key, strip_prefix))
                    group.append(c)
                except (sources.SourceError, store.StoreError) as e:
                    if not skip_bad:
                        raise sources.SourceError(
                            f"{e} (pass --skip-bad / skip_bad=True to leave it out)"
                            if "skip-bad" not in str(e) else str(e)) from e
                    reason = str(e).split(". Check the")[0]
                    for lead in (f"{c.path}: ", f"{c.path} "):
                        reason = reason[len(lead):] if reason.startswith(lead) else reason
                    notice = f"skipping checkpoint {c.path}: {reason}"
                    if say_given:
                        (bar.write if progress else say)(notice)
                    else:
                        warnings.warn(notice, stacklevel=3)
                    st.skip(c.step, str(c.path), reason)
                    result.skipped.append((str(c.path), reason))
                    bar.update(1)
            if not group:
                continue
            for c, rec in zip(group, measure(modules, x, lens, settings, pr.index)):
                full = {"epoch": c.step, "step": c.step, "checkpoint": str(c.path),
                        **{k: None for k in METRICS}, **_metrics_of(metrics, c.step), **rec}
                st.write(c.step, full)
                result.computed.append(c.step)
                bar.update(1)
                bar.set_postfix(step=c.step, lam=f"{rec['lyapunov_max'] or float('nan'):.4f}")
                if on_record is not None:
                    on_record(c.step, full)
    finally:
        bar.close()
