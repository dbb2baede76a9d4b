import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property tests are deterministic by default: the same examples on every run and machine, and no
# example database replaying old failures. With --hypothesis-seed=N the examples are drawn from seed N
# instead (same number of examples), so the suite can be run under other seeds too.
_COMMON = dict(deadline=None, max_examples=25, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("seeded", derandomize=False, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    try:
        seed = config.getoption("hypothesis_seed")
    except ValueError:
        seed = None
    if seed is not None:
        settings.load_profile("seeded")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
