"""The counted window (docs/conventions.md §4): the zero-input phase of each sequence, exactly."""
from __future__ import annotations

import pytest
import torch

import mdesc
from mdesc.core import reference
from lstm_cases import make_lstm
from utils import device_dtype, devices, tol

F64 = dict(dtype=torch.float64)


def contracting_drive_chaotic_rest():
    """A random LSTM at gain 8 driven by strong noise: the drive saturates the gates and contracts
    (lambda ~ -0.33 per step) while the model left to zero input is chaotic (lambda ~ +0.06)."""
    lstm = make_lstm(8, 32, 1, gain=8.0, seed=0)
    seq = 5 * torch.randn(300, 4, 8, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    return lstm, seq


@devices
def test_chaotic_zero_input_phase_behind_a_contracting_drive(device):
    lstm, seq = contracting_drive_chaotic_rest()
    lstm, seq = lstm.to(device), seq.to(device)
    kw = dict(zero_input_steps=300, **F64)
    old = mdesc.max_lyapunov(lstm, seq, **kw)
    new = mdesc.max_lyapunov(lstm, seq, window="zero_input", **kw)
    # the whole-run average calls every sequence ordered; the zero-input phase is chaotic
    assert (old.exponents[:, 0] < -0.05).all(), old.exponents
    assert (new.exponents[:, 0] > 0.01).all(), new.exponents
    assert (new.driven_exponents[:, 0] < -0.2).all(), new.driven_exponents
    assert old.driven_exponents is None
    assert new.settings["window"] == "zero_input" and old.settings["window"] == "all"
    assert new.settings["counted_steps"] == 300 and new.block_steps.sum() == 300


@device_dtype
def test_zero_input_window_is_the_run_from_the_drive_end_state(device, dtype):
    lstm = make_lstm(3, 5, 2, gain=3.0, seed=2, dtype=dtype).to(device)
    seq = torch.randn(12, 3, 3, dtype=torch.float64).to(device, dtype)
    q0 = mdesc.random_frame(20, 3, seed=4)
    t = tol(dtype, 1e-12, 1e-5)
    r = mdesc.lyapunov_spectrum(lstm, seq, 3, zero_input_steps=15, warmup=4, qr_every=3, q0=q0,
                                window="zero_input")
    assert r.settings["dtype"] == str(dtype).replace("torch.", "")
    _, (h, c) = lstm(seq)  # the state the drive left
    rest = mdesc.lyapunov_spectrum(lstm, torch.zeros(1, 3, 3, dtype=dtype, device=device), 3, h0=h,
                                   c0=c, zero_input_steps=14, warmup=4, qr_every=3, q0=q0)
    torch.testing.assert_close(r.exponents, rest.exponents, **t)
    torch.testing.assert_close(r.block_exponents, rest.block_exponents, **t)
    torch.testing.assert_close(r.h_T, rest.h_T, **t)
    drive = mdesc.lyapunov_spectrum(lstm, seq, 3, qr_every=3, q0=q0)
    torch.testing.assert_close(r.driven_exponents, drive.exponents, **t)
    # the run itself is the same as in the whole-run window: only what is counted differs
    whole = mdesc.lyapunov_spectrum(lstm, seq, 3, zero_input_steps=15, q0=q0)
    torch.testing.assert_close(r.h_T, whole.h_T, **t)


@device_dtype
def test_padded_lengths_equal_separate_runs(device, dtype):
    lstm = make_lstm(3, 4, 2, gain=2.5, seed=7, dtype=dtype).to(device)
    T, Z = 10, 9
    seq = torch.randn(T, 4, 3, dtype=torch.float64).to(device, dtype)
    lengths = [10, 4, 1, 4]
    kw = dict(warmup=2, qr_every=4, seed=3)
    t = tol(dtype, 1e-12, 1e-5)
    r = mdesc.lyapunov_spectrum(lstm, seq, 2, lengths=lengths, zero_input_steps=Z,
                                window="zero_input", **kw)
    assert r.block_steps.shape == (4, 4)  # windows of 7, 13, 16 and 13 steps: per sequence
    assert r.block_steps.sum(1).tolist() == [T + Z - l - 2 for l in lengths]
    assert r.settings["counted_steps"] == [7, 13, 16, 13]
    torch.testing.assert_close(r.running_exponents()[:, -1], r.exponents)
    for b, l in enumerate(lengths):
        one = mdesc.lyapunov_spectrum(lstm, seq[:l, b], 2, zero_input_steps=T + Z - l,
                                      window="zero_input", **kw)
        torch.testing.assert_close(r.exponents[b], one.exponents[0], **t)
        torch.testing.assert_close(r.driven_exponents[b], one.driven_exponents[0], **t)
        nb = one.block_steps.numel()
        assert r.block_steps[b, :nb].tolist() == one.block_steps.tolist() and r.block_steps[b, nb:].sum() == 0
        torch.testing.assert_close(r.block_exponents[b, :nb], one.block_exponents[0], **t)
        assert torch.isnan(r.block_exponents[b, nb:]).all()
        torch.testing.assert_close(r.h_T[:, b], one.h_T[:, 0], **t)


@device_dtype
def test_checkpoints_and_reference_in_the_zero_input_window(device, dtype):
    truth = [make_lstm(3, 4, 1, gain=g, seed=1) for g in (0.5, 3.0, 6.0)]
    models = [make_lstm(3, 4, 1, gain=g, seed=1, dtype=dtype).to(device) for g in (0.5, 3.0, 6.0)]
    seq = torch.randn(8, 3, 3, dtype=torch.float64)
    kw = dict(lengths=[8, 3, 5], zero_input_steps=10, warmup=1, window="zero_input")
    ref = reference.lyapunov_checkpoints(truth, seq, k=2, **kw)  # float64 truth
    seq = seq.to(device, dtype)
    batch = mdesc.lyapunov_checkpoints(models, seq, k=2, **kw)
    t = tol(dtype, 1e-12, 1e-5)
    assert batch.exponents.shape == (3, 3, 2) and batch.driven_exponents.shape == (3, 3, 2)
    assert batch.block_exponents.shape[:2] == (3, 3) and batch.h_T.shape == (3, 1, 3, 4)
    torch.testing.assert_close(batch.exponents, ref.exponents, **tol(dtype, 1e-9, 1e-4))
    torch.testing.assert_close(batch.driven_exponents, ref.driven_exponents, **tol(dtype, 1e-9, 1e-4))
    for c, m in enumerate(models):
        single = mdesc.lyapunov_spectrum(m, seq, 2, **kw)
        torch.testing.assert_close(batch.exponents[c], single.exponents, **t)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window="drive"), "window must be 'all'"),
    (dict(window="zero_input"), "pass zero_input_steps > warmup"),
    (dict(window="zero_input", zero_input_steps=3, warmup=3), "pass zero_input_steps > warmup"),
    (dict(window="zero_input", zero_input_steps=3, warmup=-1), "warmup must be an integer"),
])
def test_bad_window_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mdesc.lyapunov_spectrum(torch.nn.LSTM(3, 4), torch.randn(5, 2, 3), 2, **kwargs)


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh"])
def test_zero_input_window_for_cells_without_a_cell_state(cell):
    """GRU / RNN: c is empty ([.., 0]); the window still equals the run from the drive-end h."""
    torch.manual_seed(5)
    if cell == "gru":
        rnn = torch.nn.GRU(3, 5, num_layers=2).double()
    else:
        rnn = torch.nn.RNN(3, 5, num_layers=2, nonlinearity="tanh").double()
    seq = torch.randn(9, 3, 3, dtype=torch.float64)
    lengths = [9, 4, 6]
    q0 = mdesc.random_frame(10, 2, seed=1)
    r = mdesc.lyapunov_spectrum(rnn, seq, 2, lengths=lengths, zero_input_steps=8, qr_every=3,
                                q0=q0, window="zero_input")
    assert r.c_T.shape[-1] == 0 and r.h_T.shape == (2, 3, 5)
    for b, l in enumerate(lengths):
        _, h = rnn(seq[:l, b:b + 1])
        rest = mdesc.lyapunov_spectrum(rnn, torch.zeros(1, 1, 3, dtype=torch.float64), 2, h0=h,
                                       zero_input_steps=9 + 8 - l - 1, qr_every=3, q0=q0)
        torch.testing.assert_close(r.exponents[b], rest.exponents[0], rtol=1e-10, atol=1e-12)
