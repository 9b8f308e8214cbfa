"""A PyTorch Lightning callback around :class:`~mdesc.anyrun.monitor.StabilityMonitor`.

    from mdesc.anyrun.lightning import StabilityCallback
    trainer = lightning.Trainer(callbacks=[StabilityCallback("runs/x/stability", probe_ids)])

Lightning is optional: this module imports it (``lightning``, else ``pytorch_lightning``) only
when ``StabilityCallback`` is first used, and says how to install it if neither is there.
At the end of every training epoch (after validation, so ``val_loss``/``test_loss`` logged by
the module are overlaid), on global rank 0 only, the callback calls
``monitor.step(pl_module, trainer.current_epoch, metrics)``; crossings are logged as
``stability/transition`` and kept in ``callback.monitor.transitions``.
"""
from __future__ import annotations

from typing import Any

from mdesc.anyrun.monitor import StabilityMonitor

_CLASS = None
METRIC_NAMES = {"test_loss": ("test_loss", "val_loss", "valid_loss"),
                "train_loss": ("train_loss", "loss", "train_loss_epoch"),
                "test_acc": ("test_acc", "val_acc"), "train_acc": ("train_acc",)}


def import_lightning():
    """The ``lightning.pytorch`` (or ``pytorch_lightning``) module, or ImportError saying how to
    get it."""
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl
        except ImportError as e:
            raise ImportError("mdesc.anyrun.lightning needs PyTorch Lightning: pip install "
                              "lightning (or pytorch-lightning); StabilityMonitor works without "
                              "it in any plain training loop") from e
    return pl


def _metrics(callback_metrics) -> dict:
    out = {}
    for name, aliases in METRIC_NAMES.items():
        for a in aliases:
            if a in callback_metrics:
                out[name] = float(callback_metrics[a])
                break
    return out


def _build():
    pl = import_lightning()

    class StabilityCallback(pl.Callback):
        """Calls a :class:`~mdesc.anyrun.monitor.StabilityMonitor` at every epoch end.

        Args are those of :class:`~mdesc.anyrun.monitor.StabilityMonitor` (``out_dir``,
        ``probe``, keywords), or pass a ready ``monitor=``.
        """

        def __init__(self, out_dir=None, probe=None, *, monitor=None, **kwargs: Any):
            super().__init__()
            if monitor is None:
                if out_dir is None or probe is None:
                    raise TypeError("StabilityCallback needs out_dir and probe (or monitor=)")
                monitor = StabilityMonitor(out_dir, probe, **kwargs)
            self.monitor = monitor
            self.records: list[dict] = []

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if not trainer.is_global_zero or getattr(trainer, "sanity_checking", False):
                return
            rec = self.monitor.step(pl_module, int(trainer.current_epoch),
                                    _metrics(trainer.callback_metrics))
            if rec is None:
                return
            self.records.append(rec)
            if rec["transition"] is not None:
                pl_module.log("stability/transition",
                              1.0 if rec["transition"] == "order_to_chaos" else -1.0,
                              rank_zero_only=True)

    return StabilityCallback


def __getattr__(name: str):
    global _CLASS
    if name == "StabilityCallback":
        if _CLASS is None:
            _CLASS = _build()
        return _CLASS
    raise AttributeError(f"module 'mdesc.anyrun.lightning' has no attribute {name!r}")
