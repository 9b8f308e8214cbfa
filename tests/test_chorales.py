"""The Bach chorale loader: shipped fixtures, encoding, split, cache, and two real parses."""
import numpy as np
import pytest

from mdesc.data import chorales as ch


def test_fixture_chorales_are_four_voice_grids():
    s = ch.load_fixture_chorales()
    assert len(s) == 8
    for name, g in zip(s.names, s.grids):
        assert name.startswith("bach/bwv")
        assert g.dtype == np.int16 and g.ndim == 2 and g.shape[1] == 4
        assert 96 <= len(g) <= 200
        sounding = g[g != ch.REST]
        assert sounding.min() >= 30 and sounding.max() <= 90  # MIDI range of SATB voices
        # voices ordered highest first
        means = [g[:, v][g[:, v] != ch.REST].mean() for v in range(4)]
        assert means == sorted(means, reverse=True)
        assert (g == ch.REST).mean() < 0.1


def test_vocabulary_roundtrip_and_range_errors():
    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    assert vocab.sizes == tuple(h - lo + 2 for lo, h in zip(vocab.low, vocab.high))
    for g in s.grids:
        tok = vocab.encode(g)
        assert tok.dtype == np.int64 and tok.min() >= 0
        assert all(tok[:, v].max() < vocab.sizes[v] for v in range(4))
        assert np.array_equal((tok == 0), (g == ch.REST))
        assert np.array_equal(vocab.decode(tok), g)
    bad = s.grids[0].copy()
    bad[0, 0] = vocab.high[0] + 1
    with pytest.raises(ValueError, match="outside the vocabulary range"):
        vocab.encode(bad)


def test_padded_tokens_shapes_and_padding():
    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    tok, lens = ch.padded_tokens(s, vocab)
    assert tok.shape == (max(len(g) for g in s.grids), 8, 4)
    assert list(lens) == [len(g) for g in s.grids]
    for b, g in enumerate(s.grids):
        assert np.array_equal(tok[:lens[b], b], vocab.encode(g))
        assert np.all(tok[lens[b]:, b] == 0)
    tok, lens = ch.padded_tokens(s, vocab, max_len=32)
    assert tok.shape == (32, 8, 4) and np.all(lens == 32)


def test_seeded_split_is_reproducible_and_disjoint():
    s = ch.load_fixture_chorales()
    a_tr, a_te = s.split(0.25, seed=3)
    b_tr, b_te = s.split(0.25, seed=3)
    assert a_tr.names == b_tr.names and a_te.names == b_te.names
    assert len(a_te) == 2 and len(a_tr) == 6
    assert not set(a_tr.names) & set(a_te.names)
    assert set(a_tr.names) | set(a_te.names) == set(s.names)
    assert {tuple(s.split(0.25, seed=k)[1].names) for k in range(10)} != {tuple(a_te.names)}


def test_save_load_roundtrip_and_cache_is_used(tmp_path, monkeypatch):
    s = ch.load_fixture_chorales()
    path = tmp_path / "sub" / "cache.npz"
    s.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["cache.npz"]  # no temp file left
    back = ch.ChoraleSet.load(path)
    assert back.names == s.names
    assert all(np.array_equal(a, b) for a, b in zip(back.grids, s.grids))

    def no_parse(*a, **k):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ch, "parse_chorales", no_parse)
    cached = ch.load_chorales(cache=path, progress=False)
    assert cached.names == s.names
    monkeypatch.setenv("MDESC_CACHE", str(tmp_path / "c"))
    assert ch.cache_dir() == tmp_path / "c"


def test_real_music21_chorales_parse_to_the_fixture_encoding():
    pytest.importorskip("music21")
    fixture = ch.load_fixture_chorales()
    names = ["bach/bwv269", fixture.names[0]]
    parsed = ch.parse_chorales(names, progress=False)
    assert parsed.names == names
    g = parsed.grids[0]
    # bwv269 ("Aus meines Herzens Grunde", 3/4, 63 quarters): the soprano opens with a G4
    # quarter pickup and a G4 half note (12 sixteenths), then D5.
    assert g.shape == (63 * 4, 4)
    assert np.all(g[:12, 0] == 67) and g[12, 0] == 74
    assert np.array_equal(parsed.grids[1], fixture.grids[0])


def test_chunk_tokens_covers_every_transition_once():
    s = ch.load_fixture_chorales()
    vocab = ch.VoiceVocabulary.from_grids(s.grids)
    tok, lens, src = ch.chunk_tokens(s, vocab, 10)
    assert tok.shape[1:] == (11, 4) and tok.dtype == np.int64
    assert lens.min() >= 2 and lens.max() == 11
    # every (input, target) pair of every chorale appears exactly once
    for i, g in enumerate(s.grids):
        enc = vocab.encode(g)
        rows = np.flatnonzero(src == i)
        pairs = [(tuple(tok[r, t]), tuple(tok[r, t + 1])) for r in rows
                 for t in range(lens[r] - 1)]
        want = [(tuple(enc[t]), tuple(enc[t + 1])) for t in range(len(enc) - 1)]
        assert pairs == want
        assert np.all(tok[rows[-1], lens[rows[-1]]:] == 0)  # padding after the last window
    assert int((lens - 1).sum()) == sum(len(g) - 1 for g in s.grids)
    with pytest.raises(ValueError, match="window length"):
        ch.chunk_tokens(s, vocab, 0)
