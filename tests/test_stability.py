"""The finite-perturbation analysis against an independent computation with nn.LSTM."""
from __future__ import annotations

import math

import pytest
import torch

import mdesc
from mdesc.core import reference
from lstm_cases import make_lstm
from utils import devices


@devices
def test_distance_matches_nn_lstm_twin_runs(device):
    lstm = make_lstm(3, 6, 2, gain=4.0, seed=3)
    seq = torch.randn(10, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([10, 7, 3, 10])
    d = mdesc.asymptotic_distance(lstm.to(device), seq.to(device), lengths=lengths.to(device), zero_input_steps=30, perturbation=1e-3,
                                  perturb_at="start", seed=5, dtype=torch.float64)
    assert d.settings["perturb_at"] == "start" and not d.collapsed.any()
    lstm = lstm.cpu()
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


@devices
def test_drive_end_twin_matches_nn_lstm(device):
    lstm = make_lstm(3, 6, 2, gain=4.0, seed=3)
    seq = torch.randn(10, 4, 3, dtype=torch.float64)
    lengths = torch.tensor([10, 7, 3, 7])
    d = mdesc.asymptotic_distance(lstm.to(device), seq.to(device), lengths=lengths, zero_input_steps=30, perturbation=1e-3,
                                  seed=5, dtype=torch.float64)
    assert d.settings["perturb_at"] == "drive_end"  # the default
    lstm = lstm.cpu()
    noise = 1e-3 * torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for b in range(4):
        l = int(lengths[b])
        _, (h_l, c_l) = lstm(seq[:l, b])
        rest = torch.zeros(40 - l, 3, dtype=torch.float64)
        _, (h, _) = lstm(rest, (h_l, c_l))
        _, (h2, _) = lstm(rest, (h_l + noise[:, b], c_l))
        expected = float((h2[-1] - h[-1]).norm()) + math.exp(-15)
        assert abs(float(d.distance[b]) - expected) <= 1e-9 * expected
        assert abs(float(d.reduced_sum[b]) - float(h[-1].sum())) <= 1e-12
    assert not d.collapsed.any()


@devices
def test_drive_end_and_start_twins_differ_exactly_where_the_drive_collapses_them(device):
    """A drive contracting by e^-0.33 per step erases a t = 0 perturbation of 1e-6 to the last bit
    within 300 steps, but not within 3; the zero-input phase after it is chaotic."""
    lstm = make_lstm(8, 32, 1, gain=8.0, seed=0).to(device)
    seq = 5 * torch.randn(300, 4, 8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    seq = seq.to(device)
    kw = dict(lengths=[300, 3, 300, 3], zero_input_steps=300)
    start = mdesc.asymptotic_distance(lstm, seq, perturb_at="start", **kw)
    end = mdesc.asymptotic_distance(lstm, seq, perturb_at="drive_end", **kw)
    assert start.collapsed.tolist() == [True, False, True, False]
    assert not end.collapsed.any()
    floor = math.exp(-15)
    assert start.distance.tolist()[0] == floor and start.distance.tolist()[2] == floor
    # the perturbation survives the (weakly chaotic) zero-input phase wherever a twin enters it apart
    assert (start.distance[[1, 3]].log() > -14.99).all()
    assert (end.distance.log() > -14.99).all()
    assert bool(end.chaotic) and not bool(end.ordered)
    # a collapsed twin is never reported as ordered, even where every distance is at the floor
    only_collapsed = mdesc.asymptotic_distance(lstm, seq[:, [0, 2]], perturb_at="start", zero_input_steps=300)
    assert float(only_collapsed.log_distance) == -15.0 and only_collapsed.collapsed.all()
    assert not bool(only_collapsed.ordered) and not bool(only_collapsed.chaotic)


@devices
def test_ordered_model_sits_at_the_floor_and_chaotic_does_not(device):
    seq = torch.zeros(1, 8, 4, device=device)
    ordered = make_lstm(4, 64, 1, gain=0.5, seed=5, bias=False, dtype=torch.float32).to(device)
    chaotic = make_lstm(4, 64, 1, gain=20.0, seed=5, bias=False, dtype=torch.float32).to(device)
    h0 = 0.1 * torch.randn(1, 8, 64).to(device)
    d_ord = mdesc.asymptotic_distance(ordered, seq, zero_input_steps=1599, h0=h0, perturb_at="start")
    d_cha = mdesc.asymptotic_distance(chaotic, seq, zero_input_steps=1599, h0=h0, perturb_at="start")
    assert float(d_ord.log_distance) == -15.0 and bool(d_ord.ordered)
    assert float(d_cha.log_distance) > -5.0 and not bool(d_cha.ordered) and bool(d_cha.chaotic)
    assert not d_ord.collapsed.any() and not d_cha.collapsed.any()


@devices
def test_checkpoints_and_reference_agree(device):
    models = [make_lstm(3, 5, 1, gain=g, seed=1) for g in (0.5, 3.0, 6.0)]
    seq = torch.randn(6, 3, 3, dtype=torch.float64)
    d = mdesc.asymptotic_distance([m.to(device) for m in models], seq.to(device), zero_input_steps=20,
                                  dtype=torch.float64)
    models = [m.cpu() for m in models]
    r = reference.asymptotic_distance(models, seq, zero_input_steps=20, dtype=torch.float64)
    assert d.collapsed.shape == (3, 3)
    assert d.distance.shape == (3, 3) and d.log_distance.shape == (3,)
    torch.testing.assert_close(d.distance, r.distance, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(d.reduced_sum, r.reduced_sum)
    for c, m in enumerate(models):
        single = mdesc.asymptotic_distance(m, seq, zero_input_steps=20, dtype=torch.float64)
        torch.testing.assert_close(single.distance, d.distance[c], rtol=1e-9, atol=1e-15)


def test_bad_perturb_at_is_refused():
    with pytest.raises(ValueError, match="perturb_at must be 'drive_end'"):
        mdesc.asymptotic_distance(torch.nn.LSTM(3, 4), torch.randn(5, 2, 3), perturb_at="end")
