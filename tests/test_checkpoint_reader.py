"""The one checkpoint reader (mdesc.store.read_checkpoint): the layouts people save, one error type."""
from __future__ import annotations

import pytest
import torch

from mdesc import store


@pytest.fixture()
def lstm():
    return torch.nn.LSTM(2, 3)


def _same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_bare_state_dict(tmp_path, lstm):
    torch.save(lstm.state_dict(), tmp_path / "a.pt")
    state, meta = store.read_checkpoint(tmp_path / "a.pt")
    assert _same(state, lstm.state_dict()) and meta == {"state_key": None}


def test_model_and_optimizer_dict(tmp_path, lstm):
    opt = torch.optim.Adam(lstm.parameters())
    torch.save({"model": lstm.state_dict(), "optimizer": opt.state_dict(), "epoch": 7},
               tmp_path / "b.pth")
    state, meta = store.read_checkpoint(tmp_path / "b.pth")
    assert _same(state, lstm.state_dict())
    assert meta == {"epoch": 7, "state_key": "model"}


def test_lightning_layout_with_prefix(tmp_path, lstm):
    inner = {"model." + k: v for k, v in lstm.state_dict().items()}
    torch.save({"state_dict": inner, "global_step": 30, "epoch": 2, "callbacks": {}},
               tmp_path / "c.ckpt")
    state, meta = store.read_checkpoint(tmp_path / "c.ckpt", strip_prefix="model.")
    assert _same(state, lstm.state_dict())
    assert meta == {"global_step": 30, "epoch": 2, "state_key": "state_dict"}


def test_safetensors_metadata_both_layouts(tmp_path, lstm):
    store.save_tensors(tmp_path / "s.safetensors", lstm.state_dict(), {"epoch": 4, "loss": 0.5})
    state, meta = store.read_checkpoint(tmp_path / "s.safetensors")
    assert _same(state, lstm.state_dict()) and meta == {"epoch": 4, "loss": 0.5}
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in lstm.state_dict().items()}, tmp_path / "r.safetensors",
              metadata={"epoch": "5", "note": "plain text"})
    assert store.read_checkpoint(tmp_path / "r.safetensors")[1] == {"epoch": 5, "note": "plain text"}


def test_state_key_names_a_nested_entry(tmp_path, lstm):
    torch.save({"ema": {"model": lstm.state_dict()}, "raw": lstm.state_dict(),
                "swa": lstm.state_dict()}, tmp_path / "e.pt")
    with pytest.raises(store.CheckpointError, match=r"several entries hold tensors.*--state-key"):
        store.read_checkpoint(tmp_path / "e.pt")
    with pytest.raises(store.CheckpointError, match=r"no entry 'best' \(its top level: \['ema', 'raw', 'swa'\]\)"):
        store.read_checkpoint(tmp_path / "e.pt", state_key="best")
    state, meta = store.read_checkpoint(tmp_path / "e.pt", state_key="ema.model")
    assert _same(state, lstm.state_dict()) and meta["state_key"] == "ema.model"
    with pytest.raises(store.CheckpointError, match=r"no entry 'ema.weights' \(under 'ema': \['model'\]\)"):
        store.read_checkpoint(tmp_path / "e.pt", state_key="ema.weights")


@pytest.mark.parametrize("write, message", [
    (lambda p, m: p.write_text("not a checkpoint"), r"weights-only PyTorch file \(Unsupported"),
    (lambda p, m: torch.save(m, p), r"weights-only PyTorch file \(it needs the class "
                                    r"torch\.nn\.modules\.rnn\.LSTM\); mdesc never unpickles code.*state_dict\(\)"),
    (lambda p, m: torch.save([1, 2], p), r"holds a list, not a state dict"),
    (lambda p, m: torch.save({"epoch": 1, "lr": 0.1}, p), r"without an obvious state dict"),
    (lambda p, m: p.write_bytes(b"\x00" * 10), r"weights-only PyTorch file \(Unsupported operand"),
    (lambda p, m: p.write_text("hello text"), r"not a readable PyTorch file \(KeyError"),
])
def test_bad_files_are_one_error_type_naming_the_file(tmp_path, lstm, write, message):
    path = tmp_path / "bad.pt"
    write(path, lstm)
    with pytest.raises(store.CheckpointError, match=message) as info:
        store.read_checkpoint(path)
    assert str(path) in str(info.value) and "\x1b" not in str(info.value)


def test_missing_and_damaged_safetensors(tmp_path, lstm):
    with pytest.raises(store.CheckpointError, match="does not exist"):
        store.read_checkpoint(tmp_path / "nope.safetensors")
    store.save_tensors(tmp_path / "t.safetensors", lstm.state_dict())
    data = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(store.CheckpointError, match="t.safetensors"):
        store.read_checkpoint(tmp_path / "t.safetensors")
    assert issubclass(store.CheckpointError, store.StoreError)


def test_metadata_only_reads_the_header(tmp_path, lstm):
    store.save_tensors(tmp_path / "s.safetensors", lstm.state_dict(), {"epoch": 4})
    assert store.read_checkpoint(tmp_path / "s.safetensors", metadata_only=True) == ({}, {"epoch": 4})
    torch.save({"model": lstm.state_dict(), "epoch": 2}, tmp_path / "m.pt")
    assert store.read_checkpoint(tmp_path / "m.pt", metadata_only=True) == (
        {}, {"epoch": 2, "state_key": "model"})
