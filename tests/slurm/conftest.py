"""A real two-node Slurm cluster (two slurmd on this machine) for the tests in this directory.

Installs Debian's slurm-wlm + munge when absent (skips, not fails, when that is impossible:
no root, no apt-get, no registry); stops every daemon it started by pid, also on failure.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm_helpers import Cluster, SlurmHelper, SlurmUnavailable  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: stands up a real two-node Slurm cluster on this machine")


@pytest.fixture(scope="session")
def slurm_cluster():
    if sys.platform != "linux":
        pytest.skip("Slurm cluster tests need Linux")
    root = Path(tempfile.mkdtemp(prefix="hrkd-slurm-"))  # under /tmp: munged needs o+x on every parent
    try:
        try:
            cluster = Cluster.start(root, nodes=2, cpus_per_node=1, log=lambda m: print(m, file=sys.stderr))
        except SlurmUnavailable as err:
            pytest.skip(f"Slurm not available and not installable here: {err}")
        yield SlurmHelper(cluster)
    finally:
        Cluster(root).stop(log=lambda m: print(m, file=sys.stderr))
        if os.environ.get("HRKD_KEEP_SLURM_DIR") != "1":
            shutil.rmtree(root, ignore_errors=True)

