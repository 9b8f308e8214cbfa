"""Ensemble training (issue 24): E models trained as one computation are, member by member, the
single runs of their seeds (float64, to rounding): per-epoch metrics, weights, optimizer files;
a member re-run alone reproduces; a killed ensemble resumes to the identical history; bad input
is one readable message before any work."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from mdesc.cli import main
from mdesc.data.sentiment import TextSettings
from mdesc.descent import run as TR
from mdesc.descent.model import RunError, SentimentLSTM, reproduction_init
from mdesc.ensemble import optim as EO
from mdesc.ensemble import train as ET
from mdesc.store import read_checkpoint
from test_sentiment import make_aclimdb


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_aclimdb(tmp_path_factory.mktemp("corpus"), n_train=20, n_test=10)


def settings(corpus, epochs=3, model=None, **train):
    data = TextSettings(source=str(corpus), vocab_size=30, min_count=1, max_len=10, seed=1)
    model = TR.ModelSettings(**{"embed_dim": 4, "hidden_size": 5, **(model or {})})
    train = TR.TrainSettings(**{"epochs": epochs, "batch_size": 8, "lr": 0.03, **train})
    return data, model, train


def three_classes(monkeypatch):
    """A 3-class task from the tiny corpus: class = sentiment + (review longer than 9 tokens)."""
    real = TR.load_splits

    def load(data, progress=False, data_path=None):
        d = real(data, progress, data_path)
        for sp in (d.train, d.val, d.test):
            sp.labels = (sp.labels.astype(np.int64) + (sp.lengths > 9)).astype(np.int64)
        return dataclasses.replace(d, classes=3)

    monkeypatch.setattr(TR, "load_splits", load)
    monkeypatch.setattr(ET, "load_splits", load)


def single_runs(tmp_path, seeds, data, model, train, lrs=None):
    out = {}
    for i, s in enumerate(seeds):
        t = dataclasses.replace(train, seed=s, **({"lr": lrs[i]} if lrs else {}))
        out[s] = tmp_path / f"single-{s}"
        TR.train_run(out[s], dataclasses.replace(data, seed=t.split_seed), model, t,
                     progress=False, say=None)
    return out


def assert_same_member(ens_dir, single_dir, epochs, rtol=1e-9, atol=1e-11):
    h_e, h_s = TR.read_history(ens_dir), TR.read_history(single_dir)
    assert h_e.keys() == h_s.keys() and h_e["epoch"] == h_s["epoch"] == list(range(epochs + 1))
    for k in h_e:
        np.testing.assert_allclose(h_e[k], h_s[k], rtol=rtol, atol=atol, err_msg=k)
    for epoch in (1, epochs):
        w_e, m_e = read_checkpoint(TR.checkpoint_path(ens_dir, epoch))
        w_s, m_s = read_checkpoint(TR.checkpoint_path(single_dir, epoch))
        assert w_e.keys() == w_s.keys() and m_e.keys() == m_s.keys()
        for k in w_e:
            assert w_e[k].dtype == w_s[k].dtype == torch.float64
            torch.testing.assert_close(w_e[k], w_s[k], rtol=rtol, atol=atol, msg=k)
    o_e = TR.read_optimizer_state(ens_dir / "checkpoints" / f"optimizer_{epochs:04d}.safetensors")
    o_s = TR.read_optimizer_state(single_dir / "checkpoints" /
                                  f"optimizer_{epochs:04d}.safetensors")
    assert o_e["param_groups"] == o_s["param_groups"]
    assert o_e["state"].keys() == o_s["state"].keys()
    for i, st in o_s["state"].items():
        assert st.keys() == o_e["state"][i].keys()
        for name, v in st.items():
            torch.testing.assert_close(o_e["state"][i][name], v, rtol=rtol, atol=atol)
    cfg_e = json.loads((ens_dir / "config.json").read_text())
    cfg_s = json.loads((single_dir / "config.json").read_text())
    assert cfg_e == cfg_s


CASES = {  # cell, head, optimizer, dropout, clipping, depth, init, per-member learning rates
    "lstm-binary-adam-dropout-clip-2layers": (
        {"cell": "lstm", "num_layers": 2, "embed_dropout": 0.1, "dropout": 0.2},
        {"optimizer": "adam", "clip_norm": 0.3}, False, None),
    "gru-3class-adamw-clip": (
        {"cell": "gru"}, {"optimizer": "adamw", "weight_decay": 0.1, "clip_norm": 0.5,
                          "adam_eps": 1e-5}, True, None),
    "rnn_tanh-binary-sgd-momentum-dropout-lrs": (
        {"cell": "rnn_tanh", "num_layers": 2, "dropout": 0.3, "init": "reproduction"},
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "weight_decay": 1e-3}, False,
        [0.1, 0.05, 0.2]),
    "lstm-3class-sgd-momentum-reproduction-init": (
        {"cell": "lstm", "init": "reproduction", "embed_dropout": 0.2},
        {"optimizer": "sgd", "momentum": 0.5, "lr": 0.2}, True, None),
    "gru-binary-adam-dropout-2layers-lrs": (
        {"cell": "gru", "num_layers": 2, "dropout": 0.25},
        {"optimizer": "adam", "weight_decay": 1e-2}, False, [0.03, 0.01, 0.02]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ensemble_equals_one_at_a_time(case, corpus, tmp_path, float64, monkeypatch):
    model_kw, train_kw, multi, lrs = CASES[case]
    if multi:
        three_classes(monkeypatch)
    data, model, train = settings(corpus, model=model_kw, **train_kw)
    seeds = [3, 7, 11]
    hists = ET.train_ensemble(tmp_path / "ens", seeds, data, model, train, lrs=lrs,
                              backend="torch", progress=False, say=None)
    assert sorted(hists) == seeds
    singles = single_runs(tmp_path, seeds, data, model, train, lrs)
    for s in seeds:
        assert_same_member(ET.member_dir(tmp_path / "ens", s), singles[s], train.epochs)
    cfg = json.loads((ET.member_dir(tmp_path / "ens", 3) / "config.json").read_text())
    assert cfg["classes"] == (3 if multi else 2)
    assert cfg["model"].get("cell", "lstm") == model.cell
    # it trains: the members' training losses fall
    for h in hists.values():
        assert h["train_loss"][-1] < h["train_loss"][0]


def test_a_member_alone_and_a_member_continued_by_the_single_run(corpus, tmp_path, float64):
    data, model, train = settings(corpus, epochs=3, model={"dropout": 0.2, "embed_dropout": 0.1},
                                  clip_norm=0.5)
    ET.train_ensemble(tmp_path / "ens", [1, 2, 5], data, model, train, progress=False, say=None)
    # seed 2 trained alone by the ensemble trainer (E = 1)
    ET.train_ensemble(tmp_path / "alone", [2], data, model, train, progress=False, say=None)
    assert_same_member(ET.member_dir(tmp_path / "ens", 2), ET.member_dir(tmp_path / "alone", 2),
                       3)
    # a member folder stopped at epoch 2 is continued by the single run's trainer to epoch 3
    short = dataclasses.replace(train, epochs=2)
    ET.train_ensemble(tmp_path / "short", [1, 5], data, model, short, progress=False, say=None)
    member = ET.member_dir(tmp_path / "short", 5)
    said = []
    TR.train_run(member, dataclasses.replace(data, seed=5), model,
                 dataclasses.replace(train, seed=5), progress=False, say=said.append)
    assert said == [f"resuming {member} from epoch 2 (epoch_0002.safetensors + "
                    "optimizer_0002.safetensors)"]
    assert_same_member(member, ET.member_dir(tmp_path / "ens", 5), 3)


def test_a_killed_ensemble_resumes_to_the_identical_history(corpus, tmp_path):
    data, model, train = settings(corpus, epochs=4, model={"cell": "gru", "dropout": 0.2},
                                  optimizer="adamw", weight_decay=0.01, clip_norm=1.0)
    full = ET.train_ensemble(tmp_path / "full", [4, 9], data, model, train, progress=False,
                             say=None)

    def stop(epoch, metrics):
        assert sorted(metrics) == [4, 9] and metrics[4]["epoch"] == epoch
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ET.train_ensemble(tmp_path / "killed", [4, 9], data, model, train, on_epoch=stop,
                          progress=False, say=None)
    assert TR.read_history(ET.member_dir(tmp_path / "killed", 9))["epoch"] == [0, 1, 2]
    said = []
    again = ET.train_ensemble(tmp_path / "killed", [4, 9], data, model, train, progress=False,
                              say=said.append)
    assert "from epoch 2 " in said[-1]
    np.testing.assert_equal(again, full)  # bit for bit: weights and optimizer states are restored exactly
    for s in (4, 9):
        for e in (3, 4):
            a, _ = read_checkpoint(TR.checkpoint_path(ET.member_dir(tmp_path / "full", s), e))
            b, _ = read_checkpoint(TR.checkpoint_path(ET.member_dir(tmp_path / "killed", s), e))
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_the_newest_epoch_every_member_completed(corpus, tmp_path):
    data, model, train = settings(corpus, epochs=3)
    ET.train_ensemble(tmp_path / "e", [1, 2], data, model, train, progress=False, say=None)
    full = {s: TR.read_history(ET.member_dir(tmp_path / "e", s)) for s in (1, 2)}
    # member 2 lost its epoch-3 checkpoint (killed while writing): both redo epoch 3
    TR.checkpoint_path(ET.member_dir(tmp_path / "e", 2), 3).unlink()
    said = []
    again = ET.train_ensemble(tmp_path / "e", [1, 2], data, model, train, progress=False,
                              say=said.append)
    assert "from epoch 2 " in said[-1]
    np.testing.assert_equal(again, full)


def test_bad_input_is_one_readable_message_before_any_work(corpus, tmp_path, monkeypatch):
    data, model, train = settings(corpus)
    root = tmp_path / "e"
    with pytest.raises(RunError, match="at least one seed"):
        ET.train_ensemble(root, [], data, model, train, progress=False)
    with pytest.raises(RunError, match="seeds repeat: 2"):
        ET.train_ensemble(root, [1, 2, 2], data, model, train, progress=False)
    with pytest.raises(RunError, match="not 'rmsprop'"):
        ET.train_ensemble(root, [1], data, model, dataclasses.replace(train, optimizer="rmsprop"),
                          progress=False)
    with pytest.raises(RunError, match="2 learning rates for 3 seeds"):
        ET.train_ensemble(root, [1, 2, 3], data, model, train, lrs=[0.1, 0.2], progress=False)
    with pytest.raises(RunError, match="backend must be one of"):
        ET.train_ensemble(root, [1], data, model, train, backend="cuda", progress=False)
    monkeypatch.setattr(ET, "available_memory", lambda device: 10_000)
    with pytest.raises(RunError, match=r"training 2 models at once needs about .* GiB .* "
                                       "fewer seeds per process"):
        ET.train_ensemble(root, [1, 2], data, model, train, progress=False)
    monkeypatch.undo()
    assert not root.exists()  # nothing was written
    # an existing member of another architecture: named, before any work
    ET.train_ensemble(root, [1], data, dataclasses.replace(model, hidden_size=7),
                      dataclasses.replace(train, epochs=1), progress=False, say=None)
    with pytest.raises(RunError, match=r"seed 1: .*model.hidden_size: on disk 7, asked for 5"):
        ET.train_ensemble(root, [1, 2], data, model, train, progress=False)
    assert not ET.member_dir(root, 2).exists()


def test_seed_lists_ranges_and_shards():
    assert ET.parse_seeds("1-4") == [1, 2, 3, 4]
    assert ET.parse_seeds("1,3, 5-7") == [1, 3, 5, 6, 7]
    for bad in ("1-", "a", "5-2", ""):
        with pytest.raises(RunError, match="--seeds"):
            ET.parse_seeds(bad)
    assert ET.shard_seeds(list(range(1, 11)), 1, 3) == [2, 5, 8]
    assert ET.shard_seeds([1, 2], 0, 1) == [1, 2]


def test_torchrun_ranks_each_train_their_share(corpus, tmp_path):
    data, model, train = settings(corpus, epochs=1)
    for rank in (0, 1):
        out = ET.train_ensemble(tmp_path / "e", [1, 2, 3], data, model, train, shard=(rank, 2),
                                progress=False, say=None)
        assert sorted(out) == ([1, 3] if rank == 0 else [2])
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["seed-1", "seed-2", "seed-3"]


def test_batched_optimizers_equal_torch_optim_step_by_step(float64):
    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,)]
    for name, kw in (("adam", {"weight_decay": 0.1, "eps": 1e-6}), ("adamw", {"weight_decay": 0.1}),
                     ("sgd", {"momentum": 0.9, "weight_decay": 0.01})):
        lrs = [0.1, 0.03]
        singles = [[torch.randn(s, generator=gen, requires_grad=True) for s in shapes]
                   for _ in lrs]
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
        opts = [cls(ps, lr=lr, **kw) for ps, lr in zip(singles, lrs)]
        stacked = [torch.stack([ps[i].detach() for ps in singles]).requires_grad_(True)
                   for i in range(len(shapes))]
        ens = EO.EnsembleOptimizer(stacked, name, [o.state_dict()["param_groups"] for o in opts])
        for _ in range(4):
            grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in lrs]
            for ps, gs, o in zip(singles, grads, opts):
                for p, g in zip(ps, gs):
                    p.grad = g.clone()
                o.step()
            for i, p in enumerate(stacked):
                p.grad = torch.stack([gs[i] for gs in grads])
            ens.step()
        for e, (ps, o) in enumerate(zip(singles, opts)):
            for i, p in enumerate(ps):
                torch.testing.assert_close(stacked[i][e], p.detach(), rtol=1e-13, atol=1e-15)
            want, got = o.state_dict(), ens.member_state_dict(e)
            assert got["param_groups"] == want["param_groups"]
            for i, st in want["state"].items():
                for k, v in st.items():
                    torch.testing.assert_close(got["state"][i][k], v, rtol=1e-13, atol=1e-15)
        # round trip: a fresh optimizer loads every member's torch state
        again = EO.EnsembleOptimizer(stacked, name, [o.state_dict()["param_groups"] for o in opts])
        for e, o in enumerate(opts):
            again.load_member_state_dict(e, o.state_dict())
        assert again.steps == (4 if name != "sgd" else 0)
        for e in range(len(lrs)):
            got = again.member_state_dict(e)["state"]
            for i, st in ens.member_state_dict(e)["state"].items():
                assert all(torch.equal(got[i][k], v) for k, v in st.items())


def test_clip_grad_norms_equals_clip_grad_norm_per_member(float64):
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(3, 4, 2, generator=gen), torch.randn(3, 5, generator=gen) * 10]
    stacked = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(stacked, grads):
        p.grad = g.clone()
    EO.clip_grad_norms(stacked, 2.0)
    for e in range(3):
        ps = [torch.zeros_like(g[e], requires_grad=True) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = g[e].clone()
        torch.nn.utils.clip_grad_norm_(ps, 2.0)
        for p, s in zip(ps, stacked):
            torch.testing.assert_close(s.grad[e], p.grad, rtol=1e-14, atol=0)


def test_reproduction_init_and_cells():
    torch.manual_seed(0)
    net = SentimentLSTM(50, 8, 6, num_layers=2, cell="gru")
    assert isinstance(net.gru, torch.nn.GRU) and not hasattr(net, "lstm")
    reproduction_init(net)
    emb = net.embedding.weight
    assert torch.all(emb[0] == 0) and emb.abs().max() <= 0.1 and emb[1:].abs().max() > 0.05
    for layer in (0, 1):
        for block in getattr(net.gru, f"weight_hh_l{layer}").split(6):
            torch.testing.assert_close(block @ block.T, torch.eye(6), atol=1e-5, rtol=0)
        assert torch.all(getattr(net.gru, f"bias_ih_l{layer}") == 0)
        assert torch.all(getattr(net.gru, f"bias_hh_l{layer}") == 0)
    assert isinstance(SentimentLSTM(9, 2, 3, cell="rnn_tanh").rnn, torch.nn.RNN)
    assert SentimentLSTM(9, 2, 3, classes=4)(torch.ones(3, 2, dtype=torch.long),
                                             torch.tensor([3, 2])).shape == (2, 4)


def test_single_run_with_dropout_resumes_exactly(corpus, tmp_path):
    data, model, train = settings(corpus, epochs=3, model={"num_layers": 2, "dropout": 0.3,
                                                           "embed_dropout": 0.2}, seed=4)
    full = TR.train_run(tmp_path / "full", data, model, train, progress=False, say=None)

    def stop(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TR.train_run(tmp_path / "cut", data, model, train, on_epoch=stop, progress=False)
    again = TR.train_run(tmp_path / "cut", data, model, train, progress=False, say=None)
    np.testing.assert_equal(again, full)
    cfg = json.loads((tmp_path / "full" / "config.json").read_text())
    assert cfg["model"]["dropout"] == 0.3 and "init" not in cfg["model"]  # defaults unrecorded
    with pytest.raises(TR.store.SettingsMismatch, match="model.dropout: on disk 0.3, asked for 0.0"):
        TR.train_run(tmp_path / "cut", data, dataclasses.replace(model, dropout=0.0), train,
                     progress=False)


def test_cli_trains_an_ensemble(corpus, tmp_path, capsys):
    run = tmp_path / "ens"
    args = ["descent", "train", "--run-dir", str(run), "--data", str(corpus), "--seeds", "1-2",
            "--vocab-size", "30", "--min-count", "1", "--max-len", "10", "--embed-dim", "4",
            "--hidden-size", "5", "--batch-size", "8", "--epochs", "2", "--quiet",
            "--ensemble-backend", "torch", "--cell", "gru", "--data-seed", "7"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"{run / 'seed-1'}: 2 epochs trained" in out and f"{run / 'seed-2'}: 2" in out
    cfg = json.loads((run / "seed-2" / "config.json").read_text())
    assert cfg["train"]["seed"] == 2 and cfg["train"]["data_seed"] == 7
    assert cfg["data"]["seed"] == 7 and cfg["model"]["cell"] == "gru"
    # each member is a run folder the study's sweep and report read unchanged
    member = str(run / "seed-2")
    assert main(["descent", "sweep", "--run-dir", member, "--samples", "4", "--total-steps",
                 "30", "--chunk", "3", "--quiet"]) == 0
    assert main(["descent", "report", "--run-dir", member]) == 0
    assert (run / "seed-2" / "report" / "report.html").is_file()
    capsys.readouterr()
    assert main(args + ["--seeds", "3,3"]) == 2
    assert "seeds repeat: 3" in capsys.readouterr().err
