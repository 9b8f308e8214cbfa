"""mdesc.anyrun.sources: checkpoints from anywhere, models, probe inputs, metrics files."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mdesc import store
from mdesc.anyrun import sources
from mdesc.anyrun.metrics import load_metrics
from mdesc.anyrun.sources import RecurrentStack, SourceError


def _touch(path, state=None):
    state = state or {"w": torch.zeros(2)}
    if str(path).endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


def test_discover_folder_glob_and_axis_from_names(tmp_path):
    for name in ("epoch_10.pt", "epoch_2.safetensors", "ckpt-step=3.pth", "notes.txt"):
        _touch(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    got = sources.discover_checkpoints(tmp_path)
    assert [(c.step, c.path.name) for c in got] == [(2, "epoch_2.safetensors"), (3, "ckpt-step=3.pth"),
                                                    (10, "epoch_10.pt")]
    assert got[0].key == "epoch_0002"
    got = sources.discover_checkpoints(str(tmp_path / "epoch_*"))
    assert [c.step for c in got] == [2, 10]
    assert sources.step_from_name("run3_epoch_0012.safetensors") == 12
    for e, step in ((3, 1200), (10, 4000)):
        _touch(tmp_path / f"epoch={e}-step={step}.ckpt")
    got = sources.discover_checkpoints(str(tmp_path / "*.ckpt"), step_pattern=r"epoch=(\d+)")
    assert [c.step for c in got] == [3, 10]
    assert [c.step for c in sources.discover_checkpoints(str(tmp_path / "*.ckpt"))] == [1200, 4000]
    with pytest.raises(SourceError, match="needs a group"):
        sources.discover_checkpoints(tmp_path, step_pattern="epoch")


def test_discover_errors_name_the_problem(tmp_path):
    _touch(tmp_path / "a_1.pt")
    _touch(tmp_path / "b_1.pt")
    with pytest.raises(SourceError, match="both at step 1"):
        sources.discover_checkpoints(tmp_path)
    with pytest.raises(SourceError, match="holds no integer.*--order"):
        sources.discover_checkpoints([_touch(tmp_path / "final.pt")])
    with pytest.raises(SourceError, match="matches no files"):
        sources.discover_checkpoints(str(tmp_path / "*.bin"))
    with pytest.raises(SourceError, match="neither"):
        sources.discover_checkpoints(tmp_path / "missing")


def test_order_file_positions_and_explicit_steps(tmp_path):
    for n in ("final.pt", "start.pt", "middle.pt"):
        _touch(tmp_path / n)
    order = tmp_path / "order.txt"
    order.write_text("# training order\nstart.pt\nmiddle.pt\n\nfinal.pt\n")
    got = sources.discover_checkpoints(None, order)
    assert [(c.step, c.path.name) for c in got] == [(0, "start.pt"), (1, "middle.pt"), (2, "final.pt")]
    order.write_text("start.pt 0\nmiddle.pt, 500\nfinal.pt 1000\n")
    got = sources.discover_checkpoints(tmp_path, order)
    assert [c.step for c in got] == [0, 500, 1000]
    order.write_text("start.pt 0\nmiddle.pt\n")
    with pytest.raises(SourceError, match="every line or on none"):
        sources.discover_checkpoints(None, order)
    order.write_text("start.pt\nnope.pt\n")
    with pytest.raises(SourceError, match="nope.pt"):
        sources.discover_checkpoints(None, order)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MDESC_TEST_MARKER']}",))


def test_malicious_pickle_checkpoint_is_refused_without_executing(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MDESC_TEST_MARKER", str(marker))
    path = tmp_path / "epoch_1.pt"
    torch.save({"rnn.weight_hh_l0": torch.zeros(4, 1), "payload": _Evil()}, path)
    assert not marker.exists()
    with pytest.raises(store.StoreError, match="never unpickles"):
        sources.read_state_dict(path)
    with pytest.raises(store.StoreError, match="never unpickles"):
        sources.read_state_dict(path, state_key="payload")
    assert not marker.exists()
    # the same file as a probe input is refused the same way
    probe = tmp_path / "probe.pt"
    torch.save({"ids": torch.zeros(2, 3, dtype=torch.long), "x": _Evil()}, probe)
    with pytest.raises(store.CheckpointError, match="never unpickles"):
        sources.load_probe(probe)
    assert not marker.exists()


def test_state_key_and_strip_prefix(tmp_path):
    w = torch.randn(3)
    path = tmp_path / "c_1.pt"
    torch.save({"epoch": 1, "model_state_dict": {"module.rnn.bias": w}, "lr": 0.1}, path)
    # the one checkpoint reader (store.read_checkpoint) finds the weights under the usual keys
    assert list(sources.read_state_dict(path)) == ["module.rnn.bias"]
    got = sources.read_state_dict(path, state_key="model_state_dict", strip_prefix="module.")
    assert list(got) == ["rnn.bias"] and torch.equal(got["rnn.bias"], w)
    with pytest.raises(store.StoreError, match="no entry 'model'"):
        sources.read_state_dict(path, state_key="model")


def test_fit_state_dict_maps_other_names_by_role_and_names_misfits():
    model = RecurrentStack(cell="lstm", vocab_size=11, embed_dim=3, hidden_size=5)

    class Theirs(torch.nn.Module):
        def __init__(self, hidden=5):
            super().__init__()
            self.embed = torch.nn.Embedding(11, 3)
            self.lstm = torch.nn.LSTM(3, hidden)
            self.fc = torch.nn.Linear(hidden, 1)

    theirs = Theirs().state_dict()
    fitted = sources.fit_state_dict(theirs, model, where="their.pt")
    model.load_state_dict(fitted)
    assert torch.equal(model.rnn.weight_hh_l0, theirs["lstm.weight_hh_l0"])
    assert torch.equal(model.embedding.weight, theirs["embed.weight"])
    with pytest.raises(SourceError, match=r"wrong.pt does not fit.*shapes differ.*weight_hh_l0.*--skip-bad"):
        sources.fit_state_dict(Theirs(hidden=6).state_dict(), model, where="wrong.pt")
    with pytest.raises(SourceError, match="missing keys.*rnn.bias_hh_l0"):
        sources.fit_state_dict({k: v for k, v in model.state_dict().items() if k != "rnn.bias_hh_l0"},
                               model, where="x")


def test_recurrent_stack_flags():
    assert isinstance(RecurrentStack(cell="gru", input_size=2, hidden_size=4).rnn, torch.nn.GRU)
    assert RecurrentStack(cell="rnn_relu", input_size=2, hidden_size=4).rnn.nonlinearity == "relu"
    with pytest.raises(SourceError, match="not both"):
        RecurrentStack(vocab_size=3, embed_dim=2, input_size=2, hidden_size=4)
    with pytest.raises(SourceError, match="cell must be"):
        RecurrentStack(cell="transformer", input_size=2, hidden_size=4)


def test_model_from_factory():
    m = sources.model_from_factory("mdesc.anyrun.sources:RecurrentStack",
                                   {"input_size": 2, "hidden_size": 3})
    assert m.rnn.hidden_size == 3
    with pytest.raises(SourceError, match="package.module:factory"):
        sources.model_from_factory("mdesc.anyrun.sources.RecurrentStack")
    with pytest.raises(SourceError, match="cannot import"):
        sources.model_from_factory("no_such_pkg.models:make")
    with pytest.raises(SourceError, match="not a torch nn.Module"):
        sources.model_from_factory("builtins:dict", {"x": 4.0})
    with pytest.raises(SourceError, match="--factory-kwargs"):
        sources.model_from_factory("mdesc.anyrun.sources:RecurrentStack", {"width": 3})


def test_probe_formats_lengths_and_layout(tmp_path):
    ids = torch.randint(0, 9, (4, 7))
    lengths = torch.tensor([7, 3, 5, 1])
    np.save(tmp_path / "p.npy", ids.numpy())
    p = sources.load_probe(tmp_path / "p.npy")
    assert p.seq.shape == (7, 4) and p.is_ids and p.lengths is None and torch.equal(p.seq, ids.T)
    save_file({"ids": ids, "lengths": lengths}, str(tmp_path / "p.safetensors"))
    p = sources.load_probe(tmp_path / "p.safetensors")
    assert torch.equal(p.lengths, lengths) and p.drive_steps == 7
    torch.save({"x": torch.randn(4, 7, 2, dtype=torch.float64)}, tmp_path / "f.pt")
    p = sources.load_probe(tmp_path / "f.pt", lengths=tmp_path / "p.safetensors", lengths_key="lengths")
    assert p.seq.shape == (7, 4, 2) and not p.is_ids and torch.equal(p.lengths, lengths)
    p = sources.load_probe(tmp_path / "p.npy", time_major=True)
    assert p.seq.shape == (4, 7)
    p = sources.load_probe(tmp_path / "p.npy", samples=2, seed=3)
    assert p.seq.shape == (7, 2) and len(p.index) == 2 and torch.equal(p.seq, ids[p.index].T)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(SourceError, match="does not unpickle"):
        sources.load_probe(tmp_path / "obj.npy")
    with pytest.raises(SourceError, match=r"probe lengths must be in \[1, T=7\]"):
        sources.load_probe(tmp_path / "p.npy", lengths=torch.tensor([8, 1, 1, 1]))
    with pytest.raises(SourceError, match="ambiguous"):
        np.save(tmp_path / "f2.npy", np.zeros((3, 4), np.float32))
        sources.load_probe(tmp_path / "f2.npy")


def test_metrics_csv_and_json(tmp_path):
    cks = [sources.Checkpoint(s, tmp_path / f"epoch_{s}.pt") for s in (0, 5, 10)]
    (tmp_path / "m.csv").write_text("epoch,val_loss,train_loss,val_acc\n0,0.9,1.0,0.5\n5,0.4,0.5,\n")
    got = load_metrics(tmp_path / "m.csv", cks)
    assert got[0] == {"test_loss": 0.9, "train_loss": 1.0, "test_acc": 0.5}
    assert got[5]["test_loss"] == 0.4 and np.isnan(got[5]["test_acc"])
    (tmp_path / "m.json").write_text(json.dumps({"epoch_10.pt": {"test_loss": 0.3}, "5": 0.2}))
    got = load_metrics(tmp_path / "m.json", cks)
    assert got == {10: {"test_loss": 0.3}, 5: {"test_loss": 0.2}}
    (tmp_path / "c.json").write_text(json.dumps({"step": [0, 10], "test_loss": [1.0, 0.5]}))
    assert load_metrics(tmp_path / "c.json", cks) == {0: {"test_loss": 1.0}, 10: {"test_loss": 0.5}}
    (tmp_path / "bad.csv").write_text("epoch,foo\n1,2\n")
    with pytest.raises(SourceError, match="none of the metric columns"):
        load_metrics(tmp_path / "bad.csv", cks)


def test_package_imports_lazily_and_the_public_names():
    import subprocess
    import sys

    # `import mdesc` stays torch-free; its sub-packages import plainly (the package's policy)
    code = ("import sys, mdesc; assert 'torch' not in sys.modules, 'torch loaded'; "
            "import mdesc.anyrun; "
            "from mdesc.anyrun import sweep; assert mdesc.sweep_checkpoints is sweep.sweep_checkpoints; "
            "from mdesc.anyrun import monitor; assert mdesc.StabilityMonitor is monitor.StabilityMonitor; "
            "import mdesc.anyrun.lightning")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
