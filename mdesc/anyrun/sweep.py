"""Sweep the checkpoints of any training run: :func:`sweep_checkpoints`.

Give it checkpoint files from anywhere (a folder, a glob or a list), a way to build the model
and fixed probe inputs; the engine (:mod:`mdesc.sweep`) measures every checkpoint's asymptotic
stability (lambda_1 over the zero-input window, D~ of twins perturbed at the drive end and at
t = 0, reduced sums) into its store (:class:`mdesc.sweep.SweepStore`, the layout of every run)
and writes the engine's phase analysis and report, in the words the run's
:class:`~mdesc.sweep.RunDescription` gives.

- **Resumable, crash-safe**: one record per checkpoint, written atomically when it is done
  (``RunFolder.write_record``); a re-run skips the checkpoints that have one, so a killed sweep
  loses at most the chunk in progress, and a folder still being written by a training run is
  picked up where the last sweep stopped.  The settings are checked on every re-run.
- **No pickle**: safetensors, or PyTorch files with ``torch.load(weights_only=True)``.
- **Bad checkpoints**: one whose keys or shapes do not fit the model (or that does not read) is
  named in a :class:`~mdesc.anyrun.sources.SourceError`; with ``skip_bad=True`` it is left out
  with a warning, listed in ``result.skipped`` and ``OUT/report/skipped.json``.  One whose
  weights hold NaN or inf (a diverged run) is no bad file: the engine records it as non-finite
  (label "unknown") and carries on.
- **Sharded** under ``torchrun`` (:mod:`mdesc.anyrun.distributed`): checkpoints are split over
  the ranks, each record is written once, rank 0 writes the report.
"""
from __future__ import annotations

import copy
import hashlib
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
from mdesc.anyrun.distributed import check_device, shard
from mdesc.anyrun import infer
from mdesc.anyrun.metrics import load_metrics, metric_name
from mdesc.sweep import (Job, Probe, RunDescription, SweepSettings, SweepStore, load_table,
                         recorded_settings, select_jobs, sweep_jobs, write_report)
from mdesc.sweep.record import METRICS
from mdesc.sweep.settings import MUTABLE

METRICS_FILE = "metrics.json"  # the metrics overlay last given, {step: {"test_loss": ...}}
CONFIG_FILE = "config.json"    # where the checkpoints, model and probe came from


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
    if model is None or isinstance(model, Mapping):  # the flags, as given or read off a file
        spec = dict(getattr(template, "architecture", None) or model or {})
    else:
        spec = model if isinstance(model, str) else type(template).__qualname__
    return {"spec": spec, "class": f"{type(template).__module__}.{type(template).__qualname__}"}


def probe_fingerprint(p: sources.Probe) -> dict:
    """Shape, dtype and a checksum of the probe (recorded so a resume uses the same inputs)."""
    h = hashlib.sha256(p.seq.detach().cpu().contiguous().numpy().tobytes())
    if p.lengths is not None:
        h.update(p.lengths.detach().cpu().contiguous().numpy().tobytes())
    return {"shape_time_major": list(p.seq.shape), "dtype": str(p.seq.dtype).replace("torch.", ""),
            "lengths": p.lengths is not None, "sha256": h.hexdigest()[:16]}


def store_settings(settings: SweepSettings, template: nn.Module, pr: sources.Probe) -> dict:
    """The settings a store is opened with, the same for sweeps and monitors (so a post-hoc
    sweep can fill in a monitored run): the measurement, the architecture (its sorted parameter
    shapes, whatever the modules are called) and the probe (checksummed)."""
    return recorded_settings(
        settings, pr.drive_steps, pr.index, drive=settings.drive or "own_length",
        parameter_shapes=sorted(list(v.shape) for v in template.state_dict().values()),
        probe=probe_fingerprint(pr))


def open_store(st: SweepStore, settings: SweepSettings, template: nn.Module, pr: sources.Probe,
               description: RunDescription | Mapping | None, config: Mapping | None) -> dict:
    """Record (or check) the settings, the run's description and ``config.json`` (a store
    with settings but no record yet is started afresh: :meth:`SweepStore.open`)."""
    wanted = store_settings(settings, template, pr)
    _check_architecture(st, wanted)
    stored = st.open(wanted)
    if description is not None or st.description() is None:
        d = description if isinstance(description, RunDescription) else \
            RunDescription.from_dict(description)
        st.write_description(RunDescription(**{**d.to_dict(), "name": d.name or st.root.name}))
    if config is not None:
        st.folder.write_json(CONFIG_FILE, config)
    return stored


def _read_metrics(metrics, cks, description, out_dir):
    """A metrics file read (``(metrics, description)``: its loss column names the held-out
    loss in the description); metrics given otherwise, and the description, as they are."""
    if not isinstance(metrics, (str, os.PathLike)):
        return metrics, description
    description = _metric_named(description, metric_name(metrics), SweepStore(out_dir))
    return load_metrics(metrics, cks), description


def _metric_named(description, said: str | None, st: SweepStore):
    """The description with the held-out loss named as the metrics file names it (a
    ``val_loss`` column: "validation loss"), unless the caller named it (a RunDescription, or
    ``metric`` given) or the stored description names it otherwise than the default."""
    if said is None or isinstance(description, RunDescription) or \
            (isinstance(description, Mapping) and "metric" in description):
        return description
    if description is None:
        have = st.description() if st.sweep_dir.is_dir() else None
        if have is not None and have.metric != RunDescription().metric:
            return None
        return {**(have.to_dict() if have is not None else {}), "metric": said}
    return {**description, "metric": said}


def check_out_dir(out_dir) -> None:
    """An output folder that cannot be one (a file, or a folder under a file) is a SourceError."""
    for p in (Path(out_dir), *Path(out_dir).parents):
        if p.exists() and not p.is_dir():
            raise sources.SourceError(f"the output folder {out_dir} cannot be made: {p} is a "
                                      "file; choose another --out")
        if p.exists():
            return


def _check_architecture(st: SweepStore, wanted: Mapping[str, Any]) -> None:
    """A store of another model: said as such (the shapes side by side), with any other
    differing setting, rather than as a list of differing shape entries."""
    have = st.settings() if st.exists() and st.steps() else {}  # no record: started afresh
    want = store.to_json(wanted)
    if have.get("parameter_shapes") in (None, want["parameter_shapes"]):
        return
    show = lambda v: (lambda t: t if len(t) <= 160 else t[:157] + "...")(str(v))  # noqa: E731
    others = store.settings_differences(have, want, ignore=(*MUTABLE, "parameter_shapes"))
    raise store.SettingsMismatch(
        f"{st.sweep_dir} holds a run of another model: its parameter shapes on disk "
        f"{show(have['parameter_shapes'])}, this model's {show(want['parameter_shapes'])}"
        + "".join(f"; {d}" for d in others) + ". Use the same model (or flags) to resume it, "
        "or choose another output folder")


def core_probe(pr: sources.Probe, template: nn.Module, settings: SweepSettings,
               device) -> Probe:
    """The probe as the engine hands it to the core: in the model's layout, on ``device``;
    ``drive="padded"`` drives every sequence for the full length.  A probe of the wrong kind
    for the model (float features for a model that embeds token ids, ids for one that does
    not, ids past the vocabulary, features of another width) is a SourceError."""
    check_probe(pr, template)
    x = sources.probe_for(template, pr.seq.to(device))
    padded = (settings.drive or "own_length") == "padded"
    lens = None if pr.lengths is None or padded else pr.lengths.to(device)
    return Probe(x, lens, pr.index, settings.zero_steps(pr.drive_steps))


def check_probe(pr: sources.Probe, template: nn.Module) -> None:
    """Refuse a probe that does not fit the model's input (see :func:`core_probe`)."""
    embeddings = [m for m in template.modules() if isinstance(m, nn.Embedding)]
    rnn = sources.recurrent_module(template)
    shape = tuple(pr.seq.transpose(0, 1).shape)
    if pr.is_ids and not embeddings:
        raise sources.SourceError(
            f"the probe holds integer token ids {shape} but the model has no nn.Embedding to "
            "map them; give float features (B, T, I)" +
            (f" with I = {rnn.input_size}" if rnn is not None else ""))
    if not pr.is_ids and embeddings:
        raise sources.SourceError(
            f"the probe holds float features {shape} but the model reads token ids through an "
            f"nn.Embedding (vocabulary {embeddings[0].num_embeddings}); floats would skip the "
            "embedding and drive the recurrent layer directly. Save the probe as integer token "
            "ids (B, T), e.g. torch.save(ids.long(), 'probe.pt')")
    if pr.is_ids and len(embeddings) == 1:
        vocab, lo, hi = embeddings[0].num_embeddings, int(pr.seq.min()), int(pr.seq.max())
        if lo < 0 or hi >= vocab:
            raise sources.SourceError(f"the probe's token ids lie in [{lo}, {hi}] but the "
                                      f"model's vocabulary has {vocab} entries [0, {vocab - 1}]")
    if not pr.is_ids and rnn is not None and int(pr.seq.shape[-1]) != rnn.input_size:
        raise sources.SourceError(f"the probe has {int(pr.seq.shape[-1])} features per step but "
                                  f"the model's recurrent layer takes {rnn.input_size}")


def make_probe(probe, lengths, probe_key, time_major, samples, seed) -> sources.Probe:
    """A :class:`~mdesc.anyrun.sources.Probe` from a file, a tensor or a Probe."""
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


def load_module(template: nn.Module, ck: sources.Checkpoint, device: torch.device,
                state_key: str | None = None, strip_prefix: str | None = None) -> nn.Module:
    """A copy of ``template`` holding the weights of ``ck`` (raises SourceError / StoreError;
    weights that hold NaN or inf load: the engine records them as non-finite)."""
    state = sources.read_state_dict(ck.path, state_key, strip_prefix)
    state = sources.fit_state_dict(state, template, where=str(ck.path))
    m = copy.deepcopy(template)
    m.load_state_dict(state, strict=True)
    return m.to(device).eval()


def _metrics_of(metrics, step: int) -> dict:
    if metrics is None:
        return {}
    got = (metrics(step) if callable(metrics) else metrics.get(step, {})) or {}
    return {k: (float(got[k]) if got.get(k) is not None and math.isfinite(float(got[k])) else None)
            for k in METRICS if k in got}


def sweep_checkpoints(checkpoints, out_dir: str | os.PathLike, model: Any, probe: Any, *,
                      lengths=None, probe_key: str | None = None, time_major: bool = False,
                      samples: int | None = None, metrics=None, order_file=None,
                      step_pattern: str | None = None,
                      settings: SweepSettings | None = None, factory_kwargs=None,
                      state_key: str | None = None, strip_prefix: str | None = None,
                      skip_bad: bool = False, chunk: int | None = None,
                      device: str | None = None, distributed: str | bool = "auto",
                      report: bool = True, phase_settings: Mapping[str, Any] | None = None,
                      description: RunDescription | Mapping | None = None,
                      progress: bool = False,
                      on_record: Callable[[int, dict], None] | None = None,
                      say: Callable[[str], None] | None = None) -> SweepResult:
    """Measure every checkpoint that has no record yet in ``out_dir`` (see the module doc).

    Args:
        checkpoints: a folder, a glob, a file or a list of files (``None`` with ``order_file``:
            the files it lists, relative to it), or a list of
            :class:`~mdesc.anyrun.sources.Checkpoint`.
        out_dir: the store (created; a re-run resumes it).
        model: see :func:`build_model` (a module, ``"package.module:factory"`` called with
            ``factory_kwargs``, a callable, or a dict of RecurrentStack flags); None, or a dict
            that leaves flags out: those are read off the first checkpoint's tensor shapes
            (:mod:`mdesc.anyrun.infer`) and said through ``say`` (default: printed).
        probe: a tensor file path, a :class:`~mdesc.anyrun.sources.Probe`, or a tensor of token
            ids ``(B, T)`` / features ``(B, T, I)`` (``time_major=True``: ``(T, B, ...)``).
        lengths: per-sequence drive lengths (tensor or tensor file); default: a ``lengths``
            tensor in the probe file, else the full length.
        samples: analyse a seeded subset of that many probe sequences (``settings.n_samples``).
        metrics: a CSV/JSON metrics file, ``{step: {"test_loss": ...}}`` or ``fn(step) -> dict``,
            overlaid on the table (train/test loss and accuracy).
        order_file: training order (see :func:`~mdesc.anyrun.sources.read_order_file`); default:
            the last integer in each file name, or the group of the regex ``step_pattern``.
        settings: :class:`mdesc.sweep.SweepSettings` (the engine's defaults: 1100 zero-input
            steps, both twins, each sequence driven for its own length).
        state_key, strip_prefix: see :func:`~mdesc.anyrun.sources.read_state_dict`.
        skip_bad: leave out (with a warning) checkpoints that do not read or fit the model,
            instead of stopping at the first with an error that names it.
        chunk: checkpoints measured per core call (``settings.chunk``; memory vs speed).
        device: None/"auto": each rank's GPU if any, else the CPU (one it cannot use: UserError).

    Every input is checked before anything is written (a failed call leaves no store).
        distributed: "auto" (shard under torchrun), True (require it) or False.
        report, phase_settings: write the report (``OUT/report``, rank 0) at the end, with
            these overrides of :class:`mdesc.sweep.PhaseSettings`.
        description: the run in words (:class:`mdesc.sweep.RunDescription` or its fields:
            ``{"loss": "cross-entropy", "probe": "validation sentences"}``) for the report.
        on_record: called as ``on_record(step, record)`` after each record is stored.
    """
    settings = (settings or SweepSettings()).replace(
        **{k: v for k, v in (("chunk", chunk), ("n_samples", samples)) if v is not None})
    settings.check()
    check_device(device)
    check_out_dir(out_dir)
    cks = _checkpoints(checkpoints, order_file, step_pattern)
    metrics, description = _read_metrics(metrics, cks, description, out_dir)
    pr = make_probe(probe, lengths, probe_key, time_major, settings.n_samples, settings.seed)
    # everything is checked before the store is touched: a run that stops here leaves nothing
    rank0 = int(os.environ.get("RANK", "0")) == 0  # torchrun: rank 0 says what it read
    template = first_fit(cks, model, factory_kwargs, state_key, strip_prefix, skip_bad,
                         say or (print if rank0 else lambda msg: None))
    check_probe(pr, template)
    sh = shard(device, distributed)
    result = SweepResult(rank=sh.rank, world=sh.world)
    st = SweepStore(out_dir)
    config = run_config(cks, template, model, pr, state_key, strip_prefix)
    try:
        if sh.is_main:
            open_store(st, settings, template, pr, description, config)
        sh.barrier()
        if not sh.is_main:
            st.open(store_settings(settings, template, pr))
        todo = _plan(cks, st, metrics, sh, result, say or (lambda msg: None))
        _measure(todo, st, template, pr, settings, state_key, strip_prefix, skip_bad, sh,
                 progress, on_record, say, result)
        _finish(st, sh, result, len(cks), report, phase_settings)
    finally:
        sh.close()
    return result


def run_config(cks, template, model, pr, state_key, strip_prefix) -> dict:
    """``config.json``: where the checkpoints, the model and the probe came from."""
    return {"source": "mdesc analyse-run (checkpoints of any training run)",
            "checkpoints": sorted({str(c.path.parent) for c in cks}),
            "model": describe_model(template, model), "probe": probe_fingerprint(pr),
            "state_key": state_key, "strip_prefix": strip_prefix}


def _finish(st: SweepStore, sh, result: SweepResult, n: int, report: bool,
            phase_settings: Mapping[str, Any] | None) -> None:
    """Once every rank's records are in: the skipped list, the table and (rank 0) the report."""
    sh.barrier()
    if sh.is_main:
        st.write_skipped_list()
    sh.barrier()
    if not st.steps():
        raise sources.SourceError(f"no checkpoint could be measured into {st.root}: "
                                  f"{len(result.skipped)} of {n} were left out")
    result.table = load_table(st.root)
    if report and sh.is_main:
        result.report = write_report(st.root, result.table, **dict(phase_settings or {}))
    sh.barrier()


def _needs_inference(model: Any) -> bool:
    """A model given as None or as RecurrentStack flags with some left out (read them)."""
    if model is None:
        return True
    if not isinstance(model, Mapping):
        return False
    given = {k for k, v in model.items() if v is not None}
    inputs = {"vocab_size", "embed_dim"} <= given or "input_size" in given
    return not (inputs and {"cell", "hidden_size", "num_layers", "output_size"} <= given)


def _skip_hint(e: Exception) -> str:
    if "skip-bad" in str(e):
        return str(e)
    return f"{e} (pass --skip-bad / skip_bad=True to leave it out)"


def first_fit(cks: list[sources.Checkpoint], model: Any, factory_kwargs, state_key, strip_prefix,
              skip_bad: bool, say: Callable[[str], None]) -> nn.Module:
    """The template module, checked against the first checkpoint that reads and fits it (the
    architecture read off that checkpoint's shapes where ``model`` leaves it open, and said).

    Without ``skip_bad`` the first checkpoint that does not read or fit stops the run; with it,
    a run none of whose checkpoints fits stops with one error that names the first reason."""
    template = None if _needs_inference(model) else build_model(model, factory_kwargs).cpu().eval()
    first = None
    for ck in cks:
        try:
            if template is None:
                state = sources.read_state_dict(ck.path, state_key, strip_prefix)
                flags, said = infer.infer_stack(state, model, where=str(ck.path))
                candidate = sources.RecurrentStack(**flags).eval()
                _load_inferred(candidate, ck, state_key, strip_prefix, said)
                say(f"read off {ck.path.name}: " + ", ".join(said))
                return candidate
            load_module(template, ck, torch.device("cpu"), state_key, strip_prefix)
            return template
        except infer.ArchitectureError:
            raise  # the files cannot say: skipping them would not help
        except (sources.SourceError, store.StoreError) as e:
            if not skip_bad:
                raise sources.SourceError(_skip_hint(e)) from e
            first = first or (ck.path, _without_path(str(e), ck.path))
    if first is None:
        raise sources.SourceError("no checkpoints to measure")
    raise sources.SourceError(
        f"every checkpoint ({len(cks)}) was left out by --skip-bad, so nothing was written; "
        f"the first, {first[0]}: {first[1]}")


def _load_inferred(candidate, ck, state_key, strip_prefix, said) -> None:
    """Load ``ck`` into the stack read off it; a misfit means the model is no plain stack."""
    try:
        load_module(candidate, ck, torch.device("cpu"), state_key, strip_prefix)
    except sources.SourceError as e:
        if "does not fit the model" not in str(e):
            raise
        raise infer.ArchitectureError(
            f"{str(e).split('. Check the')[0]}, with the architecture read off it "
            f"({', '.join(said)}): a model that is not a plain Embedding -> recurrent -> Linear "
            "stack needs --factory PKG.MODULE:CALLABLE (or the flags that say otherwise)") from e


def _without_path(reason: str, path) -> str:
    """A checkpoint's error without the leading file name (said beside it already)."""
    reason = reason.split(". Check the")[0]
    for lead in (f"{path}: ", f"{path} "):
        reason = reason[len(lead):] if reason.startswith(lead) else reason
    return reason


def _checkpoints(checkpoints, order_file, step_pattern) -> list[sources.Checkpoint]:
    """The checkpoints, sorted by step: given as Checkpoints, or discovered."""
    if isinstance(checkpoints, (list, tuple)) and checkpoints and \
            all(isinstance(c, sources.Checkpoint) for c in checkpoints):
        return sorted(checkpoints, key=lambda c: c.step)
    return sources.discover_checkpoints(checkpoints, order_file, step_pattern)


def _plan(cks, st: SweepStore, metrics, sh, result: SweepResult, say) -> list[Job]:
    """Rank 0's view decides: the steps it sees and which have no record yet; metrics given
    now overlay the records that exist (each by its owner rank).  Returns this rank's jobs."""
    if sh.is_main and isinstance(metrics, Mapping):  # kept: a later run without --metrics
        st.folder.write_json(METRICS_FILE, {str(k): v for k, v in metrics.items()})
    sh.barrier()
    if metrics is None and st.folder.path(METRICS_FILE).is_file():
        metrics = {int(k): v for k, v in st.folder.read_json(METRICS_FILE).items()}
    index = st.settings().get("sample_index")
    jobs = [Job(c.step, c.path, str(c.path), _metrics_of(metrics, c.step), {"step": c.step})
            for c in cks]
    steps = sh.broadcast_ints([j.step for j in jobs])
    todo, existing = select_jobs(jobs, st, index)
    todo_steps = set(sh.broadcast_ints([j.step for j in todo]))
    by_step = {j.step: j for j in jobs}
    lacking = [s for s in steps if s not in by_step]
    if lacking:
        raise sources.SourceError(f"rank {sh.rank} does not see the checkpoints of steps "
                                  f"{lacking[:5]} that rank 0 sees: give every rank the same files")
    todo = [by_step[s] for s in steps if s in todo_steps]
    result.existing = [s for s in steps if s not in todo_steps]
    if sh.is_main:
        say(f"{len(steps)} checkpoints: {len(result.existing)} already measured, {len(todo)} to "
            "do" + (f" over {sh.world} ranks" if sh.active else ""))
    if metrics is not None:
        for step in sh.mine(result.existing):
            rec, new = st.read(step), _metrics_of(metrics, step)
            if any(rec.get(k) != v for k, v in new.items()):
                st.write(step, {**rec, **new})
    return sh.mine(todo)


def _measure(todo, st, template, pr, settings, state_key, strip_prefix, skip_bad, sh, progress,
             on_record, say, result: SweepResult) -> None:
    """The engine over this rank's checkpoints."""
    def load(job: Job):
        return load_module(template, sources.Checkpoint(job.step, Path(job.path)), sh.device,
                           state_key, strip_prefix), None

    def why(job: Job, e: Exception) -> str:
        if not skip_bad:
            raise sources.SourceError(_skip_hint(e)) from e
        return _without_path(str(e), job.path)

    def notice(msg: str) -> None:
        if say is not None:
            say(msg)
        else:
            warnings.warn(msg, stacklevel=4)

    computed, skipped = sweep_jobs(
        todo, st, settings, core_probe(pr, template, settings, sh.device), load,
        errors=(sources.SourceError, store.StoreError), on_bad=why, notice=notice,
        progress=progress, on_record=on_record,
        desc=f"analyse-run{f' rank {sh.rank}' if sh.active else ''}")
    result.computed += computed
    result.skipped += skipped
