"""The one place that names every path of a multiple-descent run folder (through mdesc.store).

Run folder layout (unchanged since the first recorded runs, so old folders still resume)::

    run/config.json                         data, model and training settings (+ split sizes)
    run/vocab.json                          the vocabulary, index = token id
    run/data.safetensors                    encoded splits: {train,test}_{ids,lengths,labels}
    run/checkpoints/epoch_NNNN.safetensors  weights after epoch NNNN (0 = initial); metadata:
                                            epoch and train/test loss and accuracy (JSON values)
    run/checkpoints/optimizer_NNNN.safetensors  optimizer state after epoch NNNN (the newest
                                            KEEP_OPTIMIZER_STATES epochs are kept)
    run/history.json                        the per-epoch metrics as one table (convenience)
    run/sweep/                              the stability sweep: settings, description, one
                                            record per checkpoint (mdesc.sweep.table)
    run/report/                             figures, summary.json, phase_table.csv, report.html

Every file is written atomically by :mod:`mdesc.store`; tensors are safetensors (no pickle).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from safetensors.numpy import load_file, save
from safetensors.torch import save as save_torch

from mdesc import store
from mdesc.store import CheckpointError
from mdesc.sweep.table import record_key

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
SWEEP_DIR = "sweep"
REPORT_DIR = "report"
CHECKPOINT_RE = re.compile(r"^epoch_(\d{4,})\.safetensors$")
OPTIMIZER_RE = re.compile(r"^optimizer_(\d{4,})\.safetensors$")
KEEP_OPTIMIZER_STATES = 3   # so a corrupt newest checkpoint still leaves a resumable epoch


class DescentRun:
    """A study-1 run folder: every path, and the reads/writes of its files."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"DescentRun({str(self.root)!r})"

    # paths ------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def vocab_path(self) -> Path:
        return self.root / "vocab.json"

    @property
    def data_path(self) -> Path:
        return self.root / "data.safetensors"

    @property
    def history_path(self) -> Path:
        return self.root / "history.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / CHECKPOINT_DIR

    @property
    def sweep_dir(self) -> Path:
        return self.root / SWEEP_DIR

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:04d}.safetensors"

    def optimizer_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"optimizer_{epoch:04d}.safetensors"

    def record_path(self, epoch: int) -> Path:
        return self.sweep_dir / f"{record_key(epoch)}.json"

    # config, vocabulary, data -------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> dict:
        if not self.is_run():
            raise store.StoreError(
                f"{self.root} is not a training run folder (no {CONFIG_FILE}); create one with "
                f"`mdesc descent train --run-dir {self.root}`")
        return store.read_json(self.config_path)

    def write_config(self, config: dict) -> None:
        store.write_json(self.config_path, config, indent=2)

    def write_vocab(self, vocab: list[str]) -> None:
        store.atomic_write_text(self.vocab_path, json.dumps(vocab, ensure_ascii=False))

    def save_data(self, arrays: dict) -> None:
        store.atomic_write_bytes(self.data_path, save(arrays))

    def load_data(self) -> dict:
        return load_file(str(self.data_path))

    # checkpoints ---------------------------------------------------------------------------------
    def checkpoints(self) -> list[tuple[int, Path]]:
        """``[(epoch, path), ...]`` of the weight checkpoints, sorted by epoch."""
        if not self.checkpoint_dir.is_dir():
            return []
        out = [(int(m.group(1)), self.checkpoint_dir / n) for n in os.listdir(self.checkpoint_dir)
               if (m := CHECKPOINT_RE.match(n))]
        return sorted(out)

    def optimizer_epochs(self) -> set[int]:
        if not self.checkpoint_dir.is_dir():
            return set()
        return {int(m.group(1)) for n in os.listdir(self.checkpoint_dir)
                if (m := OPTIMIZER_RE.match(n))}

    def complete_epochs(self) -> list[int]:
        """Epochs with both a checkpoint and an optimizer state (resumable), ascending."""
        opts = self.optimizer_epochs()
        return [e for e, _ in self.checkpoints() if e in opts]

    def save_checkpoint(self, epoch: int, state: dict, metrics: dict) -> None:
        """Weights + metrics (each metadata value is its JSON text, as in every run so far)."""
        save_safetensors(self.checkpoint_path(epoch), state,
                         {k: json.dumps(v) for k, v in metrics.items()})

    def prune_optimizer_states(self, epoch: int) -> None:
        """Keep the optimizer states of the newest KEEP_OPTIMIZER_STATES epochs up to ``epoch``."""
        for old in sorted(self.optimizer_epochs()):
            if old <= epoch - KEEP_OPTIMIZER_STATES:
                self.optimizer_path(old).unlink(missing_ok=True)



# ----------------------------------------------------------------------------- safetensors I/O

def save_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Raw safetensors file (metadata as given: str -> str), written atomically."""
    data = save_torch({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    store.atomic_write_bytes(path, data)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Weights and metadata of one checkpoint: :func:`mdesc.store.read_checkpoint` (epoch,
    losses and accuracies parsed from the JSON metadata; nothing is unpickled).  Raises
    :class:`mdesc.store.CheckpointError` naming the file if it cannot be read."""
    return store.read_checkpoint(path)
