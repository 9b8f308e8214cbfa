"""A researcher's own run, as people write it (issue 23): a character-level model trained on a
text with a plain loop, checkpoints saved every epoch in the three usual layouts (a bare state
dict, ``{"model", "optimizer"}``, a Lightning-style ``.ckpt`` dict), analysed by
``mdesc analyse-run`` with no architecture flags, the same tables from every layout."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from mdesc.anyrun import load_table
from mdesc.cli import main

TEXT = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness. ") * 4
EPOCHS, T, B, Z = 3, 12, 4, 25


class CharModel(nn.Module):
    def __init__(self, vocab, cell):
        super().__init__()
        self.emb = nn.Embedding(vocab, 6)
        self.rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell](6, 10, batch_first=True)
        self.out = nn.Linear(10, vocab)

    def forward(self, x):
        return self.out(self.rnn(self.emb(x))[0])


def _train(root, cell):
    """Three epochs of next-character prediction; every epoch saved in the three layouts."""
    torch.manual_seed(0)
    chars = sorted(set(TEXT))
    data = torch.tensor([chars.index(c) for c in TEXT])
    model = CharModel(len(chars), cell)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for layout in ("bare", "dict", "lightning"):
        (root / layout).mkdir()
    rows = ["epoch,val_loss,train_loss"]
    for epoch in range(EPOCHS):
        for start in range(0, len(data) - T - 1, T * B):
            idx = torch.arange(start, min(start + T * B, len(data) - T - 1), T)
            x = torch.stack([data[i:i + T] for i in idx])
            y = torch.stack([data[i + 1:i + T + 1] for i in idx])
            loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = nn.functional.cross_entropy(model(data[None, -T - 1:-1])[0], data[-T:])
        rows.append(f"{epoch},{val.item()},{loss.item()}")
        state = model.state_dict()
        torch.save(state, root / "bare" / f"epoch_{epoch}.pt")
        torch.save({"model": state, "optimizer": opt.state_dict(), "epoch": epoch},
                   root / "dict" / f"checkpoint_{epoch}.pth")
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()},
                    "optimizer_states": [opt.state_dict()], "epoch": epoch,
                    "global_step": 10 * (epoch + 1), "pytorch-lightning_version": "2.4.0"},
                   root / "lightning" / f"epoch={epoch}-step={10 * (epoch + 1)}.ckpt")
    torch.save(data[: B * 16].reshape(B, 16), root / "probe.pt")  # validation text, as ids
    (root / "metrics.csv").write_text("\n".join(rows) + "\n")
    return len(chars)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_three_layouts_analysed_without_architecture_flags(tmp_path, capsys, cell):
    vocab = _train(tmp_path, cell)
    tables = {}
    for layout in ("bare", "dict", "lightning"):
        out = tmp_path / f"analysis_{layout}"
        extra = ["--step-pattern", r"epoch=(\d+)"] if layout == "lightning" else []
        assert main(["analyse-run", str(tmp_path / layout), "--out", str(out), "--probe",
                     str(tmp_path / "probe.pt"), "--zero-input-steps", str(Z), "--no-progress",
                     "--loss-name", "cross-entropy", "--probe-name", "validation passages",
                     "--task", "next-character prediction",
                     "--metrics", str(tmp_path / "metrics.csv"), *extra]) == 0
        said = capsys.readouterr().out
        assert (f"cell={cell}, vocab_size={vocab}, embed_dim=6, hidden_size=10, num_layers=1, "
                f"output_size={vocab}") in said
        tables[layout] = load_table(out)
        assert tables[layout]["epoch"].tolist() == list(range(EPOCHS))
        assert np.isfinite(tables[layout]["lyapunov_max"]).all()
        assert np.isfinite(tables[layout]["test_loss"]).all()
        # the report speaks of this run (a language model), not of study 1's reviews
        report = (out / "report" / "report.html").read_text(encoding="utf-8")
        assert "validation passages" in report
        assert "review" not in report.lower() and "binary cross-entropy" not in report
        # its header says the task and the losses; its loss is the metrics' validation loss
        assert ("<p class='sub'>next-character prediction · loss: <b>cross-entropy</b> · "
                "held-out loss: <b>validation loss</b> · probe: validation passages</p>") in report
        assert "test loss" not in report.lower() and "test-loss" not in report.lower()
        assert "global validation-loss minimum" in report and "Validation-loss minima" in report
        summary = json.loads((out / "report" / "summary.json").read_text(encoding="utf-8"))
        assert summary["description"]["loss"] == "cross-entropy"
        assert summary["description"]["metric"] == "validation loss"
        assert summary["description"]["task"] == "next-character prediction"
        config = json.loads((out / "config.json").read_text())
        assert config["model"]["spec"]["cell"] == cell
    for layout in ("dict", "lightning"):  # the same weights, whatever the layout
        for key in ("lyapunov_max", "log_distance", "reduced_sum"):
            np.testing.assert_array_equal(tables[layout][key], tables["bare"][key])
