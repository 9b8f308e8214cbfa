"""The run store: atomic writes, the one settings check, safetensors/JSON, no pickle."""
import json
import os
import pickle

import numpy as np
import pytest
import torch

from mdesc import store


def test_to_json_sanitises_numpy_torch_nan_and_dataclasses():
    import dataclasses

    @dataclasses.dataclass
    class S:
        a: int
        b: float

    obj = {"x": np.float32(1.5), "n": np.int64(3), "arr": np.arange(3), "t": torch.tensor([1.0, 2.0]),
           "nan": float("nan"), "inf": np.inf, "s": S(1, 2.0), "tup": (1, 2), 4: True}
    got = store.to_json(obj)
    assert got == {"x": 1.5, "n": 3, "arr": [0, 1, 2], "t": [1.0, 2.0], "nan": None, "inf": None,
                   "s": {"a": 1, "b": 2.0}, "tup": [1, 2], "4": True}
    json.dumps(got, allow_nan=False)  # strict JSON
    with pytest.raises(TypeError, match="cannot store"):
        store.to_json(object())


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "a.json"
    store.write_json(path, {"v": 1})

    def boom(f):
        f.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.atomic_write(path, boom)
    assert store.read_json(path) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_read_json_names_a_damaged_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(store.StoreError, match="bad.json"):
        store.read_json(tmp_path / "bad.json")


def test_tensors_round_trip_with_meta(tmp_path):
    path = tmp_path / "t.safetensors"
    store.save_tensors(path, {"w": torch.randn(3, 4, dtype=torch.float64), "i": np.arange(5)},
                       meta={"step": 7, "loss": float("nan")})
    tensors, meta = store.load_tensors(path)
    assert tensors["w"].dtype == torch.float64 and tensors["w"].shape == (3, 4)
    assert tensors["i"].tolist() == list(range(5))
    assert meta == {"step": 7, "loss": None}


def test_run_folder_settings_check_names_every_difference(tmp_path):
    run = store.RunFolder(tmp_path / "run")
    assert not run.exists()
    stored = run.open({"lr": 0.1, "steps": 10, "threads": 1}, mutable=("threads",))
    assert stored["lr"] == 0.1 and run.exists()
    # same settings, a mutable field changed: accepted and recorded
    again = run.open({"lr": 0.1, "steps": 10, "threads": 2}, mutable=("threads",))
    assert again["threads"] == 2 and run.settings()["threads"] == 2
    with pytest.raises(store.SettingsMismatch) as e:
        run.open({"lr": 0.2, "steps": 20, "threads": 2}, mutable=("threads",))
    msg = str(e.value)
    assert "lr: on disk 0.1, asked for 0.2" in msg and "steps: on disk 10, asked for 20" in msg
    assert "another output folder" in msg


def test_records_are_stored_once_and_sorted_naturally(tmp_path):
    run = store.RunFolder(tmp_path)
    for epoch in (10, 2, 1):
        run.write_record("sweep", f"epoch_{epoch}", {"epoch": epoch})
    run.write_record("sweep", "epoch_2", {"epoch": 2, "again": True})
    recs = run.records("sweep")
    assert list(recs) == ["epoch_1", "epoch_2", "epoch_10"]
    assert recs["epoch_2"] == {"epoch": 2, "again": True}
    with pytest.raises(store.StoreError, match="may only use"):
        run.write_record("sweep", "../escape", {})


class _Exploit:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "state.pt"
    with open(bad, "wb") as f:
        pickle.dump({"weight": _Exploit(str(marker))}, f)
    with pytest.raises(store.StoreError, match="never unpickles"):
        store.load_state_dict(bad)
    assert not marker.exists()
    # a plain state dict saved by torch loads
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert store.load_state_dict(good)["w"].tolist() == [1.0, 1.0]


def test_natural_key():
    names = ["epoch_10", "epoch_9", "epoch_100", "epoch_1"]
    assert sorted(names, key=store.natural_key) == ["epoch_1", "epoch_9", "epoch_10", "epoch_100"]


def test_settings_mismatch_names_every_nested_field_with_both_values(tmp_path):
    stored = {"samples": 20, "model": {"hidden_size": 60, "shapes": [[1], [1, 64], [4, 5]]}}
    wanted = {"samples": 20, "model": {"hidden_size": 64, "shapes": [[1], [1, 32], [4, 5]]}}
    assert store.settings_differences(stored, wanted) == [
        "model.hidden_size: on disk 60, asked for 64",
        "model.shapes[1][1]: on disk 64, asked for 32"]
    run = store.RunFolder(tmp_path / "run")
    run.open(stored)
    with pytest.raises(store.SettingsMismatch, match=r"model\.hidden_size: on disk 60, asked for 64; "
                                                     r"model\.shapes\[1\]\[1\]"):
        run.open(wanted)
