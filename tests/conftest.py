import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from utils import DEVICES  # noqa: F401  (the device x dtype matrix lives in tests/utils.py)

# Hypothesis profiles.  Tests must never fail by chance, so the default profile (and "ci",
# which CI selects by setting CI=1) is derandomised -- the same examples on every run, from a
# seed derived from each test -- with a bounded number of examples and no example database
# (a saved database would replay one machine's failures forever and differ between clones).
# MDESC_HYPOTHESIS_PROFILE=explore searches randomly, with a database, to look for new failures.
_COMMON = dict(
    deadline=None,
    # filter_too_much: identity tests skip ill-conditioned draws on purpose (lstm_cases.conditioning)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
_EXAMPLES = int(os.environ.get("MDESC_HYPOTHESIS_EXAMPLES", "25"))
settings.register_profile("mdesc", max_examples=_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("ci", max_examples=_EXAMPLES, derandomize=True, database=None, **_COMMON)
settings.register_profile("explore", max_examples=max(_EXAMPLES, 200), derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("MDESC_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "mdesc"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
