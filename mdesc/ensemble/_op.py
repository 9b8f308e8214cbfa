"""The extension's ensemble recurrence behind one autograd Function (filled in by issue 24's
C++ op; until then no device has it and ``ensemble_recurrent`` uses the torch loop)."""
from __future__ import annotations

import torch


def available(xproj: torch.Tensor) -> bool:
    """Whether the extension has the ensemble op for ``xproj``'s device and dtype."""
    return False


def recurrence(xproj, w_hh, b_hh, cell):
    raise RuntimeError("this build of mdesc has no ensemble_rnn op; use backend='torch'")
