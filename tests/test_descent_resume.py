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


def test_a_run_continued_from_its_newest_state_alone_keeps_its_history(trained, tmp_path):  # noqa: F811
    """campaign.py pack carries only the newest checkpoint, its optimizer state and
    history.json to another machine: the earlier epochs' rows must survive the next epoch."""
    import dataclasses
    import json

    root, full = trained
    run = _copy(full, tmp_path)
    before = json.loads((run / "history.json").read_text())
    for f in (run / "checkpoints").iterdir():
        if not f.name.endswith("_0004.safetensors"):
            f.unlink()
    same = json.dumps(before)  # NaN (epoch 0's parameter change) compares by its text
    assert json.dumps(TR.read_history(run)) == json.dumps(TR.read_history(full)) == same
    data, model, train = tiny_settings(root)
    hist = TR.train_run(run, data, model, dataclasses.replace(train, epochs=5), progress=False,
                        say=None)
    assert hist["epoch"] == [0, 1, 2, 3, 4, 5]
    for k in before:
        assert json.dumps(hist[k][:5]) == json.dumps(before[k]), k
    assert json.loads((run / "history.json").read_text())["epoch"] == [0, 1, 2, 3, 4, 5]
    # a stale row after the newest checkpoint is dropped, not kept beside the retrained epoch
    (run / "checkpoints" / "epoch_0005.safetensors").unlink()
    assert TR.read_history(run)["epoch"] == [0, 1, 2, 3, 4]
