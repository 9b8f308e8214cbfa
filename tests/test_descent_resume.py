"""Resume you can trust (issue 10 item 6): damaged newest files are named and skipped, training
continues from the newest epoch that reads, and ends with the same weights as an unbroken run."""
import pytest
import torch

from mdesc.descent import run as TR
from test_train_sweep import _assert_same_weights, _copy, tiny_settings, trained  # noqa: F401


def _corrupt(path):
    path.write_bytes(path.read_bytes()[:100])  # truncated: not a readable safetensors file


def test_resume_from_a_corrupt_newest_checkpoint(trained, tmp_path):  # noqa: F811
    root, full = trained
    run = _copy(full, tmp_path)
    _corrupt(TR.checkpoint_path(run, 4))
    said = []
    TR.train_run(run, *tiny_settings(root), progress=False, say=said.append)
    assert any("skipped unreadable" in s and "epoch_0004.safetensors" in s for s in said), said
    assert said[-1].startswith(f"resuming {run} from epoch 3 ")
    _assert_same_weights(run, full)  # epoch 4 recomputed bit for bit from epoch 3


def test_resume_from_a_corrupt_newest_optimizer_state(trained, tmp_path):  # noqa: F811
    root, full = trained
    run = _copy(full, tmp_path)
    _corrupt(run / "checkpoints" / "optimizer_0004.safetensors")
    _corrupt(TR.checkpoint_path(run, 3))
    said = []
    TR.train_run(run, *tiny_settings(root), progress=False, say=said.append)
    assert any("optimizer_0004" in s for s in said) and any("epoch_0003" in s for s in said)
    assert "from epoch 2 " in said[-1]
    _assert_same_weights(run, full)


def test_no_readable_epoch_is_a_clear_error(trained, tmp_path):  # noqa: F811
    root, full = trained
    run = _copy(full, tmp_path)
    for e in (2, 3, 4):
        _corrupt(TR.checkpoint_path(run, e))
    with pytest.raises(TR.RunError, match=r"no kept epoch can be resumed.*epoch_0004.*Delete"):
        TR.train_run(run, *tiny_settings(root), progress=False, say=None)


def test_a_pickle_in_place_of_an_optimizer_state_is_refused_unexecuted(trained, tmp_path):  # noqa: F811
    root, full = trained
    run = _copy(full, tmp_path)
    torch.save({"w": torch.zeros(2)}, run / "checkpoints" / "optimizer_0004.safetensors")
    said = []
    TR.train_run(run, *tiny_settings(root), progress=False, say=said.append)
    assert "from epoch 3 " in said[-1]
