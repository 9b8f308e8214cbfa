"""End to end: a tiny model trained in a plain loop (not mdesc's trainer), its checkpoints in
both formats swept with `mdesc analyse-run`, checked against direct core calls; resume, bad
checkpoints, a malicious pickle, the stability monitor against a post-hoc sweep."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import mdesc
from mdesc.anyrun import StabilityMonitor, SweepSettings, sweep_checkpoints
from mdesc.sweep import load_table
from mdesc.cli import main

V, E, H, T, B, Z = 12, 4, 8, 9, 6, 40


class TinyNet(torch.nn.Module):
    """A user's own model: other module names than mdesc's stack (embed / lstm / fc)."""

    def __init__(self, vocab=V, hidden=H):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, E)
        self.lstm = torch.nn.LSTM(E, hidden, batch_first=True)
        self.fc = torch.nn.Linear(hidden, 1)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.fc(out[:, -1]).squeeze(-1)


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (n, T), generator=g)
    return ids, (ids == 1).sum(1).remainder(2).float()


def _train(folder, epochs=5, monitor=None, metrics_file=True):
    """A plain training loop; checkpoints alternate .safetensors / .pt (+ a metrics CSV)."""
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = _data(64, 1)
    xt, yt = _data(32, 2)
    os.makedirs(folder, exist_ok=True)
    rows = ["epoch,val_loss,train_loss"]
    for epoch in range(epochs):
        if epoch:
            for i in range(0, 64, 16):
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[i:i + 16]), y[i:i + 16])
                loss.backward()
                opt.step()
        with torch.no_grad():
            val = float(torch.nn.functional.binary_cross_entropy_with_logits(net(xt), yt))
            tr = float(torch.nn.functional.binary_cross_entropy_with_logits(net(x), y))
        rows.append(f"{epoch},{val},{tr}")
        state = {k: v.clone() for k, v in net.state_dict().items()}
        if epoch % 2:
            torch.save(state, os.path.join(folder, f"epoch_{epoch}.pt"))
        else:
            save_file(state, os.path.join(folder, f"epoch_{epoch}.safetensors"))
        if monitor is not None:
            monitor.step(net, epoch, metrics={"test_loss": val})
    if metrics_file:
        with open(os.path.join(folder, "..", "metrics.csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return net


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("anyrun")
    _train(root / "ckpts")
    probe, lengths = _data(B, 3)[0], torch.tensor([9, 9, 5, 7, 9, 3])
    np.save(root / "probe.npy", probe.numpy())
    np.save(root / "lengths.npy", lengths.numpy())
    return root, probe, lengths


def _cli(root, out, *extra):
    return main(["analyse-run", str(root / "ckpts"), "--out", str(out), "--probe", str(root / "probe.npy"),
                 "--lengths", str(root / "lengths.npy"), "--zero-input-steps", str(Z), "--no-progress",
                 *extra])


STACK = ("--vocab-size", str(V), "--embed-dim", str(E), "--hidden-size", str(H))


def test_command_table_equals_direct_core_calls(run, tmp_path, capsys):
    root, probe, lengths = run
    out = tmp_path / "out"
    # --chunk 5: all five in one core call, as below (float32 tangent runs batched differently
    # differ by ~1e-8 relative: the batch changes the order of the GEMM's sums)
    assert _cli(root, out, *STACK, "--metrics", str(root / "metrics.csv"), "--chunk", "5") == 0
    t = load_table(out)
    assert t["epoch"].tolist() == [0, 1, 2, 3, 4]
    # direct calls on the same weights (the user's own class, loaded the ordinary way)
    models = []
    for e in range(5):
        net = TinyNet()
        path = root / "ckpts" / (f"epoch_{e}.pt" if e % 2 else f"epoch_{e}.safetensors")
        net.load_state_dict(mdesc.store.load_state_dict(path))
        models.append(net)
    ids = probe  # batch_first model: (B, T)
    lyap = mdesc.lyapunov_checkpoints(models, ids, k=1, lengths=lengths, zero_input_steps=Z,
                                      window="zero_input", dtype=torch.float32)
    np.testing.assert_allclose(t["lyapunov_max"], lyap.mean[:, 0].numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(t["lyapunov"], lyap.exponents[..., 0].numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(t["lyapunov_max_driven"],
                               lyap.driven_exponents[..., 0].mean(-1).numpy(), rtol=1e-12)
    for where in ("drive_end", "start"):
        d = mdesc.asymptotic_distance(models, ids, lengths=lengths, zero_input_steps=Z,
                                      perturb_at=where, perturbation=1e-6, dtype=torch.float64)
        np.testing.assert_allclose(t[f"log_distance_{where}"], d.log_distance.numpy(), rtol=1e-12)
        if where == "drive_end":
            np.testing.assert_allclose(t["log_distance"], d.log_distance.numpy(), rtol=1e-12)
            np.testing.assert_allclose(t["reduced_sum"], d.reduced_sum.numpy(), rtol=1e-12)
    rows = (root / "metrics.csv").read_text().splitlines()[1:]
    np.testing.assert_allclose(t["test_loss"], [float(r.split(",")[1]) for r in rows])
    np.testing.assert_allclose(t["train_loss"], [float(r.split(",")[2]) for r in rows])
    report = out / "report"
    assert (report / "report.html").is_file() and (report / "descent.png").is_file()
    assert len((report / "phase_table.csv").read_text().strip().splitlines()) == 6
    assert "5 measured now" in capsys.readouterr().out

    # resume: nothing to do; a lost record is recomputed alone, to the same numbers
    assert _cli(root, out, *STACK, "--no-report", "--chunk", "2") == 0  # chunk may change
    assert "0 measured now, 5 already stored" in capsys.readouterr().out
    (out / "sweep" / "epoch_0003.json").unlink()
    assert _cli(root, out, *STACK, "--no-report") == 0
    assert "1 measured now, 4 already stored" in capsys.readouterr().out
    t2 = load_table(out)
    for k in ("log_distance", "log_distance_start", "test_loss"):  # float64: ~1e-12 by batching
        np.testing.assert_allclose(t2[k], t[k], rtol=1e-10)
    np.testing.assert_allclose(t2["lyapunov_max"], t["lyapunov_max"], rtol=1e-6)
    # other settings on the same store: the one settings message
    assert _cli(root, out, *STACK, "--perturbation", "1e-3") == 2
    assert "other settings (perturbation" in capsys.readouterr().err


def test_factory_batch_first_and_the_same_numbers(run, tmp_path):
    root, _, _ = run
    a = tmp_path / "a"
    assert _cli(root, a, "--factory", "test_anyrun_sweep:TinyNet", "--factory-kwargs", '{"hidden": 8}',
                "--twins", "drive_end", "--no-report") == 0
    b = sweep_checkpoints(root / "ckpts", tmp_path / "b", dict(vocab_size=V, embed_dim=E, hidden_size=H),
                          root / "probe.npy", lengths=root / "lengths.npy", report=False, chunk=2,
                          settings=SweepSettings(zero_input_steps=Z, twins=("drive_end",)))
    ta = load_table(a)
    np.testing.assert_allclose(ta["lyapunov_max"], b.table["lyapunov_max"], rtol=1e-6)
    for k in ("log_distance", "reduced_sum"):
        np.testing.assert_allclose(ta[k], b.table[k], rtol=1e-10)
    assert np.isnan(ta["log_distance_start"]).all()


def test_bad_checkpoints_named_or_skipped_and_pickles_refused(run, tmp_path, capsys, monkeypatch):
    root, _, _ = run
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for p in (root / "ckpts").iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    torch.save(TinyNet(hidden=5).state_dict(), folder / "epoch_7.pt")          # another shape

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"embed.weight": torch.zeros(V, E), "x": Evil()}, folder / "epoch_8.pt")
    args = [str(folder), "--out", str(tmp_path / "out"), "--probe", str(root / "probe.npy"),
            "--zero-input-steps", str(Z), "--no-progress", "--twins", "drive_end", *STACK]
    assert main(["analyse-run", *args]) == 2
    err = capsys.readouterr().err
    assert "epoch_7.pt does not fit the model" in err and "rnn.weight_hh_l0" in err and "--skip-bad" in err
    assert main(["analyse-run", *args, "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "epoch_7.pt" in out and "epoch_8.pt" in out and "never unpickles" in out
    assert not (tmp_path / "pwned").exists()
    assert load_table(tmp_path / "out")["epoch"].tolist() == [0, 1, 2, 3, 4]
    listed = mdesc.store.read_json(tmp_path / "out" / "sweep" / "skipped.json")
    assert len(listed) == 2 and "epoch_7.pt" in listed[0] and "epoch_8.pt" in listed[1]


def test_other_cells_reach_the_core(run, tmp_path):
    """GRU / Elman stacks are built; whether the core analyses them is the core's to say."""
    torch.manual_seed(0)
    folder = tmp_path / "gru"
    folder.mkdir()
    from mdesc.anyrun.sources import RecurrentStack

    torch.save(RecurrentStack(cell="gru", input_size=2, hidden_size=4).state_dict(), folder / "e_1.pt")
    torch.save(torch.randn(3, 5, 2), tmp_path / "x.pt")
    try:
        r = sweep_checkpoints(folder, tmp_path / "o", dict(cell="gru", input_size=2, hidden_size=4),
                              tmp_path / "x.pt", settings=SweepSettings(zero_input_steps=10),
                              report=False, distributed=False)
    except ValueError as e:
        assert "GRU" in str(e)  # the core's own message
    else:
        assert r.table["epoch"].tolist() == [1]


def _gain_models(gains, hidden=16):
    out = []
    for gain in gains:
        m = torch.nn.LSTM(2, hidden)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(7)) * gain / 4)
        out.append(m)
    return out


def test_monitor_flags_order_chaos_crossings(tmp_path):
    probe = torch.randn(4, 10, 2, generator=torch.Generator().manual_seed(1))   # (B, T, I)
    events = []
    mon = StabilityMonitor(tmp_path / "m", probe, zero_input_steps=300,
                           on_transition=lambda ev, model: events.append(ev))
    labels = []
    for epoch, model in enumerate(_gain_models([0.5, 1, 8, 8, 0.5])):
        rec = mon.step(model, epoch)
        labels.append((rec["label"], rec["transition"]))
    assert labels == [("ordered", None), ("ordered", None), ("chaotic", "order_to_chaos"),
                      ("chaotic", None), ("ordered", "chaos_to_order")]
    # the live labels are the report's one label (combined), checkpoint by checkpoint
    table = mon.table()
    shown = mdesc.sweep.phase_table(table, mdesc.sweep.analyse(table))["label"].tolist()
    assert shown == [lab for lab, _ in labels]
    assert [e["epoch"] for e in events] == [2, 4] and mon.first_order_to_chaos == 2
    # a new monitor on the same store (a resumed training run) knows the crossings so far
    again = StabilityMonitor(tmp_path / "m", probe, zero_input_steps=300, measure="lyapunov")
    assert again.step(_gain_models([0.5])[0], 6)["transition"] is None
    assert again.first_order_to_chaos == 2
    with pytest.raises(mdesc.store.SettingsMismatch):
        StabilityMonitor(tmp_path / "m", probe, zero_input_steps=301).step(_gain_models([1])[0], 7)


def test_monitor_records_equal_a_post_hoc_sweep(tmp_path):
    root = tmp_path
    probe = _data(B, 3)[0]
    mon = StabilityMonitor(root / "monitor", probe, zero_input_steps=Z, every=1)
    _train(root / "ckpts", epochs=4, monitor=mon, metrics_file=False)
    assert mon.steps == 4 and mon.seconds > 0
    # chunk=1: one checkpoint per core call, as the monitor measures: bit-identical records
    post = sweep_checkpoints(root / "ckpts", root / "post", TinyNet(), probe, report=False, chunk=1,
                             settings=SweepSettings(zero_input_steps=Z, twins=("drive_end",)))
    a = mon.store.records()
    b = post.table and mdesc.anyrun.SweepStore(root / "post").records()
    assert list(a) == list(b) == [0, 1, 2, 3]
    for step in a:
        for k in set(a[step]) | set(b[step]):
            if k in ("seconds", "checkpoint", "test_loss"):
                continue
            assert a[step][k] == b[step][k], (step, k)
    # a post-hoc sweep fills in the monitor's own store (same settings), computing nothing new
    again = sweep_checkpoints(root / "ckpts", root / "monitor", TinyNet(), probe, report=False,
                              settings=SweepSettings(zero_input_steps=Z, twins=("drive_end",)))
    assert again.computed == [] and again.existing == [0, 1, 2, 3]
    page = mon.report()
    assert page.is_file()


def test_monitor_every_and_ddp_wrapper(tmp_path):
    probe = torch.randn(3, 6, 2, generator=torch.Generator().manual_seed(2))
    mon = StabilityMonitor(tmp_path / "m", probe, zero_input_steps=20, every=2)
    model = _gain_models([1.0])[0]
    wrapped = type("DistributedDataParallel", (torch.nn.Module,), {})()
    wrapped.module = model
    assert mon.step(wrapped, 1) is None
    rec = mon.step(wrapped, 2)
    assert rec is not None and rec["epoch"] == 2 and list(mon.store.records()) == [2]
    assert rec["lyapunov_max"] == mon.step(model, 4)["lyapunov_max"]
    with pytest.raises(ValueError, match="epoch must be an integer"):
        mon.step(model, -1)


def test_command_with_an_order_file(run, tmp_path, capsys):
    root, _, _ = run
    order = tmp_path / "order.txt"
    names = sorted(p.name for p in (root / "ckpts").iterdir())
    order.write_text("".join(f"{root / 'ckpts' / n} {10 * i}\n" for i, n in enumerate(names[:3])))
    assert main(["analyse-run", "--order", str(order), "--out", str(tmp_path / "o"),
                 "--probe", str(root / "probe.npy"), "--zero-input-steps", str(Z), "--no-progress",
                 "--no-report", "--twins", "drive_end", *STACK]) == 0
    assert load_table(tmp_path / "o")["epoch"].tolist() == [0, 10, 20]
    # no architecture flags (issue 23): the stack is read off the first checkpoint, and said
    capsys.readouterr()
    assert main(["analyse-run", "--out", str(tmp_path / "p"), "--probe", str(root / "probe.npy"),
                 "--zero-input-steps", str(Z), "--no-progress", "--no-report",
                 "--twins", "drive_end", str(root / "ckpts")]) == 0
    out = capsys.readouterr().out
    assert f"cell=lstm, vocab_size={V}, embed_dim={E}, hidden_size={H}" in out
    # the first file (step 0 in both) measures the same as with the flags
    assert load_table(tmp_path / "p")["lyapunov_max"][0] == \
        load_table(tmp_path / "o")["lyapunov_max"][0]
