"""The finite-perturbation analysis against an independent computation with nn.LSTM."""
from __future__ import annotations

import math

import torch

import mdesc
from mdesc.core import reference
from lstm_cases import make_lstm


def test_distance_matches_nn_lstm_twin_runs():
    lstm = make_lstm(3, 6, 2, gain=4.0, seed=3)
    seq = torch.randn(10, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([10, 7, 3, 10])
    d = mdesc.asymptotic_distance(lstm, seq, lengths=lengths, zero_input_steps=30, perturbation=1e-3,
                                  seed=5, dtype=torch.float64)
    noise = 1e-3 * torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected_d, expected_sum = [], []
    for b in range(4):
        x = torch.cat([seq[: lengths[b], b], torch.zeros(40 - int(lengths[b]), 3, dtype=torch.float64)])
        zeros = torch.zeros(2, 6, dtype=torch.float64)
        _, (h, _) = lstm(x, (zeros, zeros))
        _, (h2, _) = lstm(x, (zeros + noise[:, b], zeros))
        expected_d.append(float((h2[-1] - h[-1]).norm()) + math.exp(-15))
        expected_sum.append(float(h[-1].sum()))
    torch.testing.assert_close(d.distance, torch.tensor(expected_d, dtype=torch.float64), rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(d.reduced_sum, torch.tensor(expected_sum, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.log_distance, torch.tensor(expected_d, dtype=torch.float64).log().mean())


def test_ordered_model_sits_at_the_floor_and_chaotic_does_not():
    seq = torch.zeros(1, 8, 4)
    ordered = make_lstm(4, 64, 1, gain=0.5, seed=5, bias=False, dtype=torch.float32)
    chaotic = make_lstm(4, 64, 1, gain=20.0, seed=5, bias=False, dtype=torch.float32)
    h0 = 0.1 * torch.randn(1, 8, 64)
    d_ord = mdesc.asymptotic_distance(ordered, seq, zero_input_steps=1599, h0=h0)
    d_cha = mdesc.asymptotic_distance(chaotic, seq, zero_input_steps=1599, h0=h0)
    assert float(d_ord.log_distance) == -15.0 and bool(d_ord.ordered)
    assert float(d_cha.log_distance) > -5.0 and not bool(d_cha.ordered)


def test_checkpoints_and_reference_agree():
    models = [make_lstm(3, 5, 1, gain=g, seed=1) for g in (0.5, 3.0, 6.0)]
    seq = torch.randn(6, 3, 3, dtype=torch.float64)
    d = mdesc.asymptotic_distance(models, seq, zero_input_steps=20, dtype=torch.float64)
    r = reference.asymptotic_distance(models, seq, zero_input_steps=20, dtype=torch.float64)
    assert d.distance.shape == (3, 3) and d.log_distance.shape == (3,)
    torch.testing.assert_close(d.distance, r.distance, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(d.reduced_sum, r.reduced_sum)
    for c, m in enumerate(models):
        single = mdesc.asymptotic_distance(m, seq, zero_input_steps=20, dtype=torch.float64)
        torch.testing.assert_close(single.distance, d.distance[c], rtol=1e-9, atol=1e-15)
