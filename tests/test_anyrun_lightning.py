"""The PyTorch Lightning callback: runs where Lightning is installed, skipped (with the reason)
where it is not.  The module itself imports without Lightning."""
import importlib.util

import pytest
import torch

import mdesc.anyrun.lightning as lt

HAVE = importlib.util.find_spec("lightning") is not None or \
    importlib.util.find_spec("pytorch_lightning") is not None


@pytest.mark.skipif(HAVE, reason="Lightning is installed: the missing-Lightning message is not shown")
def test_without_lightning_the_callback_says_how_to_get_it():
    with pytest.raises(ImportError, match="pip install lightning"):
        lt.StabilityCallback  # noqa: B018


@pytest.mark.skipif(not HAVE, reason="PyTorch Lightning is not installed here (pip install "
                                     "lightning); StabilityMonitor itself needs no Lightning")
def test_callback_records_every_epoch_with_logged_val_loss(tmp_path):
    pl = lt.import_lightning()
    from mdesc.anyrun import StabilityMonitor, SweepStore

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(10, 3)
            self.lstm = torch.nn.LSTM(3, 6, batch_first=True)
            self.fc = torch.nn.Linear(6, 1)

        def forward(self, ids):
            return self.fc(self.lstm(self.embedding(ids))[0][:, -1]).squeeze(-1)

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.binary_cross_entropy_with_logits(self(x), y)

        def training_step(self, batch, i):
            return self._loss(batch)

        def validation_step(self, batch, i):
            self.log("val_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randint(0, 10, (32, 7))
    y = (x == 1).sum(1).remainder(2).float()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    probe = x[:4]
    cb = lt.StabilityCallback(tmp_path / "stab", probe, zero_input_steps=30)
    module = Module()
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, data, data)
    recs = SweepStore(tmp_path / "stab").records()
    assert list(recs) == [0, 1, 2] and len(cb.records) == 3
    assert all(r["test_loss"] is not None for r in recs.values())  # val_loss overlaid
    # the last record is the trained module's measurement
    again = StabilityMonitor(tmp_path / "again", probe, zero_input_steps=30).step(module, 2)
    assert again["lyapunov_max"] == recs[2]["lyapunov_max"]
    assert again["log_distance"] == recs[2]["log_distance"]
