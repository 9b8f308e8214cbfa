"""The one base class of the errors a user can fix.

Every error that means "this input, file or setting cannot be used as given" derives from
:class:`UserError` (the store's :class:`~mdesc.store.StoreError` and its
:class:`~mdesc.store.CheckpointError`, the studies' data and settings errors).  Its message names
what was wrong and how to fix it; the ``mdesc`` command prints it as one line and exits with
status 2 (a traceback only with ``--debug``).  Anything else that escapes is a bug in mdesc.
Imports nothing, so the command line can catch it before any study is loaded.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A problem with the user's input: printed as one clear line, exit status 2."""
