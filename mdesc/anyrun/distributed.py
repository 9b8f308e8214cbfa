"""Sweeps sharded over the processes of a ``torchrun`` launch (torch.distributed).

A single process is the default and needs nothing from here.  Under ``torchrun --nproc-per-node
N`` (``WORLD_SIZE`` > 1 in the environment), or inside a process group the caller has already
set up, :class:`Shard` joins the group and

- gives each rank its own device: ``cuda:LOCAL_RANK`` when there are GPUs, else the CPU;
- splits the checkpoints still to do **round robin** over the ranks.  Rank 0 decides which
  checkpoints are still to do (those without a record; new files that a training run still
  going adds while the ranks start are left to the next sweep) and broadcasts their steps as a
  tensor, so every rank works on the same list and every record is written by one rank, once;
- lets rank 0 write the settings before the other ranks check them, and write the report after
  every rank has finished (a barrier).

Coordination moves only small integer tensors (gloo on CPUs; NCCL where the caller's group
uses it): nothing is pickled.  A rank killed mid-sweep takes its unwritten records with it and
nothing else; the same command re-run computes exactly the missing ones.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mdesc.errors import UserError


@dataclass
class Shard:
    """Where this process stands in the sweep: rank, world size, device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, items: list) -> list:
        """This rank's share of ``items`` (round robin)."""
        return items[self.rank::self.world]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast_ints(self, values: list[int]) -> list[int]:
        """Rank 0's list of integers on every rank (other ranks' ``values`` are ignored)."""
        if not self.active:
            return list(values)
        dev = self._comm_device()
        n = torch.tensor([len(values)], dtype=torch.int64, device=dev)
        dist.broadcast(n, src=0)
        t = torch.zeros(int(n.item()), dtype=torch.int64, device=dev)
        if self.is_main:
            t.copy_(torch.tensor(values, dtype=torch.int64))
        dist.broadcast(t, src=0)
        return [int(v) for v in t.tolist()]

    def all_sum(self, value: int) -> int:
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self._comm_device())
        dist.all_reduce(t)
        return int(t.item())

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def close(self) -> None:
        """Leave the process group if this module created it."""
        if self.owns_group:
            dist.destroy_process_group()
            self.owns_group = False


def check_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a torch.device (None for None/"auto"), or a :class:`~mdesc.errors.UserError`
    in one line when it is not a device name or this torch cannot use it (a CUDA device on a
    CPU-only build, a GPU index past the last one, a device mdesc has no kernels for)."""
    if device is None or device == "auto":
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device {device!r} is not a device name; use auto, cpu, cuda or "
                        "cuda:N") from e
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch was built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise UserError(f"device {device!r} asked for, but {why} (torch "
                            f"{torch.__version__}); use --device cpu / device='cpu', or auto")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r} asked for, but there are only "
                            f"{torch.cuda.device_count()} CUDA devices (cuda:0 ... "
                            f"cuda:{torch.cuda.device_count() - 1})")
    elif d.type != "cpu":
        raise UserError(f"device {device!r}: mdesc's kernels run on cpu or cuda")
    return d


def _device_for(local_rank: int, device: str | None) -> torch.device:
    if device not in (None, "auto"):
        d = check_device(device)
        if d.type == "cuda" and d.index is None and torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return d
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def shard(device: str | None = None, distributed: str | bool = "auto",
          timeout_s: float = 1800.0) -> Shard:
    """This process's :class:`Shard`.

    ``distributed``: ``"auto"`` (default) joins when a process group exists or the environment
    says torchrun started several processes (``WORLD_SIZE`` > 1); ``False`` never does (one
    process does everything); ``True`` requires it.  ``device`` None/"auto": each rank's own GPU
    if there are any, else the CPU; "cuda" picks ``cuda:LOCAL_RANK``.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if distributed is False:
        return Shard(device=_device_for(0, device))
    initialized = dist.is_available() and dist.is_initialized()
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if not initialized and world_env <= 1:
        if distributed is True:
            raise RuntimeError("distributed=True but this process was not started by torchrun "
                               "(WORLD_SIZE is not set) and no process group exists")
        return Shard(device=_device_for(local_rank, device))
    dev = _device_for(local_rank, device)
    owns = False
    if not initialized:
        if not dist.is_available():
            raise RuntimeError("torch.distributed is not available in this build of torch")
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    return Shard(rank=dist.get_rank(), world=dist.get_world_size(), device=dev, owns_group=owns)
