"""Quantities derived from a spectrum (Kaplan & Yorke 1979; Pesin 1977): known answers, errors
from the per-block exponents, and refusals when k is too small."""
from __future__ import annotations

import math

import pytest
import torch

from mdesc.core import derived


def test_linear_map_with_a_known_spectrum():
    a = torch.tensor([0.3, 0.1, -0.2, -0.5, -1.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(a.exp()) @ Q.T  # symmetric: singular values = eigenvalues = e^a
    q = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))[0]
    blocks = []
    for b in range(150):  # blocks of 4 steps; the first 50 align the frame and are dropped
        q, r = torch.linalg.qr(torch.linalg.matrix_power(A, 4) @ q)
        blocks.append(torch.log(torch.diagonal(r).abs()) / 4)
    blocks = torch.stack(blocks[50:])
    steps = torch.full((100,), 4, dtype=torch.int64)
    exps = blocks.mean(0)
    torch.testing.assert_close(exps, a, rtol=0, atol=1e-9)
    be, ex = blocks[None], exps[None]  # one "sequence"
    count = derived.derive("positive_count", ex, be, steps, n=5)
    ks = derived.derive("ks_entropy", ex, be, steps, n=5)
    ky = derived.derive("kaplan_yorke", ex, be, steps, n=5)
    assert float(count.value) == 2.0
    assert float(ks.value) == pytest.approx(0.4, abs=2e-3)
    assert float(ky.value) == pytest.approx(3.0 + 0.2 / 0.5, abs=1e-2)
    # the analytic spectrum itself, and every truncation that still determines the quantity
    assert float(derived.kaplan_yorke_of(a)) == pytest.approx(3.4, abs=1e-12)
    assert float(derived.kaplan_yorke_of(a[:4])) == pytest.approx(3.4, abs=1e-12)
    assert float(derived.ks_entropy_of(a[:3])) == pytest.approx(0.4, abs=1e-12)
    assert float(derived.positive_count_of(a[:3])) == 2.0
    # order does not matter (finite-time spectra may come out of order)
    assert float(derived.kaplan_yorke_of(a.flip(0))) == pytest.approx(3.4, abs=1e-12)


def test_henon_map_kaplan_yorke_dimension():
    """Hénon map (a = 1.4, b = 0.3): exponents ≈ 0.42, −1.62, D_KY ≈ 1.26."""
    assert float(derived.kaplan_yorke_of(torch.tensor([0.42, -1.62]))) == pytest.approx(1 + 0.42 / 1.62)
    assert float(derived.kaplan_yorke_of(torch.tensor([0.42, -1.62]))) == pytest.approx(1.26, abs=0.005)

    x, y = 0.0, 0.0
    for _ in range(1000):  # onto the attractor
        x, y = 1 - 1.4 * x * x + y, 0.3 * x
    u, v = (1.0, 0.0), (0.0, 1.0)  # tangent frame, Gram-Schmidt every 10 steps
    blocks = []
    for b in range(2000):
        for _ in range(10):
            j00 = -2.8 * x
            u = (j00 * u[0] + u[1], 0.3 * u[0])
            v = (j00 * v[0] + v[1], 0.3 * v[0])
            x, y = 1 - 1.4 * x * x + y, 0.3 * x
        nu = math.hypot(*u)
        u = (u[0] / nu, u[1] / nu)
        dot = u[0] * v[0] + u[1] * v[1]
        v = (v[0] - dot * u[0], v[1] - dot * u[1])
        nv = math.hypot(*v)
        v = (v[0] / nv, v[1] / nv)
        blocks.append((math.log(nu) / 10, math.log(nv) / 10))
    blocks = torch.tensor(blocks, dtype=torch.float64)
    steps = torch.full((len(blocks),), 10, dtype=torch.int64)
    exps = blocks.mean(0)
    assert float(exps.sum()) == pytest.approx(math.log(0.3), abs=1e-9)  # |det J| = b every step
    assert float(exps[0]) == pytest.approx(0.42, abs=0.01)
    ky = derived.derive("kaplan_yorke", exps[None], blocks[None], steps, n=2)
    assert 0 < float(ky.error) < 0.01
    assert abs(float(ky.value) - 1.258) < max(4 * float(ky.error), 0.005)
    ks = derived.derive("ks_entropy", exps[None], blocks[None], steps, n=2)
    assert float(ks.value) == pytest.approx(float(exps[0])) and float(ks.error) > 0


def test_edge_cases_of_the_formulas():
    lam = torch.tensor([[-0.1, -0.5], [0.0, -1.0], [0.5, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(derived.kaplan_yorke_of(lam, n=2), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(derived.positive_count_of(lam, n=2), torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(derived.ks_entropy_of(lam, n=2), torch.tensor([0.0, 0.0, 0.7], dtype=torch.float64))


@pytest.mark.parametrize("fn, exps, match", [
    (derived.positive_count_of, [0.3, 0.1], "all k=2 computed exponents are positive"),
    (derived.ks_entropy_of, [0.3, 0.1], "may miss some"),
    (derived.kaplan_yorke_of, [0.3, -0.1], "still >= 0"),
    (derived.kaplan_yorke_of, [0.3, 0.1], "at least k"),
])
def test_too_small_k_is_refused_with_the_reason(fn, exps, match):
    with pytest.raises(ValueError, match=match):
        fn(torch.tensor(exps), n=5)
    with pytest.raises(ValueError, match=match):
        fn(torch.tensor(exps))  # n unknown: assume more exponents exist
    # with the whole spectrum (k = n) nothing is missing
    assert math.isfinite(float(fn(torch.tensor(exps), n=2)))


def test_batch_spectra_with_padded_blocks():
    # two sequences: 4 blocks of 5 steps, and 2 blocks (+2 padding) with 3 and 2 steps
    be = torch.tensor([[[1.0], [2.0], [3.0], [4.0]], [[1.0], [6.0], [float("nan")], [float("nan")]]],
                      dtype=torch.float64)
    steps = torch.tensor([[5, 5, 5, 5], [3, 2, 0, 0]])
    out = derived.batch_spectra(be, steps, batches=2)
    torch.testing.assert_close(out[..., 0], torch.tensor([[1.5, 3.5], [1.0, 6.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown derived quantity"):
        derived.derive("entropy", be[:, 0], be, steps)
    with pytest.raises(ValueError, match="NaN"):
        derived.derive("ks_entropy", torch.tensor([[float("nan")]]), be, steps)


def test_derived_quantities_of_an_lstm_spectrum():
    """On a chaotic LSTM: the result's methods agree with the functions, the full spectrum
    determines everything, and too few exponents are refused."""
    import mdesc
    from lstm_cases import make_lstm

    lstm = make_lstm(2, 8, 1, gain=16.0, seed=2)
    seq = torch.zeros(1, 2, 2, dtype=torch.float64)
    h0 = 0.5 * torch.randn(1, 2, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # qr_every=1: at the default 5 the tail's growth gap per block exceeds float64's resolution
    # and those columns are lost (-inf, docs/conventions.md §3)
    full = mdesc.lyapunov_spectrum(lstm, seq, None, h0=h0, zero_input_steps=1500, warmup=300, qr_every=1)
    assert full.settings["dtype"] == "float64" and full.settings["dtype_source"] == "model"
    lam = full.exponents
    assert (lam[:, 0] > 0.1).all() and (lam[:, -1] < 0).all()  # chaotic, with contracting tail
    ky = full.kaplan_yorke()
    torch.testing.assert_close(ky.value, derived.kaplan_yorke_of(lam))
    assert (ky.value > 1).all() and (ky.value < 16).all() and (ky.error > 0).all()
    torch.testing.assert_close(full.ks_entropy().value, lam.clamp_min(0).sum(-1))
    count = full.positive_count().value
    assert ((count >= 1) & (count < 16)).all()
    # one exponent, positive: neither the count nor the entropy nor the dimension is determined
    top = mdesc.max_lyapunov(lstm, seq, h0=h0, zero_input_steps=1500, warmup=300)
    for method in (top.positive_count, top.ks_entropy, top.kaplan_yorke):
        with pytest.raises(ValueError, match="compute more exponents"):
            method()


def test_dtype_follows_the_model():
    import mdesc
    from lstm_cases import make_lstm

    lstm64 = make_lstm(3, 4, 1, seed=2)
    seq = torch.randn(10, 2, 3, dtype=torch.float64)
    auto = mdesc.lyapunov_spectrum(lstm64, seq, 2)
    explicit = mdesc.lyapunov_spectrum(lstm64, seq, 2, dtype=torch.float64)
    assert auto.settings["dtype"] == "float64" and auto.settings["dtype_source"] == "model"
    assert explicit.settings["dtype_source"] == "explicit"
    assert torch.equal(auto.exponents, explicit.exponents) and auto.h_T.dtype == torch.float64
    lstm32 = make_lstm(3, 4, 1, seed=2, dtype=torch.float32)
    r32 = mdesc.lyapunov_checkpoints([lstm32, lstm32], seq.float(), k=2)
    assert r32.settings["dtype"] == "float32" and r32.h_T.dtype == torch.float32
    over = mdesc.lyapunov_spectrum(lstm32, seq.float(), 2, dtype=torch.float64)  # explicit override
    assert over.settings["dtype"] == "float64" and over.h_T.dtype == torch.float64
    d = mdesc.asymptotic_distance(lstm32, seq.float(), zero_input_steps=5)
    assert d.settings["dtype"] == "float64" and d.settings["dtype_source"] == "default"
    with pytest.raises(ValueError, match="pass dtype=torch.float32"):
        mdesc.max_lyapunov(make_lstm(3, 4, 1, dtype=torch.float16), seq.half())
