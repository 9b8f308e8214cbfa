"""Sharded sweeps under torchrun (2 CPU processes, gloo on the loopback address): the table
equals a 1-process sweep, and a rank killed mid-sweep loses nothing on re-run."""
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from mdesc.anyrun import SweepSettings, sweep_checkpoints
from mdesc.anyrun.sources import RecurrentStack
from mdesc.sweep import SweepStore, load_table

ARCH = dict(vocab_size=10, embed_dim=3, hidden_size=6)
N_CKPTS, Z = 6, 30
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
pytestmark = pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_available(),
                                reason="torchrun / torch.distributed not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "ckpts").mkdir()
    for e in range(N_CKPTS):
        torch.manual_seed(e)
        m = RecurrentStack(**ARCH)
        with torch.no_grad():
            m.rnn.weight_hh_l0.mul_(1 + e)
        torch.save(m.state_dict(), root / "ckpts" / f"epoch_{e}.pt")
    np.save(root / "probe.npy", torch.randint(0, 10, (4, 8), generator=torch.Generator().manual_seed(0)).numpy())
    # one thread, as torchrun gives each rank (OMP_NUM_THREADS=1): float32 sums then run in the
    # same order, and the sharded table must equal this one bit for bit
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = sweep_checkpoints(root / "ckpts", root / "ref", ARCH, root / "probe.npy", chunk=1,
                                settings=SweepSettings(zero_input_steps=Z), report=False,
                                distributed=False)
    finally:
        torch.set_num_threads(threads)
    return root, ref.table


def _torchrun(args, env_extra=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    cmd = [TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _same(table, ref):
    assert table["epoch"].tolist() == ref["epoch"].tolist() == list(range(N_CKPTS))
    for k in ("lyapunov_max", "lyapunov", "log_distance", "log_distance_start", "reduced_sum",
              "lyapunov_max_driven"):
        np.testing.assert_array_equal(table[k], ref[k], err_msg=k)


def test_torchrun_two_ranks_table_equals_one_process(ckpts):
    root, ref = ckpts
    out = root / "two"
    r = _torchrun(["-m", "mdesc", "analyse-run", str(root / "ckpts"), "--out", str(out),
                   "--probe", str(root / "probe.npy"), "--vocab-size", "10", "--embed-dim", "3",
                   "--hidden-size", "6", "--zero-input-steps", str(Z), "--chunk", "1",
                   "--no-progress", "--device", "cpu"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "over 2 ranks" in r.stdout and "3 measured now by rank 0" in r.stdout
    assert r.stdout.count("report:") == 1 and (out / "report" / "report.html").is_file()
    _same(load_table(out), ref)
    assert len(list((out / "sweep").glob("epoch_*.json"))) == N_CKPTS


def _worker(out: str, ckpt_dir: str, probe: str) -> None:
    """One rank of a sweep whose rank 1 dies (os._exit) right after its first record."""
    rank = int(os.environ["RANK"])

    def die(step, record):
        if rank == 1:
            os._exit(17)

    sweep_checkpoints(ckpt_dir, out, ARCH, probe, chunk=1, settings=SweepSettings(zero_input_steps=Z),
                      report=False, device="cpu", on_record=die)


def test_rank_killed_mid_sweep_loses_nothing_on_rerun(ckpts):
    root, ref = ckpts
    out = root / "killed"
    r = _torchrun([__file__, str(out), str(root / "ckpts"), str(root / "probe.npy")])
    assert r.returncode != 0, "rank 1 should have died"
    stored = set(SweepStore(out).records())
    # rank 1 owns steps 1, 3, 5 and wrote only its first: 3 and 5 are lost with it
    assert 1 in stored and not {3, 5} & stored
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = sweep_checkpoints(root / "ckpts", out, ARCH, root / "probe.npy", chunk=1,
                                  settings=SweepSettings(zero_input_steps=Z), report=False,
                                  distributed=False)
    finally:
        torch.set_num_threads(threads)
    assert sorted(again.computed) == sorted(set(range(N_CKPTS)) - stored)
    assert sorted(again.existing) == sorted(stored)
    _same(again.table, ref)


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
