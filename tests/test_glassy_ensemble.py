"""Batched ensembles (study 2): equal to one-at-a-time training, exact resume, no pickle."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from mdesc import glassy, store
from mdesc.data import chorales as ch


@pytest.fixture(scope="module")
def windows():
    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    train, test = s.split(0.25, seed=0)
    tok, lens, _ = ch.chunk_tokens(train, vocab, 12)
    ttok, tlens, _ = ch.chunk_tokens(test, vocab, 12)
    return tok.transpose(1, 0, 2), lens, ttok.transpose(1, 0, 2), tlens, vocab.sizes


def test_recurrence_gradient_matches_finite_differences():
    torch.manual_seed(0)
    u = torch.randn(5, 3, 2, 4, dtype=torch.float64, requires_grad=True)
    w = (0.6 * torch.randn(3, 4, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(glassy.TanhRecurrence.apply, (u, w))


def test_ensemble_loss_and_gradients_equal_each_net_alone():
    sizes = (26, 23, 23, 30)
    widths, seeds = [3, 9, 5, 12], [1, 2, 3, 4]
    ens = glassy.EnsembleRNN.from_seeds(sizes, widths, 2, seeds)
    assert ens.buckets == [(0, 1, 3), (1, 3, 9), (3, 4, 12)]  # widths within a factor 2
    g = torch.Generator().manual_seed(0)
    tok = torch.stack([torch.randint(0, s, (9, 4, 3), generator=g) for s in sizes], -1)
    lens = torch.tensor([[9, 5, 2]] * 4)
    losses = ens.losses(tok, lens)
    losses.sum().backward()
    for i, (w, s) in enumerate(zip(widths, seeds)):
        torch.manual_seed(s)
        alone = glassy.VoiceRNN(sizes, w, 2).double()
        loss = alone.loss(tok[:, i], lens[i])
        loss.backward()
        assert float(losses[i].detach()) == pytest.approx(float(loss.detach()), rel=1e-13)
        for p, ref, mask in zip(ens.params, ens._model_tensors(alone), ens.masks):
            sl = (i,) + tuple(slice(0, n) for n in ref.shape)
            np.testing.assert_allclose(p.grad[sl].numpy(), ref.grad.numpy(), rtol=1e-11,
                                       atol=1e-14)
            assert float((p.grad[i] * (1 - mask[i])).abs().max()) == 0.0  # padding: exactly 0
        np.testing.assert_array_equal(ens.flat_weights(i).numpy(), alone.flat_weights().detach().numpy())
    with pytest.raises(ValueError, match="one depth"):
        glassy.EnsembleRNN.from_models([glassy.VoiceRNN(sizes, 3, 1), glassy.VoiceRNN(sizes, 3, 2)])


@pytest.mark.parametrize("momentum,clip", [(0.0, None), (0.5, 0.5)])
def test_batched_training_equals_one_at_a_time(tmp_path, windows, momentum, clip):
    tok, lens, ttok, tlens, sizes = windows
    widths, seeds = (3, 5, 5, 8), (0, 0, 1, 2)
    kw = dict(steps=30, lr=0.5, momentum=momentum, grad_clip=clip, batch_size=5, n_records=8,
              n_lags=4, waiting_times=(2, 6))
    cfg = glassy.EnsembleConfig(depth=2, widths=widths, seeds=seeds, dtype="float64", **kw)
    res = glassy.train_ensemble(tmp_path / "ens", tok, lens, cfg, sizes, ttok, tlens)
    assert res.finished and res.step == 30
    weights = store.load_tensors(tmp_path / "ens" / "weights.safetensors")[0]
    ens = glassy.EnsembleRNN(sizes, widths, 2)
    with torch.no_grad():
        for name, p in zip(ens.names, ens.params):
            p.copy_(weights[f"param.{name}"])
    for i, (w, s) in enumerate(zip(widths, seeds)):
        one = glassy.train_glassy_run(tmp_path / f"one{i}", tok, lens,
                                      glassy.GlassyConfig(width=w, depth=2, seed=s, **kw), sizes,
                                      ttok, tlens, progress=False, dtype=torch.float64)
        np.testing.assert_allclose(res.train_loss[:, i], one.train_loss, rtol=1e-12)
        np.testing.assert_allclose(res.test_loss[:, i], one.test_loss, rtol=1e-12)
        np.testing.assert_allclose(ens.flat_weights(i).numpy(), one.snapshots[-1], rtol=1e-10,
                                   atol=1e-12)
        mine, ref = res.aging(i), one.aging()
        assert [len(x) for x in mine.lags] == [len(x) for x in ref.lags]
        for a, b, la, lb in zip(mine.delta, ref.delta, mine.lags, ref.lags):
            np.testing.assert_array_equal(la, lb)
            np.testing.assert_allclose(a, b, rtol=1e-9)
    # nets with the same seed see the same batches whatever their width; others differ
    assert not np.allclose(res.batch_mean[:, 1], res.batch_mean[:, 2])
    assert np.all((res.batch_max >= res.batch_mean - 1e-12) | np.isnan(res.batch_mean))


def test_ensemble_resumes_exactly_and_refuses_other_settings(tmp_path, windows):
    tok, lens, _, _, sizes = windows
    cfg = glassy.EnsembleConfig(depth=1, widths=(4, 7), seeds=(0, 1), steps=25, lr=0.3,
                                batch_size=4, n_records=6, n_lags=4, waiting_times=(3, 8))
    ref = glassy.train_ensemble(tmp_path / "ref", tok, lens, cfg, sizes)
    part = glassy.train_ensemble(tmp_path / "a", tok, lens, cfg, sizes, stop_after=11)
    assert part.step == 11 and not part.finished
    assert (tmp_path / "a" / glassy.STATE_FILE).exists()
    seen = glassy.load_ensemble(tmp_path / "a", partial=True)
    assert seen.step == 11 and np.isnan(seen.train_loss[-1]).all()
    done = glassy.train_ensemble(tmp_path / "a", tok, lens, cfg, sizes)
    calls = []

    def killer(step):
        calls.append(step)
        if len(calls) == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        glassy.train_ensemble(tmp_path / "b", tok, lens, cfg, sizes, save_every_s=0.0,
                              callback=killer)
    killed = glassy.train_ensemble(tmp_path / "b", tok, lens, cfg, sizes, callback=calls.append)
    assert calls[17] == 17  # resumed right after the last saved update (saved every update)
    for run in (done, killed):
        np.testing.assert_array_equal(run.train_loss, ref.train_loss)
        np.testing.assert_array_equal(run.batch_mean, ref.batch_mean)
        np.testing.assert_array_equal(run.batch_max, ref.batch_max)
        np.testing.assert_array_equal(run.delta, ref.delta)
    assert not (tmp_path / "b" / glassy.STATE_FILE).exists()
    again = []
    glassy.train_ensemble(tmp_path / "a", tok, lens, cfg, sizes, callback=again.append)
    assert again == []  # finished: loaded, not retrained
    other = glassy.EnsembleConfig(depth=1, widths=(4, 7), seeds=(0, 1), steps=25, lr=0.2,
                                  batch_size=4, n_records=6, n_lags=4, waiting_times=(3, 8))
    with pytest.raises(store.SettingsMismatch, match="lr: on disk 0.3, asked for 0.2"):
        glassy.train_ensemble(tmp_path / "a", tok, lens, other, sizes)


def test_a_planted_pickle_state_is_refused_without_running(tmp_path, windows):
    import pickle

    tok, lens, _, _, sizes = windows
    cfg = glassy.EnsembleConfig(depth=1, widths=(3,), seeds=(0,), steps=20, lr=0.3,
                                batch_size=4, n_records=5, n_lags=3, waiting_times=(2,))
    glassy.train_ensemble(tmp_path / "r", tok, lens, cfg, sizes, stop_after=5)
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for path in (tmp_path / "r" / glassy.STATE_FILE,):
        path.write_bytes(pickle.dumps({"step": Evil()}))
        with pytest.raises(store.StoreError, match="not a readable safetensors"):
            glassy.train_ensemble(tmp_path / "r", tok, lens, cfg, sizes)
    one = glassy.GlassyConfig(width=3, steps=20, lr=0.3, batch_size=4, n_records=5, n_lags=3)
    glassy.train_glassy_run(tmp_path / "o", tok, lens, one, sizes, progress=False, stop_after=5)
    (tmp_path / "o" / glassy.STATE_FILE).write_bytes(pickle.dumps({"step": Evil()}))
    with pytest.raises(store.StoreError):
        glassy.train_glassy_run(tmp_path / "o", tok, lens, one, sizes, progress=False)
    assert not marker.exists()


def test_glassy_imports_without_the_compiled_extension():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.startswith('mdesc._C'):\n"
            "            raise ImportError('no extension here')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import mdesc\n"
            "assert 'torch' not in sys.modules\n"  # the package itself imports torch, plainly
            "g = mdesc.glassy\n"
            "g.fit_power_law, g.EnsembleRNN, g.train_ensemble, g.analyze_sweep\n"
            "import mdesc.glassy.cli, mdesc.glassy.figures\n"
            "assert not any(m.startswith('mdesc._C') for m in sys.modules)\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="one entry per net"):
        glassy.EnsembleConfig(depth=1, widths=(3, 4), seeds=(0,))
    with pytest.raises(ValueError, match="dtype"):
        glassy.EnsembleConfig(depth=1, widths=(3,), seeds=(0,), dtype="float16")
