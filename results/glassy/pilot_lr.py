"""Learning-rate pilot of the recorded glassy sweep (run before it, as the issue asks).

Trains (or reloads) one net per width (4, 16, 32; seed 0) at depths 1 and 3 for 3000 SGD steps
on all training chorales (windows of 64 steps, 4 windows per update) at several learning rates,
and plots the training loss and the largest minibatch-loss spike ratio:

    OMP_NUM_THREADS=1 .venv/bin/python results/glassy/pilot_lr.py   # -> results/glassy/pilot_lr.png

Depth 3 at lr 0.2 and 0.5 was not finished (stopped to free the CPU for the sweep).
"""
import torch

from mdesc import glassy
from mdesc.data import chorales as ch
from mdesc.glassy.figures import plot_lr_pilot

RUNS = {1: (0.05, 0.1, 0.2, 0.5), 3: (0.05, 0.1)}

if __name__ == "__main__":
    torch.set_num_threads(1)
    s = ch.load_chorales(progress=False)
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    tr, te = s.split(0.2, seed=0)
    tok, lens, _ = ch.chunk_tokens(tr, vocab, 64)
    ttok, tlens, _ = ch.chunk_tokens(te, vocab, 64)
    groups = {}
    for depth, lrs in RUNS.items():
        for lr in lrs:
            cfg = glassy.EnsembleConfig(depth=depth, widths=(4, 16, 32), seeds=(0, 0, 0),
                                        steps=3000, lr=lr, batch_size=4, n_records=30,
                                        waiting_times=(30, 300), n_lags=8)
            groups[depth, lr] = glassy.train_ensemble(
                f"runs/glassy-pilot/d{depth}_lr{lr}", tok.transpose(1, 0, 2), lens, cfg,
                vocab.sizes, ttok.transpose(1, 0, 2), tlens)
    plot_lr_pilot("results/glassy/pilot_lr.png", groups)
