"""A stability monitor for plain PyTorch training loops: :class:`StabilityMonitor`.

    monitor = mdesc.StabilityMonitor("runs/mine/stability", probe_ids, zero_input_steps=1100)
    for epoch in range(epochs):
        train_one_epoch(model)
        rec = monitor.step(model, epoch, metrics={"test_loss": val_loss})   # optional metrics
        if rec["transition"] == "order_to_chaos": ...

Each :meth:`StabilityMonitor.step` measures the model as it is with the engine's one
measurement (:func:`mdesc.sweep.measure`, as :func:`mdesc.sweep_checkpoints` does: lambda_1 over
the zero-input window, D~ of twins perturbed at the drive end and, if asked, at t = 0, reduced
sums of the fixed probe inputs) and stores one record in the engine's store, so the records
equal those of a post-hoc sweep of the same weights, and ``monitor.report()`` (or ``mdesc
descent report --run-dir``) writes the engine's phase analysis and report.

Each record is labelled live with the report's one label (:func:`mdesc.sweep.phases.record_label`
with ``"combined"``: ordered, chaotic, marginal, disagree or unknown).  Order <-> chaos crossings
between consecutive monitored epochs (by the analysis's rule, the one label unless ``measure``
names a single measure; marginal, disagreeing and unknown epochs are passed over) are flagged in the returned record, kept in
``monitor.transitions`` and passed to ``on_transition(event, model)``; the paper's finding is
that the best epoch sits at the first order -> chaos transition, so
``monitor.first_order_to_chaos`` is a model-selection signal that needs no test data.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Any, Callable, Mapping

import torch
from torch import nn

import torch.distributed as dist

from mdesc.anyrun import sources
from mdesc.anyrun.distributed import check_device
from mdesc.anyrun.sweep import check_out_dir, core_probe, make_probe, open_store
from mdesc.sweep import (PhaseSettings, RunDescription, SweepSettings, SweepStore,
                         full_record, load_table, measure, write_report)
from mdesc.sweep.phases import record_label
from mdesc.sweep.record import finite_weights, nonfinite_record, param_change, weights_of


def _unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers."""
    while hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) \
            and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
        model = model.module
    return model


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class StabilityMonitor:
    """Record a model's asymptotic stability at the end of every (``every``-th) epoch.

    Args:
        out_dir: the store (created; re-opening it resumes: the settings must match).
        probe: token ids ``(B, T)`` or features ``(B, T, I)`` (a tensor, or a tensor file as in
            :func:`~mdesc.anyrun.sources.load_probe`); ``time_major=True`` for ``(T, B, ...)``.
            Keep it fixed for the whole run (it is checksummed in the settings).
        lengths: drive length of each probe sequence (default: full length).
        settings: :class:`mdesc.sweep.SweepSettings`; or pass its fields as
            keywords (``zero_input_steps=1100, twins=("drive_end",)``).  The monitor defaults
            to the drive-end twin only (half the cost); add ``"start"`` for the t = 0 twin.
        every: measure epochs divisible by this only.
        measure: which label flags crossings: "combined" (the report's one label: lambda_1
            and D~ with their margins), or "distance" (D~) or "lyapunov" (lambda_1) alone.
        on_transition: called as ``on_transition(event, model)`` at each crossing, with
            ``event = {"epoch", "kind", "previous_epoch", "measure"}``.
        phase_settings: overrides of :class:`mdesc.sweep.PhaseSettings` (thresholds).
        description: the run in words (:class:`mdesc.sweep.RunDescription` or its fields).
        rank_zero_only: under torch.distributed, only rank 0 measures (others get None).
        device: where to measure (``"cpu"``, ``"cuda"``, ``"cuda:1"``; None: wherever the model
            is).  A model elsewhere is measured as a copy on ``device``; training is untouched.

    A model whose weights hold NaN or inf (a diverging run) is recorded as non-finite
    (``nonfinite_fraction`` 1, no exponents or distances, label "unknown") and the monitor
    carries on.
    """

    def __init__(self, out_dir: str | os.PathLike, probe: Any, *, lengths=None,
                 time_major: bool = False, probe_key: str | None = None,
                 settings: SweepSettings | None = None, every: int = 1,
                 measure: str = "combined",
                 on_transition: Callable[[dict, nn.Module], None] | None = None,
                 phase_settings: Mapping[str, Any] | None = None, rank_zero_only: bool = True,
                 description: RunDescription | Mapping | None = None,
                 device: str | torch.device | None = None, **setting_fields: Any):
        self.device = check_device(device)
        if settings is None:
            setting_fields.setdefault("twins", ("drive_end",))
            settings = SweepSettings(**setting_fields)
        elif setting_fields:
            raise TypeError("pass either settings=SweepSettings(...) or its fields, not both")
        self.settings = settings.check()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if measure not in ("combined", "distance", "lyapunov"):
            raise ValueError(f"measure must be 'combined', 'distance' or 'lyapunov', got "
                             f"{measure!r}")
        self.phase = PhaseSettings(**dict(phase_settings or {}))
        self.description = description
        self.every, self.measure_name, self.on_transition = every, measure, on_transition
        self.rank_zero_only = rank_zero_only
        self.probe = make_probe(probe, lengths, probe_key, time_major, None, self.settings.seed)
        check_out_dir(out_dir)
        self.store = SweepStore(out_dir)
        self._opened = False
        self._on_device: dict[torch.device, tuple] = {}
        self.transitions: list[dict] = []
        self.seconds = 0.0
        self.steps = 0

    @property
    def out_dir(self):
        return self.store.root

    def _open(self, model: nn.Module) -> None:
        config = {"source": "mdesc.StabilityMonitor (inside a training loop)",
                  "model": f"{type(model).__module__}.{type(model).__qualname__}",
                  "every": self.every}
        stored = open_store(self.store, self.settings, model, self.probe, self.description,
                            config)
        config["probe"] = stored["probe"]
        self.store.folder.write_json("config.json", config)
        self._opened = True
        # resume: the crossings already on record
        prev = None
        for epoch, rec in self.store.records().items():
            lab = self._crossing_label(rec)
            if lab is None:
                continue
            if prev is not None and lab != prev[1]:
                self.transitions.append(self._event(prev[0], epoch, lab))
            prev = (epoch, lab)
        self._last = prev

    def _crossing_label(self, rec: Mapping[str, Any]) -> str | None:
        """"ordered" or "chaotic" by the label that flags crossings; None when it is neither
        (unknown, marginal, disagree: passed over, as the analysis's transitions do)."""
        lab = record_label(rec, self.measure_name, self.phase)
        return lab if lab in ("ordered", "chaotic") else None

    def _event(self, before: int, epoch: int, lab: str) -> dict:
        kind = "order_to_chaos" if lab == "chaotic" else "chaos_to_order"
        return {"epoch": epoch, "kind": kind, "previous_epoch": before, "measure": self.measure_name}

    def _inputs(self, model: nn.Module, device: torch.device):
        if device not in self._on_device:
            self._on_device[device] = core_probe(self.probe, model, self.settings, device)
        return self._on_device[device]

    def step(self, model: nn.Module, epoch: int, metrics: Mapping[str, Any] | None = None
             ) -> dict | None:
        """Measure ``model`` now as epoch ``epoch`` (an integer >= 0) and store its record.

        ``metrics`` (optional): ``{"test_loss": ..., "train_loss": ..., "test_acc": ...,
        "train_acc": ...}`` overlaid in the report (never used to flag anything).  Returns the
        stored record plus ``label`` (the report's one label: "ordered", "chaotic", "marginal",
        "disagree" or "unknown") and ``transition`` (the crossing's kind since the previous
        ordered or chaotic monitored epoch, by ``measure``, or None); None when this epoch is
        not measured (``every``) or on ranks other than 0.  Measuring an epoch again replaces
        its record (a resumed training run re-measures the epochs it repeats).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        if epoch % self.every or (self.rank_zero_only and _rank() != 0):
            return None
        t0 = time.perf_counter()
        user = _unwrap(model)
        model = self._on_measuring_device(user)
        rnn = sources.recurrent_module(model)
        device = next(rnn.parameters()).device if rnn is not None else torch.device("cpu")
        pr = self._inputs(model, device)  # checks the probe against the model before any write
        if not self._opened:
            self._open(model)
        if finite_weights(model):
            with torch.no_grad():
                rec = measure([model], pr.x, pr.lengths, self.settings, pr.zero_steps,
                              pr.index)[0]
        else:
            rec = nonfinite_record(pr.index, self.settings)
        weights, before = weights_of(model), getattr(self, "_weights", None)
        if before is not None and before[0] < epoch:  # as the engine: change since the last one
            rec.update(param_change(before[1], weights), previous_epoch=before[0])
        self._weights = (epoch, weights)
        full = full_record(epoch, None, metrics, rec, step=epoch)
        self.store.write(epoch, full)
        lab, cross = record_label(full, "combined", self.phase), self._crossing_label(full)
        transition = None
        if cross is not None:
            if self._last is not None and self._last[0] < epoch and self._last[1] != cross:
                event = self._event(self._last[0], epoch, cross)
                self.transitions.append(event)
                transition = event["kind"]
                if self.on_transition is not None:
                    self.on_transition(event, user)
            self._last = (epoch, cross)
        dt = time.perf_counter() - t0
        self.seconds += dt
        self.steps += 1
        return {**full, "label": lab, "transition": transition, "monitor_seconds": dt}

    def _on_measuring_device(self, model: nn.Module) -> nn.Module:
        """``model``, or a copy of it on the monitor's ``device`` when it sits elsewhere."""
        if self.device is None:
            return model
        p = next(model.parameters(), None)
        here = p.device if p is not None else torch.device("cpu")
        want = self.device
        if want.type == "cuda" and want.index is None:
            want = torch.device("cuda", torch.cuda.current_device())
        return model if here == want else copy.deepcopy(model).to(want)

    @property
    def first_order_to_chaos(self) -> int | None:
        """The first monitored epoch found chaotic right after an ordered one (None so far)."""
        for e in self.transitions:
            if e["kind"] == "order_to_chaos":
                return e["epoch"]
        return None

    def _measured(self) -> None:
        if not self.store.steps():
            raise sources.SourceError(f"{self.out_dir} holds no monitored epoch yet; call "
                                      "monitor.step(model, epoch) first")

    def table(self) -> dict:
        """The run table of the monitored epochs (:func:`mdesc.sweep.load_table`)."""
        self._measured()
        return load_table(self.out_dir)

    def report(self, **phase_settings: Any):
        """Write the engine's phase analysis and report (``out_dir/report``); returns its path."""
        self._measured()
        return write_report(self.out_dir, **phase_settings)

    def __repr__(self) -> str:
        return (f"StabilityMonitor({str(self.out_dir)!r}, every={self.every}, steps={self.steps}, "
                f"transitions={len(self.transitions)}, seconds={self.seconds:.3g})")
