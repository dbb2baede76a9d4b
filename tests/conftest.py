import os
import subprocess
import sys
import time
from pathlib import Path

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


class SiteBuild:
    """One `mkdocs build --strict` of the documentation site, shared by every docs test of a session."""

    def __init__(self, site, proc, seconds):
        self.site, self.proc, self.seconds = site, proc, seconds

    def check(self):
        if self.proc.returncode != 0:
            pytest.fail(f"mkdocs build --strict failed ({self.proc.returncode}):\n"
                        f"{self.proc.stdout[-4000:]}\n{self.proc.stderr[-8000:]}")


@pytest.fixture(scope="session")
def site_build(tmp_path_factory):
    root = Path(__file__).resolve().parents[1]
    site = tmp_path_factory.mktemp("docs") / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    return SiteBuild(site, proc, time.perf_counter() - start)
