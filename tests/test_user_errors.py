"""Every wrong input to `mdesc analyse-run`, `mdesc.sweep_checkpoints` and
`mdesc.StabilityMonitor` gets one readable message that names the input and the fix (exit status
2 on the command line, a UserError from the API), and leaves nothing behind that blocks the next
run (issue 23)."""
import json
import os

import numpy as np
import pytest
import torch
from torch import nn

import mdesc
from mdesc.anyrun import StabilityMonitor, SweepStore, sweep_checkpoints
from mdesc.cli import main
from mdesc.errors import UserError

V, E, H, T, B, Z = 7, 3, 5, 6, 4, 20
FAST = ["--zero-input-steps", str(Z), "--twins", "drive_end", "--no-progress", "--no-report"]


class CharNet(nn.Module):
    """A user's character model: an embedding, a GRU, a readout over the vocabulary."""

    def __init__(self, cell=nn.GRU, **kw):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.rnn = cell(E, H, batch_first=True, **kw)
        self.head = nn.Linear(H * (2 if kw.get("bidirectional") else 1), V)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good checkpoints, a good probe and one bad file of each kind, each in its own folder."""
    root = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    net = CharNet()
    folders = {}

    def put(name, save, filename="epoch_1.pt"):
        d = root / name
        d.mkdir()
        save(d / filename)
        folders[name] = d

    put("good", lambda p: torch.save(net.state_dict(), p))
    torch.save(net.state_dict(), folders["good"] / "epoch_2.pt")
    put("text", lambda p: p.write_text("not a checkpoint"))
    put("pickled", lambda p: torch.save(net, p))
    put("two_states", lambda p: torch.save({"a": net.state_dict(), "b": net.state_dict()}, p))
    put("no_rnn", lambda p: torch.save(nn.Linear(3, 2).state_dict(), p))
    put("bidir", lambda p: torch.save(CharNet(bidirectional=True).state_dict(), p))
    extra = {**net.state_dict(), "norm.weight": torch.ones(H), "norm.bias": torch.zeros(H)}
    put("extra_module", lambda p: torch.save(extra, p))
    nan = {k: v.clone() for k, v in net.state_dict().items()}
    nan["rnn.weight_hh_l0"][0, 0] = float("nan")
    put("nan", lambda p: torch.save(nan, p))
    put("no_step", lambda p: torch.save(net.state_dict(), p), "final.pt")
    put("same_step", lambda p: torch.save(net.state_dict(), p), "run1_epoch_3.pt")
    torch.save(net.state_dict(), folders["same_step"] / "run2_epoch_3.pt")
    (root / "empty").mkdir()
    folders["empty"] = root / "empty"
    ids = torch.randint(0, V, (B, T))
    torch.save(ids, root / "probe.pt")
    torch.save(ids + V, root / "probe_big_ids.pt")
    torch.save(torch.randn(B, T, E), root / "probe_float.pt")
    np.save(root / "probe_2d_float.npy", np.zeros((B, T), dtype=np.float32))
    torch.save({"ids": ids, "lengths": torch.full((B,), T + 3)}, root / "probe_long_lengths.pt")
    return root, folders, net


def _left_clean(out):
    """Nothing half-written: no output folder, or one without settings, records or temp files."""
    if not os.path.exists(out):
        return True
    names = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
    return not any(n.endswith(("settings.json", ".tmp")) or "epoch_" in n for n in names)


# (case id, folder (or a glob/path, with {root}), probe file, extra flags, message fragment)
CLI_CASES = [
    ("text file named .pt", "text", "probe.pt", [], "text/epoch_1.pt could not be read as a "
     "weights-only PyTorch file"),
    ("text file, --skip-bad", "text", "probe.pt", ["--skip-bad"],
     "every checkpoint (1) was left out by --skip-bad"),
    ("whole pickled model", "pickled", "probe.pt", [], "mdesc never unpickles code"),
    ("pickled model, --skip-bad", "pickled", "probe.pt", ["--skip-bad"],
     "nothing was written"),
    ("several state dicts", "two_states", "probe.pt", [], "--state-key"),
    ("--state-key not there", "good", "probe.pt", ["--state-key", "model"], "has no entry 'model'"),
    ("no recurrent module", "no_rnn", "probe.pt", [], "cannot read the architecture"),
    ("bidirectional", "bidir", "probe.pt", [], "bidirectional"),
    ("a module the stack does not have", "extra_module", "probe.pt", ["--skip-bad"],
     "with the architecture read off it (cell=gru, vocab_size=7, embed_dim=3, hidden_size=5, "
     "num_layers=1, output_size=7): a model that is not a plain Embedding -> recurrent -> "
     "Linear stack needs --factory"),
    ("empty folder", "empty", "probe.pt", [], "holds no checkpoint files"),
    ("glob matching nothing", "{root}/good/*.safetensors", "probe.pt", [], "matches no files"),
    ("missing path", "{root}/nowhere", "probe.pt", [], "is neither a checkpoint file"),
    ("name without a number", "no_step", "probe.pt", [], "its name holds no integer"),
    ("two files at one step", "same_step", "probe.pt", [], "are both at step 3"),
    ("--step-pattern without a group", "good", "probe.pt", ["--step-pattern", "epoch"],
     "needs a group"),
    ("--step-pattern not a regex", "good", "probe.pt", ["--step-pattern", "(epoch"],
     "is not a regular expression"),
    ("--order file missing", "good", "probe.pt", ["--order", "{root}/order.txt"],
     "does not exist"),
    ("--hidden-size wrong", "good", "probe.pt", ["--hidden-size", "9"], "does not fit the model"),
    ("--output-size 1 for a language model", "good", "probe.pt", ["--output-size", "1"],
     "linear.weight: checkpoint (7, 5), model (1, 5)"),
    ("--cell wrong", "good", "probe.pt", ["--cell", "lstm"], "does not fit the model"),
    ("float probe for a token model", "good", "probe_float.pt", [], "would skip the embedding"),
    ("token ids past the vocabulary", "good", "probe_big_ids.pt", [], "vocabulary has 7"),
    ("2-D float probe", "good", "probe_2d_float.npy", [], "ambiguous"),
    ("probe file missing", "good", "nothing.pt", [], "probe file"),
    ("lengths past the probe", "good", "probe_long_lengths.pt", [], "probe lengths must be in [1, T=6]"),
    ("--device gpu", "good", "probe.pt", ["--device", "gpu"], "is not a device name"),
    ("--threads 0", "good", "probe.pt", ["--threads", "0"], "--threads must be a positive"),
    ("--out a file", "good", "probe.pt", ["--out", "{root}/probe.pt"], "probe.pt is a file"),
    ("--factory not a spec", "good", "probe.pt", ["--factory", "nocolon"],
     "must look like 'package.module:factory'"),
    ("--factory not importable", "good", "probe.pt", ["--factory", "no_such_pkg_xyz:make"],
     "cannot import 'no_such_pkg_xyz'"),
    ("--factory with architecture flags", "good", "probe.pt",
     ["--factory", "torch.nn:GRU", "--hidden-size", "5"], "drop the architecture flags"),
    ("--factory-kwargs not JSON", "good", "probe.pt",
     ["--factory", "torch.nn:GRU", "--factory-kwargs", "{x"], "is not valid JSON"),
    ("--zero-input-steps negative", "good", "probe.pt", ["--zero-input-steps", "-1"],
     "zero-input-steps"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_names_the_input_and_leaves_nothing(files, tmp_path, capsys, case):
    root, folders, _ = files
    _, where, probe, extra, message = case
    src = where.format(root=root) if "{root}" in where else str(folders[where])
    out = tmp_path / "out"
    args = ["analyse-run", src, "--out", str(out), "--probe", str(root / probe), *FAST,
            *[a.format(root=root) if "{root}" in a else a for a in extra]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line
    assert _left_clean(out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_on_a_cpu_only_torch(files, tmp_path, capsys):
    root, folders, net = files
    out = tmp_path / "out"
    assert main(["analyse-run", str(folders["good"]), "--out", str(out), "--probe",
                 str(root / "probe.pt"), "--device", "cuda", *FAST]) == 2
    assert "asked for, but" in capsys.readouterr().err and not out.exists()
    with pytest.raises(UserError, match="use --device cpu / device='cpu'"):
        sweep_checkpoints(folders["good"], out, None, root / "probe.pt", device="cuda")
    with pytest.raises(UserError, match="asked for, but"):
        StabilityMonitor(out, torch.randint(0, V, (B, T)), device="cuda")
    assert not out.exists()


def test_a_failed_run_does_not_lock_its_folder(files, tmp_path, capsys):
    """The issue's first complaint: a shape mismatch, then the corrected command."""
    root, folders, _ = files
    out = tmp_path / "out"
    base = ["analyse-run", str(folders["good"]), "--out", str(out), "--probe",
            str(root / "probe.pt"), *FAST]
    assert main(base + ["--output-size", "1"]) == 2
    assert _left_clean(out)
    # an older mdesc wrote the settings before the first record: such a folder re-opens
    SweepStore(out).open({"parameter_shapes": [[1]], "zero_input_steps": 5})
    assert main(base) == 0
    assert sorted(mdesc.anyrun.load_table(out)["epoch"].tolist()) == [1, 2]
    # with records on disk the settings are protected, and each differing field is named
    assert main(base[:-len(FAST)] + ["--zero-input-steps", str(Z + 1), *FAST[2:]]) == 2
    err = capsys.readouterr().err
    assert f"zero_input_steps: on disk {Z}, asked for {Z + 1}" in err
    # another model's checkpoints into the same folder: said as such, the shapes side by side
    other = tmp_path / "other"
    other.mkdir()
    torch.save(mdesc.anyrun.RecurrentStack("gru", H + 1, vocab_size=V, embed_dim=E,
                                           output_size=V).state_dict(), other / "epoch_3.pt")
    assert main(["analyse-run", str(other), *base[2:]]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another model: its parameter shapes on disk [[7], [7, 3], [7, 5], " \
        "[15], [15], [15, 3], [15, 5]], this model's [[7], [7, 3], [7, 6], [18], " in err
    assert err.count("\n") == 1


def test_every_checkpoint_skipped_through_the_api(files, tmp_path):
    root, folders, _ = files
    with pytest.raises(UserError, match=r"every checkpoint \(1\) was left out"):
        sweep_checkpoints(folders["text"], tmp_path / "o", None, root / "probe.pt",
                          skip_bad=True)
    assert not (tmp_path / "o").exists()


def test_api_reads_the_architecture_and_refuses_a_float_probe(files, tmp_path, capsys):
    root, folders, net = files
    settings = mdesc.anyrun.SweepSettings(zero_input_steps=Z, twins=("drive_end",))
    with pytest.raises(UserError, match="would skip the embedding"):
        sweep_checkpoints(folders["good"], tmp_path / "f", None, root / "probe_float.pt",
                          settings=settings, report=False)
    assert not (tmp_path / "f").exists()
    res = sweep_checkpoints(folders["good"], tmp_path / "o", {"hidden_size": H},
                            root / "probe.pt", settings=settings, report=False)
    assert res.table["epoch"].tolist() == [1, 2]
    assert "cell=gru, vocab_size=7, embed_dim=3, num_layers=1, output_size=7" in \
        capsys.readouterr().out
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["model"]["spec"]["cell"] == "gru" and config["model"]["spec"]["output_size"] == V


def test_nan_weights_are_recorded_as_nonfinite_not_refused(files, tmp_path, capsys):
    """A diverged checkpoint (NaN or inf weights) in a post-hoc sweep is no bad input: the
    engine records it as the monitor does (nonfinite_fraction 1, nonfinite_weights, label
    unknown) and carries on; the table, the analysis, the claims and the report's figures
    take it as unknown and count it nowhere. A run of nothing but such checkpoints reports too."""
    root, folders, net = files
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(1)
    for step in (1, 2, 4):
        torch.save(CharNet().state_dict(), run / f"epoch_{step}.pt")
    bad = {k: v.clone() for k, v in net.state_dict().items()}
    bad["rnn.weight_hh_l0"][1, 2] = float("inf")
    torch.save(bad, run / "epoch_3.pt")
    (run / "metrics.csv").write_text("epoch,test_loss\n1,2.0\n2,1.5\n3,9.0\n4,1.8\n")
    out = tmp_path / "out"
    assert main(["analyse-run", str(run), "--out", str(out), "--probe", str(root / "probe.pt"),
                 "--metrics", str(run / "metrics.csv"), *FAST[:-1]]) == 0
    said = capsys.readouterr().out
    assert "epoch_3.pt: its weights hold NaN or inf; recorded as non-finite" in said
    rec = json.loads((out / "sweep" / "epoch_0003.json").read_text())
    assert rec["nonfinite_weights"] is True and rec["nonfinite_fraction"] == 1.0
    assert rec["lyapunov_max"] is None and rec["log_distance"] is None
    assert rec["param_change"] is None and rec["previous_epoch"] == 2
    table = mdesc.anyrun.load_table(out)
    assert table["epoch"].tolist() == [1, 2, 3, 4]
    assert table["nonfinite_weights"][2] == 1
    assert np.isnan(table["nonfinite_weights"][[0, 1, 3]]).all()
    assert np.isnan(table["lyapunov_max"][2])
    assert np.isfinite(table["lyapunov_max"][[0, 1, 3]]).all()
    assert np.isnan(table["param_change"][[0, 2, 3]]).all()  # none against the diverged one
    a = mdesc.sweep.analyse(table)
    assert all(a.labels[m][2] == -1 for m in a.labels)
    assert all(3 not in (t.epoch_before, t.epoch_after) for t in a.transitions)
    assert any("weights of 1 checkpoints hold NaN or inf (epochs 3)" in w for w in a.warnings)
    assert not any("tangent runs went non-finite" in w for w in a.warnings)
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["analysis"]["labels"]["combined"][2] == "unknown"
    assert {"descent.png", "bifurcation.png", "report.html"} <= set(os.listdir(out / "report"))
    # a run whose only checkpoint diverged: recorded, analysed, reported (every row unknown)
    only = tmp_path / "only"
    assert main(["analyse-run", str(folders["nan"]), "--out", str(only), "--probe",
                 str(root / "probe.pt"), *FAST[:-1]]) == 0
    assert mdesc.anyrun.load_table(only)["nonfinite_weights"].tolist() == [1.0]
    assert (only / "report" / "report.html").is_file()


def test_monitor_on_a_device_through_nan_weights(files, tmp_path):
    """StabilityMonitor(device=...) works; a diverging model is recorded as non-finite and the
    monitor carries on; a float probe for a token model is refused before anything is written."""
    _, _, net = files
    ids = torch.randint(0, V, (B, T))
    with pytest.raises(UserError, match="would skip the embedding"):
        StabilityMonitor(tmp_path / "f", torch.randn(B, T, E), zero_input_steps=Z).step(net, 0)
    assert _left_clean(tmp_path / "f")
    mon = StabilityMonitor(tmp_path / "m", ids, zero_input_steps=Z, device="cpu")
    with pytest.raises(UserError, match="no monitored epoch yet"):
        mon.report()
    first = mon.step(net, 0)
    broken = CharNet()
    broken.load_state_dict(net.state_dict())
    with torch.no_grad():
        broken.rnn.weight_hh_l0[0, 0] = float("inf")
    rec = mon.step(broken, 1)
    assert rec["nonfinite_fraction"] == 1.0 and rec["label"] == "unknown"
    assert rec["lyapunov_max"] is None and rec["transition"] is None
    again = mon.step(net, 2)
    assert again["lyapunov_max"] == first["lyapunov_max"]
    table = mon.table()
    assert table["epoch"].tolist() == [0, 1, 2] and np.isnan(table["lyapunov_max"][1])
    assert mon.report().is_file()
