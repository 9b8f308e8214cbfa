"""Benchmark: SGD model-steps per second, batched ensemble vs one net at a time (study 2).

A "model-step" is one SGD update of one net on a minibatch of chorale windows. One at a time =
``VoiceRNN`` (PyTorch ``nn.RNN``) + ``torch.optim.SGD``, the loop of ``train_glassy_run``;
batched = ``EnsembleRNN`` updating all nets of a group in one forward/backward pass (the loop of
``train_ensemble``). Both on the same real data (all four-part chorales, 64-step windows; the
shipped fixture if music21 is absent), same widths, batch and window.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_glassy.py [--threads 1] [--steps 30] \
        [--out benchmarks/results/glassy.md]

Prints a Markdown table (and writes it with --out).
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import time

import numpy as np
import torch


def _cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _data(window: int):
    from mdesc.data import chorales as ch
    try:
        s = ch.load_chorales(progress=False)
        source = f"all {len(s)} four-part chorales"
    except ImportError:
        s = ch.load_fixture_chorales()
        source = "fixture chorales"
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    tok, lens, _ = ch.chunk_tokens(s, vocab, window)
    return torch.as_tensor(tok.transpose(1, 0, 2).copy()), torch.as_tensor(lens), vocab, source


def time_one_at_a_time(tok, lens, vocab, widths, depth, batch, steps, lr=0.05) -> float:
    """Model-steps per second training each net alone (all nets of the group in turn)."""
    from mdesc.glassy.model import VoiceRNN
    from mdesc.glassy.run import batch_indices

    n = tok.shape[1]
    total = 0.0
    for i, w in enumerate(widths):
        torch.manual_seed(i)
        model = VoiceRNN(vocab.sizes, w, depth)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for step in range(steps + 2):
            if step == 2:                         # two warm-up updates, not timed
                t0 = time.perf_counter()
            idx = torch.as_tensor(batch_indices(i, step, n, batch))
            opt.zero_grad(set_to_none=True)
            model.loss(tok[:, idx], lens[idx]).backward()
            opt.step()
        total += time.perf_counter() - t0
    return len(widths) * steps / total


def time_batched(tok, lens, vocab, widths, depth, batch, steps, lr=0.05) -> float:
    """Model-steps per second training all nets as one ensemble (``train_ensemble``'s loop)."""
    from mdesc.glassy.model import EnsembleRNN
    from mdesc.glassy.run import batch_indices

    n = tok.shape[1]
    seeds = list(range(len(widths)))
    ens = EnsembleRNN.from_seeds(vocab.sizes, widths, depth, seeds, dtype=torch.float32)
    for step in range(steps + 2):
        if step == 2:
            t0 = time.perf_counter()
        idx = torch.as_tensor(np.stack([batch_indices(s, step, n, batch) for s in seeds]))
        losses = ens.losses(tok[:, idx], lens[idx])
        for p in ens.params:
            p.grad = None
        losses.sum().backward()
        with torch.no_grad():
            for p, mk in zip(ens.params, ens.masks):
                p.add_(p.grad * mk, alpha=-lr)
    return len(widths) * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="timed updates per measurement")
    ap.add_argument("--batch", type=int, default=4, help="windows per minibatch")
    ap.add_argument("--window", type=int, default=32, help="16th-note steps per window")
    ap.add_argument("--seeds", type=int, default=3, help="nets per width in the ensemble")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tok, lens, vocab, source = _data(args.window)
    full = [3, 4, 6, 8, 11, 16, 23, 32]          # the recorded sweep's widths
    cases = [(1, [8]), (1, [32]), (1, full), (2, full), (3, full)]  # (depth, widths)
    lines = [f"Machine: {_cpu_name()}, torch {torch.__version__}, {args.threads} thread(s); "
             f"data: {source}, windows of {args.window} steps, minibatch {args.batch}; "
             f"{args.seeds} seeds per width; float32.", "",
             "| depth | widths | nets | one at a time (model-steps/s) | batched (model-steps/s) "
             "| speed-up |", "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for depth, ws in cases:
        widths = [w for w in ws for _ in range(args.seeds)]
        one_steps = max(5, args.steps // len(widths) * 2)
        one = time_one_at_a_time(tok, lens, vocab, ws, depth, args.batch, one_steps)
        bat = time_batched(tok, lens, vocab, widths, depth, args.batch, args.steps)
        row = (f"| {depth} | {','.join(map(str, ws))} | {len(widths)} | {one:.0f} | {bat:.0f} "
               f"| {bat / one:.1f}x |")
        lines.append(row)
        print(row, flush=True)
    if args.out:
        from mdesc.store import atomic_write_text
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
