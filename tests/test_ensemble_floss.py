"""``--floss TARGET,WEIGHT`` with ``--seeds`` (issue 28): a float64 ensemble trained with gradient
flossing is, member by member, the single ``--floss`` runs of its seeds to rounding (history with
floss_lambda and floss_terms, weights, optimizer state); a killed flossing ensemble resumes to the
identical history; the memory check counts the flossing graph; bad input is one readable message
before any work; the command line trains a flossing ensemble."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from mdesc.cli import main
from mdesc.core.floss import FlossingPenalty
from mdesc.descent import run as TR
from mdesc.descent.model import RunError, SentimentLSTM
from mdesc.ensemble import floss as EF
from mdesc.ensemble import train as ET
from mdesc.store import read_checkpoint
from test_ensemble_train import (assert_same_member, corpus, float64, settings,  # noqa: F401
                                 single_runs)

CASES = {  # model, train, backend: every cell; dropout, clipping, depth; flossing steps on
    # both sides of an epoch's end (every 2 of 3 steps an epoch) and on every step
    "lstm-2layers-dropout-clip-adam": (
        {"cell": "lstm", "num_layers": 2, "dropout": 0.2, "embed_dropout": 0.1},
        {"optimizer": "adam", "clip_norm": 0.5, "floss": "0.3,5", "floss_every": 2,
         "floss_probe": 4}, "torch"),
    "gru-adamw-every-step-extension": (
        {"cell": "gru"},
        {"optimizer": "adamw", "weight_decay": 0.1, "floss": "-0.2,2", "floss_every": 1,
         "floss_probe": 3}, "auto"),
    "rnn_tanh-sgd-momentum": (
        {"cell": "rnn_tanh", "init": "reproduction"},
        {"optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "floss": "0,1", "floss_every": 2,
         "floss_probe": 5}, "torch"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flossing_ensemble_equals_the_single_flossing_runs(case, corpus, tmp_path, float64):
    model_kw, train_kw, backend = CASES[case]
    data, model, train = settings(corpus, epochs=2, model=model_kw, **train_kw)
    seeds = [3, 7]
    hists = ET.train_ensemble(tmp_path / "ens", seeds, data, model, train, backend=backend,
                              progress=False, say=None)
    singles = single_runs(tmp_path, seeds, data, model, train)
    for s in seeds:
        # the history's keys include floss_lambda and floss_terms, compared to rounding
        assert_same_member(ET.member_dir(tmp_path / "ens", s), singles[s], train.epochs)
    every = train.floss_every
    for h in hists.values():
        assert math.isnan(h["floss_lambda"][0]) and math.isnan(h["floss_terms"][0])
        # 20 reviews / batch 8 = 3 steps per epoch: global steps 0-2 and 3-5
        assert h["floss_terms"][1:] == [sum(1 for t in range(3 * (e - 1), 3 * e) if t % every == 0)
                                        for e in (1, 2)]
        assert all(math.isfinite(v) for v in h["floss_lambda"][1:])
    # the penalty acts: the same ensemble without it ends elsewhere
    plain = ET.train_ensemble(tmp_path / "plain", seeds, data, model,
                              dataclasses.replace(train, floss=None), backend=backend,
                              progress=False, say=None)
    for s in seeds:
        assert plain[s]["train_loss"][0] == hists[s]["train_loss"][0]
        assert plain[s]["train_loss"][2] != hists[s]["train_loss"][2]
        assert "floss_lambda" not in plain[s]


def test_a_killed_flossing_ensemble_resumes_to_the_identical_history(corpus, tmp_path):
    # float32 (the default dtype); every = 2 puts flossing steps on both sides of the epoch end
    data, model, train = settings(corpus, epochs=2, model={"cell": "gru", "dropout": 0.2},
                                  clip_norm=1.0, floss="0.5,10", floss_every=2, floss_probe=4)
    full = ET.train_ensemble(tmp_path / "full", [4, 9], data, model, train, progress=False,
                             say=None)
    assert [h["floss_terms"][1:] for h in full.values()] == [[2, 1]] * 2

    def stop(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ET.train_ensemble(tmp_path / "killed", [4, 9], data, model, train, on_epoch=stop,
                          progress=False, say=None)
    said = []
    again = ET.train_ensemble(tmp_path / "killed", [4, 9], data, model, train, progress=False,
                              say=said.append)
    assert "from epoch 1 " in said[-1]
    assert json.dumps(again) == json.dumps(full)  # NaN-aware: bit for bit
    for s in (4, 9):
        a, _ = read_checkpoint(TR.checkpoint_path(ET.member_dir(tmp_path / "full", s), 2))
        b, _ = read_checkpoint(TR.checkpoint_path(ET.member_dir(tmp_path / "killed", s), 2))
        assert all(torch.equal(a[k], b[k]) for k in a)


def _saved_bytes(fn) -> int:
    """Bytes autograd saves for backward while ``fn`` runs (storages counted once; tensors of
    forward-mode duals, whose storage cannot be read, by their size)."""
    seen = {}

    def pack(t):
        try:
            key = (t.untyped_storage().data_ptr(), t.dtype)
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            seen[("dual", len(seen))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@pytest.mark.parametrize("cell,layers,hidden,probe,equal", [
    ("lstm", 1, 16, 8, True), ("gru", 2, 8, 4, True), ("rnn_tanh", 1, 32, 6, True),
    ("lstm", 2, 8, 5, False)])
def test_the_flossing_memory_estimate_covers_the_graph(corpus, cell, layers, hidden, probe,
                                                       equal):
    data, model, train = settings(corpus, model={"cell": cell, "num_layers": layers,
                                                 "hidden_size": hidden},
                                  floss="0,1", floss_probe=probe)
    net = SentimentLSTM(50, model.embed_dim, hidden, layers, cell=cell)
    T = data.max_len
    ids = torch.randint(1, 50, (T, probe))
    # every review as long as max_len, or lengths down to 1 (the longest zero-input phases)
    lengths = torch.full((probe,), T) if equal else torch.linspace(1, T, probe).long()
    penalty = FlossingPenalty(0.0, 1.0, probe=ids, lengths=lengths)
    measured = _saved_bytes(lambda: penalty(net, step=0))
    estimate = EF.floss_memory(data, model, train, itemsize=4)
    # an upper bound; within a factor 4 of the graph of reviews of different lengths, and
    # (one group of lengths: one copy of the weights per step, not P) within P + 4 of the rest
    assert measured <= estimate <= (4 if not equal else probe + 4) * measured
    assert EF.floss_memory(data, model, dataclasses.replace(train, floss=None)) == 0
    assert (ET.memory_estimate(3, data, model, train)
            >= ET.memory_estimate(3, data, model, dataclasses.replace(train, floss=None))
            + estimate)


def test_bad_flossing_input_is_one_readable_message_before_any_work(corpus, tmp_path,
                                                                   monkeypatch):
    data, model, train = settings(corpus, floss="0,1", floss_probe=4)
    root = tmp_path / "e"
    for bad, match in (({"floss": "0"}, "--floss needs TARGET,WEIGHT"),
                       ({"floss": "0,-1"}, "finite WEIGHT >= 0"),
                       ({"floss_every": 0}, "--floss-every and --floss-probe must be at least 1"),
                       ({"floss_probe": 0}, "--floss-every and --floss-probe must be at least 1")):
        with pytest.raises(RunError, match=match):
            ET.train_ensemble(root, [1, 2], data, model, dataclasses.replace(train, **bad),
                              progress=False)
    plain = ET.memory_estimate(2, data, model, dataclasses.replace(train, floss=None))
    monkeypatch.setattr(ET, "available_memory", lambda device: plain + 1)
    with pytest.raises(RunError, match=r"x 2 models, plus a flossing graph of 4 probe reviews x "
                                       r"10 \+ 100 steps\) .* or --floss-probe"):
        ET.train_ensemble(root, [1, 2], data, model, train, progress=False)
    assert not root.exists()
    # a member started without flossing cannot join a flossing ensemble (and vice versa)
    monkeypatch.undo()
    ET.train_ensemble(root, [1], data, model, dataclasses.replace(train, floss=None, epochs=1),
                      progress=False, say=None)
    with pytest.raises(RunError, match=r"seed 1: .*train.floss: on disk None, asked for '0,1'"):
        ET.train_ensemble(root, [1, 2], data, model, train, progress=False)
    assert not ET.member_dir(root, 2).exists()


def test_cli_trains_a_flossing_ensemble(corpus, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "ens"
    args = ["descent", "train", "--run-dir", str(run), "--data", str(corpus), "--seeds", "1-2",
            "--vocab-size", "30", "--min-count", "1", "--max-len", "10", "--embed-dim", "4",
            "--hidden-size", "5", "--batch-size", "8", "--epochs", "2", "--quiet",
            "--floss", "0.5,10", "--floss-every", "1", "--floss-probe", "4"]
    assert main(args) == 0
    assert f"{run / 'seed-2'}: 2 epochs trained" in capsys.readouterr().out
    for s in (1, 2):
        cfg = json.loads((run / f"seed-{s}" / "config.json").read_text())
        assert cfg["train"]["floss"] == "0.5,10" and cfg["train"]["floss_probe"] == 4
        h = TR.read_history(run / f"seed-{s}")
        assert h["floss_terms"][1:] == [3, 3]
    # the member continues alone with the single run's command
    member = ["--run-dir", str(run / "seed-2"), "--seed", "2", "--data-seed", "1"]
    single = [a for a in args if a not in ("--seeds", "1-2")]
    single = single[:2] + member + single[4:]
    single[single.index("--epochs") + 1] = "3"
    assert main(single) == 0
    assert TR.read_history(run / "seed-2")["floss_terms"][1:] == [3, 3, 3]
