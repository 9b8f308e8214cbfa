"""The public API: models it accepts, batching semantics, results, and errors for bad input."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import mdesc
from mdesc.core import reference
from lstm_cases import make_lstm
from utils import device_dtype, tol

F64 = dict(dtype=torch.float64)


def _model(I, H, L, device, dtype, **kw):
    return make_lstm(I, H, L, dtype=dtype, **kw).to(device)


def _randn(*shape, device, dtype):
    return torch.randn(*shape, dtype=torch.float64).to(device=device, dtype=dtype)


def _truth(model):
    """A float64 CPU copy of ``model``, for the reference's float64 answer."""
    return copy.deepcopy(model).cpu().double()


class Classifier(nn.Module):
    """The paper's model: Embedding -> LSTM -> Linear + sigmoid."""

    def __init__(self, vocab=20, emb=4, hidden=5, batch_first=True):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=batch_first)
        self.readout = nn.Linear(hidden, 1)

    def forward(self, ids):
        out, _ = self.lstm(self.embedding(ids))
        return torch.sigmoid(self.readout(out[:, -1]))


@device_dtype
def test_result_object_carries_what_is_needed(device, dtype):
    lstm = _model(3, 4, 2, device, dtype, seed=1)
    seq = _randn(20, 5, 3, device=device, dtype=dtype)
    r = mdesc.lyapunov_spectrum(lstm, seq, 3, zero_input_steps=11, warmup=4, qr_every=5, seed=7)
    assert r.exponents.shape == (5, 3) and r.exponents.dtype == torch.float64
    assert r.block_steps.tolist() == [5, 5, 5, 5, 5, 2]  # 27 counted steps, final partial block
    assert r.block_exponents.shape == (5, 6, 3)
    # exponents are the step-weighted mean of the local ones; running estimate ends there too
    w = r.block_steps.to(torch.float64)
    torch.testing.assert_close((r.block_exponents * w[:, None]).sum(1) / w.sum(), r.exponents)
    torch.testing.assert_close(r.running_exponents()[:, -1], r.exponents)
    torch.testing.assert_close(r.mean, r.exponents.mean(0))
    torch.testing.assert_close(r.stderr, r.exponents.std(0) / math.sqrt(5))
    assert float(r) == pytest.approx(float(r.exponents[:, 0].mean()))
    s = r.settings
    assert (s["k"], s["steps"], s["warmup"], s["qr_every"], s["seed"], s["dtype"]) == (
        3, 31, 4, 5, 7, str(dtype).replace("torch.", ""))
    assert s["device"].startswith(device.type) and r.h_T.device.type == device.type
    assert not r.nonfinite.any()
    assert "lambda_1" in repr(r)


@device_dtype
def test_default_frame_is_seeded(device, dtype):
    lstm = _model(3, 4, 1, device, dtype, seed=1)
    seq = _randn(15, 2, 3, device=device, dtype=dtype)
    a = mdesc.lyapunov_spectrum(lstm, seq, 2, seed=3)
    b = mdesc.lyapunov_spectrum(lstm, seq, 2, seed=3)
    c = mdesc.lyapunov_spectrum(lstm, seq, 2, seed=4)
    assert torch.equal(a.exponents, b.exponents)
    assert not torch.equal(a.exponents, c.exponents)


@device_dtype
def test_batch_first_and_unbatched_inputs(device, dtype):
    lstm = _model(3, 4, 2, device, dtype, seed=2)
    lstm_bf = _model(3, 4, 2, device, dtype, seed=2, batch_first=True)
    seq = _randn(12, 3, 3, device=device, dtype=dtype)
    a = mdesc.lyapunov_spectrum(lstm, seq, 2)
    b = mdesc.lyapunov_spectrum(lstm_bf, seq.transpose(0, 1), 2)
    torch.testing.assert_close(a.exponents, b.exponents, rtol=0, atol=0)
    one = mdesc.lyapunov_spectrum(lstm, seq[:, 1], 2)  # (T, I): one sequence
    torch.testing.assert_close(one.exponents[0], a.exponents[1], **tol(dtype, 1e-13, 1e-5))


@device_dtype
def test_final_state_matches_nn_lstm_forward(device, dtype):
    lstm = _model(3, 6, 3, device, dtype, seed=4)
    seq = _randn(9, 4, 3, device=device, dtype=dtype)
    r = mdesc.max_lyapunov(lstm, seq, zero_input_steps=5)
    padded = torch.cat([seq, torch.zeros(5, 4, 3, dtype=dtype, device=device)])
    _, (h, c) = lstm(padded)
    torch.testing.assert_close(r.h_T, h, **tol(dtype, 1e-12, 1e-5))
    torch.testing.assert_close(r.c_T, c, **tol(dtype, 1e-12, 1e-5))


@device_dtype
def test_lengths_switch_to_zero_input(device, dtype):
    lstm = _model(2, 5, 2, device, dtype, seed=3)
    seq = _randn(10, 3, 2, device=device, dtype=dtype)
    lengths = [10, 4, 1]
    padded = seq.clone()
    for b, l in enumerate(lengths):
        padded[l:, b] = 0.0
    a = mdesc.lyapunov_spectrum(lstm, seq, 3, lengths=lengths, zero_input_steps=6)
    b = mdesc.lyapunov_spectrum(lstm, padded, 3, zero_input_steps=6)
    torch.testing.assert_close(a.exponents, b.exponents, **tol(dtype, 1e-13, 1e-5))


@device_dtype
def test_no_bias_lstm(device, dtype):
    lstm = _model(3, 4, 2, device, dtype, seed=5, bias=False)
    seq = _randn(8, 2, 3, device=device, dtype=dtype)
    a = mdesc.lyapunov_spectrum(lstm, seq, 4)
    b = reference.lyapunov_spectrum(_truth(lstm), seq.cpu().double(), 4)  # float64 truth
    torch.testing.assert_close(a.exponents, b.exponents, **tol(dtype, 1e-10, 1e-4))


@device_dtype
def test_explicit_initial_state_and_frame(device, dtype):
    lstm = _model(3, 4, 2, device, dtype, seed=6)
    seq = _randn(8, 2, 3, device=device, dtype=dtype)
    h0 = _randn(2, 2, 4, device=device, dtype=dtype) * 0.3
    c0 = _randn(2, 2, 4, device=device, dtype=dtype) * 0.3
    q0 = torch.randn(2, 16, 3, dtype=torch.float64)  # one frame per sequence, not orthonormal
    a = mdesc.lyapunov_spectrum(lstm, seq, 3, h0=h0, c0=c0, q0=q0)
    b = reference.lyapunov_spectrum(_truth(lstm), seq.cpu().double(), 3, h0=h0.cpu().double(),
                                    c0=c0.cpu().double(), q0=q0)  # float64 truth
    torch.testing.assert_close(a.exponents, b.exponents, **tol(dtype, 1e-10, 1e-4))
    _, (h, c) = lstm(seq, (h0, c0))
    torch.testing.assert_close(a.h_T, h, **tol(dtype, 1e-12, 1e-5))
    assert a.settings["q0_given"] and a.settings["seed"] is None


@device_dtype
def test_classifier_from_token_ids_equals_embedded_inputs(device, dtype):
    model = Classifier().to(device=device, dtype=dtype)
    ids = torch.randint(0, 20, (3, 7)).to(device)  # batch_first (B, T)
    a = mdesc.lyapunov_spectrum(model, ids, 2, zero_input_steps=4)
    emb = model.embedding(ids).detach()
    b = mdesc.lyapunov_spectrum(model.lstm, emb, 2, zero_input_steps=4)
    torch.testing.assert_close(a.exponents, b.exponents, rtol=0, atol=0)


@device_dtype
def test_checkpoints_in_one_call_equal_separate_runs(device, dtype):
    models = [Classifier().to(device=device, dtype=dtype) for _ in range(3)]
    ids = torch.randint(0, 20, (4, 6)).to(device)
    batch = mdesc.lyapunov_checkpoints(models, ids, k=2, zero_input_steps=5)
    assert batch.exponents.shape == (3, 4, 2)
    assert batch.mean.shape == (3, 2) and batch.nonfinite.shape == (3, 4)
    for c, m in enumerate(models):
        single = mdesc.lyapunov_spectrum(m, ids, 2, zero_input_steps=5)
        torch.testing.assert_close(batch.exponents[c], single.exponents, **tol(dtype, 1e-13, 1e-5))
    # state dicts plus a template give the same
    sds = [m.state_dict() for m in models]
    again = mdesc.lyapunov_checkpoints(sds, ids, k=2, zero_input_steps=5,
                                       template=Classifier().to(device=device, dtype=dtype))
    torch.testing.assert_close(again.exponents, batch.exponents, rtol=0, atol=0)
    ref = reference.lyapunov_checkpoints([_truth(m) for m in models], ids.cpu(), k=2,
                                         zero_input_steps=5)  # float64 truth
    torch.testing.assert_close(ref.exponents, batch.exponents, **tol(dtype, 1e-10, 1e-4))


def test_nonfinite_runs_are_flagged_not_silent():
    lstm = make_lstm(2, 3, 1, seed=1, dtype=torch.float32)
    with torch.no_grad():
        lstm.weight_hh_l0[0, 0] = 3e38
        lstm.weight_hh_l0[1, 1] = -3e38
    seq = torch.randn(5, 2, 2)
    r = mdesc.max_lyapunov(lstm, seq, zero_input_steps=5, qr_every=1)
    assert not r.nonfinite.any() and r.exponents.min() > 1  # fast growth, renormalised in time
    # the same growth over 60 steps between renormalisations overflows float32
    r = mdesc.max_lyapunov(lstm, seq, zero_input_steps=60, qr_every=60)
    assert r.nonfinite.all()
    assert torch.isnan(r.exponents).all()
    assert math.isnan(float(r))


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "model, match",
    [
        (nn.GRU(3, 4, bidirectional=True), "bidirectional nn.GRU"),
        (nn.LSTM(3, 4, bidirectional=True), "bidirectional"),
        (nn.LSTM(3, 4, proj_size=2), "proj_size"),
        (nn.Sequential(nn.LSTM(3, 4), nn.LSTM(4, 4)), "2 nn.LSTM"),
        (nn.Linear(3, 4), "0 nn.LSTM"),
        ("not a model", "nn.Module"),
    ],
)
def test_unsupported_models_are_refused(model, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mdesc.max_lyapunov(model, torch.randn(5, 2, 3))


@pytest.mark.parametrize(
    "seq, kwargs, match",
    [
        (torch.randn(5, 2, 3, 1), {}, r"seq must have shape \(T, B, I\)"),
        (torch.randn(5, 2, 7), {}, "input_size=3"),
        (torch.randn(0, 2, 3), {}, "empty"),
        (torch.randn(5, 0, 3), {}, "empty"),
        (torch.randn(5, 2, 3), {"k": 100}, "exceeds the tangent-space dimension"),
        (torch.randn(5, 2, 3), {"k": 0}, "positive integer"),
        (torch.randn(5, 2, 3), {"qr_every": 0}, "qr_every"),
        (torch.randn(5, 2, 3), {"warmup": 5}, "leaves no counted steps"),
        (torch.randn(5, 2, 3), {"warmup": -1}, "warmup"),
        (torch.randn(5, 2, 3), {"lengths": [1, 6]}, r"lengths must be in \[1, T=5\]"),
        (torch.randn(5, 2, 3), {"lengths": [1]}, "one per sequence"),
        (torch.randn(5, 2, 3), {"h0": torch.zeros(1, 3, 4)}, "h0 must have shape"),
        (torch.randn(5, 2, 3), {"q0": torch.ones(8, 2)}, "linearly dependent"),
        (torch.randn(5, 2, 3), {"q0": torch.randn(7, 2)}, "q0 must have shape"),
        (torch.randn(5, 2, 3), {"dtype": torch.float16}, "float32 or torch.float64"),
        (torch.randn(5, 2, 3).half(), {}, "float16"),
        (torch.full((5, 2, 3), float("nan")), {}, "NaN"),
        (torch.randint(0, 5, (5, 2)), {}, "no nn.Embedding"),
        (torch.randn(5, 2, 3, device="meta"), {}, "is on meta but the model is on cpu"),
    ],
)
def test_bad_input_names_the_problem(seq, kwargs, match):
    lstm = nn.LSTM(3, 4)
    k = kwargs.pop("k", 2)
    with pytest.raises(ValueError, match=match):
        mdesc.lyapunov_spectrum(lstm, seq, k, **kwargs)


def test_nan_weights_are_refused():
    lstm = nn.LSTM(3, 4)
    with torch.no_grad():
        lstm.weight_hh_l0[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in LSTM w_hh of layer 0"):
        mdesc.max_lyapunov(lstm, torch.randn(5, 2, 3))


def test_checkpoint_errors():
    with pytest.raises(ValueError, match="empty"):
        mdesc.lyapunov_checkpoints([], torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="template"):
        mdesc.lyapunov_checkpoints([nn.LSTM(3, 4).state_dict()], torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="same architecture"):
        mdesc.lyapunov_checkpoints([nn.LSTM(3, 4), nn.LSTM(3, 5)], torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="does not fit the template"):
        mdesc.lyapunov_checkpoints([nn.LSTM(3, 5).state_dict()], torch.randn(5, 2, 3), template=nn.LSTM(3, 4))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 20\)"):
        mdesc.max_lyapunov(Classifier(), torch.full((2, 3), 25))


def test_direct_op_call_checks_shapes():
    x = torch.randn(1, 4, 2, 3)
    w = [torch.randn(1, 16, 3)], [torch.randn(1, 16, 4)], [torch.randn(1, 16)]
    h0 = torch.zeros(1, 1, 2, 4)
    with pytest.raises(RuntimeError, match="lengths"):
        torch.ops.mdesc.tangent_run(x, torch.tensor([0, 4]), *w, h0, h0, torch.zeros(1, 1, 8, 1), 0, 0, 1)
    with pytest.raises(RuntimeError, match=r"w_ih\[0\] must be \[1, 20, 3\]"):
        torch.ops.mdesc.tangent_run(x, torch.tensor([4, 4]), w[0], [torch.randn(1, 16, 5)], w[2], h0, h0,
                                    torch.zeros(1, 1, 8, 1), 0, 0, 1)


def test_collapsed_frame_is_flagged_and_finer_qr_every_recovers_it():
    """A second exponent ~ -11 per step loses its column to rounding within 3 steps (e^-35 < eps):
    the column is lost (-inf, counted in lost_columns; docs/conventions.md §3) rather than reported
    as a noisy number, the first exponent stays exact; qr_every=1 resolves it."""
    lstm = nn.LSTM(1, 1, bias=False).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[0.3307], [0.1335], [0.0308], [0.3107]]))
        lstm.weight_hh_l0.copy_(torch.tensor([[-0.2260], [-0.0831], [-0.7614], [0.1908]]))
    seq = torch.tensor([[[0.3923]]], dtype=torch.float64)
    q0 = mdesc.random_frame(2, 2, seed=3)
    coarse = mdesc.lyapunov_spectrum(lstm, seq, 2, q0=q0, zero_input_steps=8, qr_every=3, **F64)
    assert not coarse.nonfinite.any() and (coarse.lost_columns == 1).all()
    assert torch.isneginf(coarse.exponents[:, 1]).all() and torch.isfinite(coarse.exponents[:, 0]).all()
    fine = mdesc.lyapunov_spectrum(lstm, seq, 2, q0=q0, zero_input_steps=8, qr_every=1, **F64)
    ref = reference.lyapunov_spectrum(lstm, seq, 2, q0=q0, zero_input_steps=8, qr_every=1, **F64)
    assert not fine.nonfinite.any()
    torch.testing.assert_close(fine.exponents, ref.exponents, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(coarse.exponents[:, 0], fine.exponents[:, 0], rtol=1e-9, atol=1e-9)
