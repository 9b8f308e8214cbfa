"""Training harness and checkpoint sweep: resumability, crash safety, corrupt files, run table."""
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch

import mdesc
from mdesc.descent import sweep as SW
from mdesc.descent import run as TR
from mdesc.data.sentiment import TextSettings
from test_sentiment import make_aclimdb


def tiny_settings(root, epochs=4):
    data = TextSettings(source=str(root), vocab_size=30, min_count=1, max_len=10, seed=1)
    model = TR.ModelSettings(embed_dim=4, hidden_size=6)
    train = TR.TrainSettings(epochs=epochs, batch_size=8, lr=0.05, seed=2)
    return data, model, train


SWEEP = SW.SweepSettings(n_samples=6, total_steps=40, chunk=2, seed=5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-epoch run of a tiny model (shared, never modified: copy it first)."""
    base = tmp_path_factory.mktemp("run")
    root = make_aclimdb(base)
    run = base / "run"
    TR.train_run(run, *tiny_settings(root), progress=False)
    return root, run


def _copy(run, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


def test_model_holds_one_embedding_and_one_lstm_and_padding_is_zero_input():
    net = TR.SentimentLSTM(20, 4, 6, num_layers=2)
    assert sum(isinstance(m, torch.nn.LSTM) for m in net.modules()) == 1
    assert sum(isinstance(m, torch.nn.Embedding) for m in net.modules()) == 1
    assert torch.all(net.embedding.weight[0] == 0)
    # the logit is read at each review's last real token: padding after it changes nothing
    ids = torch.tensor([[3, 5], [4, 6], [0, 7], [0, 0]])
    out = net(ids, torch.tensor([2, 3]))
    alone = net(ids[:2, :1], torch.tensor([2]))
    torch.testing.assert_close(out[:1], alone)


def test_training_writes_every_epoch_and_records_settings(trained):
    root, run = trained
    assert [e for e, _ in TR.list_checkpoints(run)] == [0, 1, 2, 3, 4]
    opt_files = sorted(p.name for p in (run / "checkpoints").glob("optimizer_*"))
    # the newest KEEP_OPTIMIZER_STATES (3) are kept, so an older epoch can still be resumed
    assert opt_files == [f"optimizer_000{e}.safetensors" for e in (2, 3, 4)]
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["max_len"] == 10 and config["data"]["source"] == str(root)
    assert config["model"] == {"embed_dim": 4, "hidden_size": 6, "num_layers": 1}
    assert config["train"]["optimizer"] == "adam" and "epochs" not in config["train"]
    hist = json.loads((run / "history.json").read_text())
    assert hist["epoch"] == [0, 1, 2, 3, 4]
    assert hist["train_loss"][-1] < hist["train_loss"][0]  # it learns
    state, meta = TR.load_checkpoint(TR.checkpoint_path(run, 3))
    assert meta["epoch"] == 3 and math.isclose(meta["test_loss"], hist["test_loss"][3])
    assert set(state) == set(TR.build_model(config).state_dict())


def _weights(run):
    return {e: TR.load_checkpoint(p)[0] for e, p in TR.list_checkpoints(run)}


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for e in wa:
        for k in wa[e]:
            torch.testing.assert_close(wa[e][k], wb[e][k], rtol=0, atol=0, msg=f"{e} {k}")


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path):
    root, full = trained
    run = tmp_path / "run"

    def stop_after_2(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TR.train_run(run, *tiny_settings(root), on_epoch=stop_after_2, progress=False)
    assert [e for e, _ in TR.list_checkpoints(run)] == [0, 1, 2]
    TR.train_run(run, *tiny_settings(root), progress=False)
    _assert_same_weights(run, full)
    assert json.loads((run / "history.json").read_text()) == \
        json.loads((full / "history.json").read_text())


def test_crash_between_optimizer_and_checkpoint_write_loses_nothing(trained, tmp_path,
                                                                    monkeypatch):
    root, full = trained
    run = tmp_path / "run"
    from mdesc.descent import folder

    real_save = folder.save_safetensors

    def crash_on_epoch_3(path, tensors, metadata=None):
        if path.name == "epoch_0003.safetensors":
            raise KeyboardInterrupt  # optimizer_0003 is written, the checkpoint is not
        real_save(path, tensors, metadata)

    monkeypatch.setattr(folder, "save_safetensors", crash_on_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        TR.train_run(run, *tiny_settings(root), progress=False)
    monkeypatch.setattr(folder, "save_safetensors", real_save)
    TR.train_run(run, *tiny_settings(root), progress=False)
    _assert_same_weights(run, full)


def test_training_can_be_extended_but_not_changed(trained, tmp_path):
    root, full = trained
    run = _copy(full, tmp_path)
    data, model, train = tiny_settings(root, epochs=5)
    hist = TR.train_run(run, data, model, train, progress=False)
    assert hist["epoch"] == [0, 1, 2, 3, 4, 5]
    train.lr = 0.01
    from mdesc.store import SettingsMismatch

    with pytest.raises(SettingsMismatch, match=r"train.lr: on disk 0.05, asked for 0.01"):
        TR.train_run(run, data, model, train, progress=False)


def test_checkpoints_are_safetensors_and_loading_never_unpickles(trained, tmp_path):
    _, full = trained
    raw = TR.checkpoint_path(full, 1).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    json.loads(raw[8: 8 + header_len])  # a safetensors header, not a pickle
    bad = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(2)}, bad)  # a pickle under a .safetensors name
    with pytest.raises(TR.CheckpointError, match="pickle.safetensors"):
        TR.load_checkpoint(bad)


# ----------------------------------------------------------------------------- sweep


def test_float32_sweep_takes_lambda1_and_the_drive_end_twin_from_one_run(trained, tmp_path):
    """distance_dtype = lyapunov_dtype = float32 (the delta twin): lambda_1 and the drive-end D~
    come from mdesc.stability_record, and equal the separate public calls to float32 rounding;
    the t = 0 twin is still its own call."""
    _, full = trained
    run = _copy(full, tmp_path)
    settings = dataclasses.replace(SWEEP, distance_dtype="float32", perturbation=1e-3)
    calls = []
    real = mdesc.stability_record

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    mdesc.stability_record = spy
    try:
        SW.sweep_run(run, settings, progress=False)
    finally:
        mdesc.stability_record = real
    assert calls and all(c["dtype"] == torch.float32 for c in calls)
    table = SW.load_table(run)
    config = TR.read_config(run)
    model = TR.build_model(config)
    model.load_state_dict(TR.load_checkpoint(TR.checkpoint_path(run, 2))[0])
    _, test = TR.load_run_data(run)
    ids = torch.from_numpy(np.ascontiguousarray(test.ids[table["sample_index"]].T))
    zero = settings.total_steps - config["data"]["max_len"]
    for twin in ("drive_end", "start"):
        d = mdesc.asymptotic_distance(model, ids, zero_input_steps=zero, perturbation=settings.perturbation,
                                      perturb_at=twin, seed=settings.seed, dtype=torch.float32)
        assert d.settings["method"] == "delta"
        np.testing.assert_allclose(table[f"distance_{twin}"][2], d.distance.numpy(), rtol=1e-4)
    r = mdesc.max_lyapunov(model, ids, zero_input_steps=zero, seed=settings.seed, window="zero_input")
    np.testing.assert_allclose(table["lyapunov"][2], r.exponents[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(table["lyapunov_driven"][2], r.driven_exponents[:, 0].numpy(), rtol=1e-4,
                               atol=1e-5)


def test_sweep_records_match_direct_core_calls(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    out = SW.sweep_run(run, SWEEP, progress=False)
    assert out["computed"] == [0, 1, 2, 3, 4] and out["skipped"] == []
    table = SW.load_table(run)
    C, S = 5, SWEEP.n_samples
    assert table["epoch"].tolist() == [0, 1, 2, 3, 4]
    for key in SW.SCALAR_KEYS:
        assert table[key].shape == (C,) and table[key].dtype == np.float64, key
    for key in SW.SAMPLE_KEYS:
        assert table[key].shape == (C, S), key
    assert table["lyapunov_spectrum"].shape == (C, 1)
    hist = json.loads((run / "history.json").read_text())
    np.testing.assert_allclose(table["test_loss"], hist["test_loss"])
    np.testing.assert_allclose(table["train_acc"], hist["train_acc"])
    assert (table["log_distance"] >= SW.LOG_DISTANCE_FLOOR - 1e-9).all()

    # Checkpoint 3 alone, through the public API, with the same reviews and protocol.
    config = TR.read_config(run)
    model = TR.build_model(config)
    model.load_state_dict(TR.load_checkpoint(TR.checkpoint_path(run, 3))[0])
    _, test = TR.load_run_data(run)
    idx = table["sample_index"]
    ids = torch.from_numpy(np.ascontiguousarray(test.ids[idx].T))
    lengths = torch.from_numpy(test.lengths[idx])
    zero = SWEEP.total_steps - config["data"]["max_len"]
    for twin in ("drive_end", "start"):
        d = mdesc.asymptotic_distance(model, ids, lengths=None, zero_input_steps=zero,
                                      perturbation=SWEEP.perturbation, perturb_at=twin,
                                      seed=SWEEP.seed, dtype=torch.float64)
        np.testing.assert_allclose(table[f"log_distance_{twin}"][3], float(d.log_distance),
                                   rtol=1e-5)
        np.testing.assert_allclose(table[f"distance_{twin}"][3], d.distance.numpy(), rtol=1e-5)
        if twin == "drive_end":  # the primary D~ and the reduced sums
            np.testing.assert_allclose(table["log_distance"][3], float(d.log_distance),
                                       rtol=1e-5)
            np.testing.assert_allclose(table["reduced_sum"][3], d.reduced_sum.numpy(),
                                       rtol=1e-5, atol=1e-6)
        else:
            assert table["n_collapsed_start"][3] == int(d.collapsed.sum())
    # lambda_1 over the zero-input phase only; the drive's exponent beside it
    r = mdesc.max_lyapunov(model, ids, zero_input_steps=zero, seed=SWEEP.seed,
                           window="zero_input")  # drive="padded": every drive is max_len
    np.testing.assert_allclose(table["lyapunov"][3], r.exponents[:, 0].numpy(), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(table["lyapunov_max"][3], r.exponents[:, 0].mean().item(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["lyapunov_driven"][3], r.driven_exponents[:, 0].numpy(),
                               rtol=1e-4, atol=1e-6)
    assert table["settings"]["window"] == "zero_input"
    assert table["settings"]["twins"] == ["drive_end", "start"]
    # drive="own_length" ends each review's drive after its own length instead
    own = SW.SweepSettings(**{**SWEEP.__dict__, "drive": "own_length", "every": 3})
    run2 = _copy(full, tmp_path, "own")
    SW.sweep_run(run2, own, progress=False)
    r2 = mdesc.max_lyapunov(model, ids, lengths=lengths, zero_input_steps=zero,
                            seed=SWEEP.seed, window="zero_input")
    np.testing.assert_allclose(SW.load_table(run2)["lyapunov"][1], r2.exponents[:, 0].numpy(),
                               rtol=1e-4, atol=1e-6)


def test_interrupted_sweep_resumes_without_loss_or_duplicates(trained, tmp_path):
    _, full = trained
    ref = _copy(full, tmp_path, "ref")
    SW.sweep_run(ref, SWEEP, progress=False)
    run = _copy(full, tmp_path, "run")
    seen = []

    def stop_after_3(epoch, record):
        seen.append(epoch)
        if len(seen) == 3:  # mid-chunk: chunk=2, so epoch 3 of chunk (2, 3) is not written
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SW.sweep_run(run, SWEEP, on_record=stop_after_3, progress=False)
    assert sorted(p.name for p in (run / "sweep").glob("epoch_*.json")) == \
        ["epoch_0000.json", "epoch_0001.json", "epoch_0002.json"]
    out = SW.sweep_run(run, SWEEP, progress=False)
    assert out["computed"] == [3, 4] and out["existing"] == 3
    assert not list((run / "sweep").glob(".*tmp"))
    a, b = SW.load_table(run), SW.load_table(ref)
    assert a["epoch"].tolist() == [0, 1, 2, 3, 4]
    for key in a:
        if key not in ("settings", "skipped", "seconds"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, err_msg=key)
    assert SW.sweep_run(run, SWEEP, progress=False)["computed"] == []


def test_corrupt_checkpoint_is_skipped_with_one_line_naming_it(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    bad = TR.checkpoint_path(run, 2)
    bad.write_bytes(b"\x00garbage, not a safetensors file" * 10)
    truncated = TR.checkpoint_path(run, 4)
    truncated.write_bytes(truncated.read_bytes()[:200])
    said = []
    out = SW.sweep_run(run, SWEEP, progress=False, say=said.append)
    assert len(said) == 2 and all("\n" not in m and m.startswith("skipping checkpoint")
                                  for m in said)
    assert str(bad) in said[0] and str(truncated) in said[1]
    assert out["computed"] == [0, 1, 3] and sorted(out["skipped"]) == [str(bad), str(truncated)]
    table = SW.load_table(run)
    assert table["epoch"].tolist() == [0, 1, 3]
    assert table["skipped"] == sorted([str(bad), str(truncated)])  # the report lists them


def test_corrupt_record_is_ignored_on_load_and_recomputed(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    SW.sweep_run(run, SWEEP, progress=False)
    good = SW.load_table(run)
    (run / "sweep" / "epoch_0001.json").write_text('{"epoch": 1, "log_dist')
    said = []
    assert SW.load_table(run, say=said.append)["epoch"].tolist() == [0, 2, 3, 4]
    assert len(said) == 1 and "epoch_0001.json" in said[0]
    assert SW.sweep_run(run, SWEEP, progress=False)["computed"] == [1]
    np.testing.assert_allclose(SW.load_table(run)["log_distance"], good["log_distance"])


def test_sweep_refuses_other_settings_and_bad_lengths(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    SW.sweep_run(run, SW.SweepSettings(n_samples=4, total_steps=30, chunk=5), progress=False)
    with pytest.raises(SW.SweepSettingsError, match="total_steps: on disk 30, asked for 40"):
        SW.sweep_run(run, SW.SweepSettings(n_samples=4, total_steps=40), progress=False)
    with pytest.raises(ValueError, match="must exceed the drive length"):
        SW.sweep_run(run, SW.SweepSettings(total_steps=10), progress=False)
    with pytest.raises(FileNotFoundError, match="mdesc descent sweep"):
        SW.load_table(tmp_path)


def test_a_sweep_without_records_locks_nothing(trained, tmp_path):
    """Settings but no record (a first sweep that stopped before measuring): the store itself
    takes the new settings and drops that attempt's skipped files; records stay protected.
    Reading it before is one UserError naming the folder and the command."""
    from mdesc.errors import UserError
    from mdesc.sweep import SweepStore
    from mdesc.sweep.table import NoRecordsError
    _, full = trained
    run = _copy(full, tmp_path)
    _, test = SW.load_run_data(run)
    SW._open(SW.DescentRun(run), SW.SweepSettings(n_samples=4, total_steps=30), len(test), 10)
    st = SweepStore(run)
    assert st.exists() and not st.steps() and st.settings()["total_steps"] == 30
    st.skip(2, "old.safetensors", "unreadable")
    with pytest.raises(UserError, match=rf"{run.name} has no sweep records yet.*"
                       r"`mdesc descent sweep --run-dir .*` first") as err:
        SW.load_table(run)
    assert isinstance(err.value, NoRecordsError) and isinstance(err.value, FileNotFoundError)
    out = SW.sweep_run(run, SW.SweepSettings(n_samples=4, total_steps=40, chunk=5), limit=1,
                       progress=False)
    assert out["computed"] == [0] and st.settings()["total_steps"] == 40
    assert st.skipped() == [] and list((run / "skipped").glob("*.json")) == []
    with pytest.raises(SW.SweepSettingsError, match="total_steps: on disk 40, asked for 30"):
        SW.sweep_run(run, SW.SweepSettings(n_samples=4, total_steps=30), progress=False)


def test_coarse_sweep_is_filled_in_later(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    coarse = SW.SweepSettings(**{**SWEEP.__dict__, "every": 2})
    assert SW.sweep_run(run, coarse, progress=False)["computed"] == [0, 2, 4]
    out = SW.sweep_run(run, SWEEP, progress=False)
    assert out["computed"] == [1, 3] and out["existing"] == 3
    assert SW.load_table(run)["epoch"].tolist() == [0, 1, 2, 3, 4]


def test_top_k_spectrum_is_recorded(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    two = SW.SweepSettings(**{**SWEEP.__dict__, "k": 2, "every": 4})
    SW.sweep_run(run, two, progress=False)
    t = SW.load_table(run)
    assert t["lyapunov_spectrum"].shape == (2, 2)
    assert (t["lyapunov_spectrum"][:, 0] >= t["lyapunov_spectrum"][:, 1]).all()
    np.testing.assert_allclose(t["lyapunov_spectrum"][:, 0], t["lyapunov_max"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_request_without_cuda_says_so(trained):
    _, full = trained
    with pytest.raises(TR.RunError, match="no usable CUDA; use --device cpu"):
        SW.sweep_run(full, SWEEP, device="cuda", progress=False)


def test_core_warnings_during_a_sweep_print_as_one_line(trained, tmp_path, monkeypatch):
    import warnings

    _, full = trained
    run = _copy(full, tmp_path)
    real = mdesc.asymptotic_distance

    def noisy(*a, **k):
        warnings.warn("a core warning\n  File /some/source.py, line 3", UserWarning)
        return real(*a, **k)

    monkeypatch.setattr(mdesc, "asymptotic_distance", noisy)
    said = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # a raw warning escaping the sweep would fail here
        SW.sweep_run(run, SW.SweepSettings(**{**SWEEP.__dict__, "every": 4}), progress=False,
                     say=said.append)
    assert said == ["warning (epochs 0-4): a core warning"]


def test_time_boxed_sweep_with_a_limit_continues_later(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    assert SW.sweep_run(run, SWEEP, progress=False, limit=2)["computed"] == [0, 1]
    assert SW.sweep_run(run, SWEEP, progress=False, limit=2)["computed"] == [2, 3]
    assert SW.sweep_run(run, SWEEP, progress=False)["computed"] == [4]
    with pytest.raises(SW.SweepSettingsError, match="--limit"):
        SW.sweep_run(run, SWEEP, progress=False, limit=0)


def test_sweep_of_an_epoch_range_first(trained, tmp_path):
    _, full = trained
    run = _copy(full, tmp_path)
    assert SW.sweep_run(run, SWEEP, progress=False, epochs=(2, 3))["computed"] == [2, 3]
    assert SW.sweep_run(run, SWEEP, progress=False)["computed"] == [0, 1, 4]


def test_one_engine_serves_a_study_run_and_any_run(trained, tmp_path):
    """Study 1's sweep and `sweep_checkpoints` over the same checkpoints with the same probe (the
    run's analysed test reviews, one padded drive) are one engine: the same table, bit for bit."""
    from mdesc.anyrun import sweep_checkpoints
    from mdesc.sweep import RunDescription, load_table

    _, full = trained
    run = _copy(full, tmp_path)
    SW.sweep_run(run, SWEEP, progress=False)
    study = SW.load_table(run)
    _, test = TR.load_run_data(run)
    probe = torch.from_numpy(test.ids[study["sample_index"]])           # (S, T) token ids
    config = TR.read_config(run)
    any_run = sweep_checkpoints(
        sorted((run / "checkpoints").glob("epoch_*.safetensors")), tmp_path / "any",
        TR.build_model(TR.read_config(run)), probe, report=False,
        settings=SWEEP.replace(n_samples=None, drive="padded"),
        description={"probe": "test reviews", "loss": "binary cross-entropy"})
    t = any_run.table
    assert t["epoch"].tolist() == study["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert config["data"]["max_len"] + t["settings"]["zero_input_steps"] == SWEEP.total_steps
    for key in ("lyapunov_max", "lyapunov_stderr", "lyapunov_max_driven", "log_distance",
                "log_distance_start", "n_collapsed_start", "reduced_sum", "lyapunov",
                "distance_start", "lyapunov_spectrum"):
        np.testing.assert_array_equal(t[key], study[key], err_msg=key)
    assert RunDescription.from_dict(t["settings"]["description"]).loss == "binary cross-entropy"
    assert study["settings"]["description"]["probe"] == "test reviews"   # study 1's own words
    assert load_table(tmp_path / "any")["settings"]["drive"] == "padded"


def test_settings_files_of_every_version_read_as_one_schema():
    from mdesc.sweep import upgrade_recorded

    legacy = upgrade_recorded({"n_samples": 5, "total_steps": 40, "qr_every": 10})
    assert legacy["window"] == "all" and legacy["twins"] == ["start"] and legacy["warmup"] == 0
    issue10 = upgrade_recorded({"n_samples": 5, "lyapunov_warmup": 3, "window": "zero_input",
                                "twins": ["drive_end", "start"], "drive": "padded"})
    assert issue10["warmup"] == 3 and "lyapunov_warmup" not in issue10
    any_run = upgrade_recorded({"zero_input_steps": 9, "warmup": 2, "lyapunov_warmup": 2,
                                "chunk": 4, "probe": {"sha256": "x"}, "window": "zero_input",
                                "twins": ["drive_end"]})
    assert any_run["drive"] == "own_length" and any_run["n_samples"] is None
    assert "chunk" not in any_run and any_run["warmup"] == 2


def test_parameter_change_against_the_predecessor_in_training_and_sweep(trained, tmp_path):
    """Issue 22: each record's change is against the checkpoint before it (also for the first
    checkpoint of a resumed sweep, whose predecessor the engine reads itself), and training
    records the same change in its history."""
    _, full = trained
    run = _copy(full, tmp_path)
    SW.sweep_run(run, SWEEP, progress=False, limit=3)     # chunk 2: the resumed chunk starts at 3
    SW.sweep_run(run, SWEEP, progress=False)
    weights = {e: mdesc.store.read_checkpoint(p)[0] for e, p in TR.list_checkpoints(run)}
    history = TR.read_history(run)
    for e in range(1, 5):
        rec = json.loads((run / "sweep" / f"epoch_{e:04d}.json").read_text())
        d = math.sqrt(sum(float(((weights[e][k].double() - weights[e - 1][k].double()) ** 2).sum())
                          for k in weights[e]))
        w = math.sqrt(sum(float((weights[e - 1][k].double() ** 2).sum()) for k in weights[e]))
        assert rec["previous_epoch"] == e - 1
        assert rec["param_change"] == pytest.approx(d, rel=1e-9)
        assert rec["param_change_relative"] == pytest.approx(d / w, rel=1e-9)
        assert set(rec["param_change_tensors"]) == set(weights[e])
        assert history["param_change"][e] == pytest.approx(d, rel=1e-6)
    first = json.loads((run / "sweep" / "epoch_0000.json").read_text())
    assert "param_change" not in first                    # no predecessor
    assert SW.load_table(run)["param_change"][1:] == pytest.approx(history["param_change"][1:],
                                                                   rel=1e-6)
