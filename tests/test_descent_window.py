"""Issue 10 item 1, in the study: a checkpoint whose drive contracts strongly and whose
zero-input dynamics is chaotic is labelled chaotic by the sweep's default zero-input window,
and the old window (drive + zero input counted together) gets it wrong."""
import numpy as np
import torch

from mdesc.descent import folder
from mdesc.sweep import analysis
from mdesc.descent import run as TR
from mdesc.descent import sweep as SW
from mdesc.data.sentiment import TextSettings
from test_sentiment import make_aclimdb


def _chaotic_checkpoint(run):
    """Overwrite epoch 0 with weights whose autonomous dynamics is chaotic (W_hh gain 5,
    H = 32) and whose large input embeddings saturate the gates during the drive."""
    config = TR.read_config(run)
    net = TR.build_model(config)
    g = torch.Generator().manual_seed(1)
    H = config["model"]["hidden_size"]
    with torch.no_grad():
        net.lstm.weight_hh_l0.copy_(torch.randn(net.lstm.weight_hh_l0.shape, generator=g)
                                    * 5.0 / H ** 0.5)
        net.lstm.weight_ih_l0.copy_(torch.randn(net.lstm.weight_ih_l0.shape, generator=g))
        net.lstm.bias_hh_l0.zero_()
        net.lstm.bias_ih_l0.zero_()
        net.embedding.weight[1:] = torch.randn(net.embedding.weight[1:].shape, generator=g) * 10
    folder.DescentRun(run).save_checkpoint(0, net.state_dict(), {"epoch": 0})


def test_zero_input_window_labels_the_chaotic_autonomous_dynamics(tmp_path):
    root = make_aclimdb(tmp_path, n_train=8, n_test=8, min_words=120, max_words=140)
    run = tmp_path / "run"
    data = TextSettings(source=str(root), vocab_size=30, min_count=1, max_len=100, seed=1)
    TR.train_run(run, data, TR.ModelSettings(embed_dim=4, hidden_size=32),
                 TR.TrainSettings(epochs=0, seed=0), progress=False, say=None)
    _chaotic_checkpoint(run)
    common = dict(n_samples=8, total_steps=400, seed=0, perturbation=1e-3)
    SW.sweep_run(run, SW.SweepSettings(**common), progress=False)
    new = SW.load_table(run)
    old_dir = tmp_path / "old"
    old_dir.mkdir()
    for name in ("config.json", "data.safetensors", "vocab.json", "checkpoints"):
        src = run / name
        (old_dir / name).symlink_to(src, target_is_directory=src.is_dir())
    SW.sweep_run(old_dir, SW.SweepSettings(**common, window="all", twins=["start"]),
                 progress=False)
    old = SW.load_table(old_dir)

    lam_zero, lam_drive, lam_all = (new["lyapunov_max"][0], new["lyapunov_max_driven"][0],
                                    old["lyapunov_max"][0])
    assert lam_drive < -0.2 < 0 < lam_zero          # a contracting drive, chaotic autonomous phase
    assert lam_all < 0                              # averaged over both: the sign flips
    a_new = analysis.analyse(new, measure="lyapunov")
    a_old = analysis.analyse(old, measure="lyapunov")
    assert a_new.labels["lyapunov"].tolist() == [1]  # chaotic: right
    assert a_old.labels["lyapunov"].tolist() == [0]  # "ordered": the old window is wrong
    # the drive-end twin of the zero-input phase separates: D~ above its floor too
    assert new["log_distance_drive_end"][0] > SW.LOG_DISTANCE_FLOOR + 1
    assert np.isfinite(new["log_distance_start"][0])
