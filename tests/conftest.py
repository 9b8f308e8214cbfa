import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Devices every backend-agnostic test runs on (CUDA where torch has a device).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

settings.register_profile(
    "mdesc", deadline=None, max_examples=int(os.environ.get("MDESC_HYPOTHESIS_EXAMPLES", "25")),
    # filter_too_much: identity tests skip ill-conditioned draws on purpose (lstm_cases.conditioning)
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
settings.load_profile("mdesc")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
